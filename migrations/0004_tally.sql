-- pooltag database, schema 4.
--
-- `tally`: one row of counts over the whole database, written by every run, so that a run that
-- changes nothing reports them without reading the posting lists again: `distinct_tags` (the
-- index summary's and the run's), `posting_lists` (the rows of `bytes_posting`).
CREATE TABLE tally (
    distinct_tags INTEGER NOT NULL,
    posting_lists INTEGER NOT NULL
);
