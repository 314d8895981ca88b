//! A database of schema 4 (evidence as `content_tag` rows) as the previous database of an index
//! run: copied beside it and the copy converted to the current schema, so that upgrading
//! pooltag keeps every analysis instead of redoing them. The database itself is not touched (a
//! reader may hold it): the run replaces it with its result, as always, and the copy is deleted
//! when the run ends, whatever happens.
//!
//! Only a file that is exactly what pooltag's first four migrations create is converted, after
//! the same checks as any database pooltag opens; anything else is rebuilt from scratch.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::write::{damaged_list, write_evidence_lists};
use super::{
    APPLICATION_ID, Database, MIGRATIONS, check_header, describe, harden, migrate, postings,
    read_only_uri, schema_of,
};
use crate::error::{Error, Result};
use crate::extract::Evidence;

/// The schema converted from.
const FROM: i64 = 4;

/// A converted copy of a schema-4 database: a temporary file beside it, deleted when dropped.
pub struct Converted {
    path: tempfile::TempPath,
}

impl Converted {
    /// The copy, a database of the current schema.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Converts a copy of `db` when it is a pooltag database of schema 4 exactly; `None` when it is
/// anything else. Holds at most `pair_budget` evidence pairs in memory while building the lists.
pub fn convert(db: &Path, pair_budget: usize) -> Result<Option<Converted>> {
    if !is_schema_4(db)? {
        return Ok(None);
    }
    let folder = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let path = tempfile::Builder::new()
        .prefix(".pooltag-schema-4-")
        .tempfile_in(folder)
        .map_err(|e| Error::new(format!("{}: {e}", folder.display())))?
        .into_temp_path();
    std::fs::copy(db, &path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
    // The copy is what is converted: checked again, in case the file changed in between.
    if !is_schema_4(&path)? {
        return Ok(None);
    }
    let shown = |e: rusqlite::Error| describe(db, &e);
    let mut conn = Connection::open(&path).map_err(shown)?;
    harden(&conn).map_err(shown)?;
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
        .map_err(shown)?;
    let rows = evidence_rows(&conn).map_err(shown)?;
    // Migration 5 drops `content_tag` and creates the tables the rows go to.
    migrate(&mut conn).map_err(shown)?;
    let fill = || -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN;")?;
        let mut insert =
            conn.prepare("INSERT INTO content_evidence (content_id, entries) VALUES (?1, ?2)")?;
        for (id, entries) in &rows {
            insert.execute(rusqlite::params![id, entries])?;
        }
        drop(insert);
        write_evidence_lists(&conn, pair_budget)?;
        // The pages `content_tag` held are free now: a patched run would carry them along.
        conn.execute_batch("COMMIT; VACUUM;")
    };
    fill().map_err(shown)?;
    conn.close().map_err(|(_, e)| shown(e))?;
    // Opened as any database is: the copy is now what the current migrations create.
    Database::open(&path)?;
    Ok(Some(Converted { path }))
}

/// Whether `db` is a pooltag database of schema 4 holding exactly the objects the first four
/// migrations create.
fn is_schema_4(db: &Path) -> Result<bool> {
    if check_header(db).is_err() {
        return Ok(false);
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let Ok(conn) = Connection::open_with_flags(read_only_uri(db), flags) else {
        return Ok(false);
    };
    let shown = |e: rusqlite::Error| describe(db, &e);
    harden(&conn).map_err(shown)?;
    let read = |pragma: &str| conn.pragma_query_value(None, pragma, |r| r.get::<_, i64>(0));
    if read("application_id").ok() != Some(i64::from(APPLICATION_ID))
        || read("user_version").ok() != Some(FROM)
    {
        return Ok(false);
    }
    let expected = Connection::open_in_memory().map_err(shown)?;
    for sql in &MIGRATIONS[..FROM as usize] {
        expected.execute_batch(sql).map_err(shown)?;
    }
    let expected = schema_of(&expected).map_err(shown)?;
    Ok(schema_of(&conn).is_ok_and(|found| found == expected))
}

/// Each content's `content_tag` rows as the entries of its `content_evidence` row, by content.
fn evidence_rows(conn: &Connection) -> rusqlite::Result<Vec<(i64, Vec<u8>)>> {
    let mut rows: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut entries: Vec<i64> = Vec::new();
    let mut select =
        conn.prepare("SELECT content_id, tag, evidence FROM content_tag ORDER BY content_id, tag")?;
    let mut found = select.query([])?;
    while let Some(row) = found.next()? {
        let (id, key, level): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        if rows.last().is_none_or(|(last, _)| *last != id) {
            close_row(&mut rows, &mut entries)?;
            rows.push((id, Vec::new()));
        }
        let entry = Evidence::from_number(level)
            .and_then(|level| postings::evidence_entry(key, level))
            .filter(|_| u32::try_from(key).is_ok())
            .ok_or_else(damaged_list)?;
        entries.push(entry);
    }
    close_row(&mut rows, &mut entries)?;
    Ok(rows)
}

/// Encodes `entries` (ascending) as the list of the last of `rows`, and empties them.
fn close_row(rows: &mut [(i64, Vec<u8>)], entries: &mut Vec<i64>) -> rusqlite::Result<()> {
    if let Some((_, list)) = rows.last_mut() {
        postings::encode(entries, list).map_err(|_| damaged_list())?;
    }
    entries.clear();
    Ok(())
}
