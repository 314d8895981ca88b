//! Extraction: the candidate tags of one driver binary, with the evidence for each.
//!
//! - [`bytes`]: every printable four-byte window (the `bytes` level, what findstr finds);
//! - [`image`]: the PE view the other analyses read (sections, image base, IAT slots);
//! - [`x86`] and [`arm64`]: call-site analysis of executable sections (`call`, `arg`, `code`);
//! - [`data`]: 4-byte-aligned printable fields in initialized data (`data`);
//! - [`apis`]: the tag-taking APIs, from `data/pool_apis.tsv`;
//! - [`version`]: the version resource strings (company, description, version).

pub mod apis;
pub mod arm64;
pub mod bytes;
pub mod data;
pub mod image;
pub mod version;
pub mod x86;

use std::collections::{HashMap, HashSet};

use crate::tag::Tag;
use image::{Arch, Image, Section};

/// Bytes of executable code analysed per file at most: a hostile image with a huge code section
/// costs a bounded time (about a second). Real drivers have a few MB of code at most.
pub const MAX_CODE_BYTES: usize = 64 << 20;

/// Call and arg sites kept per file at most (a real driver has a few thousand): a hostile image
/// of nothing but calls cannot make the list, and its sort, unbounded. Past it, tags still get
/// their evidence level; only the sites are not kept.
pub const MAX_SITES: usize = 1 << 18;

/// The version of the analysis: raised whenever a change to extraction can change what is found
/// in a binary, so that an incremental index (and a merge) analyses again what an older pooltag
/// analysed. Stored with every content as part of its [`Analysis`] fingerprint.
pub const ANALYSIS_VERSION: u32 = 2;

/// Which analysis produced a content's evidence: pooltag's analysis version and whether code and
/// data were analysed (`--bytes-only` says not). Stored as text, `2:code` or `2:bytes`; a
/// database written before fingerprints existed has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Analysis {
    pub version: u32,
    /// Code and data were analysed (evidence above `bytes`).
    pub code: bool,
}

impl Analysis {
    /// The analysis this pooltag makes, with or without code.
    pub fn current(code: bool) -> Analysis {
        Analysis {
            version: ANALYSIS_VERSION,
            code,
        }
    }

    /// The fingerprint stored as `text`, if it is one.
    pub fn parse(text: &str) -> Option<Analysis> {
        let (version, options) = text.split_once(':')?;
        let code = match options {
            "code" => true,
            "bytes" => false,
            _ => return None,
        };
        Some(Analysis {
            version: version.parse().ok()?,
            code,
        })
    }
}

impl std::fmt::Display for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options = if self.code { "code" } else { "bytes" };
        write!(f, "{}:{options}", self.version)
    }
}

/// How strongly a file is tied to a tag, weakest first. The database stores the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Evidence {
    /// The four bytes appear somewhere in the file.
    Bytes = 1,
    /// A 4-byte-aligned printable value in an initialized data section.
    Data = 2,
    /// A 32-bit immediate in executable code.
    Code = 3,
    /// Loaded into an argument of a call to something other than a known pool API.
    Arg = 4,
    /// The tag argument of a call to a known tag-taking API.
    Call = 5,
}

impl Evidence {
    /// Every level, strongest first.
    pub const ALL: [Evidence; 5] = [
        Evidence::Call,
        Evidence::Arg,
        Evidence::Code,
        Evidence::Data,
        Evidence::Bytes,
    ];

    /// The name used in output and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Evidence::Bytes => "bytes",
            Evidence::Data => "data",
            Evidence::Code => "code",
            Evidence::Arg => "arg",
            Evidence::Call => "call",
        }
    }

    /// The level named `name` (`call`, `arg`, `code`, `data`, `bytes`).
    pub fn from_name(name: &str) -> Option<Evidence> {
        Evidence::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The level stored as `number` in the database, if it is one.
    pub fn from_number(number: i64) -> Option<Evidence> {
        Evidence::ALL.into_iter().find(|e| *e as i64 == number)
    }
}

/// One place in the code that passes a tag: a `call` or `arg` site.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    pub tag: Tag,
    pub evidence: Evidence,
    /// The API called; `None` for an `arg` site whose callee is unknown.
    pub api: Option<String>,
    /// RVA of the call (or tail jump) instruction.
    pub rva: u32,
    pub section: String,
    /// Offset of the instruction in its section.
    pub offset: u32,
}

/// Everything the code and data analyses found in one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// The strongest level above `bytes` for each tag.
    pub levels: HashMap<Tag, Evidence>,
    pub sites: Vec<Site>,
}

impl Findings {
    /// `value` is the tag argument of a call to `api` at `rva`.
    pub fn call(&mut self, api: &str, value: u32, rva: u32, section: &Section) {
        self.site(Evidence::Call, Some(api), value, rva, section);
    }

    /// `value` is in an argument of a call to something else (`api` when it is a known import).
    pub fn arg(&mut self, api: Option<&str>, value: u32, rva: u32, section: &Section) {
        self.site(Evidence::Arg, api, value, rva, section);
    }

    /// `value` is a 32-bit immediate in code.
    pub fn code(&mut self, value: u32) {
        self.raise(value, Evidence::Code);
    }

    /// `value` is a 4-byte field of initialized data.
    pub fn data(&mut self, value: u32) {
        self.raise(value, Evidence::Data);
    }

    fn site(
        &mut self,
        evidence: Evidence,
        api: Option<&str>,
        value: u32,
        rva: u32,
        section: &Section,
    ) {
        if let Some(tag) = self.raise(value, evidence)
            && self.sites.len() < MAX_SITES
        {
            self.sites.push(Site {
                tag,
                evidence,
                api: api.map(str::to_owned),
                rva,
                section: section.name.clone(),
                offset: rva.wrapping_sub(section.rva),
            });
        }
    }

    /// Records `value` at `level` when, PROTECTED_POOL bit cleared, it is a printable tag.
    fn raise(&mut self, value: u32, level: Evidence) -> Option<Tag> {
        let tag = Tag::from_value(value);
        if !tag.is_printable() {
            return None;
        }
        let strongest = self.levels.entry(tag).or_insert(level);
        *strongest = (*strongest).max(level);
        Some(tag)
    }
}

/// Analyses the code and data of a driver binary. Never fails: what cannot be parsed or decoded
/// yields nothing.
pub fn analyse(data: &[u8]) -> Findings {
    let mut findings = Findings::default();
    let Some(image) = Image::parse(data) else {
        return findings;
    };
    let import_names: HashSet<&[u8]> = image
        .imports
        .values()
        .flat_map(|import| [import.module.as_bytes(), import.name.as_bytes()])
        .collect();
    let mut budget = MAX_CODE_BYTES;
    for section in &image.sections {
        if section.executable {
            let len = section.data.len().min(budget);
            budget -= len;
            let code = &section.data[..len];
            match image.arch {
                Arch::X86 => x86::analyse(&image, section, code, 32, &mut findings),
                Arch::X64 => x86::analyse(&image, section, code, 64, &mut findings),
                Arch::Arm64 => arm64::analyse(&image, section, code, &mut findings),
                Arch::Other => {}
            }
        } else if section.initialized_data {
            data::analyse(section, &import_names, &mut findings);
        }
    }
    findings.sites.sort();
    findings.sites.dedup();
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_fingerprints_read_back_and_order_newer_then_fuller() {
        let code = Analysis::current(true);
        assert_eq!(code.to_string(), format!("{ANALYSIS_VERSION}:code"));
        assert_eq!(Analysis::parse(&code.to_string()), Some(code));
        assert_eq!(
            Analysis::parse("1:bytes"),
            Some(Analysis {
                version: 1,
                code: false
            })
        );
        for bad in ["", "2", "2:", "x:code", "2:all", "-1:code"] {
            assert_eq!(Analysis::parse(bad), None, "{bad}");
        }
        assert!(Analysis::current(false) < code);
        assert!(Analysis::parse("1:code").unwrap() < Analysis::current(false));
    }
}
