//! The version resource of a PE image: company, description, file version, product and original
//! file name, from the `VS_VERSIONINFO` block of its `RT_VERSION` resource.
//!
//! `object` walks the resource directory (type, name, language); the `VS_VERSIONINFO` blob is
//! parsed here. Everything is bounds-checked: hostile input gives `None` or fewer fields, never a
//! panic, and the work is bounded (a capped walk of the resource tree, blobs of at most 64 KiB,
//! a fixed block nesting and every block at least 8 bytes ahead of the previous one).
//!
//! A `VS_VERSIONINFO` blob is a tree of blocks, each
//! `{ wLength, wValueLength, wType: u16, szKey: UTF-16 NUL-terminated, padding to 4, Value,
//! padding to 4, Children }`, with `wLength` covering the whole block including its children:
//!
//! ```text
//! VS_VERSION_INFO              Value: VS_FIXEDFILEINFO (52 bytes, signature 0xFEEF04BD)
//!   StringFileInfo
//!     040904B0                 a StringTable: language and code page, 8 hex digits
//!       CompanyName            Value: UTF-16 string
//!       ...
//!   VarFileInfo
//!     Translation              Value: (language, code page) pairs
//! ```

use object::LittleEndian as LE;
use object::pe;
use object::read::pe::{
    ImageNtHeaders, ResourceDirectory, ResourceDirectoryEntryData, ResourceDirectoryTable,
};

/// The version resource strings of a PE image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionInfo {
    /// `CompanyName`.
    pub company: Option<String>,
    /// `FileDescription`.
    pub description: Option<String>,
    /// `FileVersion`; without one, the `VS_FIXEDFILEINFO` file version as `a.b.c.d`.
    pub file_version: Option<String>,
    /// `ProductName`.
    pub product: Option<String>,
    /// `OriginalFilename`.
    pub original_filename: Option<String>,
}

impl VersionInfo {
    fn is_empty(&self) -> bool {
        *self == VersionInfo::default()
    }
}

/// Resource directory entries examined per image at most (a directory may loop or be huge).
const MAX_RESOURCE_ENTRIES: usize = 4096;
/// `RT_VERSION` resources whose data is tried per image at most.
const MAX_CANDIDATES: usize = 64;
/// Levels of the resource tree: type, name, language. A table any deeper is a loop.
const RESOURCE_LEVELS: usize = 3;
/// `wLength` is 16 bits: no `VS_VERSIONINFO` blob is longer.
const MAX_BLOB: usize = u16::MAX as usize;
/// `wLength`, `wValueLength`, `wType`.
const HEADER: usize = 6;
const FIXED_SIGNATURE: u32 = 0xFEEF_04BD;
/// `sizeof(VS_FIXEDFILEINFO)`.
const FIXED_SIZE: usize = 52;

/// Reads VS_VERSIONINFO from the image's resources; None when there is none or it cannot be read.
///
/// Every `RT_VERSION` resource counts, whatever its name or ID and language; the first whose data
/// parses into at least one field is the answer.
pub fn version_info(data: &[u8]) -> Option<VersionInfo> {
    from_image::<pe::ImageNtHeaders64>(data).or_else(|| from_image::<pe::ImageNtHeaders32>(data))
}

fn from_image<Pe: ImageNtHeaders>(data: &[u8]) -> Option<VersionInfo> {
    let dos = pe::ImageDosHeader::parse(data).ok()?;
    let mut offset = u64::from(dos.nt_headers_offset());
    let (nt, directories) = Pe::parse(data, &mut offset).ok()?;
    let sections = nt.sections(data, offset).ok()?;
    let resources = directories.resource_directory(data, &sections).ok()??;
    find_version(resources, |entry| {
        let size = entry.size.get(LE) as usize;
        let bytes = sections.pe_data_at(data, entry.offset_to_data.get(LE))?;
        parse_version_block(&bytes[..bytes.len().min(size)])
    })
}

/// Walk budget shared by the whole resource tree.
struct Budget {
    entries: usize,
    candidates: usize,
}

impl Budget {
    fn take_entry(&mut self) -> bool {
        match self.entries.checked_sub(1) {
            Some(left) => {
                self.entries = left;
                true
            }
            None => false,
        }
    }
}

/// The first answer `parse` gives for an `RT_VERSION` data entry, any name, any language.
fn find_version<'data>(
    resources: ResourceDirectory<'data>,
    mut parse: impl FnMut(&'data pe::ImageResourceDataEntry) -> Option<VersionInfo>,
) -> Option<VersionInfo> {
    let root = resources.root().ok()?;
    let mut budget = Budget {
        entries: MAX_RESOURCE_ENTRIES,
        candidates: MAX_CANDIDATES,
    };
    for entry in root.entries {
        if !budget.take_entry() {
            return None;
        }
        if entry.name_or_id().id() != Some(pe::RT_VERSION) {
            continue;
        }
        if let Some(info) = descend(resources, entry, 1, &mut budget, &mut parse) {
            return Some(info);
        }
    }
    None
}

/// What `entry`, at `level` of the tree (1: name, 2: language), leads to.
fn descend<'data>(
    resources: ResourceDirectory<'data>,
    entry: &'data pe::ImageResourceDirectoryEntry,
    level: usize,
    budget: &mut Budget,
    parse: &mut impl FnMut(&'data pe::ImageResourceDataEntry) -> Option<VersionInfo>,
) -> Option<VersionInfo> {
    match entry.data(resources).ok()? {
        // Normally at the language level; accepted higher up too.
        ResourceDirectoryEntryData::Data(data) => {
            budget.candidates = budget.candidates.checked_sub(1)?;
            parse(data)
        }
        ResourceDirectoryEntryData::Table(table) => {
            if level >= RESOURCE_LEVELS {
                return None;
            }
            descend_table(resources, &table, level, budget, parse)
        }
    }
}

fn descend_table<'data>(
    resources: ResourceDirectory<'data>,
    table: &ResourceDirectoryTable<'data>,
    level: usize,
    budget: &mut Budget,
    parse: &mut impl FnMut(&'data pe::ImageResourceDataEntry) -> Option<VersionInfo>,
) -> Option<VersionInfo> {
    for entry in table.entries {
        if !budget.take_entry() {
            return None;
        }
        if let Some(info) = descend(resources, entry, level + 1, budget, parse) {
            return Some(info);
        }
    }
    None
}

/// The strings of a `VS_VERSIONINFO` blob (the data of an `RT_VERSION` resource); `None` when it
/// is not one or holds none of the fields.
///
/// Of several StringTables, US English (`0409....`) is preferred, then the first. A `wLength`
/// beyond the blob is cut to the blob for the root block only; a child block that is shorter
/// than its header or ends past its parent ends the parent's list of children.
fn parse_version_block(blob: &[u8]) -> Option<VersionInfo> {
    let blob = &blob[..blob.len().min(MAX_BLOB)];
    let length = usize::from(read_u16(blob, 0)?);
    if length < HEADER {
        return None;
    }
    let root = Block::parse(blob, 0, length.min(blob.len()))?;
    if root.key != "VS_VERSION_INFO" {
        return None;
    }

    // VS_FIXEDFILEINFO, when there is one. wValueLength says how long it is (in bytes, as wType is
    // 0), but the signature is the better witness.
    let fixed = (read_u32(blob, root.value_start) == Some(FIXED_SIGNATURE))
        .then(|| blob.get(root.value_start..root.value_start + FIXED_SIZE))
        .flatten()
        .filter(|_| root.value_start + FIXED_SIZE <= root.end);
    let value_size = match fixed {
        Some(_) => FIXED_SIZE,
        None => usize::from(root.value_length),
    };
    let children_start = align4(root.value_start + value_size);

    let mut tables = Vec::new();
    for child in Children::new(blob, children_start, root.end) {
        // VarFileInfo and anything unknown are skipped. StringFileInfo and StringTable have no
        // value (wValueLength is 0): their children follow the key.
        if child.key.eq_ignore_ascii_case("StringFileInfo") {
            tables.extend(Children::new(blob, child.value_start, child.end));
        }
    }
    let preferred = tables
        .iter()
        .position(|t| {
            t.key
                .get(..4)
                .is_some_and(|l| l.eq_ignore_ascii_case("0409"))
        })
        .unwrap_or(0);

    let mut info = VersionInfo::default();
    if let Some(table) = tables.get(preferred) {
        for string in Children::new(blob, table.value_start, table.end) {
            let field = match string.key.to_ascii_lowercase().as_str() {
                "companyname" => &mut info.company,
                "filedescription" => &mut info.description,
                "fileversion" => &mut info.file_version,
                "productname" => &mut info.product,
                "originalfilename" => &mut info.original_filename,
                _ => continue,
            };
            if field.is_none() {
                *field = string_value(blob, string.value_start, string.end);
            }
        }
    }
    if info.file_version.is_none() {
        info.file_version = fixed.and_then(fixed_file_version);
    }
    (!info.is_empty()).then_some(info)
}

/// A block's header and key; its value and children lie between `value_start` and `end`.
struct Block {
    key: String,
    value_length: u16,
    value_start: usize,
    end: usize,
}

impl Block {
    /// The block at `start`, whose `wLength` has been checked to give `end`. `None` when its
    /// key has no NUL before `end`.
    fn parse(blob: &[u8], start: usize, end: usize) -> Option<Block> {
        let value_length = read_u16(blob, start + 2)?;
        let mut key = Vec::new();
        let mut at = start + HEADER;
        loop {
            if at + 2 > end {
                return None;
            }
            let c = read_u16(blob, at)?;
            at += 2;
            if c == 0 {
                break;
            }
            key.push(c);
        }
        Some(Block {
            key: String::from_utf16_lossy(&key),
            value_length,
            value_start: align4(at).min(end),
            end,
        })
    }
}

/// The child blocks in `start..end`, each 4-byte aligned after the previous one. A `wLength`
/// shorter than a header or past `end` stops the list; a child without a terminated key is
/// skipped.
struct Children<'a> {
    blob: &'a [u8],
    at: usize,
    end: usize,
}

impl<'a> Children<'a> {
    fn new(blob: &'a [u8], start: usize, end: usize) -> Children<'a> {
        Children {
            blob,
            at: align4(start),
            end,
        }
    }
}

impl Iterator for Children<'_> {
    type Item = Block;

    fn next(&mut self) -> Option<Block> {
        while self.at + HEADER <= self.end {
            let start = self.at;
            let length = usize::from(read_u16(self.blob, start)?);
            let end = start + length;
            if length < HEADER || end > self.end {
                self.at = self.end;
                return None;
            }
            // At least 8 bytes on: a block is at least a header, and headers are aligned.
            self.at = align4(end);
            if let Some(block) = Block::parse(self.blob, start, end) {
                return Some(block);
            }
        }
        None
    }
}

/// The UTF-16 string at `start`, up to its NUL or `end`, whatever wValueLength says (some files
/// give it in bytes, or as 0); trimmed, and `None` when empty.
fn string_value(blob: &[u8], start: usize, end: usize) -> Option<String> {
    let bytes = blob.get(start..end)?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&c| c != 0)
        .collect();
    let text = String::from_utf16_lossy(&units);
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!text.is_empty()).then(|| text.to_owned())
}

/// `dwFileVersionMS` and `dwFileVersionLS` of a VS_FIXEDFILEINFO as `a.b.c.d`; `None` for 0.0.0.0.
fn fixed_file_version(fixed: &[u8]) -> Option<String> {
    let ms = read_u32(fixed, 8)?;
    let ls = read_u32(fixed, 12)?;
    (ms != 0 || ls != 0)
        .then(|| format!("{}.{}.{}.{}", ms >> 16, ms & 0xffff, ls >> 16, ls & 0xffff))
}

fn align4(offset: usize) -> usize {
    offset.saturating_add(3) & !3
}

fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    use proptest::prelude::*;

    /// A block's value, as the test helper serialises it.
    enum Value<'a> {
        None,
        /// wType 1; wValueLength counts the UTF-16 units with the NUL.
        Text(&'a str),
        /// wType 0; wValueLength counts bytes.
        Binary(&'a [u8]),
    }

    fn utf16z(text: &str) -> Vec<u8> {
        text.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    fn pad4(out: &mut Vec<u8>) {
        out.resize(align4(out.len()), 0);
    }

    /// One block with its children, as rc.exe lays it out: wLength covers the padding between
    /// children but not after the last one.
    fn block(key: &str, value: Value, children: &[Vec<u8>]) -> Vec<u8> {
        let (kind, value_length, value_bytes) = match value {
            Value::None => (1u16, 0u16, Vec::new()),
            Value::Text(text) => {
                let bytes = utf16z(text);
                (1, (bytes.len() / 2) as u16, bytes)
            }
            Value::Binary(bytes) => (0, bytes.len() as u16, bytes.to_vec()),
        };
        let mut out = vec![0, 0];
        out.extend(value_length.to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(utf16z(key));
        pad4(&mut out);
        out.extend(value_bytes);
        for child in children {
            pad4(&mut out);
            out.extend(child);
        }
        let length = u16::try_from(out.len()).expect("block too long for wLength");
        out[..2].copy_from_slice(&length.to_le_bytes());
        out
    }

    fn string(key: &str, value: &str) -> Vec<u8> {
        block(key, Value::Text(value), &[])
    }

    fn table(key: &str, strings: &[Vec<u8>]) -> Vec<u8> {
        block(key, Value::None, strings)
    }

    fn string_file_info(tables: &[Vec<u8>]) -> Vec<u8> {
        block("StringFileInfo", Value::None, tables)
    }

    fn var_file_info() -> Vec<u8> {
        let translation = block("Translation", Value::Binary(&[0x09, 0x04, 0xb0, 0x04]), &[]);
        block("VarFileInfo", Value::None, &[translation])
    }

    fn fixed(ms: u32, ls: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for field in [
            FIXED_SIGNATURE,
            0x0001_0000,
            ms,
            ls,
            ms,
            ls,
            0x3f,
            0,
            0x0004_0004,
            3,
            7,
        ] {
            out.extend(field.to_le_bytes());
        }
        out.extend([0; 8]);
        assert_eq!(out.len(), FIXED_SIZE);
        out
    }

    fn root(fixed: Option<&[u8]>, children: &[Vec<u8>]) -> Vec<u8> {
        let value = fixed.map_or(Value::None, Value::Binary);
        block("VS_VERSION_INFO", value, children)
    }

    fn english_strings() -> Vec<Vec<u8>> {
        vec![
            string("CompanyName", "pooltag fixtures"),
            string("FileDescription", "Versioned fixture driver"),
            string("FileVersion", "1.2.3.4"),
            string("InternalName", "versioned"),
            string("OriginalFilename", "versioned.sys"),
            string("ProductName", "pooltag"),
            string("ProductVersion", "1.2.3.4"),
        ]
    }

    fn english() -> VersionInfo {
        VersionInfo {
            company: Some("pooltag fixtures".into()),
            description: Some("Versioned fixture driver".into()),
            file_version: Some("1.2.3.4".into()),
            product: Some("pooltag".into()),
            original_filename: Some("versioned.sys".into()),
        }
    }

    fn normal() -> Vec<u8> {
        let f = fixed(0x0009_0008, 0x0007_0006);
        root(
            Some(&f),
            &[
                string_file_info(&[table("040904B0", &english_strings())]),
                var_file_info(),
            ],
        )
    }

    /// Every string block of `blob` (found by key), with wValueLength replaced by `f(old)`.
    fn patch_value_lengths(blob: &mut [u8], keys: &[&str], f: impl Fn(u16) -> u16) {
        for key in keys {
            let needle = utf16z(key);
            let at = blob
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
                - HEADER;
            let old = read_u16(blob, at + 2).unwrap();
            blob[at + 2..at + 4].copy_from_slice(&f(old).to_le_bytes());
        }
    }

    const KEYS: [&str; 7] = [
        "CompanyName",
        "FileDescription",
        "FileVersion",
        "InternalName",
        "OriginalFilename",
        "ProductName",
        "ProductVersion",
    ];

    #[test]
    fn normal_blob() {
        assert_eq!(parse_version_block(&normal()), Some(english()));
        // Trailing bytes after the root block (the resource size rounded up) change nothing.
        let mut padded = normal();
        padded.extend([0xcc; 13]);
        assert_eq!(parse_version_block(&padded), Some(english()));
    }

    #[test]
    fn no_fixed_file_info_and_string_file_info_after_var_file_info() {
        let blob = root(
            None,
            &[
                var_file_info(),
                string_file_info(&[table("040904b0", &english_strings())]),
            ],
        );
        assert_eq!(parse_version_block(&blob), Some(english()));
    }

    #[test]
    fn us_english_string_table_is_preferred() {
        let german = table(
            "040704E4",
            &[
                string("CompanyName", "pooltag Testdaten"),
                string("FileDescription", "Treiber"),
            ],
        );
        let english_table = table("040904B0", &english_strings());
        let f = fixed(1, 2);
        let blob = root(
            Some(&f),
            &[string_file_info(&[german.clone(), english_table.clone()])],
        );
        assert_eq!(parse_version_block(&blob), Some(english()));
        // In two StringFileInfo blocks too.
        let blob = root(
            Some(&f),
            &[
                string_file_info(std::slice::from_ref(&german)),
                string_file_info(std::slice::from_ref(&english_table)),
            ],
        );
        assert_eq!(parse_version_block(&blob), Some(english()));
        // Without US English, the first table; its missing FileVersion comes from the fixed info.
        let french = table("040C04E4", &[string("CompanyName", "pooltag essais")]);
        let blob = root(Some(&f), &[string_file_info(&[german, french])]);
        assert_eq!(
            parse_version_block(&blob),
            Some(VersionInfo {
                company: Some("pooltag Testdaten".into()),
                description: Some("Treiber".into()),
                file_version: Some("0.1.0.2".into()),
                ..VersionInfo::default()
            })
        );
    }

    #[test]
    fn wrong_value_lengths_are_ignored_for_strings() {
        for f in [|_| 0, |n| n * 2, |_| 0xffff, |n: u16| n - 1, |_| 1] {
            let mut blob = normal();
            patch_value_lengths(&mut blob, &KEYS, f);
            assert_eq!(parse_version_block(&blob), Some(english()));
        }
        // wType 0 (binary) on the strings, as some tools write.
        let mut blob = normal();
        for key in KEYS {
            let needle = utf16z(key);
            let at = blob
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
                - HEADER;
            blob[at + 4] = 0;
        }
        assert_eq!(parse_version_block(&blob), Some(english()));
    }

    #[test]
    fn wrong_root_value_length_with_a_fixed_file_info() {
        // The signature decides where the children start.
        for value_length in [0u16, 26, 104, 0xffff] {
            let mut blob = normal();
            blob[2..4].copy_from_slice(&value_length.to_le_bytes());
            assert_eq!(
                parse_version_block(&blob),
                Some(english()),
                "{value_length}"
            );
        }
    }

    #[test]
    fn strings_are_trimmed_and_empty_ones_are_none() {
        let strings = [
            string("CompanyName", "  pooltag fixtures \t "),
            string("FileDescription", ""),
            string("FileVersion", "   "),
            string("ProductName", "pooltag\0\0\0"),
        ];
        let blob = root(None, &[string_file_info(&[table("040904B0", &strings)])]);
        assert_eq!(
            parse_version_block(&blob),
            Some(VersionInfo {
                company: Some("pooltag fixtures".into()),
                product: Some("pooltag".into()),
                ..VersionInfo::default()
            })
        );
        // A string with no NUL ends at its block.
        let mut blob = root(
            None,
            &[string_file_info(&[table(
                "040904B0",
                &[string("ProductName", "pooltag")],
            )])],
        );
        let len = blob.len();
        blob[len - 2..].copy_from_slice(&[b'!', 0]);
        let info = parse_version_block(&blob).unwrap();
        assert_eq!(info.product.as_deref(), Some("pooltag!"));
    }

    #[test]
    fn fixed_file_version_when_there_is_no_string() {
        let f = fixed(0x000a_0000, 0x4a61_0001);
        let strings = [string("CompanyName", "c")];
        let blob = root(
            Some(&f),
            &[string_file_info(&[table("040904B0", &strings)])],
        );
        let info = parse_version_block(&blob).unwrap();
        assert_eq!(info.file_version.as_deref(), Some("10.0.19041.1"));
        // Fixed info alone is enough; 0.0.0.0 is not a version.
        assert_eq!(
            parse_version_block(&root(Some(&f), &[]))
                .unwrap()
                .file_version
                .as_deref(),
            Some("10.0.19041.1")
        );
        assert_eq!(parse_version_block(&root(Some(&fixed(0, 0)), &[])), None);
    }

    #[test]
    fn not_a_version_resource() {
        assert_eq!(parse_version_block(&[]), None);
        let blob = block("VS_VERSION_INFX", Value::None, &[string_file_info(&[])]);
        assert_eq!(parse_version_block(&blob), None);
        // A version resource without any of the fields.
        let blob = root(None, &[string_file_info(&[]), var_file_info()]);
        assert_eq!(parse_version_block(&blob), None);
    }

    #[test]
    fn every_truncation() {
        let blob = normal();
        for len in 0..blob.len() {
            // No panic; a cut blob keeps the strings of the blocks it still holds whole, or none.
            if let Some(info) = parse_version_block(&blob[..len]) {
                assert!(info.company.is_none() || info.company == english().company);
            }
        }
        // wLength cut to the truncated length too: a consistent but short blob.
        for len in 0..blob.len() {
            let mut cut = blob[..len].to_vec();
            if cut.len() >= 2 {
                let l = cut.len() as u16;
                cut[..2].copy_from_slice(&l.to_le_bytes());
            }
            let _ = parse_version_block(&cut);
        }
        assert_eq!(parse_version_block(&blob), Some(english()));
    }

    #[test]
    fn zero_length_block_ends_the_list() {
        let mut strings = english_strings();
        let zero = vec![0u8; 8];
        strings.insert(2, zero);
        let blob = root(None, &[string_file_info(&[table("040904B0", &strings)])]);
        // The strings before the empty block are read, none after it.
        assert_eq!(
            parse_version_block(&blob),
            Some(VersionInfo {
                company: Some("pooltag fixtures".into()),
                description: Some("Versioned fixture driver".into()),
                ..VersionInfo::default()
            })
        );
        // A root of wLength 0 is nothing.
        let mut blob = normal();
        blob[..2].copy_from_slice(&[0, 0]);
        assert_eq!(parse_version_block(&blob), None);
    }

    #[test]
    fn child_past_its_parent_ends_the_list() {
        let mut blob = normal();
        // Grow CompanyName's wLength past its StringTable (and the whole blob).
        let needle = utf16z("CompanyName");
        let at = blob
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
            - HEADER;
        blob[at..at + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
        // No string survives; the version comes from VS_FIXEDFILEINFO.
        assert_eq!(
            parse_version_block(&blob),
            Some(VersionInfo {
                file_version: Some("9.8.7.6".into()),
                ..VersionInfo::default()
            })
        );
        // A key with no NUL in its block: that block is skipped, the rest read.
        let mut blob = normal();
        let end = at + usize::from(read_u16(&blob, at).unwrap());
        for b in &mut blob[at + HEADER..end] {
            *b = b'x';
        }
        let mut expected = english();
        expected.company = None;
        assert_eq!(parse_version_block(&blob), Some(expected));
    }

    #[test]
    fn deep_nesting() {
        // Thousands of nested unknown blocks where a StringTable and where strings are expected,
        // built from the inside out (wLength is 16 bits: twice 2600 levels of 12 bytes fit).
        let mut nested = string("CompanyName", "deep");
        for _ in 0..2600 {
            nested = block("a", Value::None, &[nested]);
        }
        let blob = root(
            None,
            &[
                string_file_info(&[table("040904B0", &[nested.clone()])]),
                string_file_info(&[nested]),
            ],
        );
        assert!(blob.len() > 60_000);
        // The strings are not where a version resource has them: nothing.
        assert_eq!(parse_version_block(&blob), None);
        // A StringTable nested as deep as can be, still well-formed.
        let mut inner = root(
            None,
            &[string_file_info(&[table("040904B0", &english_strings())])],
        );
        for _ in 0..8 {
            inner = root(None, &[string_file_info(&[table("040904B0", &[inner])])]);
        }
        assert_eq!(parse_version_block(&inner), None);
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bin/x64-O2")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn fixture_drivers() {
        assert_eq!(version_info(&fixture("versioned.sys")), Some(english()));
        // Resource ID 7, German: and its FILEVERSION (9.8.7.6) loses to the FileVersion string.
        assert_eq!(
            version_info(&fixture("versioned-de.sys")),
            Some(VersionInfo {
                company: Some("pooltag Testdaten".into()),
                ..english()
            })
        );
        assert_eq!(version_info(&fixture("basic.sys")), None);
        assert_eq!(version_info(b"MZ"), None);
        assert_eq!(version_info(&[]), None);
    }

    /// The file offset of `versioned.sys`'s resource directory.
    fn resource_offset(data: &[u8]) -> usize {
        let dos = pe::ImageDosHeader::parse(data).unwrap();
        let mut offset = u64::from(dos.nt_headers_offset());
        let (nt, directories) = pe::ImageNtHeaders64::parse(data, &mut offset).unwrap();
        let sections = nt.sections(data, offset).unwrap();
        let directory = directories.get(pe::IMAGE_DIRECTORY_ENTRY_RESOURCE).unwrap();
        directory.file_range(&sections).unwrap().0 as usize
    }

    fn write_u32(data: &mut [u8], at: usize, value: u32) {
        data[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn looping_resource_directories() {
        let good = fixture("versioned.sys");
        let rsrc = resource_offset(&good);
        // Root: one ID entry (16) at +16; its subdirectory (names) at the offset in +20, whose
        // entry's subdirectory is the language table.
        let names =
            (read_u32(&good, rsrc + 20).unwrap() & !pe::IMAGE_RESOURCE_DATA_IS_DIRECTORY) as usize;
        let languages = (read_u32(&good, rsrc + names + 20).unwrap()
            & !pe::IMAGE_RESOURCE_DATA_IS_DIRECTORY) as usize;
        let language_entry = rsrc + languages + 16;
        assert_eq!(read_u32(&good, language_entry).unwrap(), 0x0409);
        let to_root = pe::IMAGE_RESOURCE_DATA_IS_DIRECTORY;
        // Every level pointed back at the root, or at itself.
        for (at, target) in [
            (rsrc + 20, 0),
            (rsrc + names + 20, 0),
            (rsrc + names + 20, names as u32),
            (language_entry + 4, 0),
            (language_entry + 4, languages as u32),
        ] {
            let mut data = good.clone();
            write_u32(&mut data, at, to_root | target);
            assert_eq!(version_info(&data), None);
        }
        // An entry out of the section, and a data entry whose RVA is nowhere.
        let mut data = good.clone();
        write_u32(&mut data, rsrc + 20, to_root | 0x7fff_fff0);
        assert_eq!(version_info(&data), None);
        let data_entry = (read_u32(&good, language_entry + 4).unwrap()) as usize;
        let mut data = good.clone();
        write_u32(&mut data, rsrc + data_entry, 0xffff_0000);
        assert_eq!(version_info(&data), None);
        // The data size cut short: truncated blob, no strings survive.
        let mut data = good.clone();
        write_u32(&mut data, rsrc + data_entry + 4, 0x20);
        assert_eq!(version_info(&data), None);
    }

    #[test]
    fn huge_self_referencing_directory_is_walked_within_budget() {
        // A root with 65535 ID entries of type 16, each pointing at the root: 65535^3 paths
        // without the budget. Every data entry (if any were reached) is counted.
        let entries = 0xffffusize;
        let mut dir = vec![0u8; 16 + 8 * entries];
        dir[14..16].copy_from_slice(&(entries as u16).to_le_bytes());
        for i in 0..entries {
            let at = 16 + 8 * i;
            write_u32(&mut dir, at, 16);
            write_u32(&mut dir, at + 4, pe::IMAGE_RESOURCE_DATA_IS_DIRECTORY);
        }
        let mut calls = 0;
        let found = find_version(ResourceDirectory::new(&dir), |_| {
            calls += 1;
            None
        });
        assert_eq!((found, calls), (None, 0));
        // The same with every entry a data entry (at offset 0, whatever it reads as).
        for i in 0..entries {
            write_u32(&mut dir, 16 + 8 * i + 4, 0);
        }
        let found = find_version(ResourceDirectory::new(&dir), |_| {
            calls += 1;
            None
        });
        assert_eq!((found, calls), (None, MAX_CANDIDATES));
    }

    #[test]
    fn any_name_and_language_but_only_type_16() {
        // Root: type 6 (strings) then a named type, then 16 -> named entry -> language 0x0c07.
        let mut dir = vec![0u8; 0x100];
        let table = |dir: &mut Vec<u8>, at: usize, named: u16, ids: u16| {
            dir[at + 12..at + 14].copy_from_slice(&named.to_le_bytes());
            dir[at + 14..at + 16].copy_from_slice(&ids.to_le_bytes());
        };
        let dirbit = pe::IMAGE_RESOURCE_DATA_IS_DIRECTORY;
        table(&mut dir, 0, 1, 2);
        write_u32(&mut dir, 16, pe::IMAGE_RESOURCE_NAME_IS_STRING | 0xf0);
        write_u32(&mut dir, 20, 0xc0);
        write_u32(&mut dir, 24, 6);
        write_u32(&mut dir, 28, 0xc0);
        write_u32(&mut dir, 32, 16);
        write_u32(&mut dir, 36, dirbit | 0x40);
        table(&mut dir, 0x40, 1, 0);
        write_u32(&mut dir, 0x50, pe::IMAGE_RESOURCE_NAME_IS_STRING | 0xf0);
        write_u32(&mut dir, 0x54, dirbit | 0x80);
        table(&mut dir, 0x80, 0, 1);
        write_u32(&mut dir, 0x90, 0x0c07);
        write_u32(&mut dir, 0x94, 0xd0);
        write_u32(&mut dir, 0xc0, 0x1111);
        write_u32(&mut dir, 0xd0, 0x2222);
        // The name: "V".
        dir[0xf0..0xf4].copy_from_slice(&[1, 0, b'V', 0]);
        let mut seen = Vec::new();
        let found = find_version(ResourceDirectory::new(&dir), |entry| {
            seen.push(entry.offset_to_data.get(LE));
            Some(english())
        });
        assert_eq!((found, seen), (Some(english()), vec![0x2222]));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_version_block(&bytes);
            let _ = version_info(&bytes);
        }

        #[test]
        fn mutated_blobs_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut blob = normal();
            for (at, byte) in edits {
                let i = at.index(blob.len());
                blob[i] = byte;
            }
            let len = blob.len();
            let _ = parse_version_block(&blob);
            let _ = parse_version_block(&blob[..cut.index(len + 1)]);
        }

        #[test]
        fn mutated_fixture_never_panics(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        ) {
            let mut data = fixture("versioned.sys");
            let rsrc = resource_offset(&data);
            let end = data.len().min(rsrc + 0x400);
            for (at, byte) in edits {
                let i = rsrc + at.index(end - rsrc);
                data[i] = byte;
            }
            let _ = version_info(&data);
        }
    }
}
