//! Pool usage counters: the pool tag table at one moment, and what changed between two moments.
//!
//! A snapshot comes from the live system's `SystemPoolTagInformation` buffer
//! ([`parse_pool_buffer`]), or from a file ([`load`]): a snapshot saved by `pooltag pool --save`
//! (JSON), a PoolMon capture (its screen or a `poolmon /n` log) or WinDbg `!poolused` output,
//! told apart by their content. Every file is untrusted: a line that looks like a tag line but
//! cannot be read is reported with its line number and skipped, and a file that is none of these
//! is one error naming it. [`diff`] compares two snapshots of any kinds.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::read::{ReadError, read_capped};
use crate::tag::Tag;

/// A snapshot file larger than this is refused: a full PoolMon log of a busy server is a few MB.
pub const MAX_SNAPSHOT_FILE: u64 = 64 << 20;

/// Unreadable lines reported per file at most; the rest are counted.
const MAX_PROBLEMS: usize = 10;

/// The counters of one tag in one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub allocs: u64,
    pub frees: u64,
    pub bytes: u64,
}

impl Counters {
    /// Allocations not freed yet (PoolMon's Diff). Negative when the frees counter is ahead, as
    /// after a 32-bit counter wrapped.
    pub fn outstanding(self) -> i64 {
        signed(self.allocs).saturating_sub(signed(self.frees))
    }

    fn add(self, other: Counters) -> Counters {
        Counters {
            allocs: self.allocs.saturating_add(other.allocs),
            frees: self.frees.saturating_add(other.frees),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// A counter as a signed number for differences (a file may hold any value; no real counter
/// reaches 2^63).
pub fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The pool a PoolMon line or a table row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pool {
    Paged,
    NonPaged,
}

impl Pool {
    /// PoolMon's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Pool::Paged => "Paged",
            Pool::NonPaged => "Nonp",
        }
    }
}

/// One tag's counters in both pools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub paged: Counters,
    pub nonpaged: Counters,
}

impl Usage {
    pub fn pool(&self, pool: Pool) -> Counters {
        match pool {
            Pool::Paged => self.paged,
            Pool::NonPaged => self.nonpaged,
        }
    }

    fn pool_mut(&mut self, pool: Pool) -> &mut Counters {
        match pool {
            Pool::Paged => &mut self.paged,
            Pool::NonPaged => &mut self.nonpaged,
        }
    }

    /// Bytes in both pools.
    pub fn bytes(&self) -> i64 {
        signed(self.paged.bytes).saturating_add(signed(self.nonpaged.bytes))
    }

    /// Outstanding allocations in both pools.
    pub fn outstanding(&self) -> i64 {
        self.paged
            .outstanding()
            .saturating_add(self.nonpaged.outstanding())
    }
}

/// The pool tag table at one moment, with where and when it was taken when known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub host: Option<String>,
    /// Unix seconds.
    pub time: Option<i64>,
    /// The Windows version, `10.0.22631`.
    pub windows: Option<String>,
    pub tags: BTreeMap<Tag, Usage>,
}

// ---------------------------------------------------------------------------------------------
// The live buffer.

/// The pointer width of a SYSTEM_POOLTAG_INFORMATION buffer: it decides the alignment of the
/// SIZE_T fields, so the entry size and where the array starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferLayout {
    /// 40-byte entries from offset 8 (SIZE_T is 8 bytes, 8-aligned).
    X64,
    /// 28-byte entries from offset 4.
    X86,
}

impl BufferLayout {
    /// The layout of this build, the one the kernel fills for it (WOW64 thunks the 32-bit one).
    pub const NATIVE: BufferLayout = if cfg!(target_pointer_width = "64") {
        BufferLayout::X64
    } else {
        BufferLayout::X86
    };

    fn array_offset(self) -> usize {
        match self {
            BufferLayout::X64 => 8,
            BufferLayout::X86 => 4,
        }
    }

    fn entry_size(self) -> usize {
        match self {
            BufferLayout::X64 => 40,
            BufferLayout::X86 => 28,
        }
    }

    /// Offsets of PagedUsed, NonPagedAllocs, NonPagedFrees, NonPagedUsed, and the SIZE_T width.
    fn fields(self) -> (usize, usize, usize, usize, usize) {
        match self {
            BufferLayout::X64 => (16, 24, 28, 32, 8),
            BufferLayout::X86 => (12, 16, 20, 24, 4),
        }
    }
}

/// Reads a SYSTEM_POOLTAG_INFORMATION buffer: `ULONG Count`, then `Count` SYSTEM_POOLTAG
/// entries. A Count larger than the buffer gives the entries that fit; a buffer too short for
/// the Count is an error. Two entries of one tag (the same tag with and without the
/// PROTECTED_POOL bit) are added up.
pub fn parse_pool_buffer(
    buffer: &[u8],
    layout: BufferLayout,
) -> std::result::Result<BTreeMap<Tag, Usage>, String> {
    let count = read_le(buffer, 0, 4).ok_or_else(|| {
        format!(
            "the pool tag buffer is {} bytes, too short for its count",
            buffer.len()
        )
    })?;
    let fits = buffer.len().saturating_sub(layout.array_offset()) / layout.entry_size();
    let count = usize::try_from(count).unwrap_or(usize::MAX).min(fits);
    let (paged_used, nonpaged_allocs, nonpaged_frees, nonpaged_used, size_t) = layout.fields();
    let mut tags: BTreeMap<Tag, Usage> = BTreeMap::new();
    for i in 0..count {
        let start = layout.array_offset() + i * layout.entry_size();
        let Some(entry) = buffer.get(start..start + layout.entry_size()) else {
            break;
        };
        // Every offset is inside the entry: the entry is entry_size() bytes long.
        let field = |at: usize, width: usize| read_le(entry, at, width).unwrap_or_default();
        let value = u32::try_from(field(0, 4)).unwrap_or_default();
        let usage = Usage {
            paged: Counters {
                allocs: field(4, 4),
                frees: field(8, 4),
                bytes: field(paged_used, size_t),
            },
            nonpaged: Counters {
                allocs: field(nonpaged_allocs, 4),
                frees: field(nonpaged_frees, 4),
                bytes: field(nonpaged_used, size_t),
            },
        };
        let total = tags.entry(Tag::from_value(value)).or_default();
        total.paged = total.paged.add(usage.paged);
        total.nonpaged = total.nonpaged.add(usage.nonpaged);
    }
    Ok(tags)
}

/// A little-endian unsigned number of `width` (at most 8) bytes at `at`.
fn read_le(data: &[u8], at: usize, width: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(width)?)?;
    let mut value = [0u8; 8];
    value.get_mut(..width)?.copy_from_slice(bytes);
    Some(u64::from_le_bytes(value))
}

// ---------------------------------------------------------------------------------------------
// Files.

/// A file read as a snapshot, with the lines it skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub snapshot: Snapshot,
    /// (1-based line, why) of each tag line that could not be read.
    pub problems: Vec<(usize, String)>,
}

/// Reads a snapshot file of any kind. The warnings (`FILE:LINE: why`, at most
/// `MAX_PROBLEMS` and a count of the rest) are for stderr; a file that is no snapshot is an
/// error naming it.
pub fn load(path: &Path) -> Result<(Snapshot, Vec<String>)> {
    let shown = path.display();
    let data = read_capped(path, MAX_SNAPSHOT_FILE).map_err(|e| match e {
        ReadError::TooLarge(size, limit) => Error::new(format!(
            "{shown}: {size} bytes, larger than the {} MiB a snapshot may be",
            limit >> 20
        )),
        other => Error::new(format!("{shown}: {other}")),
    })?;
    let parsed = parse_bytes(&data).map_err(|why| Error::new(format!("{shown}: {why}")))?;
    let mut warnings: Vec<String> = parsed
        .problems
        .iter()
        .take(MAX_PROBLEMS)
        .map(|(line, why)| format!("{shown}:{line}: {why}"))
        .collect();
    if parsed.problems.len() > MAX_PROBLEMS {
        warnings.push(format!(
            "{shown}: {} more unreadable lines skipped",
            parsed.problems.len() - MAX_PROBLEMS
        ));
    }
    Ok((parsed.snapshot, warnings))
}

/// Reads the bytes of a snapshot file: [`parse`] over their text.
pub fn parse_bytes(data: &[u8]) -> std::result::Result<Parsed, String> {
    // UTF-16 when it starts with a byte-order mark (PowerShell's `>` and WinDbg's `.logopen /u`
    // write it), else UTF-8 with invalid bytes replaced.
    let (_, text) = crate::text::decode(data);
    parse(&String::from_utf8_lossy(&text))
}

/// Reads the text of a snapshot file, telling its kind from the content: JSON is a saved
/// snapshot; otherwise PoolMon and `!poolused` tables, found by their header lines.
pub fn parse(text: &str) -> std::result::Result<Parsed, String> {
    if text.trim_start().starts_with('{') {
        return parse_saved(text).map(|snapshot| Parsed {
            snapshot,
            problems: Vec::new(),
        });
    }
    parse_capture(text)
}

/// The header line of a capture table, by its words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureHeader {
    /// ` Tag  Type  Allocs  Frees  Diff  Bytes  Per Alloc` (PoolMon's screen and `/n` log).
    PoolMon,
    /// ` Tag  Allocs  Used  Allocs  Used` (WinDbg `!poolused`; `Bytes` for `Used` in some
    /// versions).
    PoolUsed,
}

/// The kind of capture table whose header `line` is, if it is one.
pub fn capture_header(line: &str) -> Option<CaptureHeader> {
    let words: Vec<&str> = line.split_whitespace().take(4).collect();
    if words.first() != Some(&"Tag") {
        return None;
    }
    if words.get(1..4) == Some(&["Type", "Allocs", "Frees"][..]) {
        Some(CaptureHeader::PoolMon)
    } else if words.get(1..3) == Some(&["Allocs", "Used"][..])
        || words.get(1..3) == Some(&["Allocs", "Bytes"][..])
    {
        Some(CaptureHeader::PoolUsed)
    } else {
        None
    }
}

/// The table a capture line belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    /// Before any header: nothing is read.
    None,
    PoolMon,
    /// `!poolused`: the pool of the first pair of columns.
    PoolUsed(Pool),
}

/// PoolMon and `!poolused` text. A line read twice for a tag and pool (a log of several screens)
/// keeps the last one, the latest.
fn parse_capture(text: &str) -> std::result::Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut table = Table::None;
    let mut headers = 0;
    // `!poolused` names the pools of its column pairs on the line above its header.
    let mut first_pool = Pool::NonPaged;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(header) = capture_header(line) {
            table = match header {
                CaptureHeader::PoolMon => Table::PoolMon,
                CaptureHeader::PoolUsed => Table::PoolUsed(first_pool),
            };
            headers += 1;
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let (Some(n), Some(p)) = (
            words.iter().position(|w| *w == "NonPaged"),
            words.iter().position(|w| *w == "Paged"),
        ) {
            first_pool = if n < p { Pool::NonPaged } else { Pool::Paged };
        }
        let read = match table {
            Table::None => continue,
            Table::PoolMon => poolmon_line(line),
            Table::PoolUsed(first) => poolused_line(line, first),
        };
        match read {
            Some(Ok((tag, rows))) => {
                let usage = parsed.snapshot.tags.entry(tag).or_default();
                for (pool, counters) in rows {
                    *usage.pool_mut(pool) = counters;
                }
            }
            Some(Err(why)) => parsed.problems.push((index + 1, why)),
            None => {}
        }
    }
    if headers == 0 {
        return Err(
            "not a pooltag snapshot, PoolMon capture or !poolused output \
                    (no 'Tag Type Allocs Frees' or 'Tag Allocs Used' header)"
                .to_owned(),
        );
    }
    Ok(parsed)
}

/// What a table line gives: `None` for a line that is no tag line (blank, a total, a note),
/// `Some(Err)` for a tag line that cannot be read.
type LineRead = Option<std::result::Result<(Tag, Vec<(Pool, Counters)>), String>>;

/// The tag of a capture table line, and the rest of the line: a space, four characters, a space
/// (`' Irp  Nonp ...'`).
pub fn line_tag(line: &str) -> Option<(Tag, &str)> {
    let bytes = line.as_bytes();
    if bytes.len() < 7 || bytes[0] != b' ' || bytes[5] != b' ' {
        return None;
    }
    let tag = Tag(bytes[1..5].try_into().ok()?);
    Some((tag, line.get(6..).unwrap_or_default()))
}

/// ` AfdA Nonp      1234 (   0)      1200 (   0)     34     5440 (   0)     160   afd.sys`:
/// type, allocs, frees, diff, bytes, per alloc; the parenthesised changes are left out.
fn poolmon_line(line: &str) -> LineRead {
    let (tag, rest) = line_tag(line)?;
    let mut words = rest.split_whitespace();
    let pool = match words.next()? {
        "Nonp" | "NonP" | "Nonpaged" | "NonPaged" => Pool::NonPaged,
        "Paged" | "Pagd" => Pool::Paged,
        _ => return None,
    };
    if !tag.is_printable() {
        return Some(Err(format!("'{tag}' is not a pool tag; line skipped")));
    }
    let Some(numbers) = without_changes(rest) else {
        return Some(Err(
            "an unclosed '(' in a PoolMon line; line skipped".to_owned()
        ));
    };
    let numbers: Vec<Option<u64>> = numbers
        .split_whitespace()
        .skip(1)
        .take(4)
        .map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [Some(allocs), Some(frees), Some(_), Some(bytes)] => Some(Ok((
            tag,
            vec![(
                pool,
                Counters {
                    allocs,
                    frees,
                    bytes,
                },
            )],
        ))),
        _ => Some(Err(format!(
            "'{tag}': no Allocs, Frees, Diff and Bytes numbers; line skipped"
        ))),
    }
}

/// The text without its `(   n)` groups; `None` for an unclosed one.
fn without_changes(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        match (c, inside) {
            ('(', false) => inside = true,
            (')', true) => {
                inside = false;
                out.push(' ');
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    (!inside).then_some(out)
}

/// ` EtwB       120      4841472          5       196608\tEtw Buffer , Binary: nt!etw`: allocs
/// and bytes of the first pool, then of the other. `!poolused` counts outstanding allocations
/// only: they are read as allocations with no frees.
fn poolused_line(line: &str, first: Pool) -> LineRead {
    let (tag, rest) = line_tag(line)?;
    let mut words = rest.split_whitespace();
    let leading = words.next()?;
    if !leading.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !tag.is_printable() {
        return Some(Err(format!("'{tag}' is not a pool tag; line skipped")));
    }
    let numbers: Vec<Option<u64>> = std::iter::once(leading)
        .chain(words.take(3))
        .map(|w| w.parse().ok())
        .collect();
    let [Some(a1), Some(b1), Some(a2), Some(b2)] = numbers[..] else {
        return Some(Err(format!(
            "'{tag}': no Allocs and Used numbers for both pools; line skipped"
        )));
    };
    let second = match first {
        Pool::Paged => Pool::NonPaged,
        Pool::NonPaged => Pool::Paged,
    };
    let outstanding = |allocs, bytes| Counters {
        allocs,
        frees: 0,
        bytes,
    };
    Some(Ok((
        tag,
        vec![(first, outstanding(a1, b1)), (second, outstanding(a2, b2))],
    )))
}

// ---------------------------------------------------------------------------------------------
// Saved snapshots.

/// The `--save` file, version 1: `{"pooltag_snapshot": 1, "host", "time" (Unix seconds),
/// "windows", "tags": [{"tag", "paged_allocs", "paged_frees", "paged_bytes", "nonpaged_allocs",
/// "nonpaged_frees", "nonpaged_bytes"}]}`.
#[derive(Serialize, Deserialize)]
struct SavedFile {
    pooltag_snapshot: u32,
    host: Option<String>,
    time: Option<i64>,
    windows: Option<String>,
    tags: Vec<SavedTag>,
}

#[derive(Serialize, Deserialize)]
struct SavedTag {
    tag: String,
    paged_allocs: u64,
    paged_frees: u64,
    paged_bytes: u64,
    nonpaged_allocs: u64,
    nonpaged_frees: u64,
    nonpaged_bytes: u64,
}

/// The snapshot as the `--save` file's JSON, one line.
pub fn to_json(snapshot: &Snapshot) -> String {
    let saved = SavedFile {
        pooltag_snapshot: 1,
        host: snapshot.host.clone(),
        time: snapshot.time,
        windows: snapshot.windows.clone(),
        tags: snapshot
            .tags
            .iter()
            .map(|(tag, usage)| SavedTag {
                tag: tag.to_string(),
                paged_allocs: usage.paged.allocs,
                paged_frees: usage.paged.frees,
                paged_bytes: usage.paged.bytes,
                nonpaged_allocs: usage.nonpaged.allocs,
                nonpaged_frees: usage.nonpaged.frees,
                nonpaged_bytes: usage.nonpaged.bytes,
            })
            .collect(),
    };
    // Strings and integers only: serializing cannot fail.
    serde_json::to_string(&saved).unwrap_or_default()
}

fn parse_saved(text: &str) -> std::result::Result<Snapshot, String> {
    let saved: SavedFile =
        serde_json::from_str(text).map_err(|e| format!("not a pooltag snapshot (JSON: {e})"))?;
    if saved.pooltag_snapshot != 1 {
        return Err(format!(
            "a pooltag snapshot of version {}, this pooltag reads version 1",
            saved.pooltag_snapshot
        ));
    }
    let mut tags = BTreeMap::new();
    for (i, entry) in saved.tags.iter().enumerate() {
        let tag = tag_from_text(&entry.tag).ok_or_else(|| {
            format!(
                "tags[{i}]: '{}' is not a tag (four characters, \\xNN for other bytes)",
                entry.tag
            )
        })?;
        tags.insert(
            tag,
            Usage {
                paged: Counters {
                    allocs: entry.paged_allocs,
                    frees: entry.paged_frees,
                    bytes: entry.paged_bytes,
                },
                nonpaged: Counters {
                    allocs: entry.nonpaged_allocs,
                    frees: entry.nonpaged_frees,
                    bytes: entry.nonpaged_bytes,
                },
            },
        );
    }
    Ok(Snapshot {
        host: saved.host,
        time: saved.time,
        windows: saved.windows,
        tags,
    })
}

/// A tag as [`Tag`]'s `Display` writes it: four printable characters, `\xNN` for other bytes.
fn tag_from_text(text: &str) -> Option<Tag> {
    let mut bytes = Vec::with_capacity(4);
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'\\' && tail.first() == Some(&b'x') {
            let hex = std::str::from_utf8(tail.get(1..3)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[3..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    Some(Tag(bytes.try_into().ok()?))
}

// ---------------------------------------------------------------------------------------------
// Comparing.

/// One tag in two snapshots (zero where it is absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub tag: Tag,
    pub before: Usage,
    pub after: Usage,
}

impl Change {
    pub fn bytes_delta(&self) -> i64 {
        self.after.bytes().saturating_sub(self.before.bytes())
    }

    pub fn outstanding_delta(&self) -> i64 {
        self.after
            .outstanding()
            .saturating_sub(self.before.outstanding())
    }
}

/// Every tag of either snapshot, the largest bytes growth first (so shrinking tags last), then
/// the largest growth in outstanding allocations, then by tag.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<Change> {
    let mut changes: BTreeMap<Tag, Change> = BTreeMap::new();
    let blank = |tag| Change {
        tag,
        before: Usage::default(),
        after: Usage::default(),
    };
    for (tag, usage) in &before.tags {
        changes.entry(*tag).or_insert_with(|| blank(*tag)).before = *usage;
    }
    for (tag, usage) in &after.tags {
        changes.entry(*tag).or_insert_with(|| blank(*tag)).after = *usage;
    }
    let mut changes: Vec<Change> = changes.into_values().collect();
    changes.sort_by(|a, b| {
        (b.bytes_delta(), b.outstanding_delta(), a.tag).cmp(&(
            a.bytes_delta(),
            a.outstanding_delta(),
            b.tag,
        ))
    });
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A SYSTEM_POOLTAG_INFORMATION buffer: `count`, then the entries in `layout`.
    fn buffer(layout: BufferLayout, count: u32, entries: &[([u8; 4], [u64; 6])]) -> Vec<u8> {
        let mut data = count.to_le_bytes().to_vec();
        data.resize(layout.array_offset(), 0);
        let size_t = match layout {
            BufferLayout::X64 => 8,
            BufferLayout::X86 => 4,
        };
        for (tag, [pa, pf, pu, na, nf, nu]) in entries {
            let start = data.len();
            data.extend_from_slice(tag);
            data.extend_from_slice(&(*pa as u32).to_le_bytes());
            data.extend_from_slice(&(*pf as u32).to_le_bytes());
            if layout == BufferLayout::X64 {
                data.extend_from_slice(&[0; 4]); // SIZE_T alignment
            }
            data.extend_from_slice(&pu.to_le_bytes()[..size_t]);
            data.extend_from_slice(&(*na as u32).to_le_bytes());
            data.extend_from_slice(&(*nf as u32).to_le_bytes());
            data.extend_from_slice(&nu.to_le_bytes()[..size_t]);
            assert_eq!(data.len() - start, layout.entry_size());
        }
        data
    }

    const AFD: ([u8; 4], [u64; 6]) = (*b"AfdA", [0, 0, 0, 1234, 1200, 5440]);
    const IRP: ([u8; 4], [u64; 6]) = (*b"Irp ", [900, 899, 272, 7, 2, 0x1_0000_0000]);

    fn usage([pa, pf, pu, na, nf, nu]: [u64; 6]) -> Usage {
        Usage {
            paged: Counters {
                allocs: pa,
                frees: pf,
                bytes: pu,
            },
            nonpaged: Counters {
                allocs: na,
                frees: nf,
                bytes: nu,
            },
        }
    }

    #[test]
    fn x64_and_x86_buffers_read_the_same() {
        let mut irp32 = IRP;
        irp32.1[5] = 0xffff_ffff;
        for (layout, irp) in [(BufferLayout::X64, IRP), (BufferLayout::X86, irp32)] {
            let tags = parse_pool_buffer(&buffer(layout, 2, &[AFD, irp]), layout).unwrap();
            let expected: BTreeMap<Tag, Usage> =
                [(Tag(*b"AfdA"), usage(AFD.1)), (Tag(*b"Irp "), usage(irp.1))]
                    .into_iter()
                    .collect();
            assert_eq!(tags, expected, "{layout:?}");
        }
        assert_eq!(
            parse_pool_buffer(&buffer(BufferLayout::X64, 1, &[AFD]), BufferLayout::X64).unwrap()
                [&Tag(*b"AfdA")]
                .nonpaged
                .outstanding(),
            34
        );
    }

    #[test]
    fn a_count_beyond_the_buffer_gives_the_entries_that_fit() {
        for layout in [BufferLayout::X64, BufferLayout::X86] {
            let full = buffer(layout, u32::MAX, &[AFD, IRP]);
            let tags = parse_pool_buffer(&full, layout).unwrap();
            assert_eq!(tags.len(), 2, "{layout:?}");
            // A truncated last entry is left out.
            let cut = &full[..full.len() - 1];
            let tags = parse_pool_buffer(cut, layout).unwrap();
            assert_eq!(tags.keys().collect::<Vec<_>>(), [&Tag(*b"AfdA")]);
        }
    }

    #[test]
    fn empty_and_short_buffers() {
        for layout in [BufferLayout::X64, BufferLayout::X86] {
            assert!(
                parse_pool_buffer(&buffer(layout, 0, &[]), layout)
                    .unwrap()
                    .is_empty()
            );
            assert!(
                parse_pool_buffer(&0u32.to_le_bytes(), layout)
                    .unwrap()
                    .is_empty()
            );
            assert!(
                parse_pool_buffer(&5u32.to_le_bytes(), layout)
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(
                parse_pool_buffer(&[1, 0, 0], layout),
                Err("the pool tag buffer is 3 bytes, too short for its count".to_owned())
            );
        }
    }

    #[test]
    fn protected_pool_bit_is_cleared_and_duplicates_add_up() {
        let protected = ([b'A', b'f', b'd', b'A' | 0x80], [1, 0, 16, 0, 0, 0]);
        let tags = parse_pool_buffer(
            &buffer(BufferLayout::X64, 2, &[AFD, protected]),
            BufferLayout::X64,
        )
        .unwrap();
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[&Tag(*b"AfdA")], usage([1, 0, 16, 1234, 1200, 5440]));
    }

    const POOLMON: &str = " Memory: 8388148K Avail: 4126216K  PageFlts:   420   InRam Krnl: 9248K P:259156K\n\
        \x20Commit:4262912K Limit:12582452K Peak:4426560K            Pool N:155648K P:263264K\n\
        \n Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc   Mapped_Driver\n\
        \n AfdA Nonp      1234 (   0)      1200 (   0)     34     5440 (   0)     160   afd.sys\n\
        \x20Irp  Nonp       900 (   2)       899 (   2)      1      272 (   0)     272   [ nt!io ]\n\
        \x20Irp  Paged        3 (   0)         1 (   0)      2       64 (   0)      32\n";

    #[test]
    fn poolmon_screens_and_logs() {
        let parsed = parse(POOLMON).unwrap();
        assert_eq!(parsed.problems, []);
        let tags = &parsed.snapshot.tags;
        assert_eq!(tags[&Tag(*b"AfdA")], usage([0, 0, 0, 1234, 1200, 5440]));
        assert_eq!(tags[&Tag(*b"Irp ")], usage([3, 1, 64, 900, 899, 272]));
        // A `poolmon /n` log has no change columns.
        let log = " Tag  Type     Allocs     Frees      Diff   Bytes  Per Alloc\r\n\
                   \x20AfdA Nonp      1234      1200        34    5440      160\r\n";
        assert_eq!(
            parse(log).unwrap().snapshot.tags[&Tag(*b"AfdA")],
            usage([0, 0, 0, 1234, 1200, 5440])
        );
    }

    #[test]
    fn unreadable_tag_lines_are_reported_with_their_line() {
        let text = " Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc\n\
                    \x20AfdA Nonp      12x4 (   0)      1200 (   0)     34     5440 (   0)     160\n\
                    \x20Bad1 Paged      1 (   0\n\
                    \x20Good Paged      1 (   0)      0 (   0)     1     16 (   0)     16\n\
                    \x20not a table line\n";
        let parsed = parse(text).unwrap();
        assert_eq!(
            parsed.problems,
            [
                (
                    2,
                    "'AfdA': no Allocs, Frees, Diff and Bytes numbers; line skipped".to_owned()
                ),
                (
                    3,
                    "an unclosed '(' in a PoolMon line; line skipped".to_owned()
                )
            ]
        );
        assert_eq!(
            parsed.snapshot.tags.keys().collect::<Vec<_>>(),
            [&Tag(*b"Good")]
        );
    }

    #[test]
    fn poolused_columns_follow_the_pool_names() {
        let text = " Sorting by  NonPaged Pool Consumed\n\n               NonPaged                  Paged\n\
                    \x20Tag     Allocs         Used     Allocs         Used\n\n\
                    \x20ConT         9      5251072          0            0\tUNKNOWN pooltag 'ConT', please update pooltag.txt\n\
                    \x20EtwB       120      4841472          5       196608\tEtw Buffer , Binary: nt!etw\n\
                    \x20Bad2       120      oops\n\
                    \x20TOTAL     1234     10092544          5       196608\n";
        let parsed = parse(text).unwrap();
        assert_eq!(
            parsed.problems,
            [(
                8,
                "'Bad2': no Allocs and Used numbers for both pools; line skipped".to_owned()
            )]
        );
        let tags = &parsed.snapshot.tags;
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[&Tag(*b"EtwB")], usage([5, 0, 196608, 120, 0, 4841472]));
        let swapped = text.replace("NonPaged                  Paged", "Paged    NonPaged");
        let tags = parse(&swapped).unwrap().snapshot.tags;
        assert_eq!(tags[&Tag(*b"EtwB")], usage([120, 0, 4841472, 5, 0, 196608]));
    }

    #[test]
    fn saved_snapshots_read_back() {
        let mut tags = parse(POOLMON).unwrap().snapshot.tags;
        tags.insert(Tag([b'A', 0x01, b' ', b'\\']), usage([1, 2, 3, 4, 5, 6]));
        let snapshot = Snapshot {
            host: Some("pc".into()),
            time: Some(1_795_651_200),
            windows: Some("10.0.22631".into()),
            tags,
        };
        let json = to_json(&snapshot);
        assert!(json.starts_with(
            r#"{"pooltag_snapshot":1,"host":"pc","time":1795651200,"windows":"10.0.22631","tags":[{"tag":"A\\x01 \\","#
        ));
        assert_eq!(parse(&json).unwrap().snapshot, snapshot);
        assert_eq!(
            parse(&json.replace("\"Irp \"", "\"Irp\"")),
            Err("tags[2]: 'Irp' is not a tag (four characters, \\xNN for other bytes)".to_owned())
        );
        assert!(
            parse("{\"tags\": 3}")
                .unwrap_err()
                .starts_with("not a pooltag snapshot (JSON: ")
        );
        assert_eq!(
            parse("hello\n"),
            Err(
                "not a pooltag snapshot, PoolMon capture or !poolused output \
                 (no 'Tag Type Allocs Frees' or 'Tag Allocs Used' header)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn utf16_files_are_decoded() {
        let mut data = vec![0xff, 0xfe];
        for unit in POOLMON.encode_utf16() {
            data.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(parse_bytes(&data), parse(POOLMON));
    }

    #[test]
    fn diff_orders_growth_first_and_counts_absent_tags_as_zero() {
        let snap = |tags: &[([u8; 4], [u64; 6])]| Snapshot {
            tags: tags.iter().map(|(t, c)| (Tag(*t), usage(*c))).collect(),
            ..Snapshot::default()
        };
        let before = snap(&[
            (*b"Grow", [0, 0, 0, 1, 0, 100]),
            (*b"Less", [5, 0, 500, 0, 0, 0]),
            (*b"Same", [1, 0, 10, 0, 0, 0]),
        ]);
        let after = snap(&[
            (*b"Grow", [0, 0, 0, 3, 0, 300]),
            (*b"Less", [5, 4, 100, 0, 0, 0]),
            (*b"Same", [2, 1, 10, 0, 0, 0]),
            (*b"New ", [0, 0, 0, 2, 0, 1000]),
        ]);
        let changes = diff(&before, &after);
        let shown: Vec<(String, i64, i64)> = changes
            .iter()
            .map(|c| (c.tag.to_string(), c.bytes_delta(), c.outstanding_delta()))
            .collect();
        assert_eq!(
            shown,
            [
                ("New ".to_owned(), 1000, 2),
                ("Grow".to_owned(), 200, 2),
                ("Same".to_owned(), 0, 0),
                ("Less".to_owned(), -400, -4),
            ]
        );
        assert_eq!(changes[0].before, Usage::default());
    }

    proptest! {
        #[test]
        fn buffers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            for layout in [BufferLayout::X64, BufferLayout::X86] {
                let _ = parse_pool_buffer(&data, layout);
            }
        }

        #[test]
        fn captures_never_panic(text in "( (Tag|AfdA|Irp |TOTAL|Nonp|Paged|NonPaged|Type|Allocs|Frees|Used|[0-9]{1,25}|\\(|\\)|\\{|x|\t|\r?\n|\\\\x4|é))*") {
            let _ = parse(&text);
        }
    }
}
