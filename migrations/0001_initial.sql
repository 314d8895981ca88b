-- pooltag database, schema 1.
--
-- Tags are stored as INTEGER keys: the four displayed bytes read big-endian, so `AfdA` is
-- 0x41666441 and key order is display order (see src/tag.rs). Evidence levels are numbers:
-- 1 bytes, 2 data, 3 code, 4 arg, 5 call (see src/extract/mod.rs).
--
-- A driver binary's content is analysed once (`content`, keyed by SHA-256); every path holding
-- that content, on every host whose index was merged in, is a `file` row pointing to it.

-- Provenance: one row per index run (or merged database) that built this database.
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

-- One analysed driver binary content.
CREATE TABLE content (
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
);

-- Every path indexed, per host.
CREATE TABLE file (
    id INTEGER PRIMARY KEY,
    content_id INTEGER NOT NULL REFERENCES content(id),
    run_id INTEGER NOT NULL REFERENCES run(id),
    host TEXT NOT NULL,
    path TEXT NOT NULL,               -- absolute path as indexed
    name TEXT NOT NULL,               -- file name, for lookups by name
    size INTEGER NOT NULL,
    mtime_ns INTEGER,                 -- modification time, nanoseconds since the Unix epoch
    UNIQUE (host, path)
);
CREATE INDEX file_by_content ON file(content_id);
CREATE INDEX file_by_name ON file(name COLLATE NOCASE);

-- The bytes level: for each printable four-byte tag, the contents holding it, as a posting list
-- of content ids (ascending, each stored as the LEB128 varint of its difference from the
-- previous id, the first from 0). One row per distinct tag keeps the database small and a lookup
-- one seek.
CREATE TABLE bytes_posting (
    tag INTEGER PRIMARY KEY,
    content_ids BLOB NOT NULL
);

-- Evidence stronger than bytes: the strongest level found for each (content, tag).
CREATE TABLE content_tag (
    tag INTEGER NOT NULL,
    content_id INTEGER NOT NULL REFERENCES content(id),
    evidence INTEGER NOT NULL CHECK (evidence BETWEEN 2 AND 5),
    PRIMARY KEY (tag, content_id)
) WITHOUT ROWID;

-- The places behind `call` and `arg` evidence.
CREATE TABLE site (
    content_id INTEGER NOT NULL REFERENCES content(id),
    tag INTEGER NOT NULL,
    evidence INTEGER NOT NULL,
    api TEXT,                         -- the API called; NULL for an arg site with an unknown callee
    rva INTEGER NOT NULL,             -- RVA of the call (or tail jump) instruction
    section TEXT NOT NULL,            -- name of the section holding it
    offset INTEGER NOT NULL           -- its offset in that section (`.text+0x1a2b`)
);
CREATE INDEX site_by_content_tag ON site(content_id, tag);

-- Pooltag.txt / localtag.txt files read, per host.
CREATE TABLE tag_file (
    id INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    path TEXT NOT NULL,
    UNIQUE (host, path)
);
-- Distinct tag lines; the same line in several files (or twice in one) is one entry.
CREATE TABLE tag_entry (
    id INTEGER PRIMARY KEY,
    tag TEXT NOT NULL,                -- four characters as written, wildcards kept (`Afd?`)
    binary TEXT NOT NULL,
    description TEXT NOT NULL,
    UNIQUE (tag, binary, description)
);
-- Where each entry was read.
CREATE TABLE tag_entry_source (
    entry_id INTEGER NOT NULL REFERENCES tag_entry(id),
    tag_file_id INTEGER NOT NULL REFERENCES tag_file(id),
    line INTEGER NOT NULL,
    PRIMARY KEY (tag_file_id, line)
) WITHOUT ROWID;
