//! Errors with a kind the C ABI maps to a code, and a message that says what, where and what to do.
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Io = 1,
    Corrupt = 2,
    NotFound = 3,
    Linkage = 4,
    Invalid = 5,
    Unsupported = 6,
    Internal = 7,
    Busy = 8,
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub msg: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Error {
        Error { kind, msg: msg.into() }
    }
    pub fn corrupt(msg: impl Into<String>) -> Error {
        Error::new(Kind::Corrupt, msg)
    }
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::new(Kind::Invalid, msg)
    }
    pub fn io(what: &str, e: std::io::Error) -> Error {
        let kind = if e.kind() == std::io::ErrorKind::NotFound { Kind::NotFound } else { Kind::Io };
        Error::new(kind, format!("{what}: {e}"))
    }
    /// Prefixes the message with a location (file path).
    pub fn at(mut self, where_: &str) -> Error {
        if !self.msg.starts_with(where_) {
            self.msg = format!("{where_}: {}", self.msg);
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

pub fn corrupt<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::corrupt(msg))
}
