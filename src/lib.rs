//! pooltag: which Windows driver uses a pool tag, answered from an index.
//!
//! The data's trip, one module per stage: [`walk`] finds files under the roots, [`read`] reads
//! each and tells a driver binary from the rest, [`extract`] finds its candidate tags,
//! [`tagfile`] parses Pooltag.txt, [`store`] writes and reads the SQLite database, [`query`]
//! answers tag questions from it, and [`mod@print`] shows the answers. [`index`] runs the first
//! stages in parallel; [`cli`] turns the command line into a typed [`cli::Command`].

pub mod annotate;
pub mod cli;
pub mod error;
pub mod export;
pub mod extract;
pub mod index;
pub mod merge;
pub mod pool;
pub mod print;
pub mod query;
pub mod read;
pub mod snapshot;
pub mod store;
pub mod tag;
pub mod tagfile;
pub mod text;
pub mod walk;
