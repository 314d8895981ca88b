-- pooltag database, schema 1.
--
-- Tags are stored as INTEGER keys: the four displayed bytes read big-endian, so `AfdA` is
-- 0x41666441 and key order is display order (see src/tag.rs). Evidence levels are numbers:
-- 1 bytes, 2 data, 3 code, 4 arg, 5 call (see src/extract/mod.rs).

-- Provenance: one row per index run that built or updated this database.
CREATE TABLE run (
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
);

-- Every driver binary indexed.
CREATE TABLE file (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES run(id),
    path TEXT NOT NULL UNIQUE,        -- absolute path as indexed
    name TEXT NOT NULL,               -- file name, for lookups by name
    size INTEGER NOT NULL,
    mtime_ns INTEGER,                 -- modification time, nanoseconds since the Unix epoch
    machine INTEGER NOT NULL,         -- IMAGE_FILE_MACHINE_*
    subsystem INTEGER NOT NULL        -- IMAGE_SUBSYSTEM_*
);
CREATE INDEX file_by_name ON file(name COLLATE NOCASE);

-- The bytes level: for each printable four-byte tag, the files holding it, as a posting list of
-- file ids (ascending, each stored as the LEB128 varint of its difference from the previous id,
-- the first from 0). One row per distinct tag keeps the database small and a lookup one seek.
CREATE TABLE bytes_posting (
    tag INTEGER PRIMARY KEY,
    file_ids BLOB NOT NULL
);

-- Evidence stronger than bytes: the strongest level found for each (file, tag).
CREATE TABLE file_tag (
    tag INTEGER NOT NULL,
    file_id INTEGER NOT NULL REFERENCES file(id),
    evidence INTEGER NOT NULL CHECK (evidence BETWEEN 2 AND 5),
    PRIMARY KEY (tag, file_id)
) WITHOUT ROWID;

-- The places behind `call` and `arg` evidence.
CREATE TABLE site (
    file_id INTEGER NOT NULL REFERENCES file(id),
    tag INTEGER NOT NULL,
    evidence INTEGER NOT NULL,
    api TEXT,                         -- the API called; NULL for an arg site with an unknown callee
    rva INTEGER NOT NULL,             -- RVA of the call (or tail jump) instruction
    section TEXT NOT NULL,            -- name of the section holding it
    offset INTEGER NOT NULL           -- its offset in that section (`.text+0x1a2b`)
);
CREATE INDEX site_by_file_tag ON site(file_id, tag);

-- Pooltag.txt / localtag.txt files read, and their lines.
CREATE TABLE tag_file (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE
);
CREATE TABLE tag_entry (
    tag_file_id INTEGER NOT NULL REFERENCES tag_file(id),
    line INTEGER NOT NULL,
    tag TEXT NOT NULL,                -- four characters as written, wildcards kept (`Afd?`)
    binary TEXT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (tag_file_id, line)
) WITHOUT ROWID;
