-- pooltag database, schema 4.
--
-- `tally`: one row of counts over the whole database, written by every run, so that a run that
-- changes nothing reports them without reading the posting lists again: `distinct_tags` (the
-- index summary's and the run's), `posting_lists` (the rows of `bytes_posting`).
CREATE TABLE tally (
    distinct_tags INTEGER NOT NULL,
    posting_lists INTEGER NOT NULL
);

-- `content_tag_by_content`: a content's evidence rows without reading the whole table (`tags
-- FILE`, and a re-index dropping a content); the table itself is keyed by tag first.
CREATE INDEX content_tag_by_content ON content_tag(content_id);
