//! The one table the bench prints, as Markdown, and the number formats in it.

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Line {
    pub section: &'static str,
    pub measurement: String,
    pub setup: String,
    pub result: String,
    /// Where the time or memory went: CPU per unit of work, Redis commands, timings.
    pub detail: String,
    /// The target this line is judged against and whether it is met; empty if none.
    pub target: String,
}

impl Line {
    pub fn new(section: &'static str, measurement: impl Into<String>) -> Self {
        Line {
            section,
            measurement: measurement.into(),
            setup: String::new(),
            result: String::new(),
            detail: String::new(),
            target: String::new(),
        }
    }

    pub fn setup(mut self, setup: impl Into<String>) -> Self {
        self.setup = setup.into();
        self
    }

    pub fn result(mut self, result: impl Into<String>) -> Self {
        self.result = result.into();
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }

    /// A line for a measurement that could not be taken, with the reason.
    pub fn failed(section: &'static str, measurement: impl Into<String>, why: &str) -> Self {
        Line::new(section, measurement).result(format!("**not available**: {}", cell(why)))
    }
}

/// The table as Markdown.
pub fn markdown(lines: &[Line]) -> String {
    let mut out = String::from(
        "| # | measurement | setup | result | where the time goes | target |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for l in lines {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            l.section,
            cell(&l.measurement),
            cell(&l.setup),
            l.result,
            cell(&l.detail),
            cell(&l.target)
        ));
    }
    out
}

/// Text made safe for one table cell: one line, no pipes, not too long.
pub fn cell(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s = one_line.replace('|', "/");
    if s.chars().count() > 300 {
        s = s.chars().take(300).collect::<String>() + "…";
    }
    s
}

/// `1234567` → `1,234,567`.
pub fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate with 3 significant digits, thousands separated: `412`, `87.3`, `1,234,000`.
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 1000.0 {
        let magnitude = 10f64.powi(per_sec.log10().floor() as i32 - 2);
        int(((per_sec / magnitude).round() * magnitude) as u64)
    } else if per_sec >= 100.0 {
        format!("{per_sec:.0}")
    } else if per_sec >= 10.0 {
        format!("{per_sec:.1}")
    } else {
        format!("{per_sec:.2}")
    }
}

/// Bytes as decimal megabytes (10^6), for throughputs.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// KiB as MiB, for memory.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1_000), "1,000");
        assert_eq!(int(1_234_567), "1,234,567");
        assert_eq!(rate(1_234_567.0), "1,230,000");
        assert_eq!(rate(412.4), "412");
        assert_eq!(rate(87.34), "87.3");
        assert_eq!(rate(1.234), "1.23");
        assert_eq!(mib(102_400), "100.0 MiB");
    }

    #[test]
    fn cells_are_one_line_without_pipes() {
        assert_eq!(cell("a |\n b"), "a / b");
    }
}
