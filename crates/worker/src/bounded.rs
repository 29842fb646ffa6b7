//! Bounds on a delivery's rows by reference, whatever the source sends: one NDJSON line
//! (`COURIER_MAX_ROW_BYTES`), all of the rows after decompression (`COURIER_MAX_ROWS_BYTES`),
//! and the whole fetch (`COURIER_ROWS_FETCH_TIMEOUT_SECS`).
//!
//! Reading stops at a limit, it never reads on to find out by how much: a gzip bomb is
//! decompressed only up to the total limit, an endless line is buffered only up to the line
//! limit, and a server that trickles one byte at a time is cut off at the deadline. The
//! limits travel as [`Exceeded`] inside an [`io::Error`], so that they cross the gzip
//! decoder and the async-to-sync bridge untouched; [`Exceeded::of`] finds them again.

use std::io::{self, BufRead, Read};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use courier_core::ErrorCode;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The limits on one delivery's rows by reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowLimits {
    /// Longest NDJSON line, in bytes, its `\n` excluded.
    pub max_row_bytes: usize,
    /// Most bytes of rows one delivery reads, counted after decompression.
    pub max_rows_bytes: u64,
    /// How long the whole fetch may take: from the request until the last byte is read
    /// (rendering and uploading run alongside, so they count too).
    pub fetch_timeout: Duration,
}

impl Default for RowLimits {
    /// 1 MiB per line, 10 GiB per delivery, 30 minutes per fetch.
    fn default() -> Self {
        Self {
            max_row_bytes: 1024 * 1024,
            max_rows_bytes: 10 * 1024 * 1024 * 1024,
            fetch_timeout: Duration::from_secs(1800),
        }
    }
}

/// Which limit a row stream ran into. The messages name the limit and never the
/// reference (whose query string may carry a signed token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error(
        "rows line {line} is longer than COURIER_MAX_ROW_BYTES ({limit} bytes); reading stopped there"
    )]
    RowTooLong { line: u64, limit: usize },
    #[error(
        "the rows are larger than COURIER_MAX_ROWS_BYTES ({limit} bytes, counted decompressed); \
         reading stopped there"
    )]
    RowsTooLarge { limit: u64 },
    #[error("fetching the rows took longer than COURIER_ROWS_FETCH_TIMEOUT_SECS ({secs} s)")]
    FetchTimeout { secs: u64 },
}

impl Exceeded {
    /// The permanent error code of this limit.
    pub fn code(&self) -> ErrorCode {
        match self {
            Exceeded::RowTooLong { .. } => ErrorCode::RowTooLong,
            Exceeded::RowsTooLarge { .. } => ErrorCode::RowsTooLarge,
            Exceeded::FetchTimeout { .. } => ErrorCode::RowsFetchTimeout,
        }
    }

    /// The limit `e` carries, if it is one of these.
    pub fn of(e: &io::Error) -> Option<&Exceeded> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Exceeded>())
    }

    fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

/// An async byte source that fails with [`Exceeded::FetchTimeout`] once `deadline` has
/// passed, however steadily (or slowly) bytes still arrive.
pub struct Deadline<R> {
    inner: R,
    sleep: Pin<Box<Sleep>>,
    secs: u64,
}

impl<R> std::fmt::Debug for Deadline<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Deadline {{ after: {} s }}", self.secs)
    }
}

impl<R> Deadline<R> {
    /// `inner`, cut off at `deadline`; `limit` is the timeout it came from, for the message.
    pub fn new(inner: R, deadline: Instant, limit: Duration) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            secs: limit.as_secs(),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Deadline<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Polling the timer also registers this task to wake at the deadline, so a source
        // that sends nothing at all is cut off too.
        if self.sleep.as_mut().poll(cx).is_ready() {
            let secs = self.secs;
            return Poll::Ready(Err(Exceeded::FetchTimeout { secs }.into_io()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// NDJSON lines read from decompressed bytes with both size limits: a line is never
/// buffered beyond `max_row_bytes` (+1 to see that it is too long), and no byte beyond
/// `max_rows_bytes` (+1) is ever read.
pub struct BoundedLines<R> {
    inner: R,
    limits: RowLimits,
    /// Bytes read so far.
    read: u64,
    /// Lines returned so far.
    lines: u64,
    buf: Vec<u8>,
}

impl<R> std::fmt::Debug for BoundedLines<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedLines")
            .field("limits", &self.limits)
            .field("read", &self.read)
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> BoundedLines<R> {
    pub fn new(inner: R, limits: RowLimits) -> Self {
        Self {
            inner,
            limits,
            read: 0,
            lines: 0,
            buf: Vec::new(),
        }
    }

    /// Bytes read so far (decompressed).
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// The next line, with its 0-based index, without its line break (`\n` or `\r\n`);
    /// `None` at the end. A line that is not UTF-8 is an [`io::ErrorKind::InvalidData`]
    /// error, as with [`BufRead::lines`].
    pub fn next_line(&mut self) -> io::Result<Option<(u64, &str)>> {
        self.buf.clear();
        let row_cap = self.limits.max_row_bytes as u64 + 1;
        let total_left = self.limits.max_rows_bytes.saturating_sub(self.read);
        let cap = row_cap.min(total_left.saturating_add(1));
        let n = (&mut self.inner)
            .take(cap)
            .read_until(b'\n', &mut self.buf)? as u64;
        self.read += n;
        if n == 0 {
            return Ok(None);
        }
        if self.read > self.limits.max_rows_bytes {
            return Err(Exceeded::RowsTooLarge {
                limit: self.limits.max_rows_bytes,
            }
            .into_io());
        }
        let ended = self.buf.last() == Some(&b'\n');
        if !ended && n == row_cap {
            return Err(Exceeded::RowTooLong {
                line: self.lines + 1,
                limit: self.limits.max_row_bytes,
            }
            .into_io());
        }
        if ended {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        let index = self.lines;
        self.lines += 1;
        let line = std::str::from_utf8(&self.buf).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )
        })?;
        Ok(Some((index, line)))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Write};

    use super::*;

    /// An endless (or `len`-byte) stream that repeats `pattern`, made on the fly: the
    /// tests never hold more than a buffer of it.
    struct Generator {
        pattern: Vec<u8>,
        at: usize,
        left: u64,
        /// Bytes handed out so far.
        given: u64,
    }

    impl Generator {
        fn new(pattern: &[u8], len: u64) -> Self {
            Self {
                pattern: pattern.to_vec(),
                at: 0,
                left: len,
                given: 0,
            }
        }
    }

    impl Read for Generator {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let mut n = 0;
            while n < out.len() && self.left > 0 {
                out[n] = self.pattern[self.at];
                self.at = (self.at + 1) % self.pattern.len();
                self.left -= 1;
                n += 1;
            }
            self.given += n as u64;
            Ok(n)
        }
    }

    fn limits(max_row: usize, max_rows: u64) -> RowLimits {
        RowLimits {
            max_row_bytes: max_row,
            max_rows_bytes: max_rows,
            ..RowLimits::default()
        }
    }

    fn exceeded(e: io::Error) -> Exceeded {
        Exceeded::of(&e).cloned().unwrap_or_else(|| panic!("{e}"))
    }

    /// Reads every line; the error that stopped it, if any.
    fn drain<R: BufRead>(lines: &mut BoundedLines<R>) -> Result<u64, io::Error> {
        let mut count = 0;
        while lines.next_line()?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    #[test]
    fn lines_within_the_limits_read_back_as_lines() {
        let text = b"{\"a\":1}\r\n\n{\"a\":22}\n{\"a\":3}";
        let mut lines = BoundedLines::new(&text[..], limits(8, 100));
        let mut got = Vec::new();
        while let Some((i, l)) = lines.next_line().unwrap() {
            got.push((i, l.to_owned()));
        }
        assert_eq!(
            got,
            [
                (0, "{\"a\":1}".to_owned()),
                (1, String::new()),
                (2, "{\"a\":22}".to_owned()),
                (3, "{\"a\":3}".to_owned()),
            ]
        );
        assert_eq!(lines.bytes_read(), text.len() as u64);
        // Exactly at both limits is still allowed.
        let mut exact = BoundedLines::new(&b"12345678\n"[..], limits(8, 9));
        assert_eq!(drain(&mut exact).unwrap(), 1);
        let mut bad = BoundedLines::new(&b"ok\n\xff\xfe\n"[..], limits(8, 100));
        let e = drain(&mut bad).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(Exceeded::of(&e).is_none());
    }

    #[test]
    fn an_endless_line_stops_at_the_line_limit_without_being_buffered() {
        const LIMIT: usize = 1024 * 1024;
        let mut source = Generator::new(b"x", u64::MAX);
        let mut lines = BoundedLines::new(
            BufReader::with_capacity(64 * 1024, &mut source),
            limits(LIMIT, u64::MAX),
        );
        let e = exceeded(drain(&mut lines).unwrap_err());
        assert_eq!(
            e,
            Exceeded::RowTooLong {
                line: 1,
                limit: LIMIT
            }
        );
        assert_eq!(lines.bytes_read(), LIMIT as u64 + 1);
        assert!(lines.buf.capacity() <= 2 * LIMIT + 64 * 1024);
        drop(lines);
        assert!(
            source.given <= LIMIT as u64 + 64 * 1024,
            "read {} bytes",
            source.given
        );
        assert_eq!(e.code(), ErrorCode::RowTooLong);
        assert!(
            e.to_string()
                .contains("COURIER_MAX_ROW_BYTES (1048576 bytes)")
        );

        // A long line after good ones is named by its number.
        let mut source = Generator::new(b"{}\n{}\n", 12);
        let tail = Generator::new(b"y", u64::MAX);
        let mut lines = BoundedLines::new(
            BufReader::new((&mut source).chain(tail)),
            limits(10, u64::MAX),
        );
        let e = exceeded(drain(&mut lines).unwrap_err());
        assert_eq!(e, Exceeded::RowTooLong { line: 5, limit: 10 });
    }

    #[test]
    fn endless_rows_stop_at_the_total_limit() {
        let mut source = Generator::new(b"{\"hotel\":\"H-1\",\"score\":7}\n", u64::MAX);
        let mut lines = BoundedLines::new(BufReader::new(&mut source), limits(1024, 1_000_000));
        let e = exceeded(drain(&mut lines).unwrap_err());
        assert_eq!(e, Exceeded::RowsTooLarge { limit: 1_000_000 });
        assert_eq!(lines.bytes_read(), 1_000_001, "not one byte more is read");
        assert_eq!(e.code(), ErrorCode::RowsTooLarge);
        // Just at the limit is fine.
        let mut lines = BoundedLines::new(&b"{}\n{}\n"[..], limits(1024, 6));
        assert_eq!(drain(&mut lines).unwrap(), 2);
    }

    /// Endless concatenated gzip members, each expanding a little under 1,000-fold: what
    /// a gzip bomb streams, made one member at a time.
    struct Bomb {
        member: Vec<u8>,
        at: usize,
        /// Compressed bytes handed out so far.
        given: u64,
    }

    impl Read for Bomb {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.member.len() - self.at);
            out[..n].copy_from_slice(&self.member[self.at..self.at + n]);
            self.at = (self.at + n) % self.member.len();
            self.given += n as u64;
            Ok(n)
        }
    }

    #[test]
    fn a_gzip_bomb_is_decompressed_only_up_to_the_total_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..100_000 {
            gz.write_all(b"{\"a\":0}\n").unwrap();
        }
        let member = gz.finish().unwrap();
        assert!(member.len() < 4096, "{} bytes", member.len());
        let mut bomb = Bomb {
            member,
            at: 0,
            given: 0,
        };
        const LIMIT: u64 = 8 * 1024 * 1024;
        let decoder = flate2::bufread::MultiGzDecoder::new(BufReader::new(&mut bomb));
        let mut lines = BoundedLines::new(BufReader::new(decoder), limits(1024, LIMIT));
        let e = exceeded(drain(&mut lines).unwrap_err());
        assert_eq!(e, Exceeded::RowsTooLarge { limit: LIMIT });
        assert_eq!(lines.bytes_read(), LIMIT + 1);
        drop(lines);
        // The decoder read ahead by at most a few buffers of compressed bytes.
        assert!(
            bomb.given < LIMIT / 100,
            "{} compressed bytes read",
            bomb.given
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_off_a_trickle_and_a_silence() {
        use tokio::io::AsyncReadExt;
        // One byte a second, for ever.
        let trickle = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, io::Error>(bytes::Bytes::from_static(b"x")), ()))
        });
        let limit = Duration::from_secs(3);
        let started = Instant::now();
        let mut r = Deadline::new(
            tokio_util::io::StreamReader::new(Box::pin(trickle)),
            started + limit,
            limit,
        );
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(Exceeded::of(&e), Some(&Exceeded::FetchTimeout { secs: 3 }));
        assert_eq!(out, b"xx", "bytes before the deadline were read");
        assert_eq!(started.elapsed(), limit);
        assert_eq!(
            Exceeded::of(&e).unwrap().code(),
            ErrorCode::RowsFetchTimeout
        );

        // A source that sends nothing at all is cut off too.
        let (_writer, silent) = tokio::io::duplex(64);
        let started = Instant::now();
        let mut r = Deadline::new(silent, started + limit, limit);
        let e = r.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(Exceeded::of(&e), Some(&Exceeded::FetchTimeout { secs: 3 }));
        assert_eq!(started.elapsed(), limit);
    }
}
