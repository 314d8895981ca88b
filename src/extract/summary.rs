//! Function summaries: which incoming arguments of each function of an image reach the tag
//! argument of a known API, directly or through other functions of the image.
//!
//! The call-site analysers ([`super::x86`], [`super::arm64`]) find the functions (`.pdata`
//! starts, the entry point, the exports, the targets of direct calls and jumps: see [`Start`]),
//! mark each incoming argument at its start, and report here, in one linear pass over the code:
//! - an incoming argument in the tag argument of a call to an API ([`Summaries::reaches`]);
//! - an incoming argument passed on to another function ([`Summaries::passes`]);
//! - a constant passed to a function of the image ([`Summaries::constant`]).
//!
//! [`Summaries::resolve`] then propagates the first two to a fixpoint (a chain of at most
//! [`MAX_DEPTH`] wrappers) and turns each constant into `call` evidence for every API its
//! argument reaches, with the wrappers it goes through. A constant whose argument reaches no API
//! stays `code`; one passed to a call target that was never analysed is an `arg` site.
//!
//! Arguments are numbered per architecture (each analyser says how).

use foldhash::{HashMap, HashMapExt};

use super::image::{Image, MAX_FUNCTION_STARTS};
use super::{Findings, MAX_SITES};

/// Wrappers in a chain, at most: a tag passed through more functions than this is not followed.
pub const MAX_DEPTH: usize = 8;
/// Argument-to-argument edges kept per image, at most.
const MAX_EDGES: usize = 1 << 16;
/// APIs one argument may reach, at most (a wrapper that allocates and frees reaches two).
const MAX_REACHED: usize = 8;

/// How a function start was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Start {
    /// The target of a direct jump found in the code (a tail jump, or a jump inside a
    /// function): a function starts there when the code before it ended (nothing is known at
    /// that point of the linear pass).
    Jumped,
    /// The target of a direct call found in the code: a function starts there.
    Called,
    /// Declared by the image (entry point, export, `.pdata`): a function starts there.
    Declared,
}

/// A constant passed to a function of the image.
struct Constant {
    value: u32,
    callee: u32,
    argument: u8,
    /// The call or jump instruction.
    rva: u32,
    tail: bool,
}

/// What one argument of one function reaches: an API, through these wrappers (entry RVAs,
/// outermost first).
type Reached = Vec<(&'static str, Vec<u32>)>;

/// The summaries of one image, as the analysis of its code reports them.
#[derive(Default)]
pub struct Summaries {
    /// Function starts, sorted by RVA (a binary search at a call, a cursor in the analysers'
    /// linear pass), with how each was found and whether the analysis has entered it.
    starts: Vec<(u32, Start, bool)>,
    /// (function, argument, API): the argument is the API's tag.
    direct: Vec<(u32, u8, &'static str)>,
    /// (function, argument, callee, callee's argument).
    edges: Vec<(u32, u8, u32, u8)>,
    constants: Vec<Constant>,
}

impl Summaries {
    /// The summaries of `image`'s functions, the image's declared starts and `targets` (RVAs
    /// of direct call and jump targets) known as starts; at most [`MAX_FUNCTION_STARTS`].
    pub fn new(image: &Image, targets: impl IntoIterator<Item = (u32, Start)>) -> Summaries {
        // Deduplicated as they come, so that a section of call bytes is bounded too. Sized for
        // a call or jump every 64 bytes of code: growing the map cost as much as filling it.
        let capacity = (image.code_size() / 64).min(MAX_FUNCTION_STARTS);
        let mut unique: HashMap<u32, Start> = HashMap::with_capacity(capacity);
        for &rva in image.function_starts.iter().take(MAX_FUNCTION_STARTS) {
            unique.insert(rva, Start::Declared);
        }
        for (rva, start) in targets {
            if unique.len() >= MAX_FUNCTION_STARTS {
                break;
            }
            let known = unique.entry(rva).or_insert(start);
            *known = (*known).max(start);
        }
        let mut starts: Vec<(u32, Start, bool)> = unique
            .into_iter()
            .map(|(rva, start)| (rva, start, false))
            .collect();
        starts.sort_unstable();
        Summaries {
            starts,
            ..Summaries::default()
        }
    }

    fn index(&self, rva: u32) -> Option<usize> {
        self.starts.binary_search_by_key(&rva, |(r, _, _)| *r).ok()
    }

    /// How a function starting at `rva` was found, if one does.
    pub fn start(&self, rva: u32) -> Option<Start> {
        self.index(rva).map(|i| self.starts[i].1)
    }

    /// The first function start at or after `rva`: its position, for [`Summaries::start_at`].
    pub fn first_start(&self, rva: u32) -> usize {
        self.starts.partition_point(|(r, _, _)| *r < rva)
    }

    /// For a linear pass that only enters functions (where a jump target changes nothing): the
    /// RVA of the first declared or called start at or after `rva` (`u32::MAX` past the last),
    /// with `cursor` (from [`Summaries::first_start`]) moved to it.
    pub fn next_entry(&self, cursor: &mut usize, rva: u32) -> u32 {
        while let Some((r, start, _)) = self.starts.get(*cursor) {
            if *r >= rva && *start != Start::Jumped {
                return *r;
            }
            *cursor += 1;
        }
        u32::MAX
    }

    /// For a linear pass: the start at `rva`, if any, with `cursor` (from
    /// [`Summaries::first_start`]) moved past the starts before `rva`.
    pub fn start_at(&self, cursor: &mut usize, rva: u32) -> Option<Start> {
        while let Some((r, start, _)) = self.starts.get(*cursor) {
            if *r > rva {
                return None;
            }
            if *r == rva {
                return Some(*start);
            }
            *cursor += 1;
        }
        None
    }

    /// The analysis enters the function at `rva` with its arguments marked.
    pub fn enter(&mut self, rva: u32) {
        if let Some(i) = self.index(rva) {
            self.starts[i].2 = true;
        }
    }

    /// Argument `argument` of `function` is the tag argument of a call to `api`.
    pub fn reaches(&mut self, function: u32, argument: u8, api: &'static str) {
        if self.direct.len() < MAX_EDGES {
            self.direct.push((function, argument, api));
        }
    }

    /// Argument `argument` of `function` is passed as argument `to` of `callee`.
    pub fn passes(&mut self, function: u32, argument: u8, callee: u32, to: u8) {
        if self.edges.len() < MAX_EDGES {
            self.edges.push((function, argument, callee, to));
        }
    }

    /// `value` is argument `argument` of a call (a jump when `tail`) at `rva` to `callee`.
    pub fn constant(&mut self, value: u32, callee: u32, argument: u8, rva: u32, tail: bool) {
        if self.constants.len() < MAX_SITES {
            self.constants.push(Constant {
                value,
                callee,
                argument,
                rva,
                tail,
            });
        }
    }

    /// What every (function, argument) reaches, chains of wrappers followed to a fixpoint: each
    /// round lengthens the chains by one, so [`MAX_DEPTH`] rounds at most.
    fn reached(&self) -> HashMap<(u32, u8), Reached> {
        let mut reached: HashMap<(u32, u8), Reached> = HashMap::new();
        for &(function, argument, api) in &self.direct {
            add(&mut reached, (function, argument), api, Vec::new());
        }
        for _ in 1..MAX_DEPTH {
            let mut changed = false;
            for &(function, argument, callee, to) in &self.edges {
                let Some(through) = reached.get(&(callee, to)) else {
                    continue;
                };
                let through: Reached = through
                    .iter()
                    .filter(|(_, via)| via.len() + 1 < MAX_DEPTH)
                    .map(|(api, via)| (*api, [callee].into_iter().chain(via.clone()).collect()))
                    .collect();
                for (api, via) in through {
                    changed |= add(&mut reached, (function, argument), api, via);
                }
            }
            if !changed {
                break;
            }
        }
        reached
    }

    /// Turns the constants passed to functions into `call` sites (their argument reaches an
    /// API) or `arg` sites (a call to a target never analysed).
    pub fn resolve(self, image: &Image, findings: &mut Findings) {
        let reached = self.reached();
        for constant in &self.constants {
            let Some((section, _)) = image.section_at(constant.rva) else {
                continue;
            };
            match reached.get(&(constant.callee, constant.argument)) {
                Some(apis) => {
                    for (api, via) in apis {
                        let via = [constant.callee].into_iter().chain(via.clone()).collect();
                        findings.call_via(api, constant.value, constant.rva, section, via);
                    }
                }
                None => {
                    let entered = self
                        .index(constant.callee)
                        .is_some_and(|i| self.starts[i].2);
                    if !entered && !constant.tail {
                        findings.arg(None, constant.value, constant.rva, section);
                    }
                }
            }
        }
    }
}

/// Adds `api` through `via` to what `key` reaches, unless it reaches `api` already; true when
/// added.
fn add(
    reached: &mut HashMap<(u32, u8), Reached>,
    key: (u32, u8),
    api: &'static str,
    via: Vec<u32>,
) -> bool {
    let apis = reached.entry(key).or_default();
    if apis.len() >= MAX_REACHED || apis.iter().any(|(known, _)| *known == api) {
        return false;
    }
    apis.push((api, via));
    true
}
