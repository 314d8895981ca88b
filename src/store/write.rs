//! Building a database: into a temporary file beside the target, renamed over it at the end.
//!
//! Crash safety: until the rename, the target is untouched, so an interrupted run (Ctrl-C,
//! kill -9, disk full, any error) leaves the previous database whole. The temporary file is named
//! `<target>.<pid>.tmp`; a run removes the ones earlier runs left behind, but never one that a
//! running index still holds (on Unix it holds a lock on it; on Windows SQLite's open handle
//! prevents its deletion).
//!
//! Memory: the bytes level is a posting list per tag, which needs every file's tags before any
//! list is complete. (tag, file) pairs are collected up to a budget ([`PAIR_BUDGET`] by default),
//! then sorted and
//! written as one segment to a SQLite TEMP table (a file SQLite deletes itself); at the end the
//! segments are merged in tag order. Memory stays bounded however many files there are.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::{describe, migrate, postings};
use crate::error::{Error, Result};
use crate::extract::Findings;
use crate::read::PeSummary;
use crate::tag::Tag;
use crate::tagfile::TagFile;

/// (tag, file) pairs held in memory before a segment is written: 32 MB.
pub const PAIR_BUDGET: usize = 4 << 20;

/// A driver binary ready to be stored.
pub struct DriverRecord {
    pub path: String,
    pub name: String,
    pub size: u64,
    pub mtime_ns: Option<i64>,
    pub image: PeSummary,
    /// Distinct bytes-level tags.
    pub tags: Vec<Tag>,
    /// Stronger evidence from the code and data.
    pub findings: Findings,
}

/// Provenance of a run, written when it ends.
pub struct RunRecord {
    pub host: String,
    pub os: String,
    pub roots: Vec<String>,
    pub started_at: i64,
    pub finished_at: i64,
    pub files_seen: u64,
    pub drivers_indexed: u64,
    pub bytes_read: u64,
    pub tag_file_entries: u64,
    pub errors: u64,
}

/// A database being built. Dropping it without [`IndexWriter::finish`] deletes the temporary file
/// and leaves the target as it was.
pub struct IndexWriter {
    conn: Option<Connection>,
    temp: PathBuf,
    target: PathBuf,
    /// Held for the whole run so that no other run takes the temporary file for a stale one.
    _lock: Option<File>,
    pairs: Vec<u64>,
    pair_budget: usize,
    segments: u32,
    run_id: i64,
}

impl IndexWriter {
    /// Starts a new database that will replace `target`, holding at most `pair_budget`
    /// (tag, file) pairs in memory.
    pub fn create(target: &Path, pair_budget: usize) -> Result<IndexWriter> {
        let dir = target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if target.is_dir() {
            return Err(Error::new(format!(
                "{}: is a directory, not a pooltag database",
                target.display()
            )));
        }
        fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
        remove_stale_temporaries(target);
        let temp = temporary_path(target);
        let _ = fs::remove_file(&temp);
        let conn = Connection::open(&temp).map_err(|e| describe(&temp, &e))?;
        let mut writer = IndexWriter {
            conn: Some(conn),
            temp: temp.clone(),
            target: target.to_owned(),
            _lock: lock(&temp),
            pairs: Vec::new(),
            pair_budget: pair_budget.max(1),
            segments: 0,
            run_id: 0,
        };
        writer.prepare().map_err(|e| describe(&temp, &e))?;
        Ok(writer)
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("connection open until finish")
    }

    fn prepare(&mut self) -> rusqlite::Result<()> {
        let conn = self.conn.as_mut().expect("connection open until finish");
        // The file is disposable until the rename: no journal, no syncs until the end.
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA temp_store = FILE; \
             PRAGMA cache_size = -32768; PRAGMA locking_mode = EXCLUSIVE;",
        )?;
        migrate(conn)?;
        conn.execute_batch(
            "CREATE TEMP TABLE posting_segment (tag INTEGER NOT NULL, segment INTEGER NOT NULL, \
             file_ids BLOB NOT NULL, PRIMARY KEY (tag, segment)) WITHOUT ROWID; BEGIN;",
        )?;
        conn.execute(
            "INSERT INTO run (pooltag_version, host, os, roots, started_at, finished_at, \
             files_seen, drivers_indexed, bytes_read, distinct_tags, tag_file_entries, errors) \
             VALUES ('', '', '', '[]', 0, 0, 0, 0, 0, 0, 0, 0)",
            [],
        )?;
        self.run_id = conn.last_insert_rowid();
        Ok(())
    }

    fn fail(&self, e: rusqlite::Error) -> Error {
        describe(&self.temp, &e)
    }

    /// Stores one driver binary and its tags.
    pub fn add_driver(&mut self, record: &DriverRecord) -> Result<()> {
        let inserted = self
            .conn()
            .prepare_cached(
                "INSERT INTO file (run_id, path, name, size, mtime_ns, machine, subsystem) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (path) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    self.run_id,
                    record.path,
                    record.name,
                    record.size as i64,
                    record.mtime_ns,
                    record.image.machine,
                    record.image.subsystem
                ])
            })
            .map_err(|e| self.fail(e))?;
        if inserted == 0 {
            return Ok(()); // the same path reached through two overlapping roots
        }
        let file_id = self.conn().last_insert_rowid();
        self.add_findings(file_id, &record.findings)
            .map_err(|e| self.fail(e))?;
        let file_id = file_id as u64;
        self.pairs.extend(
            record
                .tags
                .iter()
                .map(|tag| (u64::from(tag.key()) << 32) | file_id),
        );
        if self.pairs.len() >= self.pair_budget {
            self.write_segment()?;
        }
        Ok(())
    }

    fn add_findings(&self, file_id: i64, findings: &Findings) -> rusqlite::Result<()> {
        let conn = self.conn();
        let mut level = conn
            .prepare_cached("INSERT INTO file_tag (tag, file_id, evidence) VALUES (?1, ?2, ?3)")?;
        for (tag, evidence) in &findings.levels {
            level.execute(params![tag.key(), file_id, *evidence as i64])?;
        }
        let mut site = conn.prepare_cached(
            "INSERT INTO site (file_id, tag, evidence, api, rva, section, offset) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for s in &findings.sites {
            site.execute(params![
                file_id,
                s.tag.key(),
                s.evidence as i64,
                s.api,
                s.rva,
                s.section,
                s.offset
            ])?;
        }
        Ok(())
    }

    /// Stores a parsed tag file; returns the number of entries stored (0 when this path was
    /// already stored).
    pub fn add_tag_file(&mut self, path: &str, parsed: &TagFile) -> Result<u64> {
        let conn = self.conn.as_ref().expect("connection open until finish");
        let store = || -> rusqlite::Result<u64> {
            if conn.execute(
                "INSERT INTO tag_file (path) VALUES (?1) ON CONFLICT (path) DO NOTHING",
                [path],
            )? == 0
            {
                return Ok(0);
            }
            let id = conn.last_insert_rowid();
            let mut insert = conn.prepare_cached(
                "INSERT INTO tag_entry (tag_file_id, line, tag, binary, description) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for entry in &parsed.entries {
                insert.execute(params![
                    id,
                    entry.line,
                    entry.tag,
                    entry.binary,
                    entry.description
                ])?;
            }
            Ok(parsed.entries.len() as u64)
        };
        store().map_err(|e| self.fail(e))
    }

    /// Sorts the pairs in memory and writes them as one segment of posting lists.
    fn write_segment(&mut self) -> Result<()> {
        let pairs = std::mem::take(&mut self.pairs);
        let segment = self.segments;
        self.segments += 1;
        self.write_postings(pairs, |conn, key, blob| {
            conn.prepare_cached(
                "INSERT INTO temp.posting_segment (tag, segment, file_ids) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, segment, blob])
            .map(drop)
        })
    }

    /// Groups sorted pairs by tag and hands each posting list to `store`.
    fn write_postings(
        &mut self,
        mut pairs: Vec<u64>,
        store: impl Fn(&Connection, u32, &[u8]) -> rusqlite::Result<()>,
    ) -> Result<()> {
        // Not rayon's parallel sort: its workers may all be waiting for this thread to take
        // their results, and would never come to help.
        pairs.sort_unstable();
        let conn = self.conn.as_ref().expect("connection open until finish");
        let mut ids: Vec<i64> = Vec::new();
        let mut blob: Vec<u8> = Vec::new();
        let result = pairs
            .chunk_by(|a, b| a >> 32 == b >> 32)
            .try_for_each(|group| {
                ids.clear();
                ids.extend(group.iter().map(|p| i64::from(*p as u32)));
                blob.clear();
                postings::encode(&ids, &mut blob);
                store(conn, (group[0] >> 32) as u32, &blob)
            });
        result.map_err(|e| self.fail(e))
    }

    /// Writes the posting lists, the run's provenance, and replaces the target. Returns the number
    /// of distinct tags.
    pub fn finish(mut self, mut run: RunRecord) -> Result<u64> {
        let insert = |conn: &Connection, key: u32, blob: &[u8]| {
            conn.prepare_cached("INSERT INTO bytes_posting (tag, file_ids) VALUES (?1, ?2)")?
                .execute(params![key, blob])
                .map(drop)
        };
        if self.segments == 0 {
            let pairs = std::mem::take(&mut self.pairs);
            self.write_postings(pairs, insert)?;
        } else {
            self.write_segment()?;
            self.merge_segments().map_err(|e| self.fail(e))?;
        }
        run.finished_at = run.finished_at.max(run.started_at);
        let distinct_tags = self.write_run(&run).map_err(|e| self.fail(e))?;
        let conn = self.conn.take().expect("connection open until finish");
        conn.close().map_err(|(_, e)| describe(&self.temp, &e))?;
        self.replace_target()?;
        Ok(distinct_tags)
    }

    /// Concatenates each tag's lists from every segment, in segment order (file ids ascend from
    /// one segment to the next).
    fn merge_segments(&self) -> rusqlite::Result<()> {
        let conn = self.conn();
        let mut select =
            conn.prepare("SELECT tag, file_ids FROM temp.posting_segment ORDER BY tag, segment")?;
        let mut insert =
            conn.prepare("INSERT INTO bytes_posting (tag, file_ids) VALUES (?1, ?2)")?;
        let mut rows = select.query([])?;
        let mut current: Option<i64> = None;
        let mut ids: Vec<i64> = Vec::new();
        let mut blob = Vec::new();
        let mut flush = |key: i64, ids: &mut Vec<i64>| -> rusqlite::Result<()> {
            blob.clear();
            postings::encode(ids, &mut blob);
            ids.clear();
            insert.execute(params![key, blob]).map(drop)
        };
        while let Some(row) = rows.next()? {
            let key: i64 = row.get(0)?;
            let segment_ids = postings::decode(&row.get::<_, Vec<u8>>(1)?)
                .ok_or(rusqlite::Error::InvalidQuery)?;
            if current.is_some_and(|c| c != key) {
                flush(current.unwrap_or_default(), &mut ids)?;
            }
            current = Some(key);
            ids.extend(segment_ids);
        }
        if let Some(key) = current {
            flush(key, &mut ids)?;
        }
        conn.execute_batch("DROP TABLE temp.posting_segment;")
    }

    fn write_run(&self, run: &RunRecord) -> rusqlite::Result<u64> {
        let conn = self.conn();
        let distinct_tags: i64 = conn.query_row(
            "SELECT count(*) FROM (SELECT tag FROM bytes_posting UNION SELECT tag FROM file_tag)",
            [],
            |r| r.get(0),
        )?;
        let roots = serde_json::to_string(&run.roots).unwrap_or_else(|_| "[]".to_owned());
        conn.execute(
            "UPDATE run SET pooltag_version = ?1, host = ?2, os = ?3, roots = ?4, \
             started_at = ?5, finished_at = ?6, files_seen = ?7, drivers_indexed = ?8, \
             bytes_read = ?9, distinct_tags = ?10, tag_file_entries = ?11, errors = ?12 \
             WHERE id = ?13",
            params![
                env!("CARGO_PKG_VERSION"),
                run.host,
                run.os,
                roots,
                run.started_at,
                run.finished_at,
                run.files_seen as i64,
                run.drivers_indexed as i64,
                run.bytes_read as i64,
                distinct_tags,
                run.tag_file_entries as i64,
                run.errors as i64,
                self.run_id
            ],
        )?;
        conn.execute_batch("COMMIT;")?;
        Ok(distinct_tags as u64)
    }

    /// Makes the finished file durable, then renames it over the target.
    fn replace_target(&self) -> Result<()> {
        let sync = File::open(&self.temp).and_then(|f| f.sync_all());
        sync.map_err(|e| Error::new(format!("{}: {e}", self.temp.display())))?;
        // On Windows a reader holding the old database open makes the rename fail for a moment.
        let mut attempt = 0;
        loop {
            match fs::rename(&self.temp, &self.target) {
                Ok(()) => break,
                Err(_) if cfg!(windows) && attempt < 20 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(Error::new(format!(
                        "cannot replace {}: {e}",
                        self.target.display()
                    )));
                }
            }
        }
        #[cfg(unix)]
        if let Some(dir) = self.target.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for IndexWriter {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn);
            let _ = fs::remove_file(&self.temp);
        }
    }
}

fn temporary_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    target.with_file_name(name)
}

/// Removes `<target>.<digits>.tmp` files (and SQLite's side files of them) that no running index
/// holds.
fn remove_stale_temporaries(target: &Path) {
    let Some(dir) = target.parent() else { return };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Some(base) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&base).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let Some((pid, suffix)) = rest.split_once(".tmp") else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let path = entry.path();
        let main_file = dir.join(format!("{base}.{pid}.tmp"));
        if suffix.is_empty() && lock(&main_file).is_none() && cfg!(unix) {
            continue; // a running index holds it
        }
        let _ = fs::remove_file(path);
    }
}

/// An exclusive advisory lock on `path`, or `None` when another process holds it. On Windows
/// (where a lock would also block SQLite's own reads) there is none: an open SQLite file cannot
/// be deleted there anyway.
fn lock(path: &Path) -> Option<File> {
    #[cfg(unix)]
    {
        let file = File::open(path).ok()?;
        file.try_lock().ok()?;
        Some(file)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}
