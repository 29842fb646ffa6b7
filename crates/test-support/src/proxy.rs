//! A TCP proxy on loopback in front of a real server: it can put the server "far away"
//! (`make bench`'s store 50 ms away) and can hold connections unanswered (a fault test's
//! uploads stopped in the middle, for as long as the test needs).
//!
//! **Latency.** Every chunk of bytes read from one side is written to the other side `one_way` after it
//! was read, in order, in both directions: a link with a fixed propagation delay and no
//! bandwidth limit, like `netem delay` on both ends. A request and its response cross it
//! once each way, so an HTTP exchange on an open connection costs one round trip
//! (2 × `one_way`) more than on loopback, and a new connection one more (the TCP handshake
//! is modelled by holding both directions until `2 × one_way` after the accept). Delaying
//! each chunk rather than only the first byte of a request or response keeps bodies spread
//! over several reads as long as on a real link, and needs no HTTP parsing.
//!
//! **Gate.** A proxy started closed ([`LatencyProxy::start_closed`]) accepts connections but
//! connects them to the server only once [`LatencyProxy::open`] is called: a client's
//! request waits, unanswered and unrefused, like one to a server that hangs, and goes
//! through unchanged when the gate opens. [`LatencyProxy::close`] holds new connections
//! again (open ones go on).
//!
//! The proxy runs on the caller's runtime; its CPU time is the caller's, not the server's
//! nor its clients'.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A running proxy; stops accepting (open connections end with their peers) when dropped.
#[derive(Debug)]
pub struct LatencyProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
    gate: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
}

impl LatencyProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr, one_way: Duration) -> anyhow::Result<Self> {
        Self::listen(upstream, one_way, true).await
    }

    /// Like [`start`](Self::start) with no latency, but closed: connections are accepted
    /// and held until [`open`](Self::open).
    pub async fn start_closed(upstream: SocketAddr) -> anyhow::Result<Self> {
        Self::listen(upstream, Duration::ZERO, false).await
    }

    async fn listen(upstream: SocketAddr, one_way: Duration, open: bool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (gate, _) = watch::channel(open);
        let accepted = Arc::new(AtomicUsize::new(0));
        let (gate_rx, counter) = (gate.subscribe(), Arc::clone(&accepted));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut gate = gate_rx.clone();
                tokio::spawn(async move {
                    // Held, unanswered, while the gate is closed.
                    if gate.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    let accepted = Instant::now();
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let not_before = accepted + 2 * one_way;
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(
                        pipe(cr, sw, one_way, not_before),
                        pipe(sr, cw, one_way, not_before)
                    );
                });
            }
        });
        Ok(LatencyProxy {
            addr,
            task,
            gate,
            accepted,
        })
    }

    /// Lets held connections, and every later one, through to the server.
    pub fn open(&self) {
        self.gate.send_replace(true);
    }

    /// Holds every connection accepted from now on until [`open`](Self::open); connections
    /// already through go on.
    pub fn close(&self) {
        self.gate.send_replace(false);
    }

    /// Connections accepted so far, held or through.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:<port>`, the endpoint to give clients instead of the upstream's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read (and not before
/// `not_before`); shuts `to` down once `from` ends and everything read has been written.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    not_before: Instant,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = (Instant::now() + delay).max(not_before);
                    if tx.send((due, Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: a message's round trip takes two one-way delays,
    /// and bytes come back unchanged and in order.
    #[tokio::test]
    async fn delays_each_direction_and_keeps_bytes() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let one_way = Duration::from_millis(30);
        let proxy = LatencyProxy::start(upstream, one_way).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        // The first exchange also pays for the modelled handshake; time the second.
        let mut got = [0u8; 5];
        c.write_all(b"hello").await.unwrap();
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        let t0 = Instant::now();
        c.write_all(b"again").await.unwrap();
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"again");
        assert!(t0.elapsed() >= 2 * one_way, "took {:?}", t0.elapsed());
    }

    /// A closed proxy accepts a connection but forwards nothing until opened; then the
    /// held bytes go through unchanged.
    #[tokio::test]
    async fn a_closed_gate_holds_connections_until_opened() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&served);
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(&buf[..n]).await.unwrap();
        });
        let proxy = LatencyProxy::start_closed(upstream).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(b"held").await.unwrap();
        let mut got = [0u8; 4];
        let early = tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut got)).await;
        assert!(
            early.is_err(),
            "nothing comes back while the gate is closed"
        );
        assert_eq!(
            served.load(Ordering::SeqCst),
            0,
            "the server saw no connection"
        );
        assert_eq!(proxy.accepted(), 1);
        proxy.open();
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"held");
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }
}
