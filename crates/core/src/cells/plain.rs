//! A fast path for the common rows: flat objects of plain strings, numbers, booleans and
//! nulls, read byte by byte without serde's per-value dispatch.
//!
//! serde_json's parser was the larger half of rendering a small delivery: a generic
//! visitor per key and per value, and a string scanner built for long strings where rows
//! have short ones. This reads a row array the same way for the rows it accepts and gives
//! up at the first thing it does not handle: an escape or a control character in a string
//! (serde_json decodes the one and refuses the other), a nested object or array, a
//! literal or number it cannot read, a misplaced separator. It then says how many rows it
//! passed on, and the caller reads the rest with serde_json from there
//! ([`crate::rows::InlineRows::for_each_cells`]), so what a row means, and every error
//! message, stays serde_json's. A test compares the two on generated rows.

use serde_json::{Number, Value};

use super::{ColumnIndex, Filling, set_text};

/// How far [`each_plain_row`] got.
#[derive(Debug)]
pub(crate) enum Plain<E> {
    /// Every row was read; how many.
    Done(u64),
    /// The callback failed.
    Stopped(E),
    /// Something to leave to serde_json: the first `rows` rows were passed on, the rest
    /// were not.
    TakeOver { rows: u64 },
}

/// Reads the JSON array of objects in `text`, calling `f` with each row's cells in
/// `columns` order (one reused buffer, as [`ColumnIndex::seed`] fills it).
pub(crate) fn each_plain_row<E>(
    text: &str,
    columns: &ColumnIndex,
    f: &mut impl FnMut(&super::Cells) -> Result<(), E>,
) -> Plain<E> {
    let mut scan = Scan { text, i: 0 };
    let mut cells = Vec::with_capacity(columns.len());
    let mut rows = 0;
    if scan.eat(b'[').is_none() {
        return Plain::TakeOver { rows };
    }
    if scan.peek() == Some(b']') {
        return Plain::Done(0);
    }
    loop {
        if scan.row(columns, &mut cells).is_none() {
            return Plain::TakeOver { rows };
        }
        if let Err(e) = f(&cells) {
            return Plain::Stopped(e);
        }
        rows += 1;
        match scan.peek() {
            Some(b',') => scan.i += 1,
            Some(b']') => return Plain::Done(rows),
            _ => return Plain::TakeOver { rows },
        }
    }
}

/// The bytes that end a plain string's scan: its closing quote, or what makes it not
/// plain (an escape, a control character).
static STRING_STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        stops[c] = true;
        c += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// Where the reading is. Every method returns `None` to give up.
struct Scan<'a> {
    text: &'a str,
    i: usize,
}

// The readers below are `#[inline(always)]`: left to the compiler, they were calls made a
// dozen times per row, 3 % of the in-process instructions (callgrind).
impl<'a> Scan<'a> {
    #[inline(always)]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte after JSON whitespace, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        let b = self.bytes();
        // Compact JSON has none: every byte that means something is above b' '.
        if let Some(&c) = b.get(self.i)
            && c > b' '
        {
            return Some(c);
        }
        while let Some(&c) = b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(c);
            }
            self.i += 1;
        }
        None
    }

    /// Consumes `c`, after whitespace.
    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string's text, from just after its opening quote to its closing one (consumed):
    /// only when it holds no escape and no control character.
    #[inline(always)]
    fn plain_str(&mut self) -> Option<&'a str> {
        let start = self.i;
        let len = self.bytes()[start..]
            .iter()
            .position(|&c| STRING_STOPS[usize::from(c)])?;
        let end = start + len;
        if self.bytes()[end] != b'"' {
            return None;
        }
        // Both ends are at ASCII quotes, so on character boundaries.
        let s = &self.text[start..end];
        self.i = end + 1;
        Some(s)
    }

    /// Consumes `word` (a literal whose first byte was seen).
    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.bytes().get(self.i..end)? == word).then(|| self.i = end)
    }

    /// Reads one value into `cell` (or past it, for a key no column has).
    #[inline(always)]
    fn value(&mut self, cell: Option<&mut Option<Value>>) -> Option<()> {
        let value = match self.peek()? {
            b'"' => {
                self.i += 1;
                let s = self.plain_str()?;
                if let Some(cell) = cell {
                    set_text(cell, s);
                }
                return Some(());
            }
            b't' => self.literal(b"true").map(|()| Value::Bool(true))?,
            b'f' => self.literal(b"false").map(|()| Value::Bool(false))?,
            b'n' => self.literal(b"null").map(|()| Value::Null)?,
            b'-' | b'0'..=b'9' => {
                let b = self.bytes();
                let start = self.i;
                while matches!(
                    b.get(self.i),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                ) {
                    self.i += 1;
                }
                Value::Number(number(&self.text[start..self.i])?)
            }
            _ => return None,
        };
        if let Some(cell) = cell {
            *cell = Some(value);
        }
        Some(())
    }

    /// Reads one object into `cells`, as [`super::CellsSeed`] does.
    fn row(&mut self, columns: &ColumnIndex, cells: &mut Vec<Option<Value>>) -> Option<()> {
        self.eat(b'{')?;
        let mut filling = Filling::begin(cells, columns.len());
        let mut hint = 0;
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                self.eat(b'"')?;
                let key = self.plain_str()?;
                self.eat(b':')?;
                match columns.position(key, hint) {
                    // A repeated key: the last one wins, as in a map.
                    Some(i) => {
                        self.value(Some(&mut cells[i]))?;
                        filling.set(i);
                        hint = i + 1;
                    }
                    None => self.value(None)?,
                }
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        filling.end(cells);
        Some(())
    }
}

/// A number's text as serde_json reads it: up to 18 digits without a leading zero are a
/// `u64` here (what serde_json makes of them); anything else is parsed by serde_json itself.
fn number(text: &str) -> Option<Number> {
    let b = text.as_bytes();
    if (1..=18).contains(&b.len())
        && b.iter().all(u8::is_ascii_digit)
        && (b[0] != b'0' || b.len() == 1)
    {
        let n = b.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        return Some(n.into());
    }
    serde_json::from_str(text).ok()
}
