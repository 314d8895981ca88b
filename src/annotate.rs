//! `pooltag annotate`: text that names pool tags, printed back with the answer beside each tag.
//!
//! Each input is read on its own (its layout, line numbers and last line are its own), as bytes:
//! lines are decoded only to find their tag, and are printed back byte for byte with the answer
//! added. An input with a byte-order mark is decoded by [`crate::text::decode`]; UTF-16 comes out
//! as UTF-8. Recognised layouts, told apart by their header lines:
//! - PoolMon: a ` Tag  Type  Allocs  Frees  Diff  Bytes  Per Alloc` header (with or without
//!   `Mapped_Driver`), then one line per tag, the tag in the four columns after the first space;
//! - WinDbg `!poolused`: a ` Tag  Allocs  Used ...` header, then lines of the same shape; its
//!   `UNKNOWN pooltag 'XXXX', please update pooltag.txt` lines are the ones that most need an
//!   answer;
//! - CSV with a `Tag` column (WPA and xperf exports), and tab-separated tables with one: the
//!   answer goes into a new last column, so the table stays a table;
//! - a plain list of tags: an input without a table header whose every non-blank line is one
//!   word (`AfdA`, `Irp`, `0x41646641`). Elsewhere a lone word is taken as a tag only when it is
//!   a tag value (`0x41646641`): in prose, `Done` or `OK` is a word, not a tag.

use std::collections::HashMap;

use crate::error::Result;
use crate::extract::Evidence;
use crate::query::{FileMatch, Scope, find_entries, find_files};
use crate::store::{Database, StoredEntry};
use crate::tag::{Tag, TagPattern};
use crate::text::{Encoding, decode};

/// Driver names shown per tag at most.
const MAX_NAMES: usize = 3;

/// The name of the column added to a CSV or tab-separated table.
pub const COLUMN_NAME: &str = "pooltag";

/// The field separator of a table with a `Tag` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Separator {
    Comma,
    Tab,
}

/// The layout lines are read in, set by the last header line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// PoolMon or `!poolused`: the tag in columns 1-4 of a data line.
    Columns,
    /// A table with the tag in this column.
    Table(Separator, usize),
    /// No header yet: a plain list of tags, or text.
    Text,
}

/// How the answer is added to a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `  # answer` after the line, when it names a tag.
    Comment,
    /// The header of a table: the new column's name.
    Header(Separator),
    /// A row of a table: the answer in the new column, empty when the row names no tag.
    Row(Separator),
    /// Nothing (a blank line of a table).
    Nothing,
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
    /// 1-based, within its input.
    pub line: usize,
    /// The line as read, without its line end (UTF-8 when the input was UTF-16).
    pub text: Vec<u8>,
    /// Whether it ended in CR LF (printed back so); other lines end in LF, the last one too.
    pub crlf: bool,
    pub tag: Option<Tag>,
    pub slot: Slot,
}

/// One input: a file, or `-` for standard input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub name: String,
    /// Whether it began with a UTF-8 byte-order mark, which is printed back.
    pub utf8_bom: bool,
    pub lines: Vec<AnnotatedLine>,
}

/// Reads one input's bytes: decodes them when they carry a byte-order mark and finds the tag
/// of every line.
pub fn read_input(name: &str, bytes: &[u8]) -> Input {
    let (encoding, text) = decode(bytes);
    Input {
        name: name.to_owned(),
        utf8_bom: encoding == Encoding::Utf8Bom,
        lines: tags_in(&text),
    }
}

/// Finds the tag of every line of one input's text.
fn tags_in(text: &[u8]) -> Vec<AnnotatedLine> {
    let mut raw: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if raw.last().is_some_and(|l| l.is_empty()) {
        raw.pop();
    }
    let last = raw.len();
    let lines: Vec<(&[u8], bool)> = raw
        .into_iter()
        .enumerate()
        .map(|(i, line)| match line.strip_suffix(b"\r") {
            // A CR at the very end of the input ends no line: it stays in the text.
            Some(content) if i + 1 < last || text.ends_with(b"\n") => (content, true),
            _ => (line, false),
        })
        .collect();
    let decoded: Vec<String> = lines
        .iter()
        .map(|(line, _)| String::from_utf8_lossy(line).into_owned())
        .collect();
    let has_header = decoded.iter().any(|l| header_layout(l).is_some());
    let plain_list = !has_header
        && decoded
            .iter()
            .all(|l| l.split_whitespace().nth(1).is_none());
    let mut layout = Layout::Text;
    let mut out = Vec::with_capacity(lines.len());
    for (index, ((bytes, crlf), line)) in lines.into_iter().zip(&decoded).enumerate() {
        let mut tag = None;
        let slot = if let Some(next) = header_layout(line) {
            layout = next;
            match next {
                Layout::Table(separator, _) => Slot::Header(separator),
                _ => Slot::Comment,
            }
        } else {
            tag = match layout {
                Layout::Columns => column_tag(line),
                Layout::Table(Separator::Comma, column) => csv_tag(line, column),
                Layout::Table(Separator::Tab, column) => {
                    line.split('\t').nth(column).and_then(plain_tag)
                }
                Layout::Text => lone_tag(line, plain_list),
            }
            .or_else(|| unknown_tag(line));
            match layout {
                Layout::Table(..) if line.trim().is_empty() => Slot::Nothing,
                Layout::Table(separator, _) => Slot::Row(separator),
                _ => Slot::Comment,
            }
        };
        out.push(AnnotatedLine {
            line: index + 1,
            text: bytes.to_vec(),
            crlf,
            tag,
            slot,
        });
    }
    out
}

/// A header line starts a layout.
fn header_layout(line: &str) -> Option<Layout> {
    let is_tag = |field: &str| field.trim().trim_matches('"').eq_ignore_ascii_case("tag");
    // Before PoolMon's header: `Tag<TAB>Type<TAB>Allocs<TAB>Frees` is a table.
    if line.contains('\t')
        && let Some(column) = line.split('\t').position(is_tag)
    {
        return Some(Layout::Table(Separator::Tab, column));
    }
    if crate::snapshot::capture_header(line).is_some() {
        return Some(Layout::Columns);
    }
    if line.contains(',') {
        let fields = csv_fields(line)?;
        let column = fields.iter().position(|f| is_tag(f))?;
        return Some(Layout::Table(Separator::Comma, column));
    }
    None
}

/// ` AfdA Nonp  ...` / ` AfdA     12  34 ...`: a space, the four tag characters, a space, then
/// the numbers or the pool type.
fn column_tag(line: &str) -> Option<Tag> {
    let (tag, rest) = crate::snapshot::line_tag(line)?;
    let first = rest.split_whitespace().next()?;
    let numbers_follow = first.bytes().all(|b| b.is_ascii_digit());
    let pool_type = ["Nonp", "Paged", "Pagd", "Both", "NonP"].contains(&first);
    (numbers_follow || pool_type)
        .then_some(tag)
        .filter(|t| t.is_printable())
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

/// A line of text that is one word: a tag in a plain list, else only a tag value (`0x...`).
fn lone_tag(line: &str, plain_list: bool) -> Option<Tag> {
    let word = line.trim();
    let value = word.len() > 4 && word.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"));
    if plain_list || value {
        plain_tag(line)
    } else {
        None
    }
}

/// A field that is only a tag (trailing spaces are padding) or a tag value in hex.
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

/// Answers every distinct tag of `inputs`.
pub fn answers(db: &Database, inputs: &[Input]) -> Result<HashMap<Tag, TagAnswer>> {
    let entries = db.tag_entries()?;
    let mut answers = HashMap::new();
    let lines = inputs.iter().flat_map(|input| &input.lines);
    for tag in lines.filter_map(|l| l.tag) {
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
        tags_in(text.as_bytes())
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
        let text = "Type,Tag,Size\nNonPaged,AfdA,100\nPaged,\"Irp \",20\nPaged,,3\n\n";
        assert_eq!(
            tags(text),
            vec![None, Some("AfdA".into()), Some("Irp ".into()), None, None]
        );
        let slots: Vec<Slot> = tags_in(text.as_bytes()).iter().map(|l| l.slot).collect();
        let row = Slot::Row(Separator::Comma);
        assert_eq!(
            slots,
            vec![Slot::Header(Separator::Comma), row, row, row, Slot::Nothing]
        );
        let list = "AfdA\nIrp\n0x41646641\nlonger\n\n";
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

    #[test]
    fn short_words_of_prose_are_not_tags_but_values_are() {
        let text = "Leak seen today\nDone\nOK\n0x41646641\n";
        assert_eq!(tags(text), vec![None, None, None, Some("AfdA".into())]);
    }

    #[test]
    fn tab_separated_tables_have_a_tag_column() {
        let text = "Tag\tType\tAllocs\tFrees\nAfdA\tNonp\t12\t3\n";
        assert_eq!(tags(text), vec![None, Some("AfdA".into())]);
        let slots: Vec<Slot> = tags_in(text.as_bytes()).iter().map(|l| l.slot).collect();
        assert_eq!(
            slots,
            vec![Slot::Header(Separator::Tab), Slot::Row(Separator::Tab)]
        );
    }

    #[test]
    fn lines_keep_their_bytes_and_line_ends() {
        let lines = tags_in(b"AfdA\r\nIrp\xff\nBad\r");
        let kept: Vec<(&[u8], bool)> = lines.iter().map(|l| (&l.text[..], l.crlf)).collect();
        assert_eq!(
            kept,
            vec![
                (&b"AfdA"[..], true),
                (&b"Irp\xff"[..], false),
                (&b"Bad\r"[..], false)
            ]
        );
        assert_eq!(lines[0].tag, Some(Tag(*b"AfdA")));
    }

    #[test]
    fn utf16_input_is_decoded() {
        let bytes: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain("AfdA\r\nIrp\r\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let input = read_input("-", &bytes);
        assert!(!input.utf8_bom);
        let got: Vec<(Vec<u8>, Option<Tag>)> =
            input.lines.into_iter().map(|l| (l.text, l.tag)).collect();
        assert_eq!(
            got,
            vec![
                (b"AfdA".to_vec(), Some(Tag(*b"AfdA"))),
                (b"Irp".to_vec(), Some(Tag(*b"Irp ")))
            ]
        );
        let bom = read_input("x", b"\xef\xbb\xbfAfdA\n");
        assert!(bom.utf8_bom);
        assert_eq!(bom.lines[0].tag, Some(Tag(*b"AfdA")));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_read_without_panic_and_kept(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)
        ) {
            let input = read_input("-", &bytes);
            if !bytes.starts_with(b"\xef\xbb\xbf") && !bytes.starts_with(b"\xff\xfe")
                && !bytes.starts_with(b"\xfe\xff")
            {
                let mut again = Vec::new();
                for line in &input.lines {
                    again.extend_from_slice(&line.text);
                    again.extend_from_slice(if line.crlf { b"\r\n" } else { b"\n" });
                }
                let mut expected = bytes.clone();
                if !expected.is_empty() && !expected.ends_with(b"\n") {
                    expected.push(b'\n');
                }
                proptest::prop_assert_eq!(again, expected);
            }
        }
    }
}
