//! Parser for Pooltag.txt and localtag.txt: `<Tag> - <binary> - <description>` lines.
//!
//! Every rule follows what Microsoft's real file holds (see DOMAIN.md):
//! - LF or CRLF line ends; UTF-8, with or without a byte-order mark, or UTF-16 with one (a file
//!   saved by Notepad or PowerShell), decoded by [`crate::text::decode`]; text that is not UTF-8
//!   is read lossily.
//! - Comments: lines starting `//`, or whose first word is `rem` in any case. `ReMo - refs.sys`
//!   is a tag line: `rem` must stand alone as a word.
//! - Fields are separated by a dash with white space on both sides; only the first two
//!   separators split, so a description may contain " - ".
//! - The tag field is 1-4 printable characters, padded with spaces to four (`PX1` is `PX1 `,
//!   `Cc` is `Cc  `); `?` and `*` wildcards are kept as written.
//! - A Ctrl-Z byte (0x1A) is an old end-of-file mark: what follows it is ignored.
//! - A line of two fields is an entry: the second field's first word is its binary when it looks
//!   like one (`*.sys`, `*.dll`, `*.exe`, `nt!etw`, `<unknown>`), the rest its description
//!   (`EtwO - nt!etw   Etw memory MDL`); otherwise the whole field is the description and the
//!   binary is empty (`ATmp - AppTag mount point`).
//! - A dash glued to the tag still separates it: `eMyS-  win32k!X::operator new - TAG` is the
//!   tag `eMyS`, binary `win32k!X::operator new`.
//! - Lines that are not tag lines (`<unknown>` alone, a prose note) produce no entry and are
//!   reported as problems, with their line number.

use crate::tag::is_printable;

/// One tag line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagFileEntry {
    /// 1-based line number.
    pub line: u32,
    /// The tag field padded to four characters, wildcards as written (`Afd?`, `PX1 `).
    pub tag: String,
    pub binary: String,
    pub description: String,
}

/// A line that does not follow the format, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagFileProblem {
    pub line: u32,
    pub message: String,
}

/// Everything read from one tag file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagFile {
    pub entries: Vec<TagFileEntry>,
    pub problems: Vec<TagFileProblem>,
}

/// Problems reported per file at most; one more says that the rest are not. A file of junk
/// lines would otherwise cost a message, with a copy of its line, per line.
const MAX_PROBLEMS: usize = 100;

/// Entries read per file at most (Microsoft's Pooltag.txt has about 4,600): memory stays
/// bounded whatever the file holds. A tag line past it is a problem.
const MAX_ENTRIES: usize = 1 << 18;

/// Is this file name one of the tag files pooltag reads (`pooltag.txt`, `localtag.txt`, any case)?
pub fn is_tag_file_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("pooltag.txt") || name.eq_ignore_ascii_case("localtag.txt")
}

/// Parses a whole tag file. Never fails: what cannot be read becomes a problem.
pub fn parse(content: &[u8]) -> TagFile {
    // Decoded first: a Ctrl-Z byte can be half of a UTF-16 character.
    let (_, decoded) = crate::text::decode(content);
    let content = &decoded[..];
    let content = match memchr::memchr(0x1a, content) {
        Some(end) => &content[..end],
        None => content,
    };
    let mut parsed = TagFile::default();
    let mut start = 0;
    let mut number: u32 = 0;
    while start < content.len() {
        let end = memchr::memchr(b'\n', &content[start..]).map_or(content.len(), |i| start + i);
        number = number.saturating_add(1);
        let raw = &content[start..end];
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        parse_line(&String::from_utf8_lossy(raw), number, &mut parsed);
        start = end + 1;
    }
    parsed
}

fn parse_line(line: &str, number: u32, parsed: &mut TagFile) {
    let trimmed = line.trim();
    if trimmed.is_empty() || is_comment(trimmed) {
        return;
    }
    // Problems are printed with the line quoted; the line is untrusted text.
    let shown = crate::text::escape(trimmed);
    let mut problem = |message: String| {
        let message = match parsed.problems.len() {
            n if n < MAX_PROBLEMS => message,
            n if n == MAX_PROBLEMS => "more malformed lines follow; they are not reported".into(),
            _ => return,
        };
        parsed.problems.push(TagFileProblem {
            line: number,
            message,
        })
    };
    let split = split_field(line).filter(|(tag, _)| is_tag_field(tag));
    let Some((tag_text, rest)) = split.or_else(|| split_glued(line)).or(split_field(line)) else {
        problem(format!("not a tag line (no ' - ' separator): '{shown}'"));
        return;
    };
    if !is_tag_field(tag_text) {
        problem(format!(
            "not a tag line (the tag must be 1 to 4 printable ASCII characters): '{shown}'"
        ));
        return;
    }
    if parsed.entries.len() >= MAX_ENTRIES {
        problem(format!("more than {MAX_ENTRIES} entries; line ignored"));
        return;
    }
    let tag = format!("{tag_text:<4}");
    let (binary, description) = match split_field(rest) {
        Some((binary, description)) => (binary.trim(), description.trim()),
        None => split_two_field_rest(rest.trim()),
    };
    parsed.entries.push(TagFileEntry {
        line: number,
        tag,
        binary: binary.to_owned(),
        description: description.to_owned(),
    });
}

fn is_comment(trimmed: &str) -> bool {
    if trimmed.starts_with("//") {
        return true;
    }
    let first_word = trimmed.split_whitespace().next().unwrap_or("");
    first_word.eq_ignore_ascii_case("rem")
}

/// Splits at the first separator: white space, a dash, white space. Returns the text before it
/// and the text after it (the white space after the dash included, for the caller to trim).
fn split_field(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    (1..bytes.len().saturating_sub(1))
        .find(|&i| {
            bytes[i] == b'-'
                && bytes[i - 1].is_ascii_whitespace()
                && bytes[i + 1].is_ascii_whitespace()
        })
        .map(|i| (text[..i].trim_end(), &text[i + 1..]))
}

/// 1-4 printable characters, not starting with a space (its trailing padding already trimmed).
fn is_tag_field(text: &str) -> bool {
    !text.is_empty() && text.len() <= 4 && text.bytes().all(is_printable) && !text.starts_with(' ')
}

/// `eMyS-  win32k!... - TAG`: a tag with the dash glued to it, then white space and two more
/// fields (with only one, `Note- see below` would be a tag). Returns the tag and the text after
/// the dash.
fn split_glued(line: &str) -> Option<(&str, &str)> {
    let word_end = line.find(|c: char| c.is_ascii_whitespace())?;
    let tag = line[..word_end].strip_suffix('-')?;
    let rest = &line[word_end..];
    (is_tag_field(tag) && split_field(rest).is_some()).then_some((tag, rest))
}

/// The second field of a two-field line: `nt!etw   Etw memory MDL` is a binary and a description
/// run together; `AppTag mount point` is a description alone.
fn split_two_field_rest(rest: &str) -> (&str, &str) {
    let first = rest.split_ascii_whitespace().next().unwrap_or_default();
    if looks_like_binary(first) {
        (first, rest[first.len()..].trim())
    } else {
        ("", rest)
    }
}

/// `afd.sys`, `ci.dll`, `csrss.exe`, `nt!etw`, `win32k!Foo`, `<unknown>`: the forms of
/// Pooltag.txt's binary field that a word of prose does not take.
fn looks_like_binary(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    let module = [".sys", ".dll", ".exe"]
        .iter()
        .any(|end| lower.len() > end.len() && lower.ends_with(end));
    let component = word.find('!').is_some_and(|bang| bang > 0);
    let angled = word.len() > 2 && word.starts_with('<') && word.ends_with('>');
    module || component || angled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: u32, tag: &str, binary: &str, description: &str) -> TagFileEntry {
        TagFileEntry {
            line,
            tag: tag.to_owned(),
            binary: binary.to_owned(),
            description: description.to_owned(),
        }
    }

    #[test]
    fn lf_and_crlf_give_the_same_entries() {
        let lf = parse(b"AfdA - afd.sys - Afd EA buffer\nAfdB - afd.sys - Afd B\n");
        let crlf = parse(b"AfdA - afd.sys - Afd EA buffer\r\nAfdB - afd.sys - Afd B\r\n");
        assert_eq!(lf, crlf);
        assert_eq!(
            lf.entries,
            vec![
                entry(1, "AfdA", "afd.sys", "Afd EA buffer"),
                entry(2, "AfdB", "afd.sys", "Afd B")
            ]
        );
        assert!(lf.problems.is_empty());
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_but_remo_is_a_tag() {
        let parsed = parse(
            b"//\n// Copyright\nrem\nrem    Pooltag.txt\nREM NTFS tags\n\n   \nReMo - refs.sys     -     Mount.c\n",
        );
        assert_eq!(
            parsed.entries,
            vec![entry(8, "ReMo", "refs.sys", "Mount.c")]
        );
        assert!(parsed.problems.is_empty());
    }

    #[test]
    fn padded_and_unpadded_short_tags_keep_four_characters() {
        let parsed = parse(
            b"Cc   - nt!cc        - Cache Manager allocations (catch-all)\nPX1 - ndproxy.sys - PX_EVENT_TAG\nI4e -  tcpip.sys    - IPv4 Echo data\nTun4  - <unknown>   - Tunnel cache\n",
        );
        let tags: Vec<&str> = parsed.entries.iter().map(|e| e.tag.as_str()).collect();
        assert_eq!(tags, vec!["Cc  ", "PX1 ", "I4e ", "Tun4"]);
        assert_eq!(parsed.entries[0].binary, "nt!cc");
        assert_eq!(parsed.entries[2].binary, "tcpip.sys");
        assert_eq!(parsed.entries[3].description, "Tunnel cache");
        assert!(parsed.problems.is_empty());
    }

    #[test]
    fn wildcards_are_kept() {
        let parsed = parse(b"Afd? - afd.sys - AFD objects\nCM?? - nt!cm - Configuration Manager\nAml* - <unknown> - ACPI AMLI\n");
        let tags: Vec<&str> = parsed.entries.iter().map(|e| e.tag.as_str()).collect();
        assert_eq!(tags, vec!["Afd?", "CM??", "Aml*"]);
    }

    #[test]
    fn descriptions_keep_their_dashes() {
        let parsed = parse(b"NDcw - ndis.sys - NDIS_TAG_PCW - NDIS Performance Counters\n");
        assert_eq!(
            parsed.entries,
            vec![entry(
                1,
                "NDcw",
                "ndis.sys",
                "NDIS_TAG_PCW - NDIS Performance Counters"
            )]
        );
    }

    #[test]
    fn duplicate_tags_are_all_kept() {
        let parsed =
            parse(b"Fatv - fastfat.sys - Fat events\nFatv - fastfat.sys - Fat backpocket Vpb\n");
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.entries[1].description, "Fat backpocket Vpb");
    }

    #[test]
    fn two_field_lines_are_entries_with_a_binary_when_one_is_named() {
        let parsed = parse(
            b"ATmp - AppTag mount point\nEtwO - nt!etw         Etw memory partition MDL\n\
              Ab1 - afd.SYS\nAb2 - <unknown>  Some buffer\nAb3 - Process  list\nAb4 - ci.dll x\n",
        );
        assert_eq!(
            parsed.entries,
            vec![
                entry(1, "ATmp", "", "AppTag mount point"),
                entry(2, "EtwO", "nt!etw", "Etw memory partition MDL"),
                entry(3, "Ab1 ", "afd.SYS", ""),
                entry(4, "Ab2 ", "<unknown>", "Some buffer"),
                entry(5, "Ab3 ", "", "Process  list"),
                entry(6, "Ab4 ", "ci.dll", "x"),
            ]
        );
        assert!(parsed.problems.is_empty());
    }

    #[test]
    fn a_dash_glued_to_the_tag_still_separates() {
        let parsed = parse(
            b"eMyS-  win32k!CInputSystemMetrics::operator new - SYSTEMMETRICS_TAG\nA-B - x.sys - y\nNote- see below\n",
        );
        assert_eq!(
            parsed.entries,
            vec![
                entry(
                    1,
                    "eMyS",
                    "win32k!CInputSystemMetrics::operator new",
                    "SYSTEMMETRICS_TAG"
                ),
                entry(2, "A-B ", "x.sys", "y"),
            ]
        );
        let lines: Vec<u32> = parsed.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![3]);
    }

    #[test]
    fn lines_without_a_tag_are_reported_and_the_rest_goes_on() {
        let parsed = parse(
            b"AcpA - acpi.sys - ACPI arbiter data\n       <unknown>\nQUIC Allocation tags are Qc00 through QcFF\nTooLong - x.sys - y\nAcpB - acpi.sys - ACPI buffer data\n\x1a",
        );
        let tags: Vec<&str> = parsed.entries.iter().map(|e| e.tag.as_str()).collect();
        assert_eq!(tags, vec!["AcpA", "AcpB"]);
        assert_eq!(
            parsed.problems,
            vec![
                TagFileProblem {
                    line: 2,
                    message: "not a tag line (no ' - ' separator): '<unknown>'".to_owned()
                },
                TagFileProblem {
                    line: 3,
                    message: "not a tag line (no ' - ' separator): 'QUIC Allocation tags are Qc00 through QcFF'".to_owned()
                },
                TagFileProblem {
                    line: 4,
                    message: "not a tag line (the tag must be 1 to 4 printable ASCII characters): 'TooLong - x.sys - y'".to_owned()
                },
            ]
        );
    }

    #[test]
    fn ctrl_z_ends_the_file() {
        let parsed = parse(b"AcpA - acpi.sys - ACPI\n\x1aAcpB - acpi.sys - after the end\n");
        assert_eq!(parsed.entries.len(), 1);
        assert!(parsed.problems.is_empty());
    }

    #[test]
    fn non_utf8_text_is_read_lossily() {
        let parsed = parse(b"Ab\xe9c - x.sys - caf\xe9\n");
        assert_eq!(parsed.entries.len(), 0);
        assert_eq!(parsed.problems.len(), 1);
        let parsed = parse(b"Abcd - x.sys - caf\xe9\n");
        assert_eq!(parsed.entries[0].description, "caf\u{fffd}");
    }

    #[test]
    fn files_saved_on_windows_read_alike() {
        let text = "AfdA - afd.sys - caf\u{e9}\r\nAfdB - afd.sys - Afd B\r\n";
        let plain = parse(text.as_bytes());
        assert_eq!(plain.entries.len(), 2);
        assert!(plain.problems.is_empty());
        let bom = [b"\xef\xbb\xbf", text.as_bytes()].concat();
        let le: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let be: Vec<u8> = [0xfe, 0xff]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        for encoded in [bom, le, be] {
            assert_eq!(parse(&encoded), plain);
        }
        // U+1A41 is 41 1A in UTF-16LE: a Ctrl-Z byte that is not an end-of-file mark.
        let le: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(
                "AfdA - afd.sys - \u{1a41}\nAfdB - afd.sys - B\n"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes),
            )
            .collect();
        assert_eq!(parse(&le).entries.len(), 2);
    }

    #[test]
    fn tag_file_names_are_recognised_in_any_case() {
        assert!(is_tag_file_name("Pooltag.txt"));
        assert!(is_tag_file_name("LOCALTAG.TXT"));
        assert!(!is_tag_file_name("pooltag.txt.bak"));
    }

    /// Microsoft's real file, when the shared materials are beside the project.
    #[test]
    fn microsofts_pooltag_txt_gives_an_entry_for_every_tag_line() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/pooltag/pooltag.txt");
        let Ok(content) = std::fs::read(path) else {
            eprintln!("skipped: {path} is not here");
            return;
        };
        let parsed = parse(&content);
        assert_eq!(parsed.entries.len(), 4613);
        let problem_lines: Vec<u32> = parsed.problems.iter().map(|p| p.line).collect();
        assert_eq!(problem_lines, vec![876, 2661]);
        let atmp = parsed.entries.iter().find(|e| e.line == 138).unwrap();
        assert_eq!(
            (
                atmp.tag.as_str(),
                atmp.binary.as_str(),
                atmp.description.as_str()
            ),
            ("ATmp", "", "AppTag mount point")
        );
        let px1 = parsed.entries.iter().find(|e| e.line == 2620).unwrap();
        assert_eq!(
            (px1.tag.as_str(), px1.binary.as_str()),
            ("PX1 ", "ndproxy.sys")
        );
        assert!(parsed.entries.iter().any(|e| e.tag == "ReMo"));
    }
}
