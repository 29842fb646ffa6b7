//! Progress of long CLI work: a bar on a terminal, plain lines otherwise (logs, CI, pipes).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports progress over `total` units of work.
#[derive(Debug)]
pub enum Progress {
    Bar(ProgressBar),
    Lines {
        what: &'static str,
        total: u64,
        done: u64,
        /// Print a line every this many units.
        every: u64,
    },
}

impl Progress {
    /// A bar when stderr is a terminal, else a line every ~10 %.
    pub fn new(total: u64, what: &'static str, bytes: bool) -> Self {
        if std::io::stderr().is_terminal() {
            let template = if bytes {
                "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})"
            } else {
                "{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})"
            };
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_message(what);
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                what,
                total,
                done: 0,
                every: (total / 10).max(1),
            }
        }
    }

    pub fn advance(&mut self, n: u64) {
        match self {
            Progress::Bar(bar) => bar.inc(n),
            Progress::Lines {
                what,
                total,
                done,
                every,
            } => {
                let before = *done / *every;
                *done += n;
                if *done / *every != before || *done == *total {
                    eprintln!("{what}: {done}/{total}");
                }
            }
        }
    }

    pub fn finish(self) {
        if let Progress::Bar(bar) = self {
            bar.finish();
        }
    }
}

/// A reader that advances a [`Progress`] by the bytes it reads.
#[derive(Debug)]
pub struct ProgressReader<R> {
    pub inner: R,
    pub progress: Progress,
}

impl<R: std::io::Read> std::io::Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
