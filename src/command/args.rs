//! An argument cursor over a command's argument vector.
//!
//! Handlers pull arguments one at a time; helper parsers produce Redis's exact
//! error replies for the usual mistakes (not an integer, syntax error).

use bytes::Bytes;

use crate::server::Reply;

/// The arguments of one command, after its name.
#[derive(Debug)]
pub struct Args {
    argv: Vec<Bytes>,
    pos: usize,
}

impl Args {
    /// Wraps a full argument vector; `argv[0]` is the command name and is skipped.
    #[must_use]
    pub fn new(argv: Vec<Bytes>) -> Self {
        Args { argv, pos: 1 }
    }

    /// The command name as sent.
    #[must_use]
    pub fn name(&self) -> &Bytes {
        &self.argv[0]
    }

    /// Number of arguments not yet consumed.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.argv.len() - self.pos
    }

    /// The whole argument vector, name included.
    #[must_use]
    pub fn argv(&self) -> &[Bytes] {
        &self.argv
    }

    /// Takes the next argument.
    ///
    /// # Errors
    /// A syntax error reply when no argument is left (the table's arity check
    /// normally prevents this).
    pub fn next_bytes(&mut self) -> Result<Bytes, Reply> {
        let b = self.argv.get(self.pos).cloned().ok_or_else(syntax_error)?;
        self.pos += 1;
        Ok(b)
    }

    /// Takes the next argument if there is one.
    pub fn try_next(&mut self) -> Option<Bytes> {
        let b = self.argv.get(self.pos).cloned()?;
        self.pos += 1;
        Some(b)
    }

    /// Takes the next argument as a signed 64-bit integer.
    ///
    /// # Errors
    /// `ERR value is not an integer or out of range`.
    pub fn next_i64(&mut self) -> Result<i64, Reply> {
        let b = self.next_bytes()?;
        parse_i64(&b).ok_or_else(not_an_integer)
    }

    /// Takes all remaining arguments.
    pub fn rest(&mut self) -> Vec<Bytes> {
        let rest = self.argv[self.pos..].to_vec();
        self.pos = self.argv.len();
        rest
    }
}

/// Parses a Redis integer argument: optional `-`, digits, no leading zeros,
/// no spaces, fits i64 (Redis's `string2ll`, the same rule apply uses for
/// stored values).
pub use crate::storage::parse_i64;

/// `ERR value is not an integer or out of range`.
#[must_use]
pub fn not_an_integer() -> Reply {
    Reply::error("ERR value is not an integer or out of range")
}

/// `ERR syntax error`.
#[must_use]
pub fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;

    use super::Args;

    /// An argument vector from strings, name first, for handler tests.
    pub(crate) fn args(parts: &[&str]) -> Args {
        Args::new(
            parts
                .iter()
                .map(|p| Bytes::from(p.as_bytes().to_vec()))
                .collect(),
        )
    }
}
