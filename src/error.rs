//! The one error type of pooltag's commands. Every message is a full sentence for a user and
//! names the file it is about; `main` prints it after `pooltag: ` and exits with status 2.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum Error {
    /// Standard output was closed by its reader (`pooltag query ... | head`): end quietly.
    BrokenPipe,
    /// Anything else, already worded for the user.
    Message(String),
}

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error::Message(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BrokenPipe => f.write_str("broken pipe"),
            Error::Message(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

/// Errors writing the output.
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Error::BrokenPipe
        } else {
            Error::Message(format!("cannot write the output: {e}"))
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
