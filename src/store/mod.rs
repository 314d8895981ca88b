//! The SQLite database: its schema and migrations, writing an index ([`mod@write`]), and the reads
//! that queries make ([`Database`]).
//!
//! A database is one file. It is never changed in place: `pooltag index` builds a new file beside
//! it and renames it over the old one, so a reader always sees one whole database, and readers can
//! open it with `immutable=1` (no locks, no `-wal`/`-shm`/`-journal` files beside it).

pub mod atomic;
pub mod postings;
mod schema;
mod spill;
pub mod unchanged;
pub mod upgrade;
pub mod write;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, params};

use crate::error::{Error, Result};
use crate::extract::Evidence;
use crate::tag::Tag;

/// `PRAGMA application_id` of every pooltag database: "PTAG".
pub const APPLICATION_ID: i32 = 0x5054_4147;

/// The migrations, in order; `PRAGMA user_version` is the number applied.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_initial.sql"),
    include_str!("../../migrations/0002_analysis_and_via.sql"),
    include_str!("../../migrations/0003_content_bytes.sql"),
    include_str!("../../migrations/0004_tally.sql"),
    include_str!("../../migrations/0005_evidence_posting.sql"),
];

/// The schema version this pooltag writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings a database from `user_version` up to [`SCHEMA_VERSION`], one migration at a time,
/// each in its own transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Turns SQLite's error about the database at `path` into a sentence a user understands.
pub fn describe(path: &Path, e: &rusqlite::Error) -> Error {
    let shown = path.display();
    let why = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => "not a pooltag database (not an SQLite file)".to_owned(),
        Some(ErrorCode::DatabaseCorrupt) => "the database is damaged (truncated or corrupt); \
             rebuild it with 'pooltag index'"
            .to_owned(),
        Some(ErrorCode::DiskFull) => "the disk is full".to_owned(),
        Some(ErrorCode::CannotOpen) => "cannot open the database file".to_owned(),
        Some(ErrorCode::PermissionDenied) | Some(ErrorCode::ReadOnly) => {
            "permission denied".to_owned()
        }
        _ => format!("database error: {e}"),
    };
    Error::new(format!("{shown}: {why}"))
}

/// A database opened read-only for queries.
pub struct Database {
    conn: Connection,
    path: PathBuf,
}

/// A Pooltag.txt line as stored, with one place it was read (an entry read in several places
/// comes once per place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub tag: String,
    pub binary: String,
    pub description: String,
    /// The host whose tag file it is.
    pub host: String,
    /// The path of the tag file.
    pub source: String,
    pub line: u32,
}

/// A `call` or `arg` site as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSite {
    pub evidence: Evidence,
    /// `None` for an `arg` site whose callee is unknown.
    pub api: Option<String>,
    pub rva: u32,
    pub section: String,
    pub offset: u32,
    /// The entries of the driver's own functions the call reaches the API through, outermost
    /// first; empty for a direct call.
    pub via: Vec<Place>,
}

pub use crate::extract::Place;

impl StoredSite {
    /// A site as found, its `via` RVAs placed in their sections (`findings.places`).
    pub fn of(site: &crate::extract::Site, findings: &crate::extract::Findings) -> Self {
        StoredSite {
            evidence: site.evidence,
            api: site.api.clone(),
            rva: site.rva,
            section: site.section.clone(),
            offset: site.offset,
            via: site
                .via
                .iter()
                .map(|rva| match findings.places.get(rva) {
                    Some(place) => place.clone(),
                    None => Place {
                        rva: *rva,
                        section: String::new(),
                        offset: *rva,
                    },
                })
                .collect(),
        }
    }
}

/// `site.via` as stored: NULL for a direct call, else a JSON array of `[rva, section, offset]`.
pub fn via_text(via: &[Place]) -> Option<String> {
    (!via.is_empty()).then(|| {
        let triples: Vec<(u32, &str, u32)> = via
            .iter()
            .map(|p| (p.rva, p.section.as_str(), p.offset))
            .collect();
        serde_json::to_string(&triples).unwrap_or_default()
    })
}

/// The places of a stored `site.via`; `None` when it is damaged.
fn via_of(text: Option<&str>) -> Option<Vec<Place>> {
    let Some(text) = text else {
        return Some(Vec::new());
    };
    let triples: Vec<(u32, String, u32)> = serde_json::from_str(text).ok()?;
    Some(
        triples
            .into_iter()
            .map(|(rva, section, offset)| Place {
                rva,
                section,
                offset,
            })
            .collect(),
    )
}

/// The contents with evidence above bytes for one tag, by id, with the level of each.
type TagEvidence = Vec<(i64, Evidence)>;

/// One run of `pooltag index` (or an index merged in), as recorded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredRun {
    pub pooltag_version: String,
    pub host: String,
    pub os: String,
    pub roots: Vec<String>,
    pub started_at: i64,
    pub finished_at: i64,
    pub files_seen: i64,
    pub drivers_indexed: i64,
    pub errors: i64,
}

/// What `pooltag info` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseInfo {
    pub path: String,
    pub size: u64,
    pub schema: i64,
    pub runs: Vec<StoredRun>,
    pub files: i64,
    pub contents: i64,
    /// Contents by the analysis that produced their evidence (`3:code`; empty text for none),
    /// as (fingerprint, count).
    pub analyses: Vec<(String, i64)>,
    /// Files by the machine of their content, as (IMAGE_FILE_MACHINE_*, count).
    pub machines: Vec<(u16, i64)>,
    /// Distinct tags by the strongest evidence any content has for them, strongest first.
    pub tags: Vec<(Evidence, i64)>,
    /// Tag-file lines by source, as (host, path, lines).
    pub tag_files: Vec<(String, String, i64)>,
    /// The index runs since the database was written that found nothing to change.
    pub unchanged_runs: unchanged::UnchangedRuns,
}

/// An indexed driver file: a path on a host, and what is known of its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    pub content_id: i64,
    pub host: String,
    pub path: String,
    pub sha256: Vec<u8>,
    pub machine: u16,
    pub company: Option<String>,
    pub description: Option<String>,
    pub version: Option<String>,
}

/// The columns of a [`StoredFile`], in `file f JOIN content c`.
const FILE_COLUMNS: &str = "f.content_id, f.host, f.path, c.sha256, c.machine, c.company, \
     c.description, c.version FROM file f JOIN content c ON c.id = f.content_id";

/// A path as pooltag stores and shows it: its text where it is valid Unicode, and `\xNN` for
/// each byte that is not (a Unix name in another encoding; on Windows, the bytes of an unpaired
/// surrogate), so that two names differing only in such bytes stay two paths.
pub fn path_text(path: &Path) -> String {
    let mut text = String::new();
    for chunk in path.as_os_str().as_encoded_bytes().utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02X}"));
        }
    }
    text
}

/// The last component of a path as indexed, whichever platform wrote it (`\\` or `/`).
pub fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or_default()
}

fn stored_file(r: &rusqlite::Row) -> rusqlite::Result<StoredFile> {
    Ok(StoredFile {
        content_id: r.get(0)?,
        host: r.get(1)?,
        path: r.get(2)?,
        sha256: r.get(3)?,
        machine: r.get(4)?,
        company: r.get(5)?,
        description: r.get(6)?,
        version: r.get(7)?,
    })
}

impl Database {
    /// Opens the database at `path` read-only, after checking that it is a pooltag database of a
    /// schema this pooltag reads. Writes nothing, creates nothing beside it.
    pub fn open(path: &Path) -> Result<Database> {
        let shown = path.display();
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::new(format!(
                    "no database at {shown}; run 'pooltag index ROOT...' first"
                )));
            }
            Err(e) => return Err(Error::new(format!("{shown}: {e}"))),
            Ok(m) if m.is_dir() => {
                return Err(Error::new(format!(
                    "{shown}: is a directory, not a pooltag database"
                )));
            }
            Ok(_) => {}
        }
        check_header(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(read_only_uri(path), flags)
            .map_err(|e| describe(path, &e))?;
        let database = Database {
            conn,
            path: path.to_owned(),
        };
        database.harden().map_err(|e| describe(path, &e))?;
        database.check_identity()?;
        Ok(database)
    }

    /// A database from another machine is untrusted: nothing in it may run code.
    fn harden(&self) -> rusqlite::Result<()> {
        harden(&self.conn)
    }

    fn check_identity(&self) -> Result<()> {
        let shown = self.path.display();
        let read = |pragma: &str| -> Result<i64> {
            self.conn
                .pragma_query_value(None, pragma, |r| r.get(0))
                .map_err(|e| describe(&self.path, &e))
        };
        let application_id = read("application_id")?;
        if application_id != i64::from(APPLICATION_ID) {
            return Err(Error::new(format!(
                "{shown}: not a pooltag database (an SQLite file of another application)"
            )));
        }
        let version = read("user_version")?;
        if version > SCHEMA_VERSION {
            return Err(Error::new(format!(
                "{shown}: made by a newer pooltag (schema {version}; this pooltag reads up to \
                 schema {SCHEMA_VERSION}); upgrade pooltag"
            )));
        }
        if version < 1 {
            return Err(Error::new(format!(
                "{shown}: an incomplete pooltag database (no schema); rebuild it with 'pooltag index'"
            )));
        }
        if version < SCHEMA_VERSION {
            return Err(Error::new(format!(
                "{shown}: made by an older pooltag (schema {version}); 'pooltag index' \
                 rebuilds it in this pooltag's schema"
            )));
        }
        self.check_schema()
    }

    /// Refuses a database holding objects pooltag did not create (a trigger, a view, another
    /// table) or whose tables differ from pooltag's: nothing in such a file is read or run.
    fn check_schema(&self) -> Result<()> {
        let found = schema_of(&self.conn).map_err(|e| self.fail(e))?;
        let same = |(kind, name, sql): &SchemaObject, expected: &(&str, &str, Option<&str>)| {
            (kind.as_str(), name.as_str(), sql.as_deref()) == *expected
        };
        if let Some((kind, name, _)) = found
            .iter()
            .find(|o| !schema::EXPECTED.iter().any(|e| same(o, e)))
        {
            return Err(Error::new(format!(
                "{}: not a pooltag database as pooltag writes it: it holds {kind} '{name}', \
                 which pooltag did not create",
                self.path.display()
            )));
        }
        if let Some((kind, name, _)) = schema::EXPECTED
            .iter()
            .find(|e| !found.iter().any(|o| same(o, e)))
        {
            return Err(self.damaged(&format!("{kind} '{name}' is missing")));
        }
        Ok(())
    }

    /// Everything `pooltag info` shows.
    pub fn info(&self) -> Result<DatabaseInfo> {
        self.read_info().map_err(|e| self.fail(e))
    }

    fn read_info(&self) -> rusqlite::Result<DatabaseInfo> {
        let conn = &self.conn;
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        let runs = conn
            .prepare(
                "SELECT pooltag_version, host, os, roots, started_at, finished_at, files_seen, \
                 drivers_indexed, errors FROM run ORDER BY started_at, host",
            )?
            .query_map([], |r| {
                Ok(StoredRun {
                    pooltag_version: r.get(0)?,
                    host: r.get(1)?,
                    os: r.get(2)?,
                    roots: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                    started_at: r.get(4)?,
                    finished_at: r.get(5)?,
                    files_seen: r.get(6)?,
                    drivers_indexed: r.get(7)?,
                    errors: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let analyses = conn
            .prepare("SELECT analysis, count(*) FROM content GROUP BY analysis ORDER BY analysis")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let machines = conn
            .prepare(
                "SELECT c.machine, count(*) FROM file f JOIN content c ON c.id = f.content_id \
                 GROUP BY c.machine ORDER BY count(*) DESC, c.machine",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        // Tags by the strongest level of their evidence list.
        let mut stronger: HashMap<Evidence, i64> = HashMap::new();
        let mut select = conn.prepare("SELECT entries FROM evidence_posting")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let entries = postings::decode_evidence(row.get_ref(0)?.as_blob()?)
                .ok_or_else(write::damaged_list)?;
            if let Some(strongest) = entries.into_iter().map(|(_, level)| level).max() {
                *stronger.entry(strongest).or_default() += 1;
            }
        }
        drop(rows);
        let bytes_only = count(
            "SELECT count(*) FROM bytes_posting \
             WHERE tag NOT IN (SELECT tag FROM evidence_posting)",
        )?;
        let tags = Evidence::ALL
            .into_iter()
            .map(|level| {
                let n = if level == Evidence::Bytes {
                    bytes_only
                } else {
                    stronger.get(&level).copied().unwrap_or(0)
                };
                (level, n)
            })
            .collect();
        let tag_files = conn
            .prepare(
                "SELECT f.host, f.path, count(s.line) FROM tag_file f \
                 LEFT JOIN tag_entry_source s ON s.tag_file_id = f.id \
                 GROUP BY f.id ORDER BY f.host, f.path",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(DatabaseInfo {
            path: self.path.display().to_string(),
            size: std::fs::metadata(&self.path).map_or(0, |m| m.len()),
            schema: conn.pragma_query_value(None, "user_version", |r| r.get(0))?,
            runs,
            files: count("SELECT count(*) FROM file")?,
            contents: count("SELECT count(*) FROM content")?,
            analyses,
            machines,
            tags,
            tag_files,
            unchanged_runs: unchanged::read(&self.path),
        })
    }

    /// Runs SQLite's quick integrity check (reads every page: for `pooltag info`).
    pub fn quick_check(&self) -> Result<()> {
        let result: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| self.fail(e))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(self.damaged(&result))
        }
    }

    fn fail(&self, e: rusqlite::Error) -> Error {
        describe(&self.path, &e)
    }

    fn damaged(&self, what: &str) -> Error {
        Error::new(format!(
            "{}: the database is damaged ({what}); rebuild it with 'pooltag index'",
            self.path.display()
        ))
    }

    /// The bytes-level posting lists of every tag key in `low..=high`.
    pub fn postings(&self, low: u32, high: u32) -> Result<Vec<(Tag, Vec<i64>)>> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT tag, content_ids FROM bytes_posting WHERE tag BETWEEN ?1 AND ?2",
            )
            .map_err(|e| self.fail(e))?;
        let rows = statement
            .query_map(params![low, high], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (key, blob) = row.map_err(|e| self.fail(e))?;
            let tag = tag_of_key(key).ok_or_else(|| self.damaged("a tag key out of range"))?;
            let ids = postings::decode(&blob)
                .ok_or_else(|| self.damaged(&format!("the content list of tag {tag}")))?;
            out.push((tag, ids));
        }
        Ok(out)
    }

    /// Walks every tag key in `low..=high` in key order, calling `each` once per tag found with
    /// its contents (by id) and the strongest evidence of each: the bytes level from the posting
    /// lists when `bytes`, and the evidence lists' entries at `stronger` or above when given. The two
    /// tables are both in tag order, so they are merged as they are read: one tag is in memory
    /// at a time, and a walk over every tag of a large index stays small.
    pub fn each_tag(
        &self,
        (low, high): (u32, u32),
        bytes: bool,
        stronger: Option<Evidence>,
        mut each: impl FnMut(Tag, &[(i64, Evidence)]) -> Result<()>,
    ) -> Result<()> {
        let fail = |e| self.fail(e);
        let mut postings = self
            .conn
            .prepare_cached(
                "SELECT tag, content_ids FROM bytes_posting WHERE tag BETWEEN ?1 AND ?2 \
                 ORDER BY tag",
            )
            .map_err(fail)?;
        let mut levels = self
            .conn
            .prepare_cached(
                "SELECT tag, entries FROM evidence_posting WHERE tag BETWEEN ?1 AND ?2 \
                 ORDER BY tag",
            )
            .map_err(fail)?;
        // A table not asked for is read over an empty range.
        let empty = (1, 0);
        let posting_range = if bytes { (low, high) } else { empty };
        let (level_range, minimum) = match stronger {
            Some(level) => ((low, high), level),
            None => (empty, Evidence::Call),
        };
        let mut posting_rows = postings
            .query(params![posting_range.0, posting_range.1])
            .map_err(fail)?;
        let mut level_rows = levels
            .query(params![level_range.0, level_range.1])
            .map_err(fail)?;
        let mut next_posting = || -> Result<Option<(u32, Vec<i64>)>> {
            match posting_rows.next().map_err(fail)? {
                Some(row) => self
                    .list_row(row, postings::decode, "content list")
                    .map(Some),
                None => Ok(None),
            }
        };
        // The next tag with evidence at `minimum` or above, and that evidence.
        let mut next_level = || -> Result<Option<(u32, TagEvidence)>> {
            while let Some(row) = level_rows.next().map_err(fail)? {
                let (key, mut entries) =
                    self.list_row(row, postings::decode_evidence, "evidence list")?;
                entries.retain(|(_, evidence)| *evidence >= minimum);
                if !entries.is_empty() {
                    return Ok(Some((key, entries)));
                }
            }
            Ok(None)
        };
        let mut posting = next_posting()?;
        let mut level = next_level()?;
        let mut pairs: Vec<(i64, Evidence)> = Vec::new();
        loop {
            let key = match (&posting, &level) {
                (None, None) => return Ok(()),
                (Some((p, _)), None) => *p,
                (None, Some((l, _))) => *l,
                (Some((p, _)), Some((l, _))) => (*p).min(*l),
            };
            pairs.clear();
            if let Some((_, ids)) = posting.as_ref().filter(|(p, _)| *p == key) {
                pairs.extend(ids.iter().map(|&id| (id, Evidence::Bytes)));
                posting = next_posting()?;
            }
            let from_postings = pairs.len();
            if let Some((_, entries)) = level.as_ref().filter(|(l, _)| *l == key) {
                pairs.extend_from_slice(entries);
                level = next_level()?;
            }
            if from_postings > 0 && pairs.len() > from_postings {
                // By id, the strongest first, then each id once.
                pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                pairs.dedup_by_key(|pair| pair.0);
            }
            each(Tag::from_key(key), &pairs)?;
        }
    }

    /// A (tag, list) row of `bytes_posting` or `evidence_posting`, its list decoded; `what` names
    /// the list when it is damaged.
    fn list_row<T>(
        &self,
        row: &rusqlite::Row,
        decode: impl FnOnce(&[u8]) -> Option<T>,
        what: &str,
    ) -> Result<(u32, T)> {
        let key = key_of(row.get(0).map_err(|e| self.fail(e))?)
            .ok_or_else(|| self.damaged("a tag key out of range"))?;
        let list = row
            .get_ref(1)
            .and_then(|v| Ok(v.as_blob()?))
            .ok()
            .and_then(decode)
            .ok_or_else(|| self.damaged(&format!("the {what} of tag {}", Tag::from_key(key))))?;
        Ok((key, list))
    }

    /// Evidence stronger than bytes for every tag key in `low..=high`: (tag, content id, level).
    pub fn stronger_evidence(&self, low: u32, high: u32) -> Result<Vec<(Tag, i64, Evidence)>> {
        let mut out = Vec::new();
        self.each_tag((low, high), false, Some(Evidence::Data), |tag, pairs| {
            out.extend(pairs.iter().map(|&(id, evidence)| (tag, id, evidence)));
            Ok(())
        })?;
        Ok(out)
    }

    /// Every Pooltag.txt line stored, in source and line order.
    pub fn tag_entries(&self) -> Result<Vec<StoredEntry>> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT e.tag, e.binary, e.description, f.host, f.path, s.line \
                 FROM tag_entry e JOIN tag_entry_source s ON s.entry_id = e.id \
                 JOIN tag_file f ON f.id = s.tag_file_id ORDER BY f.host, f.path, s.line",
            )
            .map_err(|e| self.fail(e))?;
        let rows = statement
            .query_map([], |r| {
                Ok(StoredEntry {
                    tag: r.get(0)?,
                    binary: r.get(1)?,
                    description: r.get(2)?,
                    host: r.get(3)?,
                    source: r.get(4)?,
                    line: r.get(5)?,
                })
            })
            .map_err(|e| self.fail(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.fail(e))
    }

    /// Adds to `files` the files holding each of the given contents not in it yet, in no
    /// particular order (callers sort what they show). One statement for all of them: a tag held
    /// by thousands of contents is one lookup.
    pub fn files_of(
        &self,
        content_ids: impl IntoIterator<Item = i64>,
        files: &mut HashMap<i64, Vec<StoredFile>>,
    ) -> Result<()> {
        let wanted: std::collections::BTreeSet<i64> = content_ids
            .into_iter()
            .filter(|id| !files.contains_key(id))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let fail = |e| self.fail(e);
        let scan = self.scan_is_cheaper(wanted.len())?;
        let mut statement = self
            .conn
            .prepare_cached(&if scan {
                format!("SELECT {FILE_COLUMNS}")
            } else {
                format!(
                    "SELECT {FILE_COLUMNS} WHERE f.content_id IN (SELECT value FROM json_each(?1))"
                )
            })
            .map_err(fail)?;
        let mut rows = if scan {
            statement.query([])
        } else {
            statement.query([json_ids(&wanted)?])
        }
        .map_err(fail)?;
        files.reserve(wanted.len());
        while let Some(row) = rows.next().map_err(fail)? {
            if wanted.contains(&row.get(0).map_err(fail)?) {
                let file = stored_file(row).map_err(fail)?;
                // Most contents have one file: a first push would make room for four.
                match files.entry(file.content_id) {
                    Entry::Occupied(list) => list.into_mut().push(file),
                    Entry::Vacant(list) => {
                        list.insert(vec![file]);
                    }
                }
            }
        }
        if let Some(id) = wanted.iter().find(|id| !files.contains_key(id)) {
            return Err(self.damaged(&format!("a tag names content {id}, which no file holds")));
        }
        Ok(())
    }

    /// Every host the database holds anything of (files, tag files or runs), sorted.
    pub fn hosts(&self) -> Result<Vec<String>> {
        self.conn
            .prepare(
                "SELECT host FROM file UNION SELECT host FROM tag_file \
                 UNION SELECT host FROM run ORDER BY 1",
            )
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| self.fail(e))
    }

    /// The distinct paths of the files holding any of `contents`, sorted (byte order, as Rust
    /// sorts strings). One statement, whatever the number of contents.
    pub fn paths_of(&self, contents: &std::collections::BTreeSet<i64>) -> Result<Vec<String>> {
        let fail = |e| self.fail(e);
        let scan = self.scan_is_cheaper(contents.len())?;
        let mut statement = self
            .conn
            .prepare_cached(if scan {
                "SELECT content_id, path FROM file"
            } else {
                "SELECT content_id, path FROM file \
                 WHERE content_id IN (SELECT value FROM json_each(?1))"
            })
            .map_err(fail)?;
        let mut rows = if scan {
            statement.query([])
        } else {
            statement.query([json_ids(contents)?])
        }
        .map_err(fail)?;
        let mut paths = std::collections::BTreeSet::new();
        while let Some(row) = rows.next().map_err(fail)? {
            if contents.contains(&row.get(0).map_err(fail)?) {
                paths.insert(row.get::<_, String>(1).map_err(fail)?);
            }
        }
        Ok(paths.into_iter().collect())
    }

    /// Whether reading every file row costs less than looking `contents` up through the index:
    /// when they are more than a sixteenth of the files (counted roughly, and in one seek, as the
    /// largest file id). A tag held by most files is then one pass over a small table.
    fn scan_is_cheaper(&self, contents: usize) -> Result<bool> {
        let last: Option<i64> = self
            .conn
            .query_row("SELECT max(id) FROM file", [], |r| r.get(0))
            .map_err(|e| self.fail(e))?;
        Ok(i64::try_from(contents)
            .unwrap_or(i64::MAX)
            .saturating_mul(16)
            > last.unwrap_or(0))
    }

    /// The id of the content with this SHA-256, when indexed.
    pub fn content_with_sha256(&self, sha256: &[u8]) -> Result<Option<i64>> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row("SELECT id FROM content WHERE sha256 = ?1", [sha256], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// How many hosts the files come from (more than one after a merge).
    pub fn host_count(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT count(DISTINCT host) FROM file", [], |r| r.get(0))
            .map_err(|e| self.fail(e))
    }

    /// The indexed file at exactly `path`.
    pub fn file_with_path(&self, path: &str) -> Result<Option<StoredFile>> {
        Ok(self
            .files_where(&format!("SELECT {FILE_COLUMNS} WHERE f.path = ?1"), path)?
            .pop())
    }

    /// The indexed files named `name` (any case), by path.
    pub fn files_named(&self, name: &str) -> Result<Vec<StoredFile>> {
        self.files_where(
            &format!(
                "SELECT {FILE_COLUMNS} WHERE f.name = ?1 COLLATE NOCASE ORDER BY f.host, f.path"
            ),
            name,
        )
    }

    fn files_where(&self, sql: &str, value: &str) -> Result<Vec<StoredFile>> {
        let mut statement = self.conn.prepare_cached(sql).map_err(|e| self.fail(e))?;
        let rows = statement
            .query_map([value], stored_file)
            .map_err(|e| self.fail(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.fail(e))
    }

    /// The sites behind a (content, tag) pair, by RVA.
    pub fn sites(&self, content_id: i64, tag: Tag) -> Result<Vec<StoredSite>> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT evidence, api, rva, section, offset, via FROM site \
                 WHERE content_id = ?1 AND tag = ?2 ORDER BY rva, evidence, api",
            )
            .map_err(|e| self.fail(e))?;
        let rows = statement
            .query_map(params![content_id, tag.key()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .map_err(|e| self.fail(e))?;
        let mut sites = Vec::new();
        for row in rows {
            let (level, api, rva, section, offset, via) = row.map_err(|e| self.fail(e))?;
            sites.push(StoredSite {
                evidence: Evidence::from_number(level)
                    .ok_or_else(|| self.damaged("an unknown evidence level"))?,
                api,
                rva: u32::try_from(rva).map_err(|_| self.damaged("an RVA out of range"))?,
                section,
                offset: u32::try_from(offset)
                    .map_err(|_| self.damaged("a section offset out of range"))?,
                via: via_of(via.as_deref()).ok_or_else(|| self.damaged("a damaged 'via' list"))?,
            });
        }
        Ok(sites)
    }

    /// Every tag of one content whose strongest evidence is `minimum` or stronger, in key order.
    /// The bytes level is stored by tag, so including it reads every posting list: a full scan,
    /// each list read in place and only as far as the content's id.
    pub fn tags_of_content(
        &self,
        content_id: i64,
        minimum: Evidence,
    ) -> Result<Vec<(Tag, Evidence)>> {
        let mut bytes = Vec::new();
        if minimum == Evidence::Bytes {
            // One row: the content's own list of its bytes-level tags.
            let blob: Option<Vec<u8>> = self
                .conn
                .prepare_cached("SELECT tags FROM content_bytes WHERE content_id = ?1")
                .and_then(|mut s| {
                    rusqlite::OptionalExtension::optional(s.query_row([content_id], |r| r.get(0)))
                })
                .map_err(|e| self.fail(e))?;
            let damaged = || self.damaged(&format!("the tag list of content {content_id}"));
            bytes = postings::decode(&blob.ok_or_else(damaged)?).ok_or_else(damaged)?;
        }
        // One row, absent for a content without evidence above bytes.
        let blob: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT entries FROM content_evidence WHERE content_id = ?1")
            .and_then(|mut s| {
                rusqlite::OptionalExtension::optional(s.query_row([content_id], |r| r.get(0)))
            })
            .map_err(|e| self.fail(e))?;
        let mut stronger = postings::decode_evidence(&blob.unwrap_or_default())
            .ok_or_else(|| self.damaged(&format!("the evidence list of content {content_id}")))?;
        stronger.retain(|(_, evidence)| *evidence >= minimum);
        // Both lists ascend by tag: merged, each tag once with its strongest level.
        let mut tags = Vec::with_capacity(bytes.len().max(stronger.len()));
        let (mut bytes, mut stronger) = (
            bytes.into_iter().peekable(),
            stronger.into_iter().peekable(),
        );
        loop {
            let (key, evidence) = match (bytes.peek(), stronger.peek()) {
                (None, None) => break,
                (Some(&b), Some(&(s, evidence))) if s <= b => {
                    stronger.next();
                    bytes.next_if_eq(&s);
                    (s, evidence)
                }
                (Some(&b), _) => {
                    bytes.next();
                    (b, Evidence::Bytes)
                }
                (None, Some(&(s, evidence))) => {
                    stronger.next();
                    (s, evidence)
                }
            };
            let tag = tag_of_key(key).ok_or_else(|| self.damaged("a tag key out of range"))?;
            tags.push((tag, evidence));
        }
        Ok(tags)
    }
}

/// Reads the 100-byte SQLite header before SQLite does, to name two common faults plainly: a
/// file that is not SQLite at all (an empty one included), and a truncated copy (the header
/// counts more pages than the file holds).
fn check_header(path: &Path) -> Result<()> {
    use std::io::Read;
    let shown = path.display();
    let mut header = [0u8; 100];
    let mut file = std::fs::File::open(path).map_err(|e| Error::new(format!("{shown}: {e}")))?;
    let length = file.metadata().map_or(0, |m| m.len());
    if file.read_exact(&mut header).is_err() || &header[..16] != b"SQLite format 3\0" {
        return Err(Error::new(format!(
            "{shown}: not a pooltag database (not an SQLite file)"
        )));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([
        header[28], header[29], header[30], header[31],
    ]));
    if length < page_size.saturating_mul(pages) {
        return Err(Error::new(format!(
            "{shown}: the database is truncated ({length} bytes of {}); rebuild it or copy it \
             again",
            page_size * pages
        )));
    }
    Ok(())
}

/// Defensive mode on and `trusted_schema` off: nothing in an untrusted file may run code.
fn harden(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    Ok(())
}

/// An object of a database's schema, as `sqlite_schema` lists it: (type, name, sql).
type SchemaObject = (String, String, Option<String>);

/// (type, name, sql) of every object of a database, by type and name.
fn schema_of(conn: &Connection) -> rusqlite::Result<Vec<SchemaObject>> {
    conn.prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY type, name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

fn tag_of_key(key: i64) -> Option<Tag> {
    key_of(key).map(Tag::from_key)
}

/// Content ids as the JSON array `json_each` reads: a whole set bound as one parameter.
fn json_ids(ids: &std::collections::BTreeSet<i64>) -> Result<String> {
    serde_json::to_string(ids).map_err(|e| Error::new(format!("cannot list content ids: {e}")))
}

/// A tag key as stored, when it is one (a damaged database may hold any integer).
fn key_of(key: i64) -> Option<u32> {
    u32::try_from(key).ok()
}

/// The `file:` URI that opens `path` read-only and immutable. Characters that mean something in
/// a URI are percent-encoded; Windows paths get the `/C:/...` form SQLite expects.
pub(crate) fn read_only_uri(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let text = absolute.to_string_lossy().replace('\\', "/");
    let mut uri = String::from("file:");
    if !text.starts_with('/') {
        uri.push('/');
    }
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~:".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_from_an_empty_file_reach_the_current_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        let id: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!((version, id), (SCHEMA_VERSION, APPLICATION_ID));
        let mut tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        tables.sort();
        assert_eq!(
            tables,
            [
                "bytes_posting",
                "content",
                "content_bytes",
                "content_evidence",
                "evidence_posting",
                "file",
                "run",
                "site",
                "tag_entry",
                "tag_entry_source",
                "tag_file",
                "tally"
            ]
        );
        // Applying again changes nothing.
        migrate(&mut conn).unwrap();
    }

    #[test]
    fn every_migration_file_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), MIGRATIONS.len());
        for (i, name) in names.iter().enumerate() {
            assert!(name.starts_with(&format!("{:04}_", i + 1)), "{name}");
            let content = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
            assert_eq!(content, MIGRATIONS[i]);
        }
    }

    /// `schema::EXPECTED` is what the migrations create; when a migration changes, this prints
    /// the new list to paste into src/store/schema.rs (then `cargo fmt`).
    #[test]
    fn the_committed_schema_is_what_the_migrations_create() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let created = schema_of(&conn).unwrap();
        let committed: Vec<SchemaObject> = schema::EXPECTED
            .iter()
            .map(|(kind, name, sql)| (kind.to_string(), name.to_string(), sql.map(str::to_owned)))
            .collect();
        let listed: String = created
            .iter()
            .map(|(kind, name, sql)| match sql {
                Some(sql) => format!("    ({kind:?}, {name:?}, Some(r#\"{sql}\"#)),\n"),
                None => format!("    ({kind:?}, {name:?}, None),\n"),
            })
            .collect();
        assert!(
            created == committed,
            "src/store/schema.rs is out of date; its list should be:\n{listed}"
        );
    }

    #[test]
    fn uris_escape_what_sqlite_would_read_as_syntax() {
        let uri = read_only_uri(Path::new("/tmp/a b/x?y#z%.db"));
        assert_eq!(uri, "file:/tmp/a%20b/x%3Fy%23z%25.db?mode=ro&immutable=1");
    }
}
