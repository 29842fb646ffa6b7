//! The byte sink under every writer: the caller's `Write`, gzip-compressed or not.

use std::io::{self, Write};

use flate2::write::GzEncoder;

use crate::Compression;

/// The caller's output, optionally behind a gzip encoder (default level).
///
/// `flush()` is passed through. The writers never flush mid-file (flushing a gzip stream
/// emits a sync block and costs compression); the `csv` crate flushes once as it finishes.
pub(super) enum Sink<W: Write> {
    Plain(W),
    /// Boxed: the encoder's state is a few hundred bytes, the plain case a pointer or two.
    Gzip(Box<GzEncoder<W>>),
}

impl<W: Write> Sink<W> {
    pub(super) fn new(out: W, compression: Compression) -> Self {
        match compression {
            Compression::None => Sink::Plain(out),
            Compression::Gzip => Sink::Gzip(Box::new(GzEncoder::new(
                out,
                flate2::Compression::default(),
            ))),
        }
    }

    /// Writes the gzip footer, if any, and flushes the caller's output.
    pub(super) fn finish(self) -> io::Result<()> {
        let mut out = match self {
            Sink::Plain(out) => out,
            Sink::Gzip(encoder) => encoder.finish()?,
        };
        out.flush()
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(out) => out.write(buf),
            Sink::Gzip(encoder) => encoder.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(out) => out.write_all(buf),
            Sink::Gzip(encoder) => encoder.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(out) => out.flush(),
            Sink::Gzip(encoder) => encoder.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::gunzip;
    use super::*;

    #[test]
    fn plain_passes_bytes_through() {
        let mut out = Vec::new();
        let mut sink = Sink::new(&mut out, Compression::None);
        sink.write_all(b"hello").unwrap();
        sink.finish().unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn gzip_writes_a_complete_stream_with_footer() {
        let mut out = Vec::new();
        let mut sink = Sink::new(&mut out, Compression::Gzip);
        sink.write_all("héllo, wörld\n".repeat(1000).as_bytes())
            .unwrap();
        sink.finish().unwrap();
        assert_eq!(&out[..2], [0x1f, 0x8b], "gzip magic");
        assert!(out.len() < 13_000, "compressed: {} bytes", out.len());
        // gunzip() reads to the end, which checks the CRC32 and length in the footer.
        assert_eq!(gunzip(&out), "héllo, wörld\n".repeat(1000).as_bytes());
    }

    #[test]
    fn gzip_of_nothing_is_still_a_valid_stream() {
        let mut out = Vec::new();
        Sink::new(&mut out, Compression::Gzip).finish().unwrap();
        assert!(!out.is_empty());
        assert_eq!(gunzip(&out), b"");
    }
}
