//! `pooltag annotate`: text that names pool tags, printed back with the answer beside each tag.
//!
//! Recognised layouts, told apart by their header lines (the input's own layout is kept, lines
//! without a tag pass through unchanged):
//! - PoolMon: a ` Tag  Type  Allocs  Frees  Diff  Bytes  Per Alloc` header (with or without
//!   `Mapped_Driver`), then one line per tag, the tag in the four columns after the first space;
//! - WinDbg `!poolused`: a ` Tag  Allocs  Used ...` header, then lines of the same shape; its
//!   `UNKNOWN pooltag 'XXXX', please update pooltag.txt` lines are the ones that most need an
//!   answer;
//! - CSV with a `Tag` column (WPA and xperf exports);
//! - a plain list of tags, one per line (`AfdA`, `Irp`, `0x41646641`).

use std::collections::HashMap;

use crate::error::Result;
use crate::extract::Evidence;
use crate::query::{FileMatch, Scope, find_entries, find_files};
use crate::store::{Database, StoredEntry};
use crate::tag::{Tag, TagPattern};

/// Driver names shown per tag at most.
const MAX_NAMES: usize = 3;

/// The layout of an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// PoolMon or `!poolused`: the tag in columns 1-4 of a data line.
    Columns,
    /// CSV with the tag in this column.
    Csv(usize),
    PlainList,
}

/// What pooltag knows of one tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagAnswer {
    pub tag: Tag,
    /// The best candidates: the drivers at the strongest level found.
    pub drivers: Vec<FileMatch>,
    /// Pooltag.txt's entries for it, exact tags before wildcards.
    pub entries: Vec<StoredEntry>,
}

/// One input line, with the tag it names, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotatedLine {
    pub line: usize,
    pub text: String,
    pub tag: Option<Tag>,
}

/// Finds the tag of every line of `text`.
pub fn tags_in(text: &str) -> Vec<AnnotatedLine> {
    let mut layout = Layout::PlainList;
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let mut tag = None;
        if let Some(next) = header_layout(line) {
            layout = next;
        } else {
            tag = match layout {
                Layout::Columns => column_tag(line),
                Layout::Csv(column) => csv_tag(line, column),
                Layout::PlainList => plain_tag(line),
            }
            .or_else(|| unknown_tag(line));
        }
        out.push(AnnotatedLine {
            line: index + 1,
            text: line.to_owned(),
            tag,
        });
    }
    out
}

/// A header line starts a layout.
fn header_layout(line: &str) -> Option<Layout> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.first() == Some(&"Tag")
        && (words.get(1..4) == Some(&["Type", "Allocs", "Frees"][..])
            || words.get(1..3) == Some(&["Allocs", "Used"][..])
            || words.get(1..3) == Some(&["Allocs", "Bytes"][..]))
    {
        return Some(Layout::Columns);
    }
    if line.contains(',') {
        let fields = csv_fields(line)?;
        let column = fields
            .iter()
            .position(|f| f.trim().eq_ignore_ascii_case("tag"))?;
        return Some(Layout::Csv(column));
    }
    None
}

/// ` AfdA Nonp  ...` / ` AfdA     12  34 ...`: a space, the four tag characters, a space, then
/// the numbers or the pool type.
fn column_tag(line: &str) -> Option<Tag> {
    let bytes = line.as_bytes();
    if bytes.len() < 7 || bytes[0] != b' ' || bytes[5] != b' ' {
        return None;
    }
    let rest = line.get(6..)?.trim_start();
    let first = rest.split_whitespace().next()?;
    let numbers_follow = first.bytes().all(|b| b.is_ascii_digit());
    let pool_type = ["Nonp", "Paged", "Pagd", "Both", "NonP"].contains(&first);
    if !(numbers_follow || pool_type) {
        return None;
    }
    Some(Tag(bytes[1..5].try_into().ok()?)).filter(|t| t.is_printable())
}

fn csv_tag(line: &str, column: usize) -> Option<Tag> {
    let fields = csv_fields(line)?;
    plain_tag(fields.get(column)?)
}

fn csv_fields(line: &str) -> Option<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line.as_bytes());
    let record = reader.records().next()?.ok()?;
    Some(record.iter().map(str::to_owned).collect())
}

/// A line that is only a tag (trailing spaces are padding) or a tag value in hex.
fn plain_tag(field: &str) -> Option<Tag> {
    let text = field.trim_start().trim_end_matches([' ', '\t']);
    let text = text.trim_matches('"');
    if text.is_empty() || text.contains(['?', '*']) || text.trim().contains(char::is_whitespace) {
        return None;
    }
    TagPattern::parse(text).ok()?.as_tag()
}

/// `UNKNOWN pooltag 'XXXX', please update pooltag.txt`, wherever it stands.
fn unknown_tag(line: &str) -> Option<Tag> {
    let start = line.find("pooltag '")? + "pooltag '".len();
    let tag = line.get(start..start + 4)?;
    if line.get(start + 4..start + 5) != Some("'") {
        return None;
    }
    Some(Tag(tag.as_bytes().try_into().ok()?))
}

/// Answers every distinct tag of `lines`.
pub fn answers(db: &Database, lines: &[AnnotatedLine]) -> Result<HashMap<Tag, TagAnswer>> {
    let entries = db.tag_entries()?;
    let mut answers = HashMap::new();
    for tag in lines.iter().filter_map(|l| l.tag) {
        if answers.contains_key(&tag) {
            continue;
        }
        let pattern = TagPattern::exact(tag);
        let files = find_files(
            db,
            std::slice::from_ref(&pattern),
            false,
            Scope::AtLeast(Evidence::Bytes),
        )?;
        let best = files.first().map(|f| f.evidence);
        let at_best: Vec<FileMatch> = files
            .into_iter()
            .filter(|f| Some(f.evidence) == best)
            .collect();
        let mut known = find_entries(&entries, std::slice::from_ref(&pattern), false);
        known.sort_by_key(|e| e.tag.contains(['?', '*']));
        known.dedup_by(|a, b| (&a.binary, &a.description) == (&b.binary, &b.description));
        answers.insert(
            tag,
            TagAnswer {
                tag,
                drivers: at_best,
                entries: known,
            },
        );
    }
    Ok(answers)
}

/// The answer as one short note, escaped for a terminal: `afd.sys (call, Microsoft Corporation);
/// Pooltag.txt: afd.sys - AFD objects`.
pub fn note(answer: &TagAnswer) -> String {
    let mut parts = Vec::new();
    // The same driver in several places (DriverStore and System32, several hosts) is one name.
    let mut names: Vec<(String, usize)> = Vec::new();
    for found in &answer.drivers {
        let name = crate::store::file_name(&found.file.path);
        let shown = match &found.file.company {
            Some(company) => format!("{name} ({}, {company})", found.evidence.name()),
            None => format!("{name} ({})", found.evidence.name()),
        };
        match names.iter_mut().find(|(n, _)| *n == shown) {
            Some((_, copies)) => *copies += 1,
            None => names.push((shown, 1)),
        }
    }
    if !names.is_empty() {
        let mut shown: Vec<String> = names
            .iter()
            .take(MAX_NAMES)
            .map(|(name, copies)| match copies {
                1 => name.clone(),
                n => format!("{name} x{n}"),
            })
            .collect();
        if names.len() > MAX_NAMES {
            shown.push(format!("and {} more", names.len() - MAX_NAMES));
        }
        parts.push(shown.join(", "));
    }
    if let Some(entry) = answer.entries.first() {
        parts.push(format!(
            "Pooltag.txt: {} - {}",
            entry.binary, entry.description
        ));
    }
    if parts.is_empty() {
        "no driver or Pooltag.txt entry known".to_owned()
    } else {
        // Names, companies and descriptions come from drivers and tag files: untrusted.
        crate::text::escape(&parts.join("; ")).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(text: &str) -> Vec<Option<String>> {
        tags_in(text)
            .into_iter()
            .map(|l| l.tag.map(|t| t.to_string()))
            .collect()
    }

    #[test]
    fn poolmon_lines_name_their_tag() {
        let text = " Memory: 8388148K Avail: 4126216K  PageFlts:   420   InRam Krnl: 9248K P:259156K\n\
                    \n Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc   Mapped_Driver\n\
                    \n AfdA Nonp      1234 (   0)      1200 (   0)     34     5440 (   0)     160   afd.sys\n\
                    \x20Irp  Nonp       900 (   2)       899 (   2)      1      272 (   0)     272   [ nt!io ]\n";
        assert_eq!(
            tags(text),
            vec![
                None,
                None,
                None,
                None,
                Some("AfdA".into()),
                Some("Irp ".into())
            ]
        );
    }

    #[test]
    fn poolused_lines_and_unknown_notes_name_their_tag() {
        let text = " Sorting by  NonPaged Pool Consumed\n\n               NonPaged                  Paged\n\
                    \x20Tag     Allocs         Used     Allocs         Used\n\n\
                    \x20ConT         9      5251072          0            0\tUNKNOWN pooltag 'ConT', please update pooltag.txt\n\
                    \x20EtwB       120      4841472          5       196608\tEtw Buffer , Binary: nt!etw\n\
                    \x20TOTAL     1234     10092544          5       196608\n";
        assert_eq!(
            tags(text),
            vec![
                None,
                None,
                None,
                None,
                None,
                Some("ConT".into()),
                Some("EtwB".into()),
                None
            ]
        );
    }

    #[test]
    fn csv_tag_column_and_plain_lists() {
        let text = "Type,Tag,Size\nNonPaged,AfdA,100\nPaged,\"Irp \",20\nPaged,,3\n";
        assert_eq!(
            tags(text),
            vec![None, Some("AfdA".into()), Some("Irp ".into()), None]
        );
        let list = "AfdA\nIrp\n0x41646641\nnot a tag\n\n";
        assert_eq!(
            tags(list),
            vec![
                Some("AfdA".into()),
                Some("Irp ".into()),
                Some("AfdA".into()),
                None,
                None
            ]
        );
    }
}
