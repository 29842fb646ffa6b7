//! Free TCP ports for the servers the tests start.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// How many times to retry with fresh ports when a port turned out to be taken.
pub(crate) const PORT_ATTEMPTS: usize = 5;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Ports are never handed out twice by one process, so servers started in parallel by
/// different tests of one binary do not collide with each other. (Another process may still
/// grab the port before the server binds it; the servers retry with fresh ports when that
/// happens.)
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("cannot bind 127.0.0.1:0 to find a free port")
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }
}
