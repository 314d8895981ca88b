//! `<database>.unchanged-runs`: the index runs that found nothing to change.
//!
//! Such a run writes no database: the file a reader may hold stays as it is, and the run costs
//! its walk, not a copy of the database. It appends its record, one JSON object per line, to
//! this log beside the database, and `info` shows the log's runs after the database's own. Each
//! line names the database it was checked against by its size and modification time: the lines
//! left beside a database that was replaced since (by a run that changed something, a merge, a
//! copy) no longer match it and are not shown, and replacing a database removes its log. The log
//! does not travel with the database, and need not: it holds no tag, only that nothing changed.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StoredRun;
use crate::error::{Error, Result};

/// The most runs [`read`] keeps (the latest ones); the rest are only counted.
pub const SHOWN: usize = 100;

/// A line longer than this is not a run record (a run's roots would have to be very many).
const LONGEST_LINE: u64 = 1 << 20;

/// The runs of a database's log that were checked against the database as it is now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnchangedRuns {
    /// The latest [`SHOWN`] of them, oldest first.
    pub runs: Vec<StoredRun>,
    /// How many there are.
    pub count: u64,
    /// Lines that are not run records, as `<log>:<line>: <what is wrong>`.
    pub problems: Vec<String>,
}

/// One line of the log.
#[derive(Serialize, Deserialize)]
struct Line {
    database: Fingerprint,
    #[serde(flatten)]
    run: StoredRun,
}

/// What identifies a database file without reading it: its size and modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    size: u64,
    mtime_ns: i64,
}

impl Fingerprint {
    /// The fingerprint of the file at `db` now.
    pub fn of(db: &Path) -> std::io::Result<Fingerprint> {
        let metadata = fs::metadata(db)?;
        let since = metadata
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Fingerprint {
            size: metadata.len(),
            mtime_ns: i64::try_from(since.as_nanos()).unwrap_or(i64::MAX),
        })
    }
}

/// The log beside `db`.
pub fn log_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_owned();
    name.push(".unchanged-runs");
    db.with_file_name(name)
}

/// Records in the log of `db` that `run` found the database `checked` identifies (taken when
/// the run opened it: a database replaced since is not the one the line names).
pub fn append(db: &Path, checked: Fingerprint, run: &StoredRun) -> Result<()> {
    let log = log_path(db);
    let fail = |e: std::io::Error| {
        Error::new(format!(
            "{}: cannot record the run: {e} (the database is unchanged)",
            log.display()
        ))
    };
    let mut line = serde_json::to_vec(&Line {
        database: checked,
        run: run.clone(),
    })
    .map_err(|e| fail(e.into()))?;
    line.push(b'\n');
    // One write of a whole line: a run that dies leaves at worst one cut line, which `read`
    // reports and skips.
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(fail)?;
    file.write_all(&line).map_err(fail)
}

/// The runs of the log checked against `db` as it is now; none when there is no log. A log that
/// cannot be read is one of the problems, not an error: it only adds to what `info` shows.
pub fn read(db: &Path) -> UnchangedRuns {
    let log = log_path(db);
    let mut found = UnchangedRuns::default();
    let shown = log.display();
    let file = match File::open(&log) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return found,
        Err(e) => {
            found.problems.push(format!("{shown}: {e}"));
            return found;
        }
    };
    let Ok(database) = Fingerprint::of(db) else {
        return found;
    };
    let mut reader = BufReader::new(file);
    let mut latest = VecDeque::new();
    let mut bytes = Vec::new();
    for number in 1.. {
        bytes.clear();
        let read = match (&mut reader)
            .take(LONGEST_LINE)
            .read_until(b'\n', &mut bytes)
        {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) => {
                found.problems.push(format!("{shown}:{number}: {e}"));
                break;
            }
        };
        if !bytes.ends_with(b"\n") && read as u64 == LONGEST_LINE {
            found.problems.push(format!(
                "{shown}:{number}: longer than {LONGEST_LINE} bytes"
            ));
            if let Err(e) = skip_line(&mut reader) {
                found.problems.push(format!("{shown}:{number}: {e}"));
                break;
            }
            continue;
        }
        match serde_json::from_slice::<Line>(&bytes) {
            Ok(line) if line.database == database => {
                found.count += 1;
                if latest.len() == SHOWN {
                    latest.pop_front();
                }
                latest.push_back(line.run);
            }
            Ok(_) => {}
            Err(e) => found
                .problems
                .push(format!("{shown}:{number}: not a run record: {e}")),
        }
    }
    found.runs = latest.into();
    found
}

/// Reads up to the end of the current line.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match memchr::memchr(b'\n', buffer) {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(());
            }
            None => {
                let all = buffer.len();
                reader.consume(all);
            }
        }
    }
}

/// Removes the log of a database that was just replaced: its lines were about the old file.
pub fn remove(db: &Path) {
    let _ = fs::remove_file(log_path(db));
}
