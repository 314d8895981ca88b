//! Extraction: the candidate tags of one driver binary, with the evidence for each.
//!
//! - [`bytes`]: every printable four-byte window (the `bytes` level, what findstr finds);
//! - [`image`]: the PE view the other analyses read (sections, image base, IAT slots);
//! - [`x86`] and [`arm64`]: call-site analysis of executable sections (`call`, `arg`, `code`);
//! - `pending`: the states those analysers keep for forward branches;
//! - [`summary`]: which arguments of the image's own functions reach a tag-taking API, so that a
//!   tag passed to a wrapper is a `call` too;
//! - [`data`]: 4-byte-aligned printable fields in initialized data (`data`);
//! - [`tables`]: tables of printable words whose address the code takes (`data`);
//! - [`apis`]: the tag-taking APIs, from `data/pool_apis.tsv`;
//! - [`version`]: the version resource strings (company, description, version).

pub mod apis;
pub mod arm64;
pub mod bytes;
pub mod data;
pub mod image;
mod pending;
pub mod summary;
pub mod tables;
pub mod version;
pub mod x86;

use foldhash::{HashMap, HashSet};

use crate::tag::Tag;
use image::{Arch, Image, Section};
use summary::Summaries;
use tables::References;

/// Bytes of executable code analysed per file at most: a hostile image with a huge code section
/// costs a bounded time (about a second). Real drivers have a few MB of code at most.
pub const MAX_CODE_BYTES: usize = 64 << 20;

/// Call and arg sites kept per file at most (a real driver has a few thousand): a hostile image
/// of nothing but calls cannot make the list, and its sort, unbounded. Past it, tags still get
/// their evidence level; only the sites are not kept.
pub const MAX_SITES: usize = 1 << 18;

/// The version of the analysis: raised whenever a change to extraction can change what is found
/// in a binary, so that an incremental index (and a merge) analyses again what an older pooltag
/// analysed. Stored with every content as part of its [`Analysis`] fingerprint. 3: a multi-byte
/// `nop [reg+reg*1]` no longer counts as reading a table (2 found a few `data` tags in strings
/// that way).
pub const ANALYSIS_VERSION: u32 = 3;

/// Which analysis produced a content's evidence: pooltag's analysis version and whether code and
/// data were analysed (`--bytes-only` says not). Stored as text, `3:code` or `3:bytes`; a
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
    /// The driver's own functions the tag goes through to reach the API (their entry RVAs,
    /// outermost first); empty for a direct call to the API.
    pub via: Vec<u32>,
}

/// A place in an image: its RVA, and the section holding it with the offset there (the
/// section's name is empty when no section holds the RVA).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Place {
    pub rva: u32,
    pub section: String,
    pub offset: u32,
}

/// Everything the code and data analyses found in one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// The strongest level above `bytes` for each tag.
    pub levels: HashMap<Tag, Evidence>,
    pub sites: Vec<Site>,
    /// Where each RVA of the sites' `via` lists lies, to show it as `.text+0x1000`.
    pub places: HashMap<u32, Place>,
}

impl Findings {
    /// `value` is the tag argument of a call to `api` at `rva`.
    pub fn call(&mut self, api: &str, value: u32, rva: u32, section: &Section) {
        self.site(Evidence::Call, Some(api), value, rva, section, Vec::new());
    }

    /// `value` is passed at `rva` to the first of the functions `via`, which pass it on to
    /// the tag argument of `api`.
    pub fn call_via(&mut self, api: &str, value: u32, rva: u32, section: &Section, via: Vec<u32>) {
        self.site(Evidence::Call, Some(api), value, rva, section, via);
    }

    /// `value` is in an argument of a call to something else (`api` when it is a known import).
    pub fn arg(&mut self, api: Option<&str>, value: u32, rva: u32, section: &Section) {
        self.site(Evidence::Arg, api, value, rva, section, Vec::new());
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
        via: Vec<u32>,
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
                via,
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
    analyse_image(&image, &mut findings);
    findings
}

/// Analyses the code and data of a parsed image into `findings`.
pub(crate) fn analyse_image(image: &Image, findings: &mut Findings) {
    analyse_image_tracking(image, findings, image.uses_pool_apis());
}

/// [`analyse_image`], tracking every instruction when `track_everything`, else only the regions
/// that may need it (see `x86::Region`, `arm64::Region`): both find the same (property tests
/// compare them), the second at a fraction of the cost in an image that calls no pool API.
pub(crate) fn analyse_image_tracking(
    image: &Image,
    findings: &mut Findings,
    track_everything: bool,
) {
    // Names the image imports or exports: the commonest aligned text, never tags.
    let import_names: HashSet<&[u8]> = image
        .imports
        .values()
        .flat_map(|import| [import.module.as_bytes(), import.name.as_bytes()])
        .chain(image.export_names.iter().copied())
        .collect();
    // The code of each executable section, MAX_CODE_BYTES in all.
    let mut budget = MAX_CODE_BYTES;
    let code: Vec<(&Section, &[u8])> = image
        .sections
        .iter()
        .filter(|section| section.executable)
        .map(|section| {
            let len = section.data.len().min(budget);
            budget -= len;
            (section, &section.data[..len])
        })
        .collect();
    // One loop per architecture: a call through `dyn Iterator` per target cost more than
    // finding it.
    let sections = code.iter();
    let mut summaries = match image.arch {
        Arch::X86 | Arch::X64 => Summaries::new(
            image,
            sections.flat_map(|&(section, code)| x86::call_targets(image, section, code)),
        ),
        Arch::Arm64 => Summaries::new(
            image,
            sections.flat_map(|&(section, code)| arm64::call_targets(section, code)),
        ),
        Arch::Other => Summaries::new(image, std::iter::empty()),
    };
    let mut references = References::default();
    for &(section, code) in &code {
        let found = (&mut summaries, &mut references, &mut *findings);
        match image.arch {
            Arch::X86 => x86::analyse(image, section, (code, 32, track_everything), found),
            Arch::X64 => x86::analyse(image, section, (code, 64, track_everything), found),
            Arch::Arm64 => arm64::analyse(image, section, (code, track_everything), found),
            Arch::Other => {}
        }
    }
    summaries.resolve(image, findings);
    references.analyse(image, &import_names, findings);
    for section in &image.sections {
        if section.initialized_data && !section.executable {
            data::analyse(section, &import_names, findings);
        }
    }
    findings.sites.sort();
    findings.sites.dedup();
    for &rva in findings.sites.iter().flat_map(|site| &site.via) {
        findings
            .places
            .entry(rva)
            .or_insert_with(|| match image.section_at(rva) {
                Some((section, offset)) => Place {
                    rva,
                    section: section.name.clone(),
                    offset: offset as u32,
                },
                None => Place {
                    rva,
                    section: String::new(),
                    offset: rva,
                },
            });
    }
}

/// For the tests: what [`analyse_image`] finds in `image` (levels sorted, and sites), after
/// checking that tracking only the regions that may need it finds what tracking everything does.
#[cfg(test)]
pub(crate) fn analyse_both_ways(image: &Image) -> (Vec<(Tag, Evidence)>, Vec<Site>) {
    let findings = |track_everything| {
        let mut findings = Findings::default();
        analyse_image_tracking(image, &mut findings, track_everything);
        let mut levels: Vec<(Tag, Evidence)> = findings.levels.into_iter().collect();
        levels.sort();
        (levels, findings.sites)
    };
    let everything = findings(true);
    assert_eq!(findings(false), everything);
    everything
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
