//! Building a database: into an [`AtomicFile`] beside the target, renamed over it at the end
//! (an interrupted run leaves the previous database whole).
//!
//! Memory: the bytes level is a posting list per tag, which needs every content's tags before
//! any list is complete. (tag, content) pairs are collected up to a budget ([`PAIR_BUDGET`] by
//! default), then sorted and written as one segment to a temporary file (`store::spill`); at
//! the end the segments and the pairs still in memory are merged in tag order, on a thread of
//! their own while the connection inserts the merged lists. Memory stays bounded however many
//! files there are.
//!
//! Reuse: a writer can start from a previous database (attached read-only as `old`). Contents
//! kept from it keep their ids, so their posting lists are copied as they are (filtered when some
//! contents went away), and new contents get ids above every old one: a changed tree costs
//! an analysis of what changed, and an unchanged one a walk (nothing is written: see
//! [`super::unchanged`]). Rows are copied in bulk, parents after children, so
//! foreign keys are not enforced while building (the tests check them on the result).

use rayon::slice::ParallelSliceMut;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::atomic::AtomicFile;
use super::spill::Segment;
use super::{
    StoredRun, StoredSite, describe, migrate, postings, read_only_uri, unchanged, via_text,
};
use crate::error::{Error, Result};
use crate::extract::version::VersionInfo;
use crate::extract::{Analysis, Findings};
use crate::read::PeSummary;
use crate::tag::Tag;
use crate::tagfile::TagFile;

/// (tag, content) pairs held in memory before a segment is written: 32 MB.
pub const PAIR_BUDGET: usize = 4 << 20;

/// A SHA-256 digest.
pub type Sha256 = [u8; 32];

/// Content ids stay below this: an evidence entry (`id * 4 + level - 2`) fits in the 32 bits a
/// pair keeps for it.
const MOST_CONTENTS: u32 = 1 << 30;

/// An analysed driver binary content, ready to be stored.
pub struct ContentRecord {
    pub sha256: Sha256,
    pub size: u64,
    pub image: PeSummary,
    pub version: VersionInfo,
    /// The analysis that made `findings`.
    pub analysis: Analysis,
    /// Distinct bytes-level tags.
    pub tags: Vec<Tag>,
    /// Stronger evidence from the code and data.
    pub findings: Findings,
}

/// A path holding a driver binary.
#[derive(Clone, Debug)]
pub struct FileRecord {
    pub path: String,
    pub name: String,
    pub size: u64,
    pub mtime_ns: Option<i64>,
}

/// How [`IndexWriter::finish`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    pub distinct_tags: u64,
    /// False when the run changed nothing and left the database as it was.
    pub rewritten: bool,
}

/// Provenance of a run, written when it ends.
pub struct RunRecord {
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

/// What a previous database holds for this host, for an incremental index.
#[derive(Default)]
pub struct PreviousIndex {
    /// This host's files by path.
    pub files: HashMap<String, PreviousFile>,
    /// The contents whose analysis is the run's, by SHA-256: reusable as they are. A content
    /// analysed otherwise (by an older pooltag, or with other options) is analysed again.
    pub contents: HashMap<Sha256, i64>,
}

/// One of this host's files in the previous database.
#[derive(Clone, Copy, Debug)]
pub struct PreviousFile {
    pub content_id: i64,
    pub size: u64,
    pub mtime_ns: Option<i64>,
    /// Its content's analysis is the run's: an unchanged file need not be read.
    pub reusable: bool,
}

/// What an index run replaces of its host's previous files and tag files: the files under its
/// roots and the tag files under them or named with `--pooltag-txt`. The rest is kept, unless
/// `prune` asks for only what this run found.
#[derive(Clone, Copy, Debug)]
pub struct Replaced<'a> {
    /// The roots as stored paths (absolute, normalised).
    pub roots: &'a [String],
    /// The tag files named with `--pooltag-txt`, as stored paths.
    pub tag_files: &'a [String],
    pub prune: bool,
}

/// A database being built. Dropping it without [`IndexWriter::finish`] deletes the temporary file
/// and leaves the target as it was.
pub struct IndexWriter {
    /// Declared before `file`: dropped first, so the file is closed before it is deleted.
    conn: Option<Connection>,
    file: AtomicFile,
    /// The host whose files an index run stores (empty for a merge).
    host: String,
    pairs: Vec<u64>,
    pair_budget: usize,
    /// The segments spilled so far.
    segments: Vec<Segment>,
    /// The provenance row of an index run (none for a merge, which copies its inputs' runs).
    run_id: Option<i64>,
    /// The previous database, attached as `old`.
    old: Option<PathBuf>,
    /// The fingerprint of the previous database when it was attached.
    old_fingerprint: Option<unchanged::Fingerprint>,
    /// The id the next new content gets: above every content of the previous database.
    next_content_id: i64,
    /// Contents stored in this run, by SHA-256.
    contents: HashMap<Sha256, i64>,
}

/// What a new database is built for.
#[derive(Clone, Copy, Debug)]
pub enum Purpose<'a> {
    /// An index run on `host` making `analysis`. With `previous` (a pooltag database of the
    /// current schema, usually the target itself), its contents analysed the same way are
    /// reused, the files and tag files of other hosts are kept, and so are this host's that the
    /// run does not replace.
    Index {
        host: &'a str,
        analysis: Analysis,
        previous: Option<&'a Path>,
        replaced: Replaced<'a>,
    },
    /// A merge of databases ([`IndexWriter::absorb`]).
    Merge,
}

impl IndexWriter {
    /// Starts a new database that will replace `target`, holding at most `pair_budget`
    /// (tag, content) pairs in memory.
    pub fn create(target: &Path, pair_budget: usize, purpose: Purpose) -> Result<IndexWriter> {
        let file = AtomicFile::create(target)?;
        let conn = Connection::open(file.path()).map_err(|e| describe(target, &e))?;
        let mut writer = IndexWriter {
            conn: Some(conn),
            file,
            host: match purpose {
                Purpose::Index { host, .. } => host.to_owned(),
                Purpose::Merge => String::new(),
            },
            pairs: Vec::new(),
            pair_budget: pair_budget.max(1),
            segments: Vec::new(),
            run_id: None,
            old: None,
            old_fingerprint: None,
            next_content_id: 1,
            contents: HashMap::new(),
        };
        if let Err(e) = writer.prepare(purpose) {
            return Err(writer.fail(e));
        }
        Ok(writer)
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("connection open until finish")
    }

    fn prepare(&mut self, purpose: Purpose) -> rusqlite::Result<()> {
        let conn = self.conn.as_mut().expect("connection open until finish");
        // The file is disposable until the rename: no journal, no syncs until the end.
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA temp_store = FILE; \
             PRAGMA cache_size = -32768; PRAGMA locking_mode = EXCLUSIVE; \
             PRAGMA foreign_keys = OFF;",
        )?;
        migrate(conn)?;
        conn.execute_batch("CREATE TEMP TABLE reused (id INTEGER PRIMARY KEY); BEGIN;")?;
        let Purpose::Index {
            previous, replaced, ..
        } = purpose
        else {
            return Ok(());
        };
        if let Some(previous) = previous {
            // Taken before the file is opened: if it is replaced in between, the run checks
            // the new file against the old fingerprint and logs nothing that shows.
            self.old_fingerprint = unchanged::Fingerprint::of(previous).ok();
            conn.execute("ATTACH DATABASE ?1 AS old", [read_only_uri(previous)])?;
            self.old = Some(previous.to_owned());
            self.keep_previous(replaced)?;
            let conn = self.conn();
            self.next_content_id = conn.query_row(
                "SELECT coalesce(max(id), 0) + 1 FROM old.content",
                [],
                |r| r.get(0),
            )?;
        }
        self.run_id = Some(insert_run(self.conn(), &self.host)?);
        Ok(())
    }

    /// Copies, ids unchanged, what the previous database holds that this run does not replace:
    /// other hosts' runs, files and tag files; this host's files outside the roots and tag files
    /// neither under the roots nor named again (all of them replaced when pruning); the runs
    /// that recorded what is kept, and the contents and entries it uses.
    fn keep_previous(&self, replaced: Replaced) -> rusqlite::Result<()> {
        let conn = self.conn();
        create_roots_table(conn, replaced.roots)?;
        conn.execute_batch("CREATE TEMP TABLE named (path TEXT PRIMARY KEY);")?;
        for path in replaced.tag_files {
            conn.execute("INSERT OR IGNORE INTO temp.named VALUES (?1)", [path])?;
        }
        let kept_files = format!("x.host <> ?1 OR (NOT ?2 AND NOT {UNDER_ROOTS})");
        let kept_tag_files = format!(
            "x.host <> ?1 OR (NOT ?2 AND NOT {UNDER_ROOTS} \
             AND x.path NOT IN (SELECT path FROM temp.named))"
        );
        for sql in [
            format!(
                "INSERT INTO run SELECT * FROM old.run WHERE host <> ?1 OR id IN \
                 (SELECT x.run_id FROM old.file x WHERE {kept_files})"
            ),
            format!(
                "INSERT INTO temp.reused SELECT DISTINCT x.content_id FROM old.file x \
                 WHERE {kept_files}"
            ),
            format!("INSERT INTO file SELECT * FROM old.file x WHERE {kept_files}"),
            format!("INSERT INTO tag_file SELECT * FROM old.tag_file x WHERE {kept_tag_files}"),
        ] {
            conn.execute(&sql, params![&self.host, replaced.prune])?;
        }
        self.conn().execute_batch(
            "INSERT INTO tag_entry SELECT * FROM old.tag_entry WHERE id IN \
                 (SELECT entry_id FROM old.tag_entry_source s JOIN tag_file f ON f.id = s.tag_file_id); \
             INSERT INTO tag_entry_source SELECT s.* FROM old.tag_entry_source s \
                 JOIN tag_file f ON f.id = s.tag_file_id;",
        )
    }

    /// What the attached previous database holds for this host, its contents made by `analysis`
    /// counted reusable.
    pub fn previous_index(&self, analysis: Analysis) -> Result<PreviousIndex> {
        let mut previous = PreviousIndex::default();
        if self.old.is_none() {
            return Ok(previous);
        }
        let mut read = || -> rusqlite::Result<()> {
            let conn = self.conn();
            let analysis = analysis.to_string();
            let mut files = conn.prepare(
                "SELECT f.path, f.content_id, f.size, f.mtime_ns, c.analysis = ?2 \
                 FROM old.file f JOIN old.content c ON c.id = f.content_id WHERE f.host = ?1",
            )?;
            let rows = files.query_map([&self.host, &analysis], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    PreviousFile {
                        content_id: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                        mtime_ns: r.get(3)?,
                        reusable: r.get(4)?,
                    },
                ))
            })?;
            for row in rows {
                let (path, file) = row?;
                previous.files.insert(path, file);
            }
            let mut contents =
                conn.prepare("SELECT sha256, id FROM old.content WHERE analysis = ?1")?;
            let rows =
                contents.query_map([&analysis], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?)))?;
            for row in rows {
                let (sha, id) = row?;
                if let Ok(sha) = Sha256::try_from(sha.as_slice()) {
                    previous.contents.insert(sha, id);
                }
            }
            Ok(())
        };
        read().map_err(|e| self.fail(e))?;
        Ok(previous)
    }

    /// An error while building: named after the target, which it leaves as it was.
    fn fail(&self, e: rusqlite::Error) -> Error {
        Error::new(format!(
            "{} (the previous database is unchanged)",
            describe(self.file.target(), &e)
        ))
    }

    /// This host's paths in the previous database that this run did not store.
    pub fn count_removed(&self) -> Result<u64> {
        if self.old.is_none() {
            return Ok(0);
        }
        self.conn()
            .query_row(
                "SELECT count(*) FROM old.file o WHERE o.host = ?1 AND NOT EXISTS \
                 (SELECT 1 FROM file f WHERE f.host = o.host AND f.path = o.path)",
                [&self.host],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.fail(e))
    }

    /// The id of a content already stored in this run.
    pub fn content_id(&self, sha256: &Sha256) -> Option<i64> {
        self.contents.get(sha256).copied()
    }

    /// Stores a newly analysed content and its tags; returns its id.
    pub fn add_content(&mut self, content: &ContentRecord) -> Result<i64> {
        if let Some(id) = self.content_id(&content.sha256) {
            return Ok(id);
        }
        let id = self.next_content_id;
        // Posting lists pair a tag with a 32-bit content id, and evidence lists with a 32-bit
        // entry (the id and two bits of level).
        let pair_id = u32::try_from(id)
            .ok()
            .filter(|id| *id < MOST_CONTENTS)
            .ok_or_else(|| {
                Error::new(format!(
                    "{}: more contents than a pooltag database holds (the previous database is \
                     unchanged)",
                    self.file.target().display()
                ))
            })?;
        self.insert_content(id, content).map_err(|e| self.fail(e))?;
        self.next_content_id += 1;
        self.contents.insert(content.sha256, id);
        self.pairs.extend(
            content
                .tags
                .iter()
                .map(|tag| (u64::from(tag.key()) << 32) | u64::from(pair_id)),
        );
        if self.pairs.len() >= self.pair_budget {
            self.write_segment()?;
        }
        Ok(id)
    }

    fn insert_content(&self, id: i64, content: &ContentRecord) -> rusqlite::Result<()> {
        let conn = self.conn();
        let v = &content.version;
        conn.prepare_cached(
            "INSERT INTO content (id, sha256, size, machine, subsystem, pe_timestamp, signed, \
             company, description, version, product, original_filename, analysis) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            id,
            content.sha256,
            content.size as i64,
            content.image.machine,
            content.image.subsystem,
            content.image.timestamp,
            content.image.signed,
            v.company,
            v.description,
            v.file_version,
            v.product,
            v.original_filename,
            content.analysis.to_string()
        ])?;
        let keys: Vec<i64> = content.tags.iter().map(|t| i64::from(t.key())).collect();
        let mut tags = Vec::new();
        postings::encode(&keys, &mut tags).map_err(|_| damaged_list())?;
        conn.prepare_cached("INSERT INTO content_bytes (content_id, tags) VALUES (?1, ?2)")?
            .execute(params![id, tags])?;
        // One row per content, appended in id order; the lists by tag are built from these
        // rows at the end.
        let mut entries: Vec<i64> = (content.findings.levels.iter())
            .filter_map(|(tag, evidence)| postings::evidence_entry(i64::from(tag.key()), *evidence))
            .collect();
        if !entries.is_empty() {
            entries.sort_unstable();
            let mut list = Vec::new();
            postings::encode(&entries, &mut list).map_err(|_| damaged_list())?;
            conn.prepare_cached(
                "INSERT INTO content_evidence (content_id, entries) VALUES (?1, ?2)",
            )?
            .execute(params![id, list])?;
        }
        let mut site = conn.prepare_cached(
            "INSERT INTO site (content_id, tag, evidence, api, rva, section, offset, via) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for s in &content.findings.sites {
            let stored = StoredSite::of(s, &content.findings);
            site.execute(params![
                id,
                s.tag.key(),
                s.evidence as i64,
                s.api,
                s.rva,
                s.section,
                s.offset,
                via_text(&stored.via)
            ])?;
        }
        Ok(())
    }

    /// Keeps a content of the previous database (its id unchanged); returns the id.
    pub fn reuse_content(&mut self, old_id: i64) -> Result<i64> {
        self.conn()
            .prepare_cached("INSERT OR IGNORE INTO temp.reused (id) VALUES (?1)")
            .and_then(|mut s| s.execute([old_id]))
            .map_err(|e| self.fail(e))?;
        Ok(old_id)
    }

    /// Stores a path holding the content `content_id`; false when this path is stored already
    /// (reached through two overlapping roots).
    pub fn add_file(&mut self, file: &FileRecord, content_id: i64) -> Result<bool> {
        let inserted = self
            .conn()
            .prepare_cached(
                "INSERT INTO file (content_id, run_id, host, path, name, size, mtime_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (host, path) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    content_id,
                    self.run_id.unwrap_or_default(),
                    self.host,
                    file.path,
                    file.name,
                    file.size as i64,
                    file.mtime_ns
                ])
            })
            .map_err(|e| self.fail(e))?;
        Ok(inserted == 1)
    }

    /// Stores a parsed tag file; returns the number of lines stored (0 when this path was
    /// already stored).
    pub fn add_tag_file(&mut self, path: &str, parsed: &TagFile) -> Result<u64> {
        let lines = parsed.entries.iter().map(|e| {
            (
                e.tag.clone(),
                e.binary.clone(),
                e.description.clone(),
                i64::from(e.line),
            )
        });
        let stored = insert_tag_file(self.conn(), &self.host, path, lines);
        Ok(stored.map_err(|e| self.fail(e))? as u64)
    }

    /// Merges what the database at `source` holds for `hosts`: their runs, files and tag files,
    /// and the contents these use (a content already stored, by SHA-256, is shared).
    pub fn absorb(&mut self, source: &Path, hosts: &[String]) -> Result<()> {
        self.absorb_hosts(source, hosts)
            .map_err(|e| describe(source, &e))?;
        if self.pairs.len() >= self.pair_budget {
            self.write_segment()?;
        }
        Ok(())
    }

    fn absorb_hosts(&mut self, source: &Path, hosts: &[String]) -> rusqlite::Result<()> {
        let conn = self.conn.as_ref().expect("connection open until finish");
        conn.execute("ATTACH DATABASE ?1 AS src", [read_only_uri(source)])?;
        conn.execute_batch(
            "CREATE TEMP TABLE hosts (host TEXT PRIMARY KEY); \
             CREATE TEMP TABLE run_map (src INTEGER PRIMARY KEY, id INTEGER); \
             CREATE TEMP TABLE content_map (src INTEGER PRIMARY KEY, id INTEGER, \
                 new INTEGER, renew INTEGER);",
        )?;
        for host in hosts {
            conn.execute("INSERT OR IGNORE INTO temp.hosts VALUES (?1)", [host])?;
        }
        // Runs, with new ids.
        let runs: Vec<i64> = conn
            .prepare("SELECT id FROM src.run WHERE host IN (SELECT host FROM temp.hosts)")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for src_id in runs {
            conn.execute(
                "INSERT INTO run (pooltag_version, host, os, roots, started_at, finished_at, \
                 files_seen, drivers_indexed, bytes_read, distinct_tags, tag_file_entries, errors) \
                 SELECT pooltag_version, host, os, roots, started_at, finished_at, files_seen, \
                 drivers_indexed, bytes_read, distinct_tags, tag_file_entries, errors \
                 FROM src.run WHERE id = ?1",
                [src_id],
            )?;
            conn.execute(
                "INSERT INTO temp.run_map VALUES (?1, ?2)",
                params![src_id, conn.last_insert_rowid()],
            )?;
        }
        // Contents the hosts' files use: shared by SHA-256, else new. Every content of the
        // input already stored takes this input's analysis when it is stronger (a newer
        // analysis, then code over --bytes-only), whichever input's files point to it, so the
        // order of the inputs does not matter.
        let contents: Vec<(i64, Vec<u8>, String, bool)> = conn
            .prepare(
                "SELECT c.id, c.sha256, c.analysis, EXISTS (SELECT 1 FROM src.file f \
                 WHERE f.content_id = c.id AND f.host IN (SELECT host FROM temp.hosts)) \
                 FROM src.content c",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (src_id, sha, analysis, used) in contents {
            let sha = Sha256::try_from(sha.as_slice()).map_err(|_| damaged_list())?;
            let (id, new, renew) = match self.contents.get(&sha) {
                Some(id) => {
                    let stored: String =
                        conn.query_row("SELECT analysis FROM content WHERE id = ?1", [id], |r| {
                            r.get(0)
                        })?;
                    (
                        *id,
                        false,
                        Analysis::parse(&analysis) > Analysis::parse(&stored),
                    )
                }
                None if used => {
                    let id = self.next_content_id;
                    self.next_content_id += 1;
                    self.contents.insert(sha, id);
                    (id, true, false)
                }
                None => continue,
            };
            conn.execute(
                "INSERT INTO temp.content_map VALUES (?1, ?2, ?3, ?4)",
                params![src_id, id, new, renew],
            )?;
        }
        conn.execute_batch(
            "INSERT INTO content SELECT m.id, c.sha256, c.size, c.machine, c.subsystem, \
                 c.pe_timestamp, c.signed, c.company, c.description, c.version, c.product, \
                 c.original_filename, c.analysis FROM src.content c \
                 JOIN temp.content_map m ON m.src = c.id WHERE m.new; \
             DELETE FROM content_evidence WHERE content_id IN \
                 (SELECT id FROM temp.content_map WHERE renew); \
             DELETE FROM site WHERE content_id IN (SELECT id FROM temp.content_map WHERE renew); \
             UPDATE content SET analysis = (SELECT c.analysis FROM src.content c \
                 JOIN temp.content_map m ON m.src = c.id WHERE m.id = content.id) \
                 WHERE id IN (SELECT id FROM temp.content_map WHERE renew); \
             INSERT INTO content_bytes SELECT m.id, b.tags FROM src.content_bytes b \
                 JOIN temp.content_map m ON m.src = b.content_id WHERE m.new; \
             INSERT INTO content_evidence SELECT m.id, e.entries FROM src.content_evidence e \
                 JOIN temp.content_map m ON m.src = e.content_id WHERE m.new OR m.renew; \
             INSERT INTO site SELECT m.id, s.tag, s.evidence, s.api, s.rva, s.section, s.offset, \
                 s.via FROM src.site s JOIN temp.content_map m ON m.src = s.content_id \
                 WHERE m.new OR m.renew; \
             INSERT OR IGNORE INTO file (content_id, run_id, host, path, name, size, mtime_ns) \
                 SELECT m.id, coalesce(r.id, 0), f.host, f.path, f.name, f.size, f.mtime_ns \
                 FROM src.file f JOIN temp.content_map m ON m.src = f.content_id \
                 LEFT JOIN temp.run_map r ON r.src = f.run_id \
                 WHERE f.host IN (SELECT host FROM temp.hosts);",
        )?;
        // The evidence lists just copied are read at the end, when the source is gone: a
        // damaged one is named now.
        let mut copied = conn.prepare(
            "SELECT e.entries FROM src.content_evidence e \
             JOIN temp.content_map m ON m.src = e.content_id WHERE m.new OR m.renew",
        )?;
        let mut rows = copied.query([])?;
        while let Some(row) = rows.next()? {
            let list = row.get_ref(0)?.as_blob()?;
            postings::Ids::new(list)
                .try_for_each(|entry| entry.map(drop))
                .map_err(|_| damaged_list())?;
        }
        drop(rows);
        copied.finalize()?;
        // Posting lists of the new contents, renumbered.
        let new_ids: HashMap<i64, i64> = conn
            .prepare("SELECT src, id FROM temp.content_map WHERE new")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if !new_ids.is_empty() {
            // A statement still open on `src` would keep it from being detached.
            let mut select = conn.prepare("SELECT tag, content_ids FROM src.bytes_posting")?;
            let mut rows = select.query([])?;
            while let Some(row) = rows.next()? {
                let key: u32 = row.get(0)?;
                let ids = postings::decode(&row.get::<_, Vec<u8>>(1)?).ok_or_else(damaged_list)?;
                self.pairs.extend(
                    ids.iter()
                        .filter_map(|id| new_ids.get(id))
                        .map(|id| (u64::from(key) << 32) | *id as u64),
                );
            }
            drop(rows);
            select.finalize()?;
        }
        self.absorb_tag_files()?;
        // A database is detached only outside a transaction (no journal: a commit costs
        // nothing).
        let conn = self.conn();
        conn.execute_batch(
            "DROP TABLE temp.hosts; DROP TABLE temp.run_map; DROP TABLE temp.content_map; \
             COMMIT; DETACH DATABASE src; BEGIN;",
        )?;
        Ok(())
    }

    /// The tag files of the absorbed hosts, their lines stored once.
    fn absorb_tag_files(&self) -> rusqlite::Result<()> {
        let conn = self.conn();
        let files: Vec<(i64, String, String)> = conn
            .prepare(
                "SELECT id, host, path FROM src.tag_file \
                 WHERE host IN (SELECT host FROM temp.hosts)",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (src_id, host, path) in files {
            let lines: Vec<(String, String, String, i64)> = conn
                .prepare(
                    "SELECT e.tag, e.binary, e.description, s.line FROM src.tag_entry_source s \
                     JOIN src.tag_entry e ON e.id = s.entry_id WHERE s.tag_file_id = ?1",
                )?
                .query_map([src_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            insert_tag_file(conn, &host, &path, lines)?;
        }
        Ok(())
    }

    /// Spills the pairs held in memory as one more segment.
    fn write_segment(&mut self) -> Result<()> {
        let segment = spill(&mut self.pairs).map_err(|e| {
            Error::new(format!(
                "{}: a temporary file for posting lists: {e}",
                std::env::temp_dir().display()
            ))
        })?;
        self.segments.push(segment);
        Ok(())
    }

    /// Writes the posting lists, the run's provenance, and replaces the target; or, when an
    /// index run found the target as it is, leaves it and records the run in its
    /// [`unchanged`] log.
    pub fn finish(mut self, run: Option<RunRecord>) -> Result<Finished> {
        if self.old.is_some() {
            self.point_to_renewed().map_err(|e| self.fail(e))?;
        }
        if let Some(run) = &run
            && let Some(checked) = self.old_fingerprint
            && self.old.as_deref() == Some(self.file.target())
            && self.changes_nothing().map_err(|e| self.fail(e))?
        {
            return self.finish_unchanged(checked, run);
        }
        let distinct_tags = if let Some(previous) = self.old.clone()
            && self.segments.is_empty()
            && self.change_is_small().map_err(|e| self.fail(e))?
        {
            self.finish_as_patch(&previous, run)?
        } else {
            self.copy_reused().map_err(|e| self.fail(e))?;
            self.write_postings().map_err(|e| self.fail(e))?;
            self.write_evidence().map_err(|e| self.fail(e))?;
            let distinct_tags = self.write_run(run).map_err(|e| self.fail(e))?;
            let conn = self.conn.take().expect("connection open until finish");
            conn.close().map_err(|(_, e)| self.fail(e))?;
            self.file.commit()?;
            distinct_tags
        };
        Ok(Finished {
            distinct_tags,
            rewritten: true,
        })
    }

    /// Whether this index run would write what the previous database (the target) holds, its
    /// provenance aside: no content added or dropped, the same files with the same contents,
    /// the same tag files with the same lines.
    fn changes_nothing(&self) -> rusqlite::Result<bool> {
        if !self.pairs.is_empty() || !self.segments.is_empty() || !self.contents.is_empty() {
            return Ok(false);
        }
        const FILE: &str = "host, path, content_id, name, size, mtime_ns";
        const LINE: &str = "f.host, f.path, s.line, e.tag, e.binary, e.description";
        let lines = |schema: &str| {
            format!(
                "SELECT {LINE} FROM {schema}.tag_file f \
                 JOIN {schema}.tag_entry_source s ON s.tag_file_id = f.id \
                 JOIN {schema}.tag_entry e ON e.id = s.entry_id"
            )
        };
        let same_count = |table: &str| {
            format!("(SELECT count(*) FROM main.{table}) = (SELECT count(*) FROM old.{table})")
        };
        // Equal counts and nothing new on one side: the same rows (each table has a unique key
        // over the compared columns).
        self.conn().query_row(
            &format!(
                "SELECT (SELECT count(*) FROM temp.reused) = (SELECT count(*) FROM old.content) \
                 AND {} AND {} AND {} AND {} \
                 AND NOT EXISTS (SELECT {FILE} FROM main.file EXCEPT SELECT {FILE} FROM old.file) \
                 AND NOT EXISTS (SELECT host, path FROM main.tag_file \
                     EXCEPT SELECT host, path FROM old.tag_file) \
                 AND NOT EXISTS ({} EXCEPT {})",
                same_count("file"),
                same_count("tag_file"),
                same_count("tag_entry"),
                same_count("tag_entry_source"),
                lines("main"),
                lines("old"),
            ),
            [],
            |r| r.get(0),
        )
    }

    /// Finishes an index run that changed nothing: the target stays as it is (not a byte
    /// written, not even the provenance) and the run goes to its log.
    fn finish_unchanged(
        mut self,
        checked: unchanged::Fingerprint,
        run: &RunRecord,
    ) -> Result<Finished> {
        let conn = self.conn();
        let distinct_tags = match Tally::read(conn, "old").map_err(|e| self.fail(e))? {
            Some(tally) => tally.distinct_tags,
            None => {
                Tally::count(conn, "old")
                    .map_err(|e| self.fail(e))?
                    .distinct_tags
            }
        };
        let conn = self.conn.take().expect("connection open until finish");
        conn.close().map_err(|(_, e)| self.fail(e))?;
        let stored = StoredRun {
            pooltag_version: env!("CARGO_PKG_VERSION").to_owned(),
            host: self.host.clone(),
            os: run.os.clone(),
            roots: run.roots.clone(),
            started_at: run.started_at,
            finished_at: run.finished_at.max(run.started_at),
            files_seen: run.files_seen as i64,
            drivers_indexed: run.drivers_indexed as i64,
            errors: run.errors as i64,
        };
        unchanged::append(self.file.target(), checked, &stored)?;
        Ok(Finished {
            distinct_tags: distinct_tags as u64,
            rewritten: false,
        })
    }

    /// A kept file (of another host, or outside this run's roots) whose content this run
    /// analysed again points to the new analysis instead of the old one, which is not reused.
    fn point_to_renewed(&self) -> rusqlite::Result<()> {
        self.conn().execute_batch(
            "CREATE TEMP TABLE renewed AS SELECT o.id AS old_id, n.id AS new_id \
                 FROM old.content o JOIN content n ON n.sha256 = o.sha256; \
             UPDATE file SET content_id = \
                 (SELECT new_id FROM temp.renewed WHERE old_id = file.content_id) \
                 WHERE content_id IN (SELECT old_id FROM temp.renewed); \
             DELETE FROM temp.reused WHERE id IN (SELECT old_id FROM temp.renewed); \
             DROP TABLE temp.renewed;",
        )
    }

    /// Whether the previous database is better patched than rebuilt: the posting lists this run
    /// touches (its new (tag, content) pairs and evidence, and the tags and evidence of the
    /// previous contents it drops) are at most one per 8 previous lists, so that reading and
    /// writing them one at a time beats rewriting them all.
    fn change_is_small(&self) -> rusqlite::Result<bool> {
        let conn = self.conn();
        // Lengths in bytes bound the counts of entries from above.
        let dropped: i64 = conn.query_row(
            "SELECT (SELECT coalesce(sum(length(tags)), 0) FROM old.content_bytes \
                 WHERE content_id NOT IN (SELECT id FROM temp.reused)) \
             + (SELECT coalesce(sum(length(entries)), 0) FROM old.content_evidence \
                 WHERE content_id NOT IN (SELECT id FROM temp.reused)) \
             + (SELECT coalesce(sum(length(entries)), 0) FROM main.content_evidence)",
            [],
            |r| r.get(0),
        )?;
        let lists = match Tally::read(conn, "old")? {
            Some(tally) => tally.posting_lists,
            None => count_posting_lists(conn, "old")?,
        };
        // A tag of a list takes a byte at least: the length bounds the count from above.
        Ok(self.pairs.len() as i64 + dropped <= lists / 8)
    }

    /// Finishes a run that changed little: a copy of the previous database (cloned where the file
    /// system can) with the change applied. Files, runs and tag files, small tables, are
    /// replaced by what this run built; new contents are added and their ids appended to their
    /// tags' posting lists; dropped contents (no file holds them any more) are removed, their
    /// ids taken out of exactly their lists (`content_bytes`). The result is what a rebuild
    /// would write.
    fn finish_as_patch(mut self, previous: &Path, run: Option<RunRecord>) -> Result<u64> {
        let side = self.file.side_path();
        let patched = || -> Result<u64> {
            fs::copy(previous, &side)
                .map_err(|e| Error::new(format!("{}: {e}", side.display())))?;
            let distinct_tags = self.patch(&side, run).map_err(|e| self.fail(e))?;
            let conn = self.conn.take().expect("connection open until finish");
            conn.close().map_err(|(_, e)| self.fail(e))?;
            Ok(distinct_tags)
        };
        match patched() {
            Ok(distinct_tags) => {
                self.file.take_from(&side)?;
                self.file.commit()?;
                Ok(distinct_tags)
            }
            Err(e) => {
                let _ = fs::remove_file(&side);
                Err(e)
            }
        }
    }

    /// Applies this run to the copy at `side`, attached as `patched`; returns the number of
    /// distinct tags.
    fn patch(&mut self, side: &Path, run: Option<RunRecord>) -> rusqlite::Result<u64> {
        let mut pairs = std::mem::take(&mut self.pairs);
        pairs.sort_unstable();
        let conn = self.conn();
        conn.execute_batch("COMMIT;")?;
        conn.execute("ATTACH DATABASE ?1 AS patched", [side.to_string_lossy()])?;
        let previous = Tally::read(conn, "patched")?;
        // Disposable until the rename, like the main file: no journal, no syncs until the end.
        conn.execute_batch(
            "PRAGMA patched.journal_mode = OFF; PRAGMA patched.synchronous = OFF; BEGIN; \
             DELETE FROM patched.file; INSERT INTO patched.file SELECT * FROM main.file; \
             DELETE FROM patched.run; INSERT INTO patched.run SELECT * FROM main.run; \
             DELETE FROM patched.tag_entry_source; DELETE FROM patched.tag_entry; \
             DELETE FROM patched.tag_file; \
             INSERT INTO patched.tag_file SELECT * FROM main.tag_file; \
             INSERT INTO patched.tag_entry SELECT * FROM main.tag_entry; \
             INSERT INTO patched.tag_entry_source SELECT * FROM main.tag_entry_source; \
             INSERT INTO patched.content SELECT * FROM main.content; \
             INSERT INTO patched.content_bytes SELECT * FROM main.content_bytes; \
             INSERT INTO patched.content_evidence SELECT * FROM main.content_evidence; \
             INSERT INTO patched.site SELECT * FROM main.site; \
             CREATE TEMP TABLE dropped AS SELECT id FROM patched.content \
                 WHERE id NOT IN (SELECT content_id FROM patched.file);",
        )?;
        let mut bytes = ListEditor::new(conn, "bytes_posting", "content_ids")?;
        let dropped = dropped_lists(conn, "content_bytes", "tags")?;
        let dropped_contents = dropped.len();
        for (id, tags) in dropped {
            for key in postings::decode(&tags).ok_or_else(damaged_list)? {
                let key = u32::try_from(key).map_err(|_| damaged_list())?;
                bytes.rewrite(key, |ids| ids.retain(|other| *other != id))?;
            }
        }
        // New ids are above every previous one: appended, the lists stay ascending.
        for (key, new) in group_pairs(&pairs) {
            bytes.rewrite(key, |ids| ids.extend(&new))?;
        }
        drop(bytes);
        // The same for the evidence lists: the dropped contents' entries out, the new ones'
        // (above every previous entry) appended.
        let mut evidence = ListEditor::new(conn, "evidence_posting", "entries")?;
        for (id, entries) in dropped_lists(conn, "content_evidence", "entries")? {
            for (key, _) in postings::decode_evidence(&entries).ok_or_else(damaged_list)? {
                let key = u32::try_from(key).map_err(|_| damaged_list())?;
                evidence.rewrite(key, |list| list.retain(|entry| entry >> 2 != id))?;
            }
        }
        let mut added = Vec::new();
        let mut select = conn.prepare("SELECT content_id, entries FROM main.content_evidence")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            evidence_pairs(row.get(0)?, row.get_ref(1)?.as_blob()?, &mut added)?;
        }
        drop(rows);
        added.sort_unstable();
        for (key, new) in group_pairs(&added) {
            evidence.rewrite(key, |list| list.extend(&new))?;
        }
        drop((select, evidence));
        if dropped_contents > 0 {
            conn.execute_batch(
                "DELETE FROM patched.content_evidence \
                     WHERE content_id IN (SELECT id FROM temp.dropped); \
                 DELETE FROM patched.site WHERE content_id IN (SELECT id FROM temp.dropped); \
                 DELETE FROM patched.content_bytes \
                     WHERE content_id IN (SELECT id FROM temp.dropped); \
                 DELETE FROM patched.content WHERE id IN (SELECT id FROM temp.dropped);",
            )?;
        }
        conn.execute_batch("DROP TABLE temp.dropped;")?;
        // The same contents as before: the same tags, counted already.
        let new_contents: i64 =
            conn.query_row("SELECT count(*) FROM main.content", [], |r| r.get(0))?;
        let tally = match previous {
            Some(previous) if new_contents == 0 && dropped_contents == 0 => previous,
            _ => Tally::count(conn, "patched")?,
        };
        tally.write(conn, "patched")?;
        let distinct_tags = tally.distinct_tags;
        if let (Some(run), Some(run_id)) = (run, self.run_id) {
            self.update_run("patched", run_id, &run, distinct_tags)?;
        }
        conn.execute_batch("COMMIT; DETACH DATABASE patched; DETACH DATABASE old;")?;
        Ok(distinct_tags as u64)
    }

    /// Copies the reused contents of the previous database with their tags and sites.
    fn copy_reused(&self) -> rusqlite::Result<()> {
        if self.old.is_none() {
            return Ok(());
        }
        let conn = self.conn();
        // Every old content kept (files were only added): the tables are copied whole, in
        // key order, without a lookup per row.
        let filter = if self.all_old_reused()? {
            ""
        } else {
            "WHERE content_id IN (SELECT id FROM temp.reused)"
        };
        let content_filter = filter.replace("content_id", "id");
        conn.execute_batch(&format!(
            "INSERT INTO content SELECT * FROM old.content {content_filter}; \
             INSERT INTO content_bytes SELECT * FROM old.content_bytes {filter}; \
             INSERT INTO content_evidence SELECT * FROM old.content_evidence {filter}; \
             INSERT INTO site SELECT * FROM old.site {filter};"
        ))
    }

    /// Whether this run keeps every content of the previous database.
    fn all_old_reused(&self) -> rusqlite::Result<bool> {
        self.conn().query_row(
            "SELECT (SELECT count(*) FROM temp.reused) = (SELECT count(*) FROM old.content)",
            [],
            |r| r.get(0),
        )
    }

    /// Builds `bytes_posting` from the previous database's lists (reused contents only) and this
    /// run's pairs, in memory or in segments. Both sources are read in tag order and merged as
    /// they stream: one tag's lists are in memory at a time, not the whole index.
    fn write_postings(&mut self) -> rusqlite::Result<()> {
        let pairs = std::mem::take(&mut self.pairs);
        let conn = self.conn.as_ref().expect("connection open until finish");
        let mut insert =
            conn.prepare("INSERT INTO bytes_posting (tag, content_ids) VALUES (?1, ?2)")?;
        // The previous lists are kept as they are when every old content was reused, else
        // filtered to the reused ones.
        let mut kept: Option<Vec<i64>> = None;
        let mut old_select = None;
        if self.old.is_some() {
            if !self.all_old_reused()? {
                kept = Some(
                    conn.prepare("SELECT id FROM temp.reused ORDER BY id")?
                        .query_map([], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?,
                );
            }
            old_select =
                Some(conn.prepare("SELECT tag, content_ids FROM old.bytes_posting ORDER BY tag")?);
        }
        let mut old_rows = match old_select.as_mut() {
            Some(select) => Some(select.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get(1)?)))?),
            None => None,
        };
        let mut next_old = || -> rusqlite::Result<Option<(u32, Vec<u8>)>> {
            old_rows.as_mut().and_then(Iterator::next).transpose()
        };
        // This run's lists, in tag order, merged from the segments and the pairs in memory.
        let segments = std::mem::take(&mut self.segments);
        with_merged_lists(pairs, segments, |new_lists| {
            let mut old_head = next_old()?;
            let mut new_head = new_lists.next().transpose()?;
            let mut blob = Vec::new();
            loop {
                let key = match (&old_head, &new_head) {
                    (Some((a, _)), Some((b, _))) => (*a).min(*b),
                    (Some((a, _)), None) => *a,
                    (None, Some((b, _))) => *b,
                    (None, None) => break,
                };
                let old = match old_head.take_if(|(k, _)| *k == key) {
                    Some((_, blob)) => {
                        old_head = next_old()?;
                        Some(blob)
                    }
                    None => None,
                };
                let new = match new_head.take_if(|(k, _)| *k == key) {
                    Some((_, ids)) => {
                        new_head = new_lists.next().transpose()?;
                        Some(ids)
                    }
                    None => None,
                };
                // A list only one side holds goes as it is (the old one unless filtered).
                match (&old, &new, &kept) {
                    (Some(list), None, None) | (None, Some(list), _) => {
                        insert.execute(params![key, list])?;
                        continue;
                    }
                    _ => {}
                }
                let mut ids = match &old {
                    Some(old_blob) => postings::decode(old_blob).ok_or_else(damaged_list)?,
                    None => Vec::new(),
                };
                if let Some(kept) = &kept {
                    ids.retain(|id| kept.binary_search(id).is_ok());
                }
                if let Some(new) = &new {
                    ids.extend(postings::decode(new).ok_or_else(damaged_list)?);
                }
                if ids.is_empty() {
                    continue;
                }
                blob.clear();
                postings::encode(&ids, &mut blob).map_err(|_| damaged_list())?;
                insert.execute(params![key, blob])?;
            }
            Ok(())
        })
    }

    /// Builds `evidence_posting` from every content's evidence (see [`write_evidence_lists`]).
    fn write_evidence(&mut self) -> rusqlite::Result<()> {
        let conn = self.conn.as_ref().expect("connection open until finish");
        write_evidence_lists(conn, self.pair_budget)
    }

    /// Records the run's provenance (an index run's), commits, and returns the number of
    /// distinct tags.
    fn write_run(&self, run: Option<RunRecord>) -> rusqlite::Result<u64> {
        let conn = self.conn();
        let tally = Tally::count(conn, "main")?;
        tally.write(conn, "main")?;
        let distinct_tags = tally.distinct_tags;
        if let (Some(run), Some(run_id)) = (run, self.run_id) {
            self.update_run("main", run_id, &run, distinct_tags)?;
        }
        conn.execute_batch("COMMIT;")?;
        if self.old.is_some() {
            conn.execute_batch("DETACH DATABASE old;")?;
        }
        Ok(distinct_tags as u64)
    }

    /// Fills in the provenance row `run_id` of the database `schema` (`main`, or the patched
    /// copy).
    fn update_run(
        &self,
        schema: &str,
        run_id: i64,
        run: &RunRecord,
        distinct_tags: i64,
    ) -> rusqlite::Result<()> {
        let conn = self.conn();
        let roots = serde_json::to_string(&run.roots).unwrap_or_else(|_| "[]".to_owned());
        conn.execute(
            &format!(
                "UPDATE {schema}.run SET pooltag_version = ?1, os = ?2, roots = ?3, \
                 started_at = ?4, finished_at = ?5, files_seen = ?6, drivers_indexed = ?7, \
                 bytes_read = ?8, distinct_tags = ?9, tag_file_entries = ?10, errors = ?11 \
                 WHERE id = ?12"
            ),
            params![
                env!("CARGO_PKG_VERSION"),
                run.os,
                roots,
                run.started_at,
                run.finished_at.max(run.started_at),
                run.files_seen as i64,
                run.drivers_indexed as i64,
                run.bytes_read as i64,
                distinct_tags,
                run.tag_file_entries as i64,
                run.errors as i64,
                run_id
            ],
        )?;
        Ok(())
    }
}

/// Stores a tag file of `host` and its (tag, binary, description, line) lines, each distinct line
/// once with every place it was read; returns how many lines were stored (none when this tag
/// file is stored already).
fn insert_tag_file(
    conn: &Connection,
    host: &str,
    path: &str,
    lines: impl IntoIterator<Item = (String, String, String, i64)>,
) -> rusqlite::Result<usize> {
    if conn.execute(
        "INSERT INTO tag_file (host, path) VALUES (?1, ?2) ON CONFLICT (host, path) DO NOTHING",
        params![host, path],
    )? == 0
    {
        return Ok(0);
    }
    let file_id = conn.last_insert_rowid();
    let mut entry = conn.prepare_cached(
        "INSERT INTO tag_entry (tag, binary, description) VALUES (?1, ?2, ?3) \
         ON CONFLICT (tag, binary, description) DO UPDATE SET tag = excluded.tag RETURNING id",
    )?;
    let mut source = conn.prepare_cached(
        "INSERT OR IGNORE INTO tag_entry_source (entry_id, tag_file_id, line) VALUES (?1, ?2, ?3)",
    )?;
    let mut stored = 0;
    for (tag, binary, description, line) in lines {
        let entry_id: i64 = entry.query_row(params![tag, binary, description], |r| r.get(0))?;
        source.execute(params![entry_id, file_id, line])?;
        stored += 1;
    }
    Ok(stored)
}

/// A provenance row for an index run on `host`, filled in when the run ends; its id.
fn insert_run(conn: &Connection, host: &str) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO run (pooltag_version, host, os, roots, started_at, finished_at, \
         files_seen, drivers_indexed, bytes_read, distinct_tags, tag_file_entries, errors) \
         VALUES ('', ?1, '', '[]', 0, 0, 0, 0, 0, 0, 0, 0)",
        [host],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Tags with any evidence: the posting lists' tags, and those only stronger evidence holds
/// (ARM64 tags built in registers). Counted without a UNION, which would sort every tag of the
/// index into a temporary b-tree (most of the cost of an unchanged re-index).
fn count_posting_lists(conn: &Connection, schema: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        &format!("SELECT count(*) FROM {schema}.bytes_posting"),
        [],
        |r| r.get(0),
    )
}

/// The counts a database keeps of itself (schema 4, `tally`).
#[derive(Clone, Copy, Debug)]
struct Tally {
    distinct_tags: i64,
    posting_lists: i64,
}

impl Tally {
    /// Counts the database `schema` holds: the posting lists, and the tags with stronger
    /// evidence only.
    fn count(conn: &Connection, schema: &str) -> rusqlite::Result<Tally> {
        let posting_lists = count_posting_lists(conn, schema)?;
        let evidence_only: i64 = conn.query_row(
            &format!(
                "SELECT count(*) FROM {schema}.evidence_posting \
                 WHERE tag NOT IN (SELECT tag FROM {schema}.bytes_posting)"
            ),
            [],
            |r| r.get(0),
        )?;
        Ok(Tally {
            distinct_tags: posting_lists + evidence_only,
            posting_lists,
        })
    }

    /// The tally of the database `schema`, if it holds one (a database is untrusted: a count
    /// below zero is none).
    fn read(conn: &Connection, schema: &str) -> rusqlite::Result<Option<Tally>> {
        let tally = conn
            .query_row(
                &format!("SELECT distinct_tags, posting_lists FROM {schema}.tally LIMIT 1"),
                [],
                |r| {
                    Ok(Tally {
                        distinct_tags: r.get(0)?,
                        posting_lists: r.get(1)?,
                    })
                },
            )
            .optional()?;
        Ok(tally.filter(|t| t.distinct_tags >= 0 && t.posting_lists >= 0))
    }

    fn write(self, conn: &Connection, schema: &str) -> rusqlite::Result<()> {
        conn.execute(&format!("DELETE FROM {schema}.tally"), [])?;
        conn.execute(
            &format!("INSERT INTO {schema}.tally (distinct_tags, posting_lists) VALUES (?1, ?2)"),
            params![self.distinct_tags, self.posting_lists],
        )?;
        Ok(())
    }
}

/// An SQL condition on `x.path`: it lies under one of the roots of `temp.roots` (or is one).
const UNDER_ROOTS: &str = "EXISTS (SELECT 1 FROM temp.roots r WHERE x.path = r.path \
     OR substr(x.path, 1, length(r.prefix)) = r.prefix)";

/// `temp.roots`: each root as stored, and the prefix of the paths below it.
fn create_roots_table(conn: &Connection, roots: &[String]) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE TEMP TABLE roots (path TEXT NOT NULL, prefix TEXT NOT NULL);")?;
    for root in roots {
        let prefix = if root.ends_with(std::path::MAIN_SEPARATOR) {
            root.clone()
        } else {
            format!("{root}{}", std::path::MAIN_SEPARATOR)
        };
        conn.execute("INSERT INTO temp.roots VALUES (?1, ?2)", [root, &prefix])?;
    }
    Ok(())
}

/// Fills the empty `evidence_posting` of `conn`'s main database from its `content_evidence`
/// rows (read in id order, so each tag's entries come ascending), through the segments and the
/// merge of the bytes level: memory stays within `pair_budget` pairs however many entries there
/// are.
pub(super) fn write_evidence_lists(conn: &Connection, pair_budget: usize) -> rusqlite::Result<()> {
    let (mut pairs, mut segments) = (Vec::new(), Vec::new());
    let mut select =
        conn.prepare("SELECT content_id, entries FROM content_evidence ORDER BY content_id")?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        evidence_pairs(row.get(0)?, row.get_ref(1)?.as_blob()?, &mut pairs)?;
        if pairs.len() >= pair_budget.max(1) {
            segments.push(spill(&mut pairs).map_err(spill_error)?);
        }
    }
    drop(rows);
    let mut insert = conn.prepare("INSERT INTO evidence_posting (tag, entries) VALUES (?1, ?2)")?;
    with_merged_lists(pairs, segments, |lists| {
        lists.try_for_each(|list| {
            let (key, entries) = list?;
            insert.execute(params![key, entries]).map(drop)
        })
    })
}

/// Appends to `pairs` the (tag << 32 | entry) pairs of the evidence lists by tag, for the
/// content `id` whose evidence row holds `entries`.
fn evidence_pairs(id: i64, entries: &[u8], pairs: &mut Vec<u64>) -> rusqlite::Result<()> {
    for (key, level) in postings::decode_evidence(entries).ok_or_else(damaged_list)? {
        let key = u32::try_from(key).map_err(|_| damaged_list())?;
        let entry = postings::evidence_entry(id, level)
            .and_then(|entry| u32::try_from(entry).ok())
            .ok_or_else(too_many_contents)?;
        pairs.push((u64::from(key) << 32) | u64::from(entry));
    }
    Ok(())
}

/// The contents a patch drops (`temp.dropped`), each with its own list in `table`
/// (`content_bytes`, `content_evidence`), held in `column`.
fn dropped_lists(
    conn: &Connection,
    table: &str,
    column: &str,
) -> rusqlite::Result<Vec<(i64, Vec<u8>)>> {
    conn.prepare(&format!(
        "SELECT x.content_id, x.{column} FROM patched.{table} x \
         JOIN temp.dropped d ON d.id = x.content_id"
    ))?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// Rewrites posting lists of the patched copy one tag at a time.
struct ListEditor<'c> {
    select: rusqlite::Statement<'c>,
    upsert: rusqlite::Statement<'c>,
    delete: rusqlite::Statement<'c>,
    blob: Vec<u8>,
}

impl<'c> ListEditor<'c> {
    /// For the lists of `table` (`bytes_posting`, `evidence_posting`), held in `column`.
    fn new(conn: &'c Connection, table: &str, column: &str) -> rusqlite::Result<ListEditor<'c>> {
        Ok(ListEditor {
            select: conn.prepare(&format!(
                "SELECT {column} FROM patched.{table} WHERE tag = ?1"
            ))?,
            upsert: conn.prepare(&format!(
                "INSERT OR REPLACE INTO patched.{table} (tag, {column}) VALUES (?1, ?2)"
            ))?,
            delete: conn.prepare(&format!("DELETE FROM patched.{table} WHERE tag = ?1"))?,
            blob: Vec::new(),
        })
    }

    /// Changes the list of `key` (an empty one when there is none); a list left empty goes.
    fn rewrite(&mut self, key: u32, change: impl FnOnce(&mut Vec<i64>)) -> rusqlite::Result<()> {
        let mut ids = match self
            .select
            .query_row([key], |r| r.get::<_, Vec<u8>>(0))
            .optional()?
        {
            Some(old) => postings::decode(&old).ok_or_else(damaged_list)?,
            None => Vec::new(),
        };
        change(&mut ids);
        if ids.is_empty() {
            self.delete.execute([key])?;
        } else {
            self.blob.clear();
            postings::encode(&ids, &mut self.blob).map_err(|_| damaged_list())?;
            self.upsert.execute(params![key, self.blob])?;
        }
        Ok(())
    }
}

/// The error of a merge whose contents do not all fit the ids an evidence entry holds (not
/// SQLITE_FULL, which [`describe`] says is a full disk).
fn too_many_contents() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_TOOBIG),
        Some(format!(
            "more contents than a pooltag database holds ({MOST_CONTENTS})"
        )),
    )
}

/// The error of a posting list that does not decode.
pub(super) fn damaged_list() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some("a damaged posting list".to_owned()),
    )
}

/// The posting lists of the spilled segments, one per tag, encoded: each tag's pieces (in
/// segment order, so their ids ascend) joined as the rows stream by, without decoding them
/// (see [`postings::append`]; a tag in one segment is its piece as it is).
struct SegmentLists<I> {
    rows: I,
    /// The first row of the next tag, read while finishing the previous one.
    pending: Option<(u32, Vec<u8>)>,
}

impl<I: Iterator<Item = rusqlite::Result<(u32, Vec<u8>)>>> Iterator for SegmentLists<I> {
    type Item = rusqlite::Result<(u32, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (key, mut list) = match self.pending.take() {
            Some(row) => row,
            None => match self.rows.next()? {
                Ok(row) => row,
                Err(e) => return Some(Err(e)),
            },
        };
        // The last id of `list`, found when a second piece comes.
        let mut last = None;
        loop {
            match self.rows.next() {
                None => break,
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok((next_key, piece))) if next_key == key => {
                    let end = match last.or_else(|| postings::Ids::new(&list).last()?.ok()) {
                        Some(end) => end,
                        None => return Some(Err(damaged_list())),
                    };
                    let mut joined = std::mem::take(&mut list);
                    match postings::append(&mut joined, Some(end), &piece) {
                        Ok(end) => last = Some(end),
                        Err(_) => return Some(Err(damaged_list())),
                    }
                    list = joined;
                }
                Some(Ok(row)) => {
                    self.pending = Some(row);
                    break;
                }
            }
        }
        Some(Ok((key, list)))
    }
}

/// A segment's next list in [`Segments`]: ((tag, segment), list), smallest first.
type Head = std::cmp::Reverse<((u32, usize), Vec<u8>)>;

/// A batch of lists [`merge_lists`] sends: (tag, encoded list).
type Batch = rusqlite::Result<Vec<(u32, Vec<u8>)>>;

/// The rows of the spilled segments, each in tag order, merged: by tag, then segment (so that
/// a tag's pieces come with ascending ids).
struct Segments<I: Iterator> {
    segments: Vec<I>,
    /// The next row of each segment not at its end: (tag, segment), its list.
    heads: std::collections::BinaryHeap<Head>,
    /// A failed read, returned next.
    failed: Option<rusqlite::Error>,
}

impl<I: Iterator<Item = rusqlite::Result<(u32, Vec<u8>)>>> Segments<I> {
    fn new(segments: Vec<I>) -> Segments<I> {
        let mut merged = Segments {
            heads: std::collections::BinaryHeap::with_capacity(segments.len()),
            segments,
            failed: None,
        };
        for n in 0..merged.segments.len() {
            merged.advance(n);
        }
        merged
    }

    fn advance(&mut self, n: usize) {
        match self.segments[n].next() {
            Some(Ok((tag, list))) => self.heads.push(std::cmp::Reverse(((tag, n), list))),
            Some(Err(e)) => self.failed = Some(e),
            None => {}
        }
    }
}

impl<I: Iterator<Item = rusqlite::Result<(u32, Vec<u8>)>>> Iterator for Segments<I> {
    type Item = rusqlite::Result<(u32, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        let std::cmp::Reverse(((tag, n), list)) = self.heads.pop()?;
        self.advance(n);
        Some(Ok((tag, list)))
    }
}

/// The rows of the spilled segments and of the pairs still in memory, by tag, the spilled ones
/// first for a tag (their ids are lower): what [`SegmentLists`] joins.
struct SpilledThenMemory<S: Iterator, M: Iterator> {
    spilled: std::iter::Peekable<S>,
    memory: std::iter::Peekable<M>,
}

impl<S, M> Iterator for SpilledThenMemory<S, M>
where
    S: Iterator<Item = rusqlite::Result<(u32, Vec<u8>)>>,
    M: Iterator<Item = rusqlite::Result<(u32, Vec<u8>)>>,
{
    type Item = rusqlite::Result<(u32, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let key = |row: &rusqlite::Result<(u32, Vec<u8>)>| row.as_ref().map_or(0, |(k, _)| *k);
        match (self.spilled.peek(), self.memory.peek()) {
            (Some(spilled), Some(memory)) if key(spilled) > key(memory) => self.memory.next(),
            (Some(_), _) => self.spilled.next(),
            (None, _) => self.memory.next(),
        }
    }
}

/// Lists merged per batch, at most: what [`merge_lists`] sends at a time.
const MERGED_BATCH: usize = 4096;

/// Merges this run's lists (the spilled `segments`, then the `pairs` still in memory, whose ids
/// are the highest) in tag order and sends them to the inserting thread in batches; stops at
/// the first error (sent too) or when the receiver is gone.
fn merge_lists(
    mut pairs: Vec<u64>,
    segments: Vec<Segment>,
    sender: std::sync::mpsc::SyncSender<Batch>,
) {
    // The walk is over: the sort may use every worker.
    pairs.par_sort_unstable();
    let in_memory = encoded_lists(&pairs);
    let mut readers = Vec::new();
    for segment in segments {
        match segment.read() {
            Ok(lists) => readers.push(lists.map(|list| list.map_err(spill_error))),
            Err(e) => {
                let _ = sender.send(Err(spill_error(e)));
                return;
            }
        }
    }
    let mut lists: Box<dyn Iterator<Item = rusqlite::Result<(u32, Vec<u8>)>>> =
        if readers.is_empty() {
            Box::new(in_memory)
        } else {
            Box::new(SegmentLists {
                rows: SpilledThenMemory {
                    spilled: Segments::new(readers).peekable(),
                    memory: in_memory.peekable(),
                },
                pending: None,
            })
        };
    loop {
        let mut batch = Vec::with_capacity(MERGED_BATCH);
        for list in lists.by_ref().take(MERGED_BATCH) {
            match list {
                Ok(list) => batch.push(list),
                Err(e) => {
                    let _ = sender.send(Err(e));
                    return;
                }
            }
        }
        let last = batch.len() < MERGED_BATCH;
        if sender.send(Ok(batch)).is_err() || last {
            return;
        }
    }
}

/// The lists [`merge_lists`] sends, one at a time.
struct Received {
    receiver: std::sync::mpsc::Receiver<Batch>,
    batch: std::vec::IntoIter<(u32, Vec<u8>)>,
}

impl Iterator for Received {
    type Item = rusqlite::Result<(u32, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(list) = self.batch.next() {
                return Some(Ok(list));
            }
            match self.receiver.recv().ok()? {
                Ok(batch) => self.batch = batch.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

fn spill_error(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        Some(format!("a temporary file of posting lists: {e}")),
    )
}

/// Sorts `pairs` and writes them as a segment, leaving `pairs` empty.
fn spill(pairs: &mut Vec<u64>) -> std::io::Result<Segment> {
    let mut pairs = std::mem::take(pairs);
    // Not rayon's parallel sort: its workers may all be waiting for this thread to take their
    // results, and would never come to help.
    pairs.sort_unstable();
    let lists = encoded_lists(&pairs).map(|list| list.map_err(std::io::Error::other));
    Segment::write(lists)
}

/// Runs `insert` over the lists of `pairs` and the spilled `segments`, merged in tag order by a
/// thread of their own while `insert` (on this thread, which owns the connection) stores them.
fn with_merged_lists(
    pairs: Vec<u64>,
    segments: Vec<Segment>,
    insert: impl FnOnce(&mut Received) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(4);
    std::thread::scope(|scope| {
        scope.spawn(move || merge_lists(pairs, segments, sender));
        insert(&mut Received {
            receiver,
            batch: Vec::new().into_iter(),
        })
    })
}

/// Sorted (tag << 32 | id) pairs as encoded posting lists.
fn encoded_lists(pairs: &[u64]) -> impl Iterator<Item = rusqlite::Result<(u32, Vec<u8>)>> + '_ {
    group_pairs(pairs).map(|(key, ids)| {
        let mut list = Vec::new();
        postings::encode(&ids, &mut list).map_err(|_| damaged_list())?;
        Ok((key, list))
    })
}

/// Sorted (tag << 32 | id) pairs grouped into posting lists.
fn group_pairs(pairs: &[u64]) -> impl Iterator<Item = (u32, Vec<i64>)> + '_ {
    pairs.chunk_by(|a, b| a >> 32 == b >> 32).map(|group| {
        let ids = group.iter().map(|p| i64::from(*p as u32)).collect();
        ((group[0] >> 32) as u32, ids)
    })
}
