//! Extraction: the candidate tags of one driver binary.
//!
//! The `bytes` level (every printable four-byte window) lives in [`bytes`]; stronger evidence
//! levels come from the code and data of the image.

pub mod bytes;

/// How strongly a file is tied to a tag, weakest first. The database stores the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Evidence {
    /// The four bytes appear somewhere in the file.
    Bytes = 1,
    /// A 4-byte-aligned printable value in an initialized data section.
    Data = 2,
    /// A 32-bit immediate in executable code.
    Code = 3,
    /// Loaded into an argument of a call to something other than a known pool API.
    Arg = 4,
    /// The tag argument of a call to a known tag-taking API.
    Call = 5,
}

impl Evidence {
    /// Every level, strongest first.
    pub const ALL: [Evidence; 5] = [
        Evidence::Call,
        Evidence::Arg,
        Evidence::Code,
        Evidence::Data,
        Evidence::Bytes,
    ];

    /// The name used in output and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Evidence::Bytes => "bytes",
            Evidence::Data => "data",
            Evidence::Code => "code",
            Evidence::Arg => "arg",
            Evidence::Call => "call",
        }
    }

    /// The level stored as `number` in the database, if it is one.
    pub fn from_number(number: i64) -> Option<Evidence> {
        Evidence::ALL.into_iter().find(|e| *e as i64 == number)
    }
}
