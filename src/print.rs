//! Printing answers: for a person (fits 80 columns), as JSON (the stable contract in the README),
//! or as bare paths.
//!
//! Every string of a human output that comes from a driver, a tag file or the database goes
//! through [`escape`], so that control characters in it are shown, never obeyed by the terminal.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use std::collections::HashMap;

use crate::annotate::{self, COLUMN_NAME, Input, Separator, Slot, TagAnswer};
use crate::extract::Evidence;
use crate::query::{Collision, FileTag, Found, QueryAnswer, Shown};
use crate::store::{DatabaseInfo, StoredEntry, StoredFile, StoredRun, StoredSite};
use crate::tag::{Tag, TagPattern};
use crate::text::escape;

/// Whether human output is coloured: set once by `main` (stdout a terminal, `NO_COLOR` unset).
static COLOUR: AtomicBool = AtomicBool::new(false);

/// Turns colour in human output on or off. JSON and `-l` output are never coloured.
pub fn set_colour(enabled: bool) {
    COLOUR.store(enabled, Ordering::Relaxed);
}

/// Whether stdout wants colour: a terminal, and `NO_COLOR` unset or empty.
pub fn colour_wanted() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` in the ANSI style `code` when colour is on.
fn paint(text: &str, code: &str) -> String {
    if COLOUR.load(Ordering::Relaxed) {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// An evidence level, padded to five columns, coloured by strength.
fn level(evidence: Evidence) -> String {
    let padded = format!("{:<5}", evidence.name());
    let code = match evidence {
        Evidence::Call => "1;32",
        Evidence::Arg => "32",
        Evidence::Code => "33",
        Evidence::Data => "36",
        Evidence::Bytes => "2",
    };
    paint(&padded, code)
}

/// Indentation of the lines under a driver line (metadata, sites).
const DETAIL_INDENT: &str = "               ";

/// One element of `pooltag query --json`.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum QueryItem<'a> {
    Pooltag {
        tag: &'a str,
        binary: &'a str,
        description: &'a str,
        host: &'a str,
        source: &'a str,
        line: u32,
    },
    File(FileItem<'a>),
}

/// A (driver file, tag) pair in JSON: an element of `pooltag tags --json`, and of
/// `pooltag query --json` with `"kind": "file"`.
#[derive(Serialize)]
struct FileItem<'a> {
    tag: String,
    host: &'a str,
    path: &'a str,
    evidence: &'static str,
    sites: Vec<SiteItem<'a>>,
    sha256: String,
    machine: Cow<'static, str>,
    company: Option<&'a str>,
    description: Option<&'a str>,
    version: Option<&'a str>,
}

impl<'a> FileItem<'a> {
    fn of(tag: Tag, evidence: Evidence, sites: &'a [StoredSite], file: &'a StoredFile) -> Self {
        FileItem {
            tag: tag.to_string(),
            host: &file.host,
            path: &file.path,
            evidence: evidence.name(),
            sites: site_items(sites),
            sha256: hex(&file.sha256),
            machine: machine_name(file.machine),
            company: file.company.as_deref(),
            description: file.description.as_deref(),
            version: file.version.as_deref(),
        }
    }
}

/// A `call` or `arg` site in JSON.
#[derive(Serialize)]
struct SiteItem<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<&'a str>,
    rva: u32,
    section: &'a str,
    /// The entries of the wrappers the tag goes through, outermost first; absent for a direct
    /// call.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    via: Vec<u32>,
}

fn site_items(sites: &[StoredSite]) -> Vec<SiteItem<'_>> {
    sites
        .iter()
        .map(|s| SiteItem {
            api: s.api.as_deref(),
            rva: s.rva,
            section: &s.section,
            via: s.via.iter().map(|p| p.rva).collect(),
        })
        .collect()
}

/// Bytes in lowercase hex, as a SHA-256 is shown (one `format!` per byte was a tenth of the time
/// of a large JSON answer).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

/// `x64`, `x86`, `arm64`... from `IMAGE_FILE_MACHINE_*`.
pub fn machine_name(machine: u16) -> Cow<'static, str> {
    match machine {
        0x8664 => "x64".into(),
        0x014c => "x86".into(),
        0xaa64 => "arm64".into(),
        0x01c4 => "arm".into(),
        0x0200 => "ia64".into(),
        other => format!("{other:#06x}").into(),
    }
}

/// `ExAllocatePoolWithTag at .text+0x1a2b`; an `arg` site says what it is an argument of.
fn describe_site(site: &StoredSite) -> String {
    let place = format!("{}+{:#x}", escape(&site.section), site.offset);
    match (site.evidence, site.api.as_deref().map(escape)) {
        (Evidence::Call, Some(api)) if !site.via.is_empty() => {
            let via: Vec<String> = site
                .via
                .iter()
                .map(|p| match p.section.as_str() {
                    "" => format!("{:#x}", p.rva),
                    section => format!("{}+{:#x}", escape(section), p.offset),
                })
                .collect();
            format!("{api} via {} at {place}", via.join(", "))
        }
        (Evidence::Call, Some(api)) => format!("{api} at {place}"),
        (_, Some(api)) => format!("argument to {api} at {place}"),
        (_, None) => format!("argument of a call at {place}"),
    }
}

/// A path, prefixed with its host when the database holds several; escaped.
fn shown(host: &str, path: &str, several_hosts: bool) -> String {
    if several_hosts {
        format!("{}: {}", escape(host), escape(path))
    } else {
        escape(path).into_owned()
    }
}

/// The driver's version resource, `company, description, version`, when it has one.
fn metadata_line(file: &StoredFile) -> Option<String> {
    let parts: Vec<&str> = [&file.company, &file.description, &file.version]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .collect();
    (!parts.is_empty()).then(|| escape(&parts.join(", ")).into_owned())
}

/// Lines under a driver: its version resource, then its sites.
fn details(out: &mut impl Write, file: &StoredFile, sites: &[StoredSite]) -> io::Result<()> {
    if let Some(line) = metadata_line(file) {
        writeln!(out, "{DETAIL_INDENT}{line}")?;
    }
    for site in sites {
        writeln!(out, "{DETAIL_INDENT}{}", describe_site(site))?;
    }
    Ok(())
}

/// Pooltag.txt entries, each once with every place it was read.
fn entries_human(
    out: &mut impl Write,
    entries: &[StoredEntry],
    several_hosts: bool,
) -> io::Result<()> {
    let mut done = vec![false; entries.len()];
    for (i, entry) in entries.iter().enumerate() {
        if done[i] {
            continue;
        }
        let binary = if entry.binary.is_empty() {
            "(no binary)".into()
        } else {
            escape(&entry.binary)
        };
        let tag = paint(&escape(&entry.tag), "1");
        writeln!(out, "  {tag}  {binary} - {}", escape(&entry.description))?;
        for (j, other) in entries.iter().enumerate().skip(i) {
            if !done[j]
                && (&other.tag, &other.binary, &other.description)
                    == (&entry.tag, &entry.binary, &entry.description)
            {
                done[j] = true;
                let source = shown(&other.host, &other.source, several_hosts);
                writeln!(out, "        {source}:{}", other.line)?;
            }
        }
    }
    Ok(())
}

/// The start of the human answer: the Pooltag.txt entries, when any match.
pub fn entries_human_section(out: &mut impl Write, answer: &QueryAnswer) -> io::Result<()> {
    if !answer.entries.is_empty() {
        writeln!(out, "Pooltag.txt:")?;
        entries_human(out, &answer.entries, answer.several_hosts)?;
    }
    Ok(())
}

/// One line of the drivers of the human answer, as [`crate::query::each_shown`] gives them; `first`
/// heads the list.
pub fn shown_human(
    out: &mut impl Write,
    line: Shown<'_>,
    first: bool,
    several_hosts: bool,
) -> io::Result<()> {
    if first {
        writeln!(out, "Drivers:")?;
    }
    match line {
        Shown::File(found) => {
            let path = shown(&found.file.host, &found.file.path, several_hosts);
            let tag = paint(&found.tag.to_string(), "1");
            writeln!(out, "  {tag}  {}  {path}", level(found.evidence))?;
            details(out, found.file, found.sites)
        }
        Shown::MoreBytes { tag, count } => {
            let files = if count == 1 { "file" } else { "files" };
            writeln!(
                out,
                "  {}  {}  ... and {count} more {files} (--evidence bytes lists them)",
                paint(&tag.to_string(), "1"),
                level(Evidence::Bytes)
            )
        }
    }
}

/// The end of a human answer that showed no driver: why there is none, with the drivers holding
/// a match below the `evidence` level asked, and known tags near the pattern when nothing
/// matched at all.
pub fn no_driver_human(
    out: &mut impl Write,
    answer: &QueryAnswer,
    patterns: &[TagPattern],
    evidence: Option<Evidence>,
) -> io::Result<()> {
    // Set only when some file holds a match below the level asked.
    let below = evidence.zip(answer.weaker).map(|(level, weaker)| {
        let (drivers, hold, them) = match weaker.files {
            1 => ("driver", "holds", "it"),
            _ => ("drivers", "hold", "them"),
        };
        let it = if patterns.len() == 1 { "it" } else { "a match" };
        (
            format!("at {} level or stronger", level.name()),
            format!(
                "{} indexed {drivers} {hold} {it} below {} (the strongest at {}); \
                 --evidence bytes shows {them}.",
                weaker.files,
                level.name(),
                weaker.strongest.name()
            ),
        )
    });
    if !answer.entries.is_empty() {
        match &below {
            Some((level, weaker)) => {
                writeln!(out, "Drivers: no indexed driver holds it {level}")?;
                writeln!(out, "{weaker}")?;
            }
            None => writeln!(out, "Drivers: no indexed driver holds it")?,
        }
        return Ok(());
    }
    let asked: Vec<String> = patterns.iter().map(|p| format!("'{p}'")).collect();
    let asked = asked.join(", ");
    match &below {
        Some((level, weaker)) => {
            writeln!(
                out,
                "No Pooltag.txt entry for {asked}, and no indexed driver {level}."
            )?;
            writeln!(out, "{weaker}")?;
        }
        None => writeln!(
            out,
            "No Pooltag.txt entry and no indexed driver for {asked}."
        )?,
    }
    if !answer.neighbours.is_empty() {
        writeln!(out, "Known tags with the same first three characters:")?;
        let names: Vec<String> = answer.neighbours.iter().map(|t| format!("'{t}'")).collect();
        for line in names.chunks(10) {
            writeln!(out, "  {}", line.join(" "))?;
        }
    }
    Ok(())
}

/// The JSON answer of `pooltag query --json` (and `export --format json`), written element by
/// element as the answer is found: `[`, the elements separated by `,`, then `]` and a line end,
/// the bytes serde_json writes for a whole array. Entries come first, then files.
pub struct JsonArray<W: Write> {
    out: W,
    written: usize,
}

impl<W: Write> JsonArray<W> {
    /// Opens the array.
    pub fn begin(mut out: W) -> io::Result<Self> {
        out.write_all(b"[")?;
        Ok(JsonArray { out, written: 0 })
    }

    /// A Pooltag.txt entry: `"kind": "pooltag"`.
    pub fn entry(&mut self, e: &StoredEntry) -> io::Result<()> {
        self.item(&QueryItem::Pooltag {
            tag: &e.tag,
            binary: &e.binary,
            description: &e.description,
            host: &e.host,
            source: &e.source,
            line: e.line,
        })
    }

    /// A driver file: `"kind": "file"`.
    pub fn file(&mut self, found: Found<'_>) -> io::Result<()> {
        self.item(&QueryItem::File(FileItem::of(
            found.tag,
            found.evidence,
            found.sites,
            found.file,
        )))
    }

    fn item(&mut self, item: &QueryItem) -> io::Result<()> {
        if self.written > 0 {
            self.out.write_all(b",")?;
        }
        serde_json::to_writer(&mut self.out, item).map_err(io::Error::from)?;
        self.written += 1;
        Ok(())
    }

    /// Closes the array; the number of elements written.
    pub fn end(mut self) -> io::Result<usize> {
        self.out.write_all(b"]\n")?;
        Ok(self.written)
    }
}

/// One path per line, escaped like human output: a path holding a line feed would otherwise
/// read as two paths, and one holding ESC would act on a terminal. `--json` has the exact path.
pub fn paths(out: &mut impl Write, paths: &[String]) -> io::Result<()> {
    for path in paths {
        writeln!(out, "{}", escape(path))?;
    }
    Ok(())
}

/// The tags of one file for a person: its path and version resource, then one tag per line,
/// strongest evidence first (then by tag), sites below. The `bytes` level (every printable
/// four-byte window: hundreds of lines that bury the real tags) is one count line unless
/// `list_bytes` (`--evidence bytes`) asks for each. `tags` come in tag order, as
/// [`crate::query::file_tags`] gives them.
pub fn tags_human(
    out: &mut impl Write,
    file: &StoredFile,
    tags: &[FileTag],
    several_hosts: bool,
    list_bytes: bool,
) -> io::Result<()> {
    writeln!(out, "{}", shown(&file.host, &file.path, several_hosts))?;
    if let Some(line) = metadata_line(file) {
        writeln!(out, "  ({line})")?;
    }
    // Strongest first, then by tag (`tags` is by tag: a stable sort keeps that order).
    let mut ranked: Vec<&FileTag> = tags
        .iter()
        .filter(|t| t.evidence != Evidence::Bytes || list_bytes)
        .collect();
    ranked.sort_by_key(|t| std::cmp::Reverse(t.evidence));
    let bytes_only = tags.len() - ranked.len();
    for tag in ranked {
        writeln!(out, "  {}  {}", tag.tag, tag.evidence.name())?;
        for site in &tag.sites {
            writeln!(out, "{DETAIL_INDENT}{}", describe_site(site))?;
        }
    }
    if bytes_only > 0 {
        let more = if bytes_only == tags.len() {
            ""
        } else {
            " more"
        };
        let noun = if bytes_only == 1 { "tag" } else { "tags" };
        writeln!(
            out,
            "  ... and {bytes_only}{more} {noun} at the bytes level (--evidence bytes lists them)"
        )?;
    }
    Ok(())
}

/// The tags of several files as one JSON array.
pub fn tags_json(out: &mut impl Write, files: &[(StoredFile, Vec<FileTag>)]) -> io::Result<()> {
    let items: Vec<FileItem> = files
        .iter()
        .flat_map(|(file, tags)| {
            tags.iter()
                .map(move |t| FileItem::of(t.tag, t.evidence, &t.sites, file))
        })
        .collect();
    serde_json::to_writer(&mut *out, &items).map_err(io::Error::from)?;
    writeln!(out)
}

/// `2026-11-26 03:30:01 UTC` from Unix seconds.
pub fn utc_time(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// One run of `pooltag info`'s lists, on three lines.
fn run_human(out: &mut impl Write, run: &StoredRun) -> io::Result<()> {
    writeln!(
        out,
        "    {}, {}, pooltag {}, {} ({} s)",
        escape(&run.host),
        escape(&run.os),
        escape(&run.pooltag_version),
        utc_time(run.started_at),
        run.finished_at - run.started_at
    )?;
    writeln!(out, "      roots: {}", escape(&run.roots.join(", ")))?;
    writeln!(
        out,
        "      {} files seen, {} driver binaries, {} errors",
        run.files_seen, run.drivers_indexed, run.errors
    )
}

/// `pooltag info` for a person.
pub fn info_human(out: &mut impl Write, info: &DatabaseInfo, integrity: &str) -> io::Result<()> {
    writeln!(out, "pooltag database {}", escape(&info.path))?;
    writeln!(
        out,
        "  size {}, schema {}, integrity {integrity}",
        crate::index::human_bytes(info.size),
        info.schema
    )?;
    writeln!(out, "  runs:")?;
    for run in &info.runs {
        run_human(out, run)?;
    }
    let unchanged = &info.unchanged_runs;
    if unchanged.count > 0 {
        let earlier = unchanged.count - unchanged.runs.len() as u64;
        writeln!(
            out,
            "  runs since that changed nothing: {}{}",
            unchanged.count,
            match earlier {
                0 => String::new(),
                n => format!(" (the {n} earliest not shown)"),
            }
        )?;
        for run in &unchanged.runs {
            run_human(out, run)?;
        }
    }
    writeln!(
        out,
        "  {} files, {} distinct contents",
        info.files, info.contents
    )?;
    let analyses: Vec<String> = info
        .analyses
        .iter()
        .map(|(analysis, n)| format!("{} {n}", escape(analysis)))
        .collect();
    writeln!(out, "  contents by analysis: {}", analyses.join(", "))?;
    let machines: Vec<String> = info
        .machines
        .iter()
        .map(|(m, n)| format!("{} {n}", machine_name(*m)))
        .collect();
    writeln!(out, "  files by machine: {}", machines.join(", "))?;
    let tags: Vec<String> = info
        .tags
        .iter()
        .map(|(level, n)| format!("{} {n}", level.name()))
        .collect();
    writeln!(
        out,
        "  distinct tags by strongest evidence: {}",
        tags.join(", ")
    )?;
    writeln!(out, "  tag files:")?;
    for (host, path, lines) in &info.tag_files {
        writeln!(out, "    {} ({lines} entries)", shown(host, path, true))?;
    }
    Ok(())
}

/// `pooltag info --json`: one object.
pub fn info_json(out: &mut impl Write, info: &DatabaseInfo, integrity: &str) -> io::Result<()> {
    let run_json = |r: &StoredRun| {
        serde_json::json!({
            "pooltag_version": r.pooltag_version, "host": r.host, "os": r.os,
            "roots": r.roots, "started_at": r.started_at, "finished_at": r.finished_at,
            "files_seen": r.files_seen, "drivers_indexed": r.drivers_indexed,
            "errors": r.errors,
        })
    };
    let runs: Vec<serde_json::Value> = info.runs.iter().map(run_json).collect();
    let unchanged_runs: Vec<serde_json::Value> =
        info.unchanged_runs.runs.iter().map(run_json).collect();
    let machines: serde_json::Map<String, serde_json::Value> = info
        .machines
        .iter()
        .map(|(m, n)| (machine_name(*m).into_owned(), serde_json::json!(n)))
        .collect();
    let tags: serde_json::Map<String, serde_json::Value> = info
        .tags
        .iter()
        .map(|(level, n)| (level.name().to_owned(), serde_json::json!(n)))
        .collect();
    let analyses: serde_json::Map<String, serde_json::Value> = info
        .analyses
        .iter()
        .map(|(analysis, n)| (analysis.clone(), serde_json::json!(n)))
        .collect();
    let tag_files: Vec<serde_json::Value> = info
        .tag_files
        .iter()
        .map(|(host, path, n)| serde_json::json!({"host": host, "path": path, "entries": n}))
        .collect();
    let value = serde_json::json!({
        "path": info.path, "size": info.size, "schema": info.schema, "integrity": integrity,
        "runs": runs, "files": info.files, "contents": info.contents, "analyses": analyses,
        "machines": machines, "tags": tags, "tag_files": tag_files,
        "unchanged_runs": unchanged_runs, "unchanged_run_count": info.unchanged_runs.count,
    });
    serde_json::to_writer(&mut *out, &value).map_err(io::Error::from)?;
    writeln!(out)
}

/// `pooltag annotate`: each input's lines as they were (byte for byte; UTF-16 input as UTF-8),
/// the answer added to each tagged line: `  # answer` after it, or a new last column of a CSV
/// or tab-separated table (its header row names the column `pooltag`).
pub fn annotate_human(
    out: &mut impl Write,
    inputs: &[Input],
    answers: &HashMap<Tag, TagAnswer>,
) -> io::Result<()> {
    for input in inputs {
        if input.utf8_bom {
            out.write_all(crate::text::UTF8_BOM)?;
        }
        for line in &input.lines {
            out.write_all(&line.text)?;
            let note = line.tag.and_then(|t| answers.get(&t)).map(annotate::note);
            match (line.slot, note) {
                (Slot::Comment, Some(note)) => write!(out, "  # {note}")?,
                (Slot::Header(Separator::Comma), _) => write!(out, ",{COLUMN_NAME}")?,
                (Slot::Header(Separator::Tab), _) => write!(out, "\t{COLUMN_NAME}")?,
                (Slot::Row(Separator::Comma), Some(note)) => {
                    write!(out, ",\"{}\"", note.replace('"', "\"\""))?
                }
                (Slot::Row(Separator::Comma), None) => write!(out, ",")?,
                // The note is escaped: it holds no tab to break the table.
                (Slot::Row(Separator::Tab), note) => write!(out, "\t{}", note.unwrap_or_default())?,
                (Slot::Comment | Slot::Nothing, _) => {}
            }
            out.write_all(if line.crlf { b"\r\n" } else { b"\n" })?;
        }
    }
    Ok(())
}

/// `pooltag annotate --json`: one element per tagged line, naming its input (`-` for standard
/// input) and its line there.
pub fn annotate_json(
    out: &mut impl Write,
    inputs: &[Input],
    answers: &HashMap<Tag, TagAnswer>,
) -> io::Result<()> {
    let items: Vec<serde_json::Value> = inputs
        .iter()
        .flat_map(|input| input.lines.iter().map(move |line| (input, line)))
        .filter_map(|(input, line)| {
            let answer = answers.get(&line.tag?)?;
            let drivers: Vec<serde_json::Value> = answer
                .drivers
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "host": f.file.host, "path": f.file.path,
                        "evidence": f.evidence.name(), "company": f.file.company,
                    })
                })
                .collect();
            let entries: Vec<serde_json::Value> = answer
                .entries
                .iter()
                .map(|e| serde_json::json!({"binary": e.binary, "description": e.description}))
                .collect();
            Some(serde_json::json!({
                "input": input.name, "line": line.line, "tag": answer.tag.to_string(),
                "drivers": drivers, "pooltag": entries,
            }))
        })
        .collect();
    serde_json::to_writer(&mut *out, &items).map_err(io::Error::from)?;
    writeln!(out)
}

/// The tags of one driver at `call` and `arg` level, each with who else uses it.
pub fn collisions_human(
    out: &mut impl Write,
    title: &str,
    tags: &[(FileTag, Collision)],
    several_hosts: bool,
) -> io::Result<()> {
    writeln!(out, "{}", escape(title))?;
    if tags.is_empty() {
        writeln!(out, "  no tag at call or arg level")?;
    }
    for (tag, collision) in tags {
        writeln!(out, "  {}  {}", tag.tag, tag.evidence.name())?;
        for site in &tag.sites {
            writeln!(out, "{DETAIL_INDENT}{}", describe_site(site))?;
        }
        if collision.is_empty() {
            writeln!(out, "{DETAIL_INDENT}no collision")?;
        }
        for other in &collision.drivers {
            let path = shown(&other.file.host, &other.file.path, several_hosts);
            writeln!(
                out,
                "{DETAIL_INDENT}collides with {} ({}) {path}",
                escape(crate::store::file_name(&other.file.path)),
                other.evidence.name()
            )?;
        }
        for entry in &collision.entries {
            writeln!(
                out,
                "{DETAIL_INDENT}collides with Pooltag.txt: {} {} - {} ({}:{})",
                escape(&entry.tag),
                escape(&entry.binary),
                escape(&entry.description),
                escape(&entry.source),
                entry.line
            )?;
        }
    }
    Ok(())
}

/// The same as JSON: one element per (driver, tag).
pub fn collisions_json(
    out: &mut impl Write,
    drivers: &[(String, Vec<(FileTag, Collision)>)],
) -> io::Result<()> {
    let items: Vec<serde_json::Value> = drivers
        .iter()
        .flat_map(|(path, tags)| {
            tags.iter().map(move |(tag, collision)| {
                let others: Vec<serde_json::Value> = collision
                    .drivers
                    .iter()
                    .map(|f| {
                        serde_json::json!({"host": f.file.host, "path": f.file.path,
                            "evidence": f.evidence.name()})
                    })
                    .collect();
                let entries: Vec<serde_json::Value> = collision
                    .entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({"tag": e.tag, "binary": e.binary,
                            "description": e.description, "source": e.source, "line": e.line})
                    })
                    .collect();
                serde_json::json!({
                    "path": path, "tag": tag.tag.to_string(), "evidence": tag.evidence.name(),
                    "sites": site_items(&tag.sites),
                    "collisions": {"drivers": others, "pooltag": entries},
                })
            })
        })
        .collect();
    serde_json::to_writer(&mut *out, &items).map_err(io::Error::from)?;
    writeln!(out)
}

/// A driver file holding a tag, as the `"kind": "file"` element of `query --json`: other
/// commands' JSON (`pool --diff`) embeds the same objects.
pub(crate) fn file_item(found: &crate::query::FileMatch) -> impl Serialize + '_ {
    QueryItem::File(FileItem::of(
        found.tag,
        found.evidence,
        &found.sites,
        &found.file,
    ))
}

/// A Pooltag.txt entry, as the `"kind": "pooltag"` element of `query --json`.
pub(crate) fn entry_item(entry: &StoredEntry) -> impl Serialize + '_ {
    QueryItem::Pooltag {
        tag: &entry.tag,
        binary: &entry.binary,
        description: &entry.description,
        host: &entry.host,
        source: &entry.source,
        line: entry.line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_is_off_unless_asked_and_never_in_plain_text() {
        assert_eq!(level(Evidence::Call), "call ");
        set_colour(true);
        assert_eq!(level(Evidence::Call), "\x1b[1;32mcall \x1b[0m");
        set_colour(false);
        assert_eq!(paint("AfdA", "1"), "AfdA");
    }

    #[test]
    fn untrusted_strings_are_escaped_in_human_output() {
        let file = StoredFile {
            content_id: 1,
            host: "vm".into(),
            path: "/d/evil\x1b[2J\n.sys".into(),
            sha256: vec![0; 32],
            machine: 0x8664,
            company: Some("Evil\x1b]0;pwned\x07 Corp".into()),
            description: Some("csi\u{9b}31m".into()),
            version: Some("1\r2".into()),
        };
        let site = StoredSite {
            evidence: Evidence::Arg,
            api: Some("Imp\x1b".into()),
            rva: 0x1000,
            section: ".te\x7fxt".into(),
            offset: 4,
            via: Vec::new(),
        };
        let tags = [FileTag {
            tag: Tag(*b"EvL1"),
            evidence: Evidence::Arg,
            sites: vec![site],
        }];
        let mut out = Vec::new();
        tags_human(&mut out, &file, &tags, false, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "/d/evil\\x1b[2J\\x0a.sys\n  (Evil\\x1b]0;pwned\\x07 Corp, csi\\u{9b}31m, 1\\x0d2)\n  \
             EvL1  arg\n               argument to Imp\\x1b at .te\\x7fxt+0x4\n"
        );
        let mut out = Vec::new();
        paths(&mut out, std::slice::from_ref(&file.path)).unwrap();
        assert_eq!(out, b"/d/evil\\x1b[2J\\x0a.sys\n");
    }

    proptest::proptest! {
        /// Whatever the strings of a database hold, every human output is lines of text without
        /// a control character.
        #[test]
        fn human_outputs_hold_no_control_character(
            texts in proptest::collection::vec(proptest::prelude::any::<String>(), 10)
        ) {
            let file = StoredFile {
                content_id: 1,
                host: texts[0].clone(),
                path: texts[1].clone(),
                sha256: vec![0; 32],
                machine: 0x8664,
                company: Some(texts[2].clone()),
                description: Some(texts[3].clone()),
                version: Some(texts[4].clone()),
            };
            let site = StoredSite {
                evidence: Evidence::Call,
                api: Some(texts[5].clone()),
                rva: 1,
                section: texts[6].clone(),
                offset: 1,
                // Not printed yet; here so that printing it unescaped fails this test.
                via: vec![crate::store::Place { rva: 1, section: texts[6].clone(), offset: 1 }],
            };
            let entry = StoredEntry {
                tag: texts[7].clone(),
                binary: texts[8].clone(),
                description: texts[9].clone(),
                host: texts[0].clone(),
                source: texts[1].clone(),
                line: 1,
            };
            let tag = Tag(*b"AfdA");
            let found = crate::query::FileMatch {
                tag,
                file: file.clone(),
                evidence: Evidence::Call,
                sites: vec![site.clone()],
            };
            let answer = QueryAnswer {
                entries: vec![entry.clone()],
                several_hosts: true,
                ..QueryAnswer::default()
            };
            let shown_file = Found {
                tag,
                evidence: found.evidence,
                file: &found.file,
                sites: &found.sites,
            };
            let file_tag = FileTag { tag, evidence: Evidence::Call, sites: vec![site] };
            let collision = Collision { drivers: vec![found.clone()], entries: vec![entry.clone()] };
            let input = Input {
                name: texts[1].clone(),
                utf8_bom: false,
                lines: vec![annotate::AnnotatedLine {
                    line: 1,
                    text: b"AfdA".to_vec(),
                    crlf: false,
                    tag: Some(tag),
                    slot: Slot::Comment,
                }],
            };
            let answers = HashMap::from([(
                tag,
                TagAnswer { tag, drivers: vec![found.clone()], entries: vec![entry] },
            )]);
            let mut out = Vec::new();
            entries_human_section(&mut out, &answer).unwrap();
            shown_human(&mut out, Shown::File(shown_file), true, true).unwrap();
            no_driver_human(&mut out, &answer, &[], None).unwrap();
            tags_human(&mut out, &file, std::slice::from_ref(&file_tag), true, true).unwrap();
            collisions_human(&mut out, &texts[1], &[(file_tag, collision)], true).unwrap();
            paths(&mut out, &texts).unwrap();
            annotate_human(&mut out, &[input], &answers).unwrap();
            let text = String::from_utf8(out).unwrap();
            proptest::prop_assert!(
                !text.chars().any(|c| c != '\n' && matches!(u32::from(c), 0..=0x1f | 0x7f..=0x9f)),
                "{:?}",
                text
            );
        }
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(1_795_651_200), "2026-11-26 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
