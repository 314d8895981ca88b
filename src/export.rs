//! `pooltag export`: the index as a tag file WinDbg and PoolMon read, as CSV, or as JSON.
//!
//! Every format lists the (tag, driver) pairs at the chosen evidence level or stronger (`call`
//! by default: the bytes level of a whole machine is millions of pairs).
//! - `localtag`: `Tag - binary - description`, one line per (tag, driver file name), the
//!   description taken from the Pooltag.txt entry for that tag (the same binary preferred), else
//!   saying what pooltag found. A tag that the Pooltag.txt format cannot carry (one that would
//!   read back as another tag or as a comment) is left out and counted; every line written reads
//!   back through pooltag's own parser as the same entry.
//! - `csv`: a header row, then one row per (tag, file).
//! - `json`: the `"kind": "file"` elements of the query contract.

use std::collections::BTreeMap;
use std::io::Write;

use crate::error::Result;
use crate::extract::Evidence;
use crate::print;
use crate::query::{Found, Scope, each_file, find_entries};
use crate::store::{Database, StoredEntry};
use crate::tag::{Tag, TagPattern};
use crate::tagfile;

/// The output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Localtag,
    Csv,
    Json,
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub lines: usize,
    /// Tags left out of a localtag file because its format cannot carry them.
    pub unwritable: Vec<Tag>,
}

/// Writes the pairs at `minimum` or stronger in `format`, as they are read: the output streams,
/// whatever its size.
pub fn export(
    db: &Database,
    format: ExportFormat,
    minimum: Evidence,
    out: &mut impl Write,
) -> Result<ExportSummary> {
    let every = [TagPattern::from_field("*")];
    let scope = Scope::AtLeast(minimum);
    let each =
        |each: &mut dyn FnMut(Found<'_>) -> Result<()>| each_file(db, &every, false, scope, each);
    match format {
        ExportFormat::Localtag => localtag(db, each, minimum, out),
        ExportFormat::Csv => csv(each, out),
        ExportFormat::Json => {
            let mut array = print::JsonArray::begin(out)?;
            each(&mut |found| Ok(array.file(found)?))?;
            Ok(ExportSummary {
                lines: array.end()?,
                unwritable: Vec::new(),
            })
        }
    }
}

/// The lines of one tag: binary -> the strongest evidence and the APIs behind it.
type TagLines = BTreeMap<String, (Evidence, Vec<String>)>;

fn localtag(
    db: &Database,
    each: impl FnOnce(&mut dyn FnMut(Found<'_>) -> Result<()>) -> Result<()>,
    minimum: Evidence,
    out: &mut impl Write,
) -> Result<ExportSummary> {
    let entries = db.tag_entries()?;
    writeln!(
        out,
        "// Written by pooltag {}: tags at the '{}' level or stronger.",
        env!("CARGO_PKG_VERSION"),
        minimum.name()
    )?;
    let mut summary = ExportSummary::default();
    // Files come tag by tag: each tag's lines are written when the next tag starts.
    let mut current: Option<(Tag, TagLines)> = None;
    each(&mut |found| {
        if let Some((tag, lines)) = current.take_if(|(tag, _)| *tag != found.tag) {
            write_tag_lines(out, tag, &lines, &entries, &mut summary)?;
        }
        let (_, lines) = current.get_or_insert_with(|| (found.tag, BTreeMap::new()));
        let name = crate::store::file_name(&found.file.path).to_lowercase();
        let line = lines.entry(name).or_insert((found.evidence, Vec::new()));
        line.0 = line.0.max(found.evidence);
        for api in found.sites.iter().filter_map(|s| s.api.as_ref()) {
            if !line.1.contains(api) {
                line.1.push(api.clone());
            }
        }
        Ok(())
    })?;
    if let Some((tag, lines)) = current {
        write_tag_lines(out, tag, &lines, &entries, &mut summary)?;
    }
    Ok(summary)
}

/// The localtag lines of one tag, by binary; a line that would not read back is left out and
/// its tag counted in `summary`.
fn write_tag_lines(
    out: &mut impl Write,
    tag: Tag,
    lines: &TagLines,
    entries: &[StoredEntry],
    summary: &mut ExportSummary,
) -> Result<()> {
    for (binary, (evidence, apis)) in lines {
        let description = description_of(tag, binary, entries).unwrap_or_else(|| {
            if apis.is_empty() {
                format!("found by pooltag ({})", evidence.name())
            } else {
                format!(
                    "found by pooltag ({}: {})",
                    evidence.name(),
                    apis.join(", ")
                )
            }
        });
        let line = format!("{tag} - {binary} - {description}");
        if reads_back(&line, tag, binary, &description) {
            writeln!(out, "{line}")?;
            summary.lines += 1;
        } else if !summary.unwritable.contains(&tag) {
            summary.unwritable.push(tag);
        }
    }
    Ok(())
}

/// The description Pooltag.txt gives `tag`: an entry for the same binary first, then an exact
/// tag, then a wildcard.
fn description_of(tag: Tag, binary: &str, entries: &[StoredEntry]) -> Option<String> {
    let matching = find_entries(entries, &[TagPattern::exact(tag)], false);
    let exact = |e: &&StoredEntry| e.tag.as_bytes() == tag.0;
    matching
        .iter()
        .find(|e| e.binary.eq_ignore_ascii_case(binary) && exact(e))
        .or_else(|| {
            matching
                .iter()
                .find(|e| e.binary.eq_ignore_ascii_case(binary))
        })
        .or_else(|| matching.iter().find(exact))
        .or_else(|| matching.first())
        .map(|e| e.description.clone())
}

/// Does `line` parse back as exactly this entry? Its tag field must also mean only this tag: a
/// tag holding `?` or `*` reads back as a wildcard that matches every tag of its shape.
fn reads_back(line: &str, tag: Tag, binary: &str, description: &str) -> bool {
    let parsed = tagfile::parse(line.as_bytes());
    parsed.problems.is_empty()
        && parsed.entries.len() == 1
        && TagPattern::from_field(&parsed.entries[0].tag).as_tag() == Some(tag)
        && parsed.entries[0].binary == binary
        && parsed.entries[0].description == description
}

fn csv(
    each: impl FnOnce(&mut dyn FnMut(Found<'_>) -> Result<()>) -> Result<()>,
    out: &mut impl Write,
) -> Result<ExportSummary> {
    let mut writer = csv::Writer::from_writer(out);
    let fail = |e: csv::Error| match e.into_kind() {
        csv::ErrorKind::Io(e) => crate::error::Error::from(e),
        other => crate::error::Error::new(format!("cannot write CSV: {other:?}")),
    };
    writer
        .write_record([
            "tag",
            "evidence",
            "host",
            "path",
            "sha256",
            "machine",
            "company",
            "description",
            "version",
            "apis",
        ])
        .map_err(fail)?;
    let mut lines = 0;
    each(&mut |found| {
        let file = found.file;
        let mut apis: Vec<&str> = found
            .sites
            .iter()
            .filter_map(|s| s.api.as_deref())
            .collect();
        apis.dedup();
        writer
            .write_record([
                found.tag.to_string().as_str(),
                found.evidence.name(),
                &file.host,
                &file.path,
                &print::hex(&file.sha256),
                &print::machine_name(file.machine),
                file.company.as_deref().unwrap_or(""),
                file.description.as_deref().unwrap_or(""),
                file.version.as_deref().unwrap_or(""),
                &apis.join(";"),
            ])
            .map_err(fail)?;
        lines += 1;
        Ok(())
    })?;
    writer.flush()?;
    Ok(ExportSummary {
        lines,
        unwritable: Vec::new(),
    })
}
