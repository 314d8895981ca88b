-- pooltag database, schema 5.
--
-- Evidence stronger than bytes, stored as posting lists like the bytes level's: one row per tag
-- instead of one per (tag, content). Writing 1.1 million `content_tag` rows one at a time, in
-- tag order against the order contents arrive, cost an index run more than the code analysis
-- that found them.
--
-- An evidence entry is one integer: `id * 4 + level - 2`, for the levels 2 data, 3 code, 4 arg
-- and 5 call (see src/extract/mod.rs), a content's strongest for the tag. A list of entries is
-- stored as `bytes_posting` stores ids: ascending, each the LEB128 varint of its difference
-- from the previous entry, the first from 0.
--
-- `evidence_posting`: for each tag, the contents with evidence above bytes for it, as entries
-- of content ids.
-- `content_evidence`: the other direction, for each content, its tags as entries of tag keys
-- (`tags FILE`, and a re-index dropping the content).
DROP INDEX content_tag_by_content;
DROP TABLE content_tag;
CREATE TABLE evidence_posting (
    tag INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);
CREATE TABLE content_evidence (
    content_id INTEGER PRIMARY KEY REFERENCES content(id),
    entries BLOB NOT NULL
);
