-- pooltag database, schema 3.
--
-- `content_bytes`: each content's bytes-level tags, the other direction of `bytes_posting`
-- (ascending tag keys, each the LEB128 varint of its difference from the previous key, the
-- first from 0). A re-index that drops a content (a driver changed or removed) takes its id out
-- of exactly these posting lists instead of reading them all, and `tags FILE` reads one row.
CREATE TABLE content_bytes (
    content_id INTEGER PRIMARY KEY REFERENCES content(id),
    tags BLOB NOT NULL
);
