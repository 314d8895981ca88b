-- pooltag database, schema 2.
--
-- `content.analysis`: which analysis produced the content's evidence, as `<version>:<options>`
-- (`2:code`, `2:bytes`; see `Analysis` in src/extract/mod.rs). An incremental index analyses a
-- content again when its fingerprint differs from the run's, and a merge keeps the analysis of
-- the newer version, then the fuller options, whatever the order of its inputs.
ALTER TABLE content ADD COLUMN analysis TEXT NOT NULL DEFAULT '';

-- `site.via`: the driver's own functions a call site reaches the API through, outermost first,
-- as a JSON array of `[rva, section, offset]` of their entries; NULL for a direct call.
ALTER TABLE site ADD COLUMN via TEXT;
