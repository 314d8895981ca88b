//! The objects pooltag's migrations create, as `sqlite_schema` lists them: (type, name, sql),
//! by type and name. Known when pooltag is built, so that opening a database compares its schema
//! with this list instead of first applying every migration to an in-memory database (parsing
//! that SQL was most of the time of a query for an absent tag). The test
//! `store::tests::the_committed_schema_is_what_the_migrations_create` checks the list against the
//! migrations and prints the new list when a migration changes it.

/// (type, name, sql) of every object of a pooltag database of [`super::SCHEMA_VERSION`].
pub const EXPECTED: &[(&str, &str, Option<&str>)] = &[
    (
        "index",
        "file_by_content",
        Some(r#"CREATE INDEX file_by_content ON file(content_id)"#),
    ),
    (
        "index",
        "file_by_name",
        Some(r#"CREATE INDEX file_by_name ON file(name COLLATE NOCASE)"#),
    ),
    (
        "index",
        "site_by_content_tag",
        Some(r#"CREATE INDEX site_by_content_tag ON site(content_id, tag)"#),
    ),
    ("index", "sqlite_autoindex_content_1", None),
    ("index", "sqlite_autoindex_file_1", None),
    ("index", "sqlite_autoindex_tag_entry_1", None),
    ("index", "sqlite_autoindex_tag_file_1", None),
    (
        "table",
        "bytes_posting",
        Some(
            r#"CREATE TABLE bytes_posting (
    tag INTEGER PRIMARY KEY,
    content_ids BLOB NOT NULL
)"#,
        ),
    ),
    (
        "table",
        "content",
        Some(
            r#"CREATE TABLE content (
    id INTEGER PRIMARY KEY,
    sha256 BLOB NOT NULL UNIQUE,      -- 32 bytes
    size INTEGER NOT NULL,
    machine INTEGER NOT NULL,         -- IMAGE_FILE_MACHINE_*
    subsystem INTEGER NOT NULL,       -- IMAGE_SUBSYSTEM_*
    pe_timestamp INTEGER NOT NULL,    -- TimeDateStamp of the file header
    signed INTEGER NOT NULL,          -- 1 when it carries an Authenticode signature table
    company TEXT,                     -- version resource strings, NULL when absent
    description TEXT,
    version TEXT,
    product TEXT,
    original_filename TEXT
, analysis TEXT NOT NULL DEFAULT '')"#,
        ),
    ),
    (
        "table",
        "content_bytes",
        Some(
            r#"CREATE TABLE content_bytes (
    content_id INTEGER PRIMARY KEY REFERENCES content(id),
    tags BLOB NOT NULL
)"#,
        ),
    ),
    (
        "table",
        "content_evidence",
        Some(
            r#"CREATE TABLE content_evidence (
    content_id INTEGER PRIMARY KEY REFERENCES content(id),
    entries BLOB NOT NULL
)"#,
        ),
    ),
    (
        "table",
        "evidence_posting",
        Some(
            r#"CREATE TABLE evidence_posting (
    tag INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
)"#,
        ),
    ),
    (
        "table",
        "file",
        Some(
            r#"CREATE TABLE file (
    id INTEGER PRIMARY KEY,
    content_id INTEGER NOT NULL REFERENCES content(id),
    run_id INTEGER NOT NULL REFERENCES run(id),
    host TEXT NOT NULL,
    path TEXT NOT NULL,               -- absolute path as indexed
    name TEXT NOT NULL,               -- file name, for lookups by name
    size INTEGER NOT NULL,
    mtime_ns INTEGER,                 -- modification time, nanoseconds since the Unix epoch
    UNIQUE (host, path)
)"#,
        ),
    ),
    (
        "table",
        "run",
        Some(
            r#"CREATE TABLE run (
    id INTEGER PRIMARY KEY,
    pooltag_version TEXT NOT NULL,
    host TEXT NOT NULL,
    os TEXT NOT NULL,
    roots TEXT NOT NULL,              -- JSON array of the roots as given
    started_at INTEGER NOT NULL,      -- Unix time, seconds
    finished_at INTEGER NOT NULL,
    files_seen INTEGER NOT NULL,
    drivers_indexed INTEGER NOT NULL,
    bytes_read INTEGER NOT NULL,
    distinct_tags INTEGER NOT NULL,
    tag_file_entries INTEGER NOT NULL,
    errors INTEGER NOT NULL
)"#,
        ),
    ),
    (
        "table",
        "site",
        Some(
            r#"CREATE TABLE site (
    content_id INTEGER NOT NULL REFERENCES content(id),
    tag INTEGER NOT NULL,
    evidence INTEGER NOT NULL,
    api TEXT,                         -- the API called; NULL for an arg site with an unknown callee
    rva INTEGER NOT NULL,             -- RVA of the call (or tail jump) instruction
    section TEXT NOT NULL,            -- name of the section holding it
    offset INTEGER NOT NULL           -- its offset in that section (`.text+0x1a2b`)
, via TEXT)"#,
        ),
    ),
    (
        "table",
        "tag_entry",
        Some(
            r#"CREATE TABLE tag_entry (
    id INTEGER PRIMARY KEY,
    tag TEXT NOT NULL,                -- four characters as written, wildcards kept (`Afd?`)
    binary TEXT NOT NULL,
    description TEXT NOT NULL,
    UNIQUE (tag, binary, description)
)"#,
        ),
    ),
    (
        "table",
        "tag_entry_source",
        Some(
            r#"CREATE TABLE tag_entry_source (
    entry_id INTEGER NOT NULL REFERENCES tag_entry(id),
    tag_file_id INTEGER NOT NULL REFERENCES tag_file(id),
    line INTEGER NOT NULL,
    PRIMARY KEY (tag_file_id, line)
) WITHOUT ROWID"#,
        ),
    ),
    (
        "table",
        "tag_file",
        Some(
            r#"CREATE TABLE tag_file (
    id INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    path TEXT NOT NULL,
    UNIQUE (host, path)
)"#,
        ),
    ),
    (
        "table",
        "tally",
        Some(
            r#"CREATE TABLE tally (
    distinct_tags INTEGER NOT NULL,
    posting_lists INTEGER NOT NULL
)"#,
        ),
    ),
];
