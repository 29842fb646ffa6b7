//! Row-by-row file writers. PLACEHOLDER: being written.
