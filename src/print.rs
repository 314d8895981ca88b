//! Printing answers: for a person (fits 80 columns), as JSON (the stable contract in the README),
//! or as bare paths.

use std::io::{self, Write};

use serde::Serialize;

use crate::query::{FileTag, QueryAnswer};
use crate::store::StoredSite;
use crate::tag::TagPattern;

/// One element of `pooltag query --json`.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum QueryItem<'a> {
    Pooltag {
        tag: &'a str,
        binary: &'a str,
        description: &'a str,
        source: &'a str,
        line: u32,
    },
    File {
        tag: String,
        path: &'a str,
        evidence: &'static str,
        sites: Vec<SiteItem<'a>>,
    },
}

/// One element of `pooltag tags --json`.
#[derive(Serialize)]
struct TagItem<'a> {
    path: &'a str,
    tag: String,
    evidence: &'static str,
    sites: Vec<SiteItem<'a>>,
}

/// A `call` or `arg` site in JSON.
#[derive(Serialize)]
struct SiteItem<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<&'a str>,
    rva: u32,
    section: &'a str,
}

fn site_items(sites: &[StoredSite]) -> Vec<SiteItem<'_>> {
    sites
        .iter()
        .map(|s| SiteItem {
            api: s.api.as_deref(),
            rva: s.rva,
            section: &s.section,
        })
        .collect()
}

/// `ExAllocatePoolWithTag at .text+0x1a2b`; an `arg` site says what it is an argument of.
fn describe_site(site: &StoredSite) -> String {
    let place = format!("{}+{:#x}", site.section, site.offset);
    match (site.evidence, site.api.as_deref()) {
        (crate::extract::Evidence::Call, Some(api)) => format!("{api} at {place}"),
        (_, Some(api)) => format!("argument to {api} at {place}"),
        (_, None) => format!("argument of a call at {place}"),
    }
}

/// Indentation of the site lines under a driver line.
const SITE_INDENT: &str = "               ";

/// The human answer: Pooltag.txt entries, then drivers; or why there is none.
pub fn query_human(
    out: &mut impl Write,
    answer: &QueryAnswer,
    patterns: &[TagPattern],
) -> io::Result<()> {
    if !answer.entries.is_empty() {
        writeln!(out, "Pooltag.txt:")?;
        for entry in &answer.entries {
            let binary = if entry.binary.is_empty() {
                "(no binary)"
            } else {
                &entry.binary
            };
            writeln!(out, "  {}  {} - {}", entry.tag, binary, entry.description)?;
            writeln!(out, "        {}:{}", entry.source, entry.line)?;
        }
    }
    if !answer.files.is_empty() {
        writeln!(out, "Drivers:")?;
        for file in &answer.files {
            writeln!(
                out,
                "  {}  {:<5}  {}",
                file.tag,
                file.evidence.name(),
                file.path
            )?;
            for site in &file.sites {
                writeln!(out, "{SITE_INDENT}{}", describe_site(site))?;
            }
        }
    } else if !answer.entries.is_empty() {
        writeln!(out, "Drivers: no indexed driver holds it")?;
    }
    if answer.entries.is_empty() && answer.files.is_empty() {
        let asked: Vec<String> = patterns.iter().map(|p| format!("'{p}'")).collect();
        writeln!(
            out,
            "No Pooltag.txt entry and no indexed driver for {}.",
            asked.join(", ")
        )?;
        if !answer.neighbours.is_empty() {
            writeln!(out, "Known tags with the same first three characters:")?;
            let names: Vec<String> = answer.neighbours.iter().map(|t| format!("'{t}'")).collect();
            for line in names.chunks(10) {
                writeln!(out, "  {}", line.join(" "))?;
            }
        }
    }
    Ok(())
}

/// The JSON answer: one array, entries first, then files.
pub fn query_json(out: &mut impl Write, answer: &QueryAnswer) -> io::Result<()> {
    let entries = answer.entries.iter().map(|e| QueryItem::Pooltag {
        tag: &e.tag,
        binary: &e.binary,
        description: &e.description,
        source: &e.source,
        line: e.line,
    });
    let files = answer.files.iter().map(|f| QueryItem::File {
        tag: f.tag.to_string(),
        path: &f.path,
        evidence: f.evidence.name(),
        sites: site_items(&f.sites),
    });
    let items: Vec<QueryItem> = entries.chain(files).collect();
    serde_json::to_writer(&mut *out, &items).map_err(io::Error::from)?;
    writeln!(out)
}

/// One path per line.
pub fn paths(out: &mut impl Write, paths: &[String]) -> io::Result<()> {
    for path in paths {
        writeln!(out, "{path}")?;
    }
    Ok(())
}

/// The tags of one file for a person: its path, then one tag per line, sites below.
pub fn tags_human(out: &mut impl Write, path: &str, tags: &[FileTag]) -> io::Result<()> {
    writeln!(out, "{path}")?;
    for tag in tags {
        writeln!(out, "  {}  {}", tag.tag, tag.evidence.name())?;
        for site in &tag.sites {
            writeln!(out, "{SITE_INDENT}{}", describe_site(site))?;
        }
    }
    Ok(())
}

/// The tags of several files as one JSON array.
pub fn tags_json(out: &mut impl Write, files: &[(String, Vec<FileTag>)]) -> io::Result<()> {
    let items: Vec<TagItem> = files
        .iter()
        .flat_map(|(path, tags)| {
            tags.iter().map(move |t| TagItem {
                path,
                tag: t.tag.to_string(),
                evidence: t.evidence.name(),
                sites: site_items(&t.sites),
            })
        })
        .collect();
    serde_json::to_writer(&mut *out, &items).map_err(io::Error::from)?;
    writeln!(out)
}
