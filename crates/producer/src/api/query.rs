//! Query strings with errors that name the parameter, and pagination limits.

use std::collections::HashMap;

use courier_core::ValidationErrors;

use super::error::ApiError;

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// A query string's parameters; anything not taken by the handler is refused.
#[derive(Debug)]
pub struct Params {
    map: HashMap<String, String>,
    errors: ValidationErrors,
}

impl Params {
    pub fn new(map: HashMap<String, String>) -> Self {
        Self {
            map,
            errors: ValidationErrors::default(),
        }
    }

    /// Takes `name` and parses it, recording a named error if it does not parse.
    pub fn take<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.map.remove(name)?;
        self.errors.check(name, parse(&raw))
    }

    /// [`Self::take`] for a parameter the route cannot do without: a missing one is a named
    /// error too (`is required`), reported with the others by [`Self::finish`].
    pub fn require<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if !self.map.contains_key(name) {
            self.errors.push(name, "is required");
            return None;
        }
        self.take(name, parse)
    }

    pub fn limit(&mut self) -> usize {
        self.take("limit", |s| match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(format!("must be a number from 1 to {MAX_LIMIT}")),
        })
        .unwrap_or(DEFAULT_LIMIT)
    }

    /// Fails with every problem, including parameters the route does not know.
    pub fn finish(mut self) -> Result<(), ApiError> {
        let mut unknown: Vec<_> = self.map.keys().cloned().collect();
        unknown.sort();
        for name in unknown {
            self.errors.push(name, "is not a known query parameter");
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.errors))
        }
    }
}
