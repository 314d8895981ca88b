//! Call-site analysis of ARM64 code, decoded by hand.
//!
//! ARM64 instructions are 4-byte little-endian words. Only the few forms that carry a tag or the
//! address of an imported function are decoded (`decode` returns an `Op`):
//! - `MOVZ` / `MOVN` / `MOVK` (32- and 64-bit, the `MOV` aliases included): a 32-bit tag is built
//!   16 bits at a time, the halves in either order and often not adjacent;
//! - `MOV Wd, Wm` / `MOV Xd, Xm` copies;
//! - `ADD` / `SUB` / `AND` / `ORR` / `EOR` with an immediate: clang derives one tag from another
//!   held in a register (`add w2, w23, #0xf0, lsl #12`);
//! - `LDR Wt|Xt, <literal>`: a constant in a literal pool (MSVC);
//! - `ADRP` (+ `ADD`) + `LDR Xt, [Xn, #imm]`: the address of an IAT slot, then the function it
//!   holds;
//! - `BL`, `B`, `BLR`, `BR`, `RET` and the conditional branches.
//!
//! One linear pass tracks, per register x0..x30, a constant (which 16-bit halves are known), an
//! address, or the function imported through an IAT slot. Any other instruction cancels what
//! its destination registers held. A call clears x0..x18 and x30 (x19..x28 are callee-saved);
//! `RET`, `B` and `BR` clear everything: the next instruction is reached by some other jump.
//! Conditional branches keep the state (the fall-through path is followed). At the target of a
//! forward branch seen earlier in the pass, each register the straight-line state knows nothing
//! about takes the value it had at the branch (the value all such branches agree on), so that
//! code placed after an unconditional branch (an error path, a `switch` default) still knows the
//! callee-saved registers that hold hoisted IAT entries.
//!
//! At each function start (see [`super::summary`]) w0..w7 are marked as the incoming arguments,
//! and the stack is followed for -O0 code: `sub sp`/`add sp`, pre/post-index writebacks, x29 set
//! from sp, and `STR`/`STUR`/`STP` of a 4- or 8-byte register through sp or x29 fill a slot that
//! `LDR`/`LDUR`/`LDP` reload; `RET` ends it. A call keeps the slots.
//!
//! At a call (`BL`, `BLR`) or a tail jump (`B`, `BR`) to a known tag-taking API, through a
//! register holding an IAT slot or a `BL`/`B` to an `ADRP; LDR; BR` thunk, the tag argument
//! `w(n-1)` holding a complete 32-bit value is a `call` site. At a call to anything else, each of
//! w0..w7 holding one is an `arg` site. Every 32-bit value built by `MOVZ`/`MOVK`, loaded from a
//! literal or derived with an immediate is `code` evidence (both halves of a 64-bit one).

use foldhash::{HashMap, HashMapExt};

use super::Findings;
use super::apis::{PoolApi, UNTAGGED, pool_api};
use super::image::{Image, Section};
use super::pending::Pending;
use super::summary::{Start, Summaries};
use super::tables::References;
use crate::tag::Tag;

/// Call targets whose thunk check is remembered, at most (a check is O(1) anyway).
const MAX_THUNK_CACHE: usize = 1 << 16;
/// Forward branch targets whose state is kept, at most.
const MAX_PENDING: usize = 256;
/// How far ahead (bytes) a branch target may be for its state to be kept: the range of a
/// conditional branch.
const MAX_PENDING_DISTANCE: i64 = 1 << 20;

/// What a register is known to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Unknown,
    /// Bits known 16 at a time: bit `i` of `known` is set when bits `16*i..16*i+16` of `value`
    /// are known (the others are zero in `value`).
    Bits {
        value: u64,
        known: u8,
    },
    /// A virtual address (from `ADRP` / `ADR`, maybe plus an offset).
    Address(u64),
    /// The address of the function imported through this IAT slot (by RVA).
    Import(u32),
    /// Incoming argument N (x0..x7) of the function being read.
    Argument(u8),
    /// The address of an element of a 4-byte table at this virtual address
    /// (`add xd, xn, xm, lsl #2` with xn holding the table's address).
    Element(u64),
}

const ALL_KNOWN: u8 = 0b1111;
const LOW_KNOWN: u8 = 0b0011;
const HIGH_KNOWN: u8 = 0b1100;

impl Value {
    fn constant(value: u64) -> Value {
        Value::Bits {
            value,
            known: ALL_KNOWN,
        }
    }

    /// The low 32 bits, when both of their halves are known.
    fn low32(self) -> Option<u32> {
        match self {
            Value::Bits { value, known } if known & LOW_KNOWN == LOW_KNOWN => Some(value as u32),
            _ => None,
        }
    }

    /// The high 32 bits, when both of their halves are known.
    fn high32(self) -> Option<u32> {
        match self {
            Value::Bits { value, known } if known & HIGH_KNOWN == HIGH_KNOWN => {
                Some((value >> 32) as u32)
            }
            _ => None,
        }
    }

    /// The value after a write to the 32-bit view of the register: the upper half is zeroed
    /// (an argument stays itself: a tag is 32 bits).
    fn w(self) -> Value {
        match self {
            Value::Bits { value, known } => Value::Bits {
                value: value & 0xFFFF_FFFF,
                known: (known & LOW_KNOWN) | HIGH_KNOWN,
            },
            Value::Argument(n) => Value::Argument(n),
            _ => Value::Unknown,
        }
    }

    /// `f` applied to the value: on all 64 bits when known, else on the low 32 bits only (`f` must
    /// be one whose low 32 result bits depend only on the low 32 operand bits: add, sub, and,
    /// orr, eor).
    fn map_bits(self, x: bool, f: impl Fn(u64) -> u64) -> Value {
        match self {
            Value::Bits { value, known } if x && known == ALL_KNOWN => Value::constant(f(value)),
            Value::Bits { value, known } if known & LOW_KNOWN == LOW_KNOWN => {
                let low = f(value) & 0xFFFF_FFFF;
                if x {
                    Value::Bits {
                        value: low,
                        known: LOW_KNOWN,
                    }
                } else {
                    Value::constant(low)
                }
            }
            _ => Value::Unknown,
        }
    }
}

type Registers = [Value; 31];

/// Incoming arguments marked at a function start: w0..w7.
const ARGUMENTS: u8 = 8;
/// Stack slots tracked at most.
const MAX_SLOTS: usize = 64;

/// The stack of the function being read, for -O0 code, which stores every argument into its
/// frame and reloads it: the stack pointer and x29 as offsets from the stack pointer at the
/// function's entry (when known), and the 4- and 8-byte slots holding a known value, by offset
/// from the same point.
#[derive(Clone, Debug, Default)]
struct Stack {
    sp: Option<i64>,
    fp: Option<i64>,
    slots: Vec<(i64, Value)>,
}

impl Stack {
    /// The offset of `[base + offset]` (base 31 is sp, 29 is x29).
    fn at(&self, base: u8, offset: i64) -> Option<i64> {
        match base {
            31 => self.sp.map(|sp| sp + offset),
            29 => self.fp.map(|fp| fp + offset),
            _ => None,
        }
    }

    fn slot(&self, at: i64) -> Value {
        self.slots
            .iter()
            .find(|(o, _)| *o == at)
            .map_or(Value::Unknown, |(_, v)| *v)
    }

    /// A `size`-byte store at `at` of `value` (`Unknown` for what is not tracked).
    fn store(&mut self, at: i64, size: i64, value: Value) {
        self.slots.retain(|(o, _)| *o + 8 <= at || *o >= at + size);
        if value != Value::Unknown && self.slots.len() < MAX_SLOTS {
            self.slots.push((at, value));
        }
    }
}

/// A load or store `decode` leaves to `Op::Other`, as the stack tracking reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Access {
    load: bool,
    /// Bytes per register.
    size: i64,
    rt: u8,
    /// The second register of a pair.
    rt2: Option<u8>,
    rn: u8,
    /// The offset the access uses (0 for post-index).
    offset: i64,
    /// What the base register moves by (pre- and post-index).
    writeback: i64,
}

/// Reads the loads and stores of general-purpose registers with an immediate offset: `LDR`/`STR`
/// (unsigned offset), `LDUR`/`STUR` and their pre/post-index forms, `LDP`/`STP`.
fn access(word: u32) -> Option<Access> {
    let size_log = bits(word, 30, 2);
    let rt = reg(word, 0);
    let rn = reg(word, 5);
    if word & 0x3F00_0000 == 0x3900_0000 {
        let opc = bits(word, 22, 2);
        return (opc <= 1).then(|| Access {
            load: opc == 1,
            size: 1 << size_log,
            rt,
            rt2: None,
            rn,
            offset: i64::from(bits(word, 10, 12)) << size_log,
            writeback: 0,
        });
    }
    if word & 0x3F20_0000 == 0x3800_0000 {
        let opc = bits(word, 22, 2);
        let imm9 = sign_extend(bits(word, 12, 9), 9);
        let (offset, writeback) = match bits(word, 10, 2) {
            0b00 => (imm9, 0),
            0b01 => (0, imm9),
            0b11 => (imm9, imm9),
            _ => return None,
        };
        return (opc <= 1).then_some(Access {
            load: opc == 1,
            size: 1 << size_log,
            rt,
            rt2: None,
            rn,
            offset,
            writeback,
        });
    }
    if word & 0x3E00_0000 == 0x2800_0000 && bits(word, 23, 2) != 0 {
        let size = match bits(word, 30, 2) {
            0b00 => 4,
            0b10 => 8,
            _ => return None,
        };
        let imm7 = sign_extend(bits(word, 15, 7), 7) * size;
        let (offset, writeback) = match bits(word, 23, 2) {
            0b01 => (0, imm7),
            0b10 => (imm7, 0),
            _ => (imm7, imm7),
        };
        return Some(Access {
            load: bits(word, 22, 1) == 1,
            size,
            rt,
            rt2: Some(reg(word, 10)),
            rn,
            offset,
            writeback,
        });
    }
    None
}

/// What a call or jump goes to.
enum Callee {
    /// A known tag-taking API.
    Api(&'static PoolApi),
    /// Another imported function, by IAT slot.
    Import(u32),
    /// A function of the image, by entry RVA.
    Function(u32),
    /// Anything else: a register, a plain jump target.
    Unknown,
}

/// The direct call and jump targets (`BL`, `B`) of `code`, the start of `section`.
pub fn call_targets<'s>(
    section: &'s Section,
    code: &'s [u8],
) -> impl Iterator<Item = (u32, Start)> + 's {
    code.chunks_exact(4)
        .enumerate()
        .filter_map(move |(index, word)| {
            let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            let (offset, start) = match branch_immediate(word)? {
                Op::Bl { offset } => (offset, Start::Called),
                // clang -O0 ends a block with a `b` to the next instruction: no function there.
                Op::B { offset } if offset != 4 => (offset, Start::Jumped),
                _ => return None,
            };
            let rva = section.rva.wrapping_add(4 * index as u32);
            let target = Analysis::target(rva, offset)?;
            let inside = target
                .checked_sub(section.rva)
                .is_some_and(|o| (o as usize) < code.len());
            inside.then_some((target, start))
        })
}

/// The analysis of one section.
struct Analysis<'a, 'data> {
    image: &'a Image<'data>,
    section: &'a Section<'data>,
    registers: Registers,
    stack: Stack,
    /// The function being read (its entry RVA), once a start was passed.
    function: Option<u32>,
    /// The next function start of the linear pass (see [`Summaries::start_at`]).
    cursor: usize,
    summaries: &'a mut Summaries,
    references: &'a mut References,
    /// The state at forward branches, by target offset in the section.
    pending: Pending<usize, Box<Registers>>,
    /// Call targets already checked for being `ADRP; LDR; BR` thunks: the IAT slot.
    thunks: HashMap<u32, Option<u32>>,
    findings: &'a mut Findings,
}

/// Analyses `code`, the start of `section`, into what the image's analysis collects: the
/// summaries, the addresses the code takes, the findings.
pub fn analyse(
    image: &Image,
    section: &Section,
    (code, track_everything): (&[u8], bool),
    (summaries, references, findings): (&mut Summaries, &mut References, &mut Findings),
) {
    let mut analysis = Analysis {
        image,
        section,
        registers: [Value::Unknown; 31],
        stack: Stack::default(),
        function: None,
        cursor: summaries.first_start(section.rva),
        summaries,
        references,
        pending: Pending::default(),
        thunks: HashMap::new(),
        findings,
    };
    let word_at = |offset: usize| {
        u32::from_le_bytes([
            code[offset],
            code[offset + 1],
            code[offset + 2],
            code[offset + 3],
        ])
    };
    let words = code.len() / 4;
    if track_everything {
        for offset in (0..words).map(|i| i * 4) {
            analysis.visit(offset, word_at(offset));
        }
        return;
    }
    let mut region = Region::default();
    let mut cursor = analysis.cursor;
    let end = words * 4;
    // Where the next function start is, as `Analysis::rva` places it (in a section whose RVAs
    // wrap, every word takes the general path).
    let wraps = section.rva.checked_add(end as u32).is_none() || end > u32::MAX as usize;
    let (mut offset, mut entries) = (0, cursor);
    while offset < end {
        if !region.tracked && !wraps {
            // The commonest case, in a loop of its own: words no region needs, before the
            // next function entered (a jump target changes nothing here).
            let next = analysis
                .summaries
                .next_entry(&mut entries, analysis.rva(offset));
            let limit = (next.saturating_sub(section.rva) as usize).min(end);
            while offset < limit && !may_matter(word_at(offset)) {
                offset += 4;
            }
            if offset == end {
                break;
            }
        }
        let word = word_at(offset);
        let rva = analysis.rva(offset);
        let start = analysis.summaries.start_at(&mut cursor, rva);
        if matches!(start, Some(Start::Declared | Start::Called)) {
            analysis.finish(&region);
            region = Region {
                entry: Some(rva),
                offset,
                ..Region::default()
            };
        }
        if region.tracked {
            analysis.visit(offset, word);
        } else if region.needs_tracking(word) {
            for held in (region.offset..=offset).step_by(4) {
                analysis.visit(held, word_at(held));
            }
            region.tracked = true;
        }
        offset += 4;
    }
    analysis.finish(&region);
}

/// Whether [`Region::needs_tracking`] may need to look at `word`: a table form, a load or
/// store through sp or x29, or one of the forms it follows (move wide, logical, add or sub
/// with an immediate, ADR/ADRP, a register move, a literal load). By the word's top byte.
fn may_matter(word: u32) -> bool {
    match REGION_CLASSES[(word >> 24) as usize] {
        NEVER => false,
        THROUGH_SP_OR_X29 => matches!(reg(word, 5), 29 | 31),
        _ => true,
    }
}

const NEVER: u8 = 0;
const MAYBE: u8 = 1;
const THROUGH_SP_OR_X29: u8 = 2;

/// [`may_matter`] by top byte.
static REGION_CLASSES: [u8; 256] = {
    let mut classes = [NEVER; 256];
    let mut top = 0;
    while top < 256 {
        classes[top] = match top as u8 {
            // ADR/ADRP, add/sub (immediate), move wide and logical (immediate): bits 28-24.
            t if matches!(t & 0x1F, 0x10..=0x12) => MAYBE,
            // ORR (shifted register), the register move; LDR (literal); the table forms
            // (LDR Wt, [Xn, Xm, LSL #2] and ADD Xd, Xn, Xm, LSL #2 or UXTW #2).
            0x2A | 0xAA | 0x18 | 0x58 | 0xB8 | 0x8B => MAYBE,
            // The other loads and stores `access` reads: LDR/STR (unsigned offset, unscaled,
            // pre/post-index), LDP/STP.
            0x38 | 0x39 | 0x78 | 0x79 | 0xB9 | 0xF8 | 0xF9 | 0x28 | 0x29 | 0x68 | 0x69 | 0xA8
            | 0xA9 | 0xE8 | 0xE9 => THROUGH_SP_OR_X29,
            _ => NEVER,
        };
        top += 1;
    }
    classes
};

/// The code from one function start (declared or called, where the state is cleared) to the
/// next, in an image that calls no tag-taking API: as for x86 (see `x86::Region`), it is
/// tracked from its start once one of its instructions shows that tracking may find something,
/// and only entered otherwise.
///
/// The pass follows the low 32 bits each register may hold ([`Possible`]): the region needs
/// tracking where `MOVK`, `ADD`/`SUB` or a logical immediate may make a printable value, where a
/// literal is loaded, or where a table is read (`LDR Wt, [Xn, Xm, LSL #2]` or its `ADD` form)
/// after an address was taken. In Wine's ARM64 modules most regions build no printable value.
#[derive(Default)]
struct Region {
    /// The function start the region begins at.
    entry: Option<u32>,
    /// Where the region begins in the code.
    offset: usize,
    /// What each register may hold.
    registers: [Possible; 31],
    /// What was stored through sp or x29 may hold.
    stored: Possible,
    /// An address was taken with `ADR`/`ADRP`.
    address_taken: bool,
    /// The region is tracked.
    tracked: bool,
}

/// Values held at most by a [`Possible`] before it keeps only their bound.
const MAX_POSSIBLE: usize = 8;
/// The smallest low 32 bits a printable value may have (its top byte is 0x20 or more).
const PRINTABLE_FROM: u64 = 0x2000_0000;

/// The low 32 bits a register may hold in a region: every value assigned to it so far (a branch
/// target may get back an earlier one, so this only grows). A register that holds no known bits
/// is counted as holding 0, which is what `MOVK` builds on then (the tracker needs both halves
/// known before a value counts: 0 only adds cases).
#[derive(Clone, Copy, Debug, Default)]
enum Possible {
    /// These values, or 0.
    Values([u32; MAX_POSSIBLE], usize),
    /// Any value below this bound, or 0.
    Below(u64),
    #[default]
    Zero,
}

impl Possible {
    /// The values, 0 included; `None` when only a bound is known.
    fn values(self) -> Option<impl Iterator<Item = u32>> {
        let (values, n) = match self {
            Possible::Values(values, n) => (values, n),
            Possible::Zero => ([0; MAX_POSSIBLE], 0),
            Possible::Below(_) => return None,
        };
        Some(values.into_iter().take(n).chain([0]))
    }

    fn bound(self) -> u64 {
        match self {
            Possible::Values(values, n) => values[..n]
                .iter()
                .map(|&v| u64::from(v) + 1)
                .max()
                .unwrap_or(1),
            Possible::Below(bound) => bound,
            Possible::Zero => 1,
        }
    }

    fn add(&mut self, value: u32) {
        match self {
            Possible::Zero if value == 0 => {}
            Possible::Zero => {
                let mut values = [0; MAX_POSSIBLE];
                values[0] = value;
                *self = Possible::Values(values, 1);
            }
            Possible::Values(values, n) => {
                if value != 0 && !values[..*n].contains(&value) {
                    if *n == MAX_POSSIBLE {
                        *self = Possible::Below(self.bound().max(u64::from(value) + 1));
                    } else {
                        values[*n] = value;
                        *n += 1;
                    }
                }
            }
            Possible::Below(bound) => *bound = (*bound).max(u64::from(value) + 1),
        }
    }

    fn join(&mut self, other: Possible) {
        match other.values() {
            Some(values) => values.for_each(|v| self.add(v)),
            None => *self = Possible::Below(self.bound().max(other.bound())),
        }
    }
}

impl Region {
    /// Whether tracking `word` may find something (see [`Region`]).
    fn needs_tracking(&mut self, word: u32) -> bool {
        let (indexed, element) = table_forms(word);
        if self.address_taken && (indexed || element) {
            return true;
        }
        if let Some(access) = access(word).filter(|a| a.rn == 31 || a.rn == 29) {
            for r in [Some(access.rt), access.rt2].into_iter().flatten() {
                if access.load {
                    let stored = self.stored;
                    if let Some(p) = self.register(r) {
                        p.join(stored);
                    }
                } else {
                    let value = self.get(r);
                    self.stored.join(value);
                }
            }
        }
        let small = |bound: u64| Some(bound).filter(|&b| b <= PRINTABLE_FROM);
        match decode(word) {
            Op::MoveWide {
                kind,
                rd,
                imm16,
                shift,
                ..
            } => {
                let imm = (u64::from(imm16) << shift) as u32;
                match kind {
                    Wide::Z => self.derive(rd, Possible::Zero, |_| imm, small),
                    Wide::N => self.derive(rd, Possible::Zero, |_| !imm, small),
                    // The upper half of a 64-bit register: may complete a printable high half.
                    Wide::K if shift >= 32 => true,
                    Wide::K => {
                        let mask = !(0xFFFF_u32 << shift);
                        let source = self.get(rd);
                        // Whatever the other half, no printable value has this one.
                        let never = !Tag::from_value(imm | (0x2020_2020 & mask)).is_printable();
                        let bound = |b: u64| match never {
                            true => Some(1 << 32),
                            false => {
                                small((((b - 1) & u64::from(mask)) | u64::from(imm) | 0xFFFF) + 1)
                            }
                        };
                        self.derive(rd, source, |v| (v & mask) | imm, bound)
                    }
                }
            }
            Op::MoveRegister { rd, rm, .. } => {
                let source = self.get(rm);
                if let Some(p) = self.register(rd) {
                    p.join(source);
                }
                false
            }
            // A compare writes no register.
            Op::AddSub {
                flags: true,
                rd: 31,
                ..
            } => false,
            // Register 31 is the stack pointer here: not tracked.
            Op::AddSub { rn: 31, .. } => false,
            Op::AddSub {
                sub, rd, rn, imm, ..
            } => {
                let source = self.get(rn);
                if sub {
                    // Below zero it wraps to 0xFFxxxxxx: not printable, but large.
                    let bound = |b: u64| small(b).map(|_| 1 << 32);
                    self.derive(rd, source, |v| v.wrapping_sub(imm), bound)
                } else {
                    let bound = |b: u64| small(b + u64::from(imm));
                    self.derive(rd, source, |v| v.wrapping_add(imm), bound)
                }
            }
            Op::Logical {
                x,
                kind,
                rd,
                rn,
                imm,
            } => {
                if x && Tag::from_value((imm >> 32) as u32).is_printable() {
                    return true;
                }
                let source = self.get(rn);
                let imm = imm as u32;
                let either = |b: u64| {
                    small(b)
                        .and(small(u64::from(imm) + 1))
                        .map(|_| PRINTABLE_FROM)
                };
                match kind {
                    Logic::And | Logic::Ands => {
                        let bound = |b: u64| small(b.min(u64::from(imm) + 1));
                        self.derive(rd, source, |v| v & imm, bound)
                    }
                    Logic::Orr => self.derive(rd, source, |v| v | imm, either),
                    Logic::Eor => self.derive(rd, source, |v| v ^ imm, either),
                }
            }
            Op::LoadLiteral { .. } => true,
            Op::Adr { .. } | Op::Adrp { .. } => {
                self.address_taken = true;
                false
            }
            _ => false,
        }
    }

    /// Puts into `rd` what `f` makes of each value `source` may hold, or, when only a bound of
    /// those is known, the bound `bound` gives; true when a result may be printable (`bound`
    /// answers `None`).
    fn derive(
        &mut self,
        rd: u8,
        source: Possible,
        f: impl Fn(u32) -> u32,
        bound: impl Fn(u64) -> Option<u64>,
    ) -> bool {
        let results = match source.values() {
            Some(values) => {
                let mut results = Possible::Zero;
                for value in values {
                    let result = f(value);
                    if Tag::from_value(result).is_printable() {
                        return true;
                    }
                    results.add(result);
                }
                results
            }
            None => match bound(source.bound()) {
                Some(bound) => Possible::Below(bound),
                None => return true,
            },
        };
        if let Some(p) = self.register(rd) {
            p.join(results);
        }
        false
    }

    /// What register `r` may hold; 31 is the zero register here.
    fn get(&self, r: u8) -> Possible {
        self.registers
            .get(usize::from(r))
            .copied()
            .unwrap_or_default()
    }

    fn register(&mut self, r: u8) -> Option<&mut Possible> {
        self.registers.get_mut(usize::from(r))
    }
}

impl Analysis<'_, '_> {
    /// Tracks the word at `offset` of the linear pass.
    fn visit(&mut self, offset: usize, word: u32) {
        if !self.start(offset) {
            self.join(offset);
        }
        let access = access(word);
        let element = self.table_load(word, access);
        let stored = access.filter(|a| !a.load).map(|a| self.stored(a));
        self.step(decode(word), offset);
        if let Some(access) = access {
            self.track_stack(access, stored);
        }
        if let Some((rd, value)) = element {
            self.set(rd, value);
        }
    }

    /// Ends `region`: one that needed no tracking only enters its function.
    fn finish(&mut self, region: &Region) {
        if let (false, Some(entry)) = (region.tracked, region.entry) {
            self.summaries.enter(entry);
        }
    }

    /// Before the instruction at `offset`: a register straight-line code knows nothing about
    /// takes the value the branches to `offset` agreed on; targets left behind are forgotten.
    fn join(&mut self, offset: usize) {
        if let Some(saved) = self.pending.take(offset) {
            for (current, saved) in self.registers.iter_mut().zip(*saved) {
                if *current == Value::Unknown {
                    *current = saved;
                }
            }
        }
    }

    /// At a function start, marks the incoming arguments w0..w7; true when it did. A start
    /// that is only a jump target counts where straight-line code ended (after a return, a
    /// jump) outside a frame: branches to it are then tail calls, not jumps inside a function.
    fn start(&mut self, offset: usize) -> bool {
        let rva = self.rva(offset);
        let entered = match self.summaries.start_at(&mut self.cursor, rva) {
            Some(Start::Declared | Start::Called) => true,
            // Not inside a frame either: -O0 code jumps to labels after a `b`.
            Some(Start::Jumped) => {
                self.registers.iter().all(|v| *v == Value::Unknown)
                    && self.stack.slots.is_empty()
                    && self.stack.sp.unwrap_or(0) == 0
            }
            None => false,
        };
        if !entered {
            return false;
        }
        self.summaries.enter(rva);
        self.function = Some(rva);
        self.pending.clear();
        self.clear();
        self.stack = Stack {
            sp: Some(0),
            ..Stack::default()
        };
        for n in 0..ARGUMENTS {
            self.set(n, Value::Argument(n));
        }
        true
    }

    /// Reads of a table of 4-byte elements: `LDR Wt, [Xn, Xm|Wm, LSL|UXTW #2]` with Xn holding
    /// the table's address, or `ADD Xd, Xn, Xm, LSL #2` (or `Wm, UXTW #2`), which makes Xd an
    /// element's address, then `LDR Wt, [Xd, #offset]` (clang), the table at the address plus
    /// the offset. Called before the instruction's own effect; returns the value an `ADD` of
    /// the second form gives its destination.
    fn table_load(&mut self, word: u32, access: Option<Access>) -> Option<(u8, Value)> {
        let (indexed, element) = table_forms(word);
        let offset_load =
            access.filter(|a| a.load && a.size == 4 && a.rt2.is_none() && a.writeback == 0);
        let table = match (self.register(reg(word, 5)), offset_load) {
            (Value::Address(va), _) if indexed => Some(va),
            (Value::Element(va), Some(a)) => Some(va.wrapping_add(a.offset as u64)),
            (Value::Address(va), _) if element => return Some((reg(word, 0), Value::Element(va))),
            _ => None,
        };
        if let Some(rva) = table.and_then(|va| self.image.rva_of_va(va)) {
            self.references.add(rva);
        }
        None
    }

    /// What a `BL`/`B` to `target` goes to.
    fn direct_callee(&mut self, target: Option<u32>) -> Callee {
        let Some(target) = target else {
            return Callee::Unknown;
        };
        if let Some(slot) = self.thunk_slot(target) {
            return self.import_callee(slot);
        }
        match self.image.exported_apis.get(&target) {
            Some(api) => Callee::Api(api),
            None if self.summaries.start(target).is_some() => Callee::Function(target),
            None => Callee::Unknown,
        }
    }

    /// What a call through IAT slot `slot` goes to.
    fn import_callee(&self, slot: u32) -> Callee {
        match self
            .image
            .imports
            .get(&slot)
            .and_then(|i| pool_api(&i.name))
        {
            Some(api) => Callee::Api(api),
            None => Callee::Import(slot),
        }
    }

    /// What a `BLR`/`BR` through register `rn` goes to.
    fn register_callee(&self, rn: u8) -> Callee {
        match self.register(rn) {
            Value::Import(slot) => self.import_callee(slot),
            _ => Callee::Unknown,
        }
    }

    fn rva(&self, offset: usize) -> u32 {
        self.section.rva.wrapping_add(offset as u32)
    }

    fn va(&self, rva: u32) -> u64 {
        self.image.image_base.wrapping_add(u64::from(rva))
    }

    /// The RVA `offset` bytes from the instruction at `rva`, if it is one.
    fn target(rva: u32, offset: i64) -> Option<u32> {
        u32::try_from(i64::from(rva) + offset).ok()
    }

    /// Up to `len` bytes at `rva`: from the section analysed when it holds `rva` (literal pools
    /// and thunks usually are there), else from the image.
    fn bytes_at(&self, rva: u32, len: usize) -> Option<&[u8]> {
        let local = rva
            .checked_sub(self.section.rva)
            .map(|offset| offset as usize)
            .filter(|&offset| offset < self.section.data.len());
        match local {
            Some(offset) => {
                let end = self.section.data.len().min(offset + len);
                Some(&self.section.data[offset..end])
            }
            None => self.image.bytes_at(rva, len),
        }
    }

    fn register(&self, r: u8) -> Value {
        self.registers
            .get(usize::from(r))
            .copied()
            .unwrap_or(Value::Unknown)
    }

    /// Register `r` as a source where number 31 is the zero register.
    fn register_or_zero(&self, r: u8) -> Value {
        if r == 31 {
            Value::constant(0)
        } else {
            self.register(r)
        }
    }

    fn set(&mut self, r: u8, value: Value) {
        if r == 29 {
            self.stack.fp = None;
        }
        if let Some(slot) = self.registers.get_mut(usize::from(r)) {
            *slot = value;
        }
    }

    /// Writes a newly computed value to `r` and records it as `code` evidence: the low 32 bits,
    /// and the high 32 bits too when `high`.
    fn define(&mut self, r: u8, value: Value, high: bool) {
        if r >= 31 {
            return;
        }
        self.set(r, value);
        if let Some(low) = value.low32() {
            self.findings.code(low);
        }
        if high && let Some(high) = value.high32() {
            self.findings.code(high);
        }
    }

    fn forget(&mut self, writes: u32) {
        if writes & (1 << 29) != 0 {
            self.stack.fp = None;
        }
        for (r, value) in self.registers.iter_mut().enumerate() {
            if writes & (1 << r) != 0 {
                *value = Value::Unknown;
            }
        }
    }

    fn clear(&mut self) {
        self.registers = [Value::Unknown; 31];
    }

    /// Remembers the state for a branch from `offset` forward by `distance` bytes.
    fn branch(&mut self, offset: usize, distance: i64) {
        if distance <= 0 || distance > MAX_PENDING_DISTANCE || distance % 4 != 0 {
            return;
        }
        let target = offset + distance as usize;
        if target >= self.section.data.len() {
            return;
        }
        if self.registers.iter().all(|value| *value == Value::Unknown) {
            // Nothing to carry, and nothing the other branches to `target` agree on.
            self.pending.remove(&target);
            return;
        }
        let full = self.pending.len() >= MAX_PENDING;
        match self.pending.get_mut(&target) {
            Some(saved) => {
                for (saved, current) in saved.iter_mut().zip(self.registers.iter()) {
                    if saved != current {
                        *saved = Value::Unknown;
                    }
                }
            }
            None if !full => {
                self.pending.insert(target, Box::new(self.registers));
            }
            None => {}
        }
    }

    fn step(&mut self, op: Op, offset: usize) {
        let rva = self.rva(offset);
        match op {
            Op::MoveWide {
                kind,
                x,
                rd,
                imm16,
                shift,
            } => {
                let imm = u64::from(imm16) << shift;
                let value = match kind {
                    Wide::Z => Value::constant(imm),
                    Wide::N => Value::constant(!imm),
                    Wide::K => {
                        let half = 1u8 << (shift / 16);
                        match self.register(rd) {
                            Value::Bits { value, known } => Value::Bits {
                                value: (value & !(0xFFFF << shift)) | imm,
                                known: known | half,
                            },
                            _ => Value::Bits {
                                value: imm,
                                known: half,
                            },
                        }
                    }
                };
                let value = if x { value } else { value.w() };
                self.define(rd, value, x);
            }
            Op::MoveRegister { x, rd, rm } => {
                let value = self.register_or_zero(rm);
                self.set(rd, if x { value } else { value.w() });
            }
            Op::AddSub {
                x,
                sub,
                flags,
                rd,
                rn,
                imm,
            } => {
                // Register 31 is the stack pointer here: not tracked.
                let source = if rn == 31 {
                    Value::Unknown
                } else {
                    self.register(rn)
                };
                let imm = u64::from(imm);
                let apply = |v: u64| {
                    if sub {
                        v.wrapping_sub(imm)
                    } else {
                        v.wrapping_add(imm)
                    }
                };
                let value = match source {
                    Value::Address(va) if x => Value::Address(apply(va)),
                    _ => source.map_bits(x, apply),
                };
                let value = if x { value } else { value.w() };
                self.define(rd, value, false);
                // The stack pointer and the frame pointer, as offsets from the entry's sp.
                let delta = if sub {
                    -i64::from(imm as u32)
                } else {
                    i64::from(imm as u32)
                };
                let base = match rn {
                    31 => self.stack.sp,
                    29 => self.stack.fp,
                    _ => None,
                };
                let moved = base.filter(|_| x && !flags).map(|b| b + delta);
                match rd {
                    31 if !flags => self.stack.sp = moved,
                    29 => self.stack.fp = moved,
                    _ => {}
                }
            }
            Op::Logical {
                x,
                kind,
                rd,
                rn,
                imm,
            } => {
                let source = self.register_or_zero(rn);
                let value = source.map_bits(x, |v| match kind {
                    Logic::And | Logic::Ands => v & imm,
                    Logic::Orr => v | imm,
                    Logic::Eor => v ^ imm,
                });
                let value = if x { value } else { value.w() };
                self.define(rd, value, false);
            }
            Op::Adr { rd, offset } => {
                let va = self.va(rva).wrapping_add(offset as u64);
                self.set(rd, Value::Address(va));
            }
            Op::Adrp { rd, offset } => {
                let va = (self.va(rva) & !0xFFF).wrapping_add(offset as u64);
                self.set(rd, Value::Address(va));
            }
            Op::LoadLiteral { x, rt, offset } => {
                let size = if x { 8 } else { 4 };
                let value = Self::target(rva, offset)
                    .and_then(|at| self.bytes_at(at, size))
                    .filter(|bytes| bytes.len() == size)
                    .map(|bytes| {
                        let mut value = [0u8; 8];
                        value[..size].copy_from_slice(bytes);
                        Value::constant(u64::from_le_bytes(value))
                    });
                match value {
                    Some(value) => self.define(rt, value, x),
                    None => self.set(rt, Value::Unknown),
                }
            }
            Op::LoadX { rt, rn, offset } => {
                let value = match self.register(rn) {
                    Value::Address(va) if rn != 31 => self
                        .image
                        .rva_of_va(va.wrapping_add(u64::from(offset)))
                        .filter(|slot| self.image.imports.contains_key(slot))
                        .map_or(Value::Unknown, Value::Import),
                    _ => Value::Unknown,
                };
                self.set(rt, value);
            }
            Op::Bl { offset } => {
                let callee = self.direct_callee(Self::target(rva, offset));
                self.at_call(callee, rva, false);
                self.after_call();
            }
            Op::Blr { rn } => {
                let callee = self.register_callee(rn);
                self.at_call(callee, rva, false);
                self.after_call();
            }
            Op::OtherCall => {
                self.at_call(Callee::Unknown, rva, false);
                self.after_call();
            }
            Op::B { offset: distance } => {
                let target = Self::target(rva, distance);
                let callee = self.direct_callee(target);
                // A jump to a function is a tail call; one to a mere jump target may be a
                // jump inside the function, whose state the target needs.
                let jumped = target.and_then(|t| self.summaries.start(t)) == Some(Start::Jumped);
                if !self.at_call(callee, rva, true) || jumped {
                    self.branch(offset, distance);
                }
                self.clear();
            }
            Op::Br { rn } => {
                // The stack stays: a `br` through a jump table continues the function.
                let callee = self.register_callee(rn);
                self.at_call(callee, rva, true);
                self.clear();
            }
            Op::Ret { .. } | Op::Stop => {
                self.clear();
                self.stack = Stack::default();
            }
            Op::CondBranch { offset: distance } => self.branch(offset, distance),
            Op::Other { writes } => self.forget(writes),
        }
    }

    /// After a call: the registers a callee may change (x0..x18, and x30 the link register).
    fn after_call(&mut self) {
        // The stack slots stay: arguments travel in registers (the analysis reads no stack
        // arguments), so the frame holds locals a callee cannot reach (-O0 code spills an IAT
        // entry there across calls).
        self.forget(0x4007_FFFF);
    }

    /// The values a store writes: its register(s), read before the instruction.
    fn stored(&self, access: Access) -> (Value, Value) {
        let value = |r: u8| {
            let value = self.register_or_zero(r);
            if access.size == 4 { value.w() } else { value }
        };
        (value(access.rt), access.rt2.map_or(Value::Unknown, value))
    }

    /// A load or store through the stack pointer or x29: a store of a 4- or 8-byte register
    /// fills a slot, a load from a known slot fills the register; a pre/post-index access
    /// moves the stack pointer.
    fn track_stack(&mut self, access: Access, stored: Option<(Value, Value)>) {
        let at = self.stack.at(access.rn, access.offset);
        let wide = access.size == 4 || access.size == 8;
        let registers = [Some(access.rt), access.rt2];
        for (i, r) in registers.into_iter().enumerate() {
            let (Some(r), Some(at)) = (r, at) else {
                continue;
            };
            let at = at + i as i64 * access.size;
            match stored {
                Some((first, second)) => {
                    let value = if i == 0 { first } else { second };
                    let value = if wide { value } else { Value::Unknown };
                    self.stack.store(at, access.size, value);
                }
                None if wide && r < 31 => {
                    let value = self.stack.slot(at);
                    self.set(r, if access.size == 4 { value.w() } else { value });
                }
                None => {}
            }
        }
        if access.writeback != 0 {
            match access.rn {
                31 => self.stack.sp = self.stack.sp.map(|sp| sp + access.writeback),
                29 => self.stack.fp = None,
                _ => {}
            }
        }
    }

    /// Records what a call, or a jump when `tail`, passes; false for a plain jump.
    fn at_call(&mut self, callee: Callee, rva: u32, tail: bool) -> bool {
        match callee {
            Callee::Api(api) => {
                // An import thunk (`adrp; ldr; br`) is no use of the API of its own.
                let thunk = self.function.is_some_and(|f| self.thunk_slot(f).is_some());
                let value = match api.tag {
                    None if thunk => Value::Unknown,
                    None => Value::constant(u64::from(UNTAGGED)),
                    Some(tag) => usize::from(tag.number)
                        .checked_sub(1)
                        .and_then(|r| self.registers.get(r))
                        .copied()
                        .unwrap_or(Value::Unknown),
                };
                match (value.low32(), value, self.function) {
                    (Some(value), _, _) => self.findings.call(api.name, value, rva, self.section),
                    (None, Value::Argument(k), Some(function)) => {
                        self.summaries.reaches(function, k, api.name);
                    }
                    _ => {}
                }
            }
            Callee::Function(target) => {
                for n in 0..ARGUMENTS {
                    match (self.register(n).low32(), self.register(n), self.function) {
                        (Some(value), _, _) => {
                            self.summaries.constant(value, target, n, rva, tail);
                        }
                        (None, Value::Argument(k), Some(function)) => {
                            self.summaries.passes(function, k, target, n);
                        }
                        _ => {}
                    }
                }
            }
            Callee::Unknown if tail => return false,
            Callee::Import(_) | Callee::Unknown => {
                let image = self.image;
                let name = match callee {
                    Callee::Import(slot) => image.imports.get(&slot).map(|i| i.name.as_str()),
                    _ => None,
                };
                for r in 0..usize::from(ARGUMENTS) {
                    if let Some(value) = self.registers[r].low32() {
                        self.findings.arg(name, value, rva, self.section);
                    }
                }
            }
        }
        true
    }

    /// The IAT slot of an `ADRP xN; LDR xN, [xN, #off]; BR xN` thunk at `target`.
    fn thunk_slot(&mut self, target: u32) -> Option<u32> {
        if let Some(known) = self.thunks.get(&target) {
            return *known;
        }
        let slot = self.decode_thunk(target);
        if self.thunks.len() < MAX_THUNK_CACHE {
            self.thunks.insert(target, slot);
        }
        slot
    }

    fn decode_thunk(&self, target: u32) -> Option<u32> {
        let bytes = self.bytes_at(target, 12)?;
        let word = |i: usize| -> Option<u32> {
            let b = bytes.get(4 * i..4 * i + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let (first, second, third) = (decode(word(0)?), decode(word(1)?), decode(word(2)?));
        match (first, second, third) {
            (Op::Adrp { rd, offset: page }, Op::LoadX { rt, rn, offset }, Op::Br { rn: jump })
                if rd != 31 && rt == rd && rn == rd && jump == rd =>
            {
                let va = (self.va(target) & !0xFFF)
                    .wrapping_add(page as u64)
                    .wrapping_add(u64::from(offset));
                let slot = self.image.rva_of_va(va)?;
                self.image.imports.contains_key(&slot).then_some(slot)
            }
            _ => None,
        }
    }
}

/// The kind of a move-wide instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wide {
    /// MOVZ: `imm16 << shift`, the other bits zero.
    Z,
    /// MOVN: the complement of `imm16 << shift`.
    N,
    /// MOVK: `imm16` into bits `shift..shift+16`, the other bits kept.
    K,
}

/// The operation of a logical-immediate instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Logic {
    And,
    Orr,
    Eor,
    Ands,
}

/// One decoded instruction, as far as the analysis cares. Register numbers are 0..=31; what 31
/// means (the zero register or the stack pointer) depends on the form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// MOVZ / MOVN / MOVK: `x` for the 64-bit form; `shift` is 0 or 16 (32-bit), up to 48.
    MoveWide {
        kind: Wide,
        x: bool,
        rd: u8,
        imm16: u16,
        shift: u8,
    },
    /// `MOV Wd, Wm` / `MOV Xd, Xm` (ORR shifted register, Rn = ZR, LSL #0); `rm` 31 is ZR.
    MoveRegister { x: bool, rd: u8, rm: u8 },
    /// ADD / ADDS / SUB / SUBS (immediate): `imm` already shifted. `rn` 31 is SP; `rd` 31 is SP
    /// (ZR when `flags`).
    AddSub {
        x: bool,
        sub: bool,
        flags: bool,
        rd: u8,
        rn: u8,
        imm: u32,
    },
    /// AND / ORR / EOR / ANDS (immediate), the bit mask decoded; `rn` 31 is ZR.
    Logical {
        x: bool,
        kind: Logic,
        rd: u8,
        rn: u8,
        imm: u64,
    },
    /// ADR: `rd` = PC + `offset`.
    Adr { rd: u8, offset: i64 },
    /// ADRP: `rd` = page of PC + `offset` (a multiple of 4096).
    Adrp { rd: u8, offset: i64 },
    /// `LDR Wt|Xt, <PC + offset>`.
    LoadLiteral { x: bool, rt: u8, offset: i64 },
    /// `LDR Xt, [Xn, #offset]` (unsigned offset form); `rn` 31 is SP.
    LoadX { rt: u8, rn: u8, offset: u32 },
    /// BL: call PC + `offset`.
    Bl { offset: i64 },
    /// B: jump to PC + `offset`.
    B { offset: i64 },
    /// BLR Xn.
    Blr { rn: u8 },
    /// BR Xn.
    Br { rn: u8 },
    /// RET Xn.
    Ret { rn: u8 },
    /// B.cond, CBZ, CBNZ, TBZ, TBNZ to PC + `offset`.
    CondBranch { offset: i64 },
    /// Another call (BLRAA and the like): a call to an unknown target.
    OtherCall,
    /// The end of straight-line code (ERET, BRAA, BRK...) or an unallocated word.
    Stop,
    /// Anything else, with the general-purpose registers it may write (bit per register).
    Other { writes: u32 },
}

/// The two forms of a table read ([`Analysis::table_load`]): `LDR Wt, [Xn, Xm, LSL #2]`, and
/// `ADD Xd, Xn, Xm, LSL #2` (or `Wm, UXTW #2`), which makes an element's address.
fn table_forms(word: u32) -> (bool, bool) {
    let indexed = word & 0xFFE0_1C00 == 0xB860_1800;
    let element = word & 0xFFE0_FC00 == 0x8B00_0800 || word & 0xFFE0_FC00 == 0x8B20_4800;
    (indexed, element)
}

/// `B` or `BL` with its offset: the one test the scan for call targets needs of every word.
fn branch_immediate(word: u32) -> Option<Op> {
    let offset = sign_extend(bits(word, 0, 26), 26) * 4;
    match word & 0xFC00_0000 {
        0x1400_0000 => Some(Op::B { offset }),
        0x9400_0000 => Some(Op::Bl { offset }),
        _ => None,
    }
}

/// Bits `low..low+len` of `word`.
fn bits(word: u32, low: u32, len: u32) -> u32 {
    (word >> low) & ((1 << len) - 1)
}

/// Register field at bit `low`.
fn reg(word: u32, low: u32) -> u8 {
    bits(word, low, 5) as u8
}

/// `value`, a `len`-bit two's complement number, sign-extended.
fn sign_extend(value: u32, len: u32) -> i64 {
    let shift = 64 - len;
    (i64::from(value) << shift) >> shift
}

/// DecodeBitMasks of the ARM ARM for a logical immediate: `None` when reserved.
fn bit_mask(n: u32, imms: u32, immr: u32, x: bool) -> Option<u64> {
    if !x && n == 1 {
        return None;
    }
    let combined = (n << 6) | (!imms & 0x3F);
    if combined == 0 {
        return None;
    }
    let len = 31 - combined.leading_zeros();
    if len < 1 {
        return None;
    }
    let size = 1u32 << len;
    let levels = size - 1;
    let s = imms & levels;
    let r = immr & levels;
    if s == levels {
        return None;
    }
    let element_mask = if size == 64 {
        u64::MAX
    } else {
        (1u64 << size) - 1
    };
    let ones = (1u64 << (s + 1)) - 1;
    let element = if r == 0 {
        ones
    } else {
        ((ones >> r) | (ones << (size - r))) & element_mask
    };
    let mut mask = element;
    let mut width = size;
    while width < 64 {
        mask |= mask << width;
        width *= 2;
    }
    Some(if x { mask } else { mask & 0xFFFF_FFFF })
}

/// Decodes one instruction word.
fn decode(word: u32) -> Op {
    if let Some(branch) = branch_immediate(word) {
        return branch;
    }
    let x = word >> 31 == 1;
    let rd = reg(word, 0);
    let rn = reg(word, 5);
    match word & 0x1F80_0000 {
        // Move wide (immediate).
        0x1280_0000 => {
            let hw = bits(word, 21, 2);
            let kind = match bits(word, 29, 2) {
                0b00 => Wide::N,
                0b10 => Wide::Z,
                0b11 => Wide::K,
                _ => return Op::Stop,
            };
            if !x && hw >= 2 {
                return Op::Stop;
            }
            return Op::MoveWide {
                kind,
                x,
                rd,
                imm16: bits(word, 5, 16) as u16,
                shift: (hw * 16) as u8,
            };
        }
        // Logical (immediate).
        0x1200_0000 => {
            let kind = match bits(word, 29, 2) {
                0b00 => Logic::And,
                0b01 => Logic::Orr,
                0b10 => Logic::Eor,
                _ => Logic::Ands,
            };
            return match bit_mask(bits(word, 22, 1), bits(word, 10, 6), bits(word, 16, 6), x) {
                Some(imm) => Op::Logical {
                    x,
                    kind,
                    rd,
                    rn,
                    imm,
                },
                None => Op::Stop,
            };
        }
        // Add/subtract (immediate).
        0x1100_0000 => {
            let imm12 = bits(word, 10, 12);
            return Op::AddSub {
                x,
                sub: bits(word, 30, 1) == 1,
                flags: bits(word, 29, 1) == 1,
                rd,
                rn,
                imm: if bits(word, 22, 1) == 1 {
                    imm12 << 12
                } else {
                    imm12
                },
            };
        }
        _ => {}
    }
    if word & 0x1F00_0000 == 0x1000_0000 {
        let imm = (bits(word, 5, 19) << 2) | bits(word, 29, 2);
        let offset = sign_extend(imm, 21);
        return if x {
            Op::Adrp {
                rd,
                offset: offset << 12,
            }
        } else {
            Op::Adr { rd, offset }
        };
    }
    if word & 0x7FE0_FFE0 == 0x2A00_03E0 {
        return Op::MoveRegister {
            x,
            rd,
            rm: reg(word, 16),
        };
    }
    let imm19 = sign_extend(bits(word, 5, 19), 19) * 4;
    match word & 0xFF00_0000 {
        0x1800_0000 => {
            return Op::LoadLiteral {
                x: false,
                rt: rd,
                offset: imm19,
            };
        }
        0x5800_0000 => {
            return Op::LoadLiteral {
                x: true,
                rt: rd,
                offset: imm19,
            };
        }
        0x5400_0000 => return Op::CondBranch { offset: imm19 },
        _ => {}
    }
    if word & 0xFFC0_0000 == 0xF940_0000 {
        return Op::LoadX {
            rt: rd,
            rn,
            offset: bits(word, 10, 12) * 8,
        };
    }
    match word & 0x7E00_0000 {
        // CBZ / CBNZ.
        0x3400_0000 => return Op::CondBranch { offset: imm19 },
        // TBZ / TBNZ.
        0x3600_0000 => {
            return Op::CondBranch {
                offset: sign_extend(bits(word, 5, 14), 14) * 4,
            };
        }
        _ => {}
    }
    match word & 0xFFFF_FC1F {
        0xD61F_0000 => return Op::Br { rn },
        0xD63F_0000 => return Op::Blr { rn },
        0xD65F_0000 => return Op::Ret { rn },
        _ => {}
    }
    other(word)
}

/// What an instruction not decoded otherwise may do to the general-purpose registers.
fn other(word: u32) -> Op {
    let rt = 1u32 << bits(word, 0, 5);
    let rn = 1u32 << bits(word, 5, 5);
    let rt2 = 1u32 << bits(word, 10, 5);
    let rs = 1u32 << bits(word, 16, 5);
    let writes = |mask: u32| Op::Other {
        writes: mask & 0x7FFF_FFFF,
    };
    match bits(word, 25, 4) {
        // Reserved, SME, unallocated.
        0b0000 | 0b0001 | 0b0011 => Op::Stop,
        // SVE, data processing (immediate, register), SIMD and floating point.
        0b0010 | 0b1000 | 0b1001 | 0b0101 | 0b1101 | 0b0111 | 0b1111 => {
            // Conditional compare writes only the flags.
            if word & 0x1FE0_0000 == 0x1A40_0000 {
                writes(0)
            } else {
                writes(rt)
            }
        }
        // Branches, exception generation, system instructions.
        0b1010 | 0b1011 => {
            if word & 0xFE00_0000 == 0xD600_0000 {
                // Unconditional branch (register), the forms not decoded: BLRAA... call.
                let opc = bits(word, 21, 4);
                if opc & 1 == 1 && opc != 0b0101 {
                    Op::OtherCall
                } else {
                    Op::Stop
                }
            } else if word & 0xFF00_0000 == 0xD400_0000 {
                Op::Stop
            } else if word & 0xFFC0_0000 == 0xD500_0000 {
                // System: MRS and SYSL (L = 1) write Rt.
                writes(if bits(word, 21, 1) == 1 { rt } else { 0 })
            } else {
                Op::Stop
            }
        }
        // Loads and stores.
        _ => {
            let load = bits(word, 22, 2) != 0;
            match bits(word, 28, 2) {
                // Load/store pair: L is bit 22; pre/post-index write the base back.
                0b10 => {
                    let load = bits(word, 22, 1) == 1;
                    let back = bits(word, 23, 1) == 1;
                    writes(if load { rt | rt2 } else { 0 } | if back { rn } else { 0 })
                }
                0b11 => {
                    if bits(word, 24, 1) == 1 {
                        // Unsigned offset.
                        writes(if load { rt } else { 0 })
                    } else if bits(word, 21, 1) == 0 {
                        // Unscaled, post-index, unprivileged, pre-index.
                        let index = bits(word, 10, 2);
                        let back = index == 0b01 || index == 0b11;
                        writes(if load { rt } else { 0 } | if back { rn } else { 0 })
                    } else {
                        match bits(word, 10, 2) {
                            // Register offset.
                            0b10 => writes(if load { rt } else { 0 }),
                            // Atomic memory operations write Rt whatever bits 23:22 say.
                            0b00 => writes(rt),
                            // Pointer-authenticated loads, with writeback when bit 11 is set.
                            _ => writes(rt | if bits(word, 11, 1) == 1 { rn } else { 0 }),
                        }
                    }
                }
                // Exclusive, ordered, literal, SIMD structures, memory copy...: any field may be
                // written.
                _ => writes(rt | rn | rt2 | rs),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Evidence;
    use crate::extract::image::{Arch, Import};
    use crate::tag::Tag;

    /// A word the region scan skips is one `Region::needs_tracking` would neither follow nor
    /// be moved by: 4,096 words for each top byte.
    #[test]
    fn the_words_skipped_are_none_a_region_looks_at() {
        let looked_at = |word: u32| {
            let (indexed, element) = table_forms(word);
            indexed
                || element
                || access(word).is_some_and(|a| a.rn == 31 || a.rn == 29)
                || matches!(
                    decode(word),
                    Op::MoveWide { .. }
                        | Op::MoveRegister { .. }
                        | Op::AddSub { .. }
                        | Op::Logical { .. }
                        | Op::LoadLiteral { .. }
                        | Op::Adr { .. }
                        | Op::Adrp { .. }
                )
        };
        let (mut state, mut skipped) = (0x9E37_79B9u32, 0);
        for top in 0..=255u32 {
            for _ in 0..4096 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let word = top << 24 | state & 0x00FF_FFFF;
                if !may_matter(word) {
                    assert!(!looked_at(word), "{word:#010x}");
                    skipped += 1;
                }
            }
        }
        // Most of the word space needs no look: the skip is worth its test.
        assert!(skipped > 700_000, "{skipped}");
    }

    // --- A tiny assembler for the tests; each helper is checked against llvm-mc below. ---

    fn movz_w(rd: u32, imm: u32, shift: u32) -> u32 {
        0x5280_0000 | (shift / 16) << 21 | imm << 5 | rd
    }
    fn movk_w(rd: u32, imm: u32, shift: u32) -> u32 {
        0x7280_0000 | (shift / 16) << 21 | imm << 5 | rd
    }
    fn mov_x(rd: u32, rm: u32) -> u32 {
        0xAA00_03E0 | rm << 16 | rd
    }
    fn mov_w(rd: u32, rm: u32) -> u32 {
        0x2A00_03E0 | rm << 16 | rd
    }
    fn add_w(rd: u32, rn: u32, imm12: u32, shift12: bool) -> u32 {
        0x1100_0000 | u32::from(shift12) << 22 | imm12 << 10 | rn << 5 | rd
    }
    fn sub_w(rd: u32, rn: u32, imm12: u32, shift12: bool) -> u32 {
        add_w(rd, rn, imm12, shift12) | 0x4000_0000
    }
    /// ADRP `rd` of the page `pages` pages after the instruction's.
    fn adrp(rd: u32, pages: u32) -> u32 {
        0x9000_0000 | (pages & 3) << 29 | (pages >> 2 & 0x7FFFF) << 5 | rd
    }
    fn ldr_x(rt: u32, rn: u32, offset: u32) -> u32 {
        0xF940_0000 | (offset / 8) << 10 | rn << 5 | rt
    }
    fn ldr_w_literal(rt: u32, offset: i32) -> u32 {
        0x1800_0000 | ((offset / 4) as u32 & 0x7FFFF) << 5 | rt
    }
    fn bl(offset: i32) -> u32 {
        0x9400_0000 | ((offset / 4) as u32 & 0x3FF_FFFF)
    }
    fn b(offset: i32) -> u32 {
        0x1400_0000 | ((offset / 4) as u32 & 0x3FF_FFFF)
    }
    fn cbz_x(rt: u32, offset: i32) -> u32 {
        0xB400_0000 | ((offset / 4) as u32 & 0x7FFFF) << 5 | rt
    }
    fn blr(rn: u32) -> u32 {
        0xD63F_0000 | rn << 5
    }
    fn br(rn: u32) -> u32 {
        0xD61F_0000 | rn << 5
    }
    const RET: u32 = 0xD65F_03C0;
    const NOP: u32 = 0xD503_201F;

    /// The tag displayed as `text`, as a value.
    fn value(text: &str) -> u32 {
        u32::from_le_bytes(text.as_bytes().try_into().unwrap())
    }
    fn lo(text: &str) -> u32 {
        value(text) & 0xFFFF
    }
    fn hi(text: &str) -> u32 {
        value(text) >> 16
    }

    #[test]
    fn the_test_assembler_matches_llvm_mc() {
        // Encodings printed by `llvm-mc --triple=aarch64 -show-encoding`.
        assert_eq!(movz_w(2, 0x4231, 0), 0x5288_4622); // mov w2, #16945
        assert_eq!(movk_w(2, 0x3161, 16), 0x72A6_2C22); // movk w2, #12641, lsl #16
        assert_eq!(mov_x(19, 0), 0xAA00_03F3); // mov x19, x0
        assert_eq!(mov_w(2, 1), 0x2A01_03E2); // mov w2, w1
        assert_eq!(add_w(2, 23, 0xF0, true), 0x1143_C2E2); // add w2, w23, #240, lsl #12
        assert_eq!(sub_w(2, 23, 0xF0, true), 0x5143_C2E2); // sub w2, w23, #240, lsl #12
        assert_eq!(adrp(21, 1), 0xB000_0015); // adrp x21, #4096
        assert_eq!(ldr_x(21, 21, 120), 0xF940_3EB5); // ldr x21, [x21, #120]
        assert_eq!(ldr_w_literal(2, 8), 0x1800_0042); // ldr w2, #8
        assert_eq!(bl(64), 0x9400_0010); // bl #64
        assert_eq!(b(-12), 0x17FF_FFFD); // b #-12
        assert_eq!(cbz_x(0, 128), 0xB400_0400); // cbz x0, #128
        assert_eq!(blr(21), 0xD63F_02A0); // blr x21
        assert_eq!(br(2), 0xD61F_0040); // br x2
    }

    // --- The decoder, form by form (words from llvm-mc). ---

    #[test]
    fn decodes_move_wide() {
        let wide = |kind, x, rd, imm16, shift| Op::MoveWide {
            kind,
            x,
            rd,
            imm16,
            shift,
        };
        // mov w2, #16945
        assert_eq!(decode(0x5288_4622), wide(Wide::Z, false, 2, 0x4231, 0));
        // movk w2, #12641, lsl #16
        assert_eq!(decode(0x72A6_2C22), wide(Wide::K, false, 2, 0x3161, 16));
        // mov w3, #828440576 (movz w3, #0x3161, lsl #16)
        assert_eq!(decode(0x52A6_2C23), wide(Wide::Z, false, 3, 0x3161, 16));
        // mov w0, #-1 (movn)
        assert_eq!(decode(0x1280_0000), wide(Wide::N, false, 0, 0, 0));
        // mov x5, #0x1234 << 48
        assert_eq!(decode(0xD2E2_4685), wide(Wide::Z, true, 5, 0x1234, 48));
        // movk x5, #22136, lsl #32
        assert_eq!(decode(0xF2CA_CF05), wide(Wide::K, true, 5, 0x5678, 32));
        // mov x7, #-65537 (movn x7, #1, lsl #16)
        assert_eq!(decode(0x92A0_0027), wide(Wide::N, true, 7, 1, 16));
        // 32-bit with hw = 2 is unallocated.
        assert_eq!(decode(0x52C0_0000), Op::Stop);
        // opc = 01 is unallocated.
        assert_eq!(decode(0x3280_0000), Op::Stop);
    }

    #[test]
    fn decodes_register_moves() {
        // mov w2, w1
        assert_eq!(
            decode(0x2A01_03E2),
            Op::MoveRegister {
                x: false,
                rd: 2,
                rm: 1
            }
        );
        // mov x19, x0
        assert_eq!(
            decode(0xAA00_03F3),
            Op::MoveRegister {
                x: true,
                rd: 19,
                rm: 0
            }
        );
        // mov w4, wzr
        assert_eq!(
            decode(0x2A1F_03E4),
            Op::MoveRegister {
                x: false,
                rd: 4,
                rm: 31
            }
        );
        // orr w2, wzr, w1, lsr #0 is not the alias: any register written.
        assert_eq!(decode(0x2A41_03E2), Op::Other { writes: 1 << 2 });
        // orr w2, w3, w1 (Rn is not zr)
        assert_eq!(decode(0x2A01_0062), Op::Other { writes: 1 << 2 });
    }

    #[test]
    fn decodes_add_sub_immediate() {
        let add = |x, sub, flags, rd, rn, imm| Op::AddSub {
            x,
            sub,
            flags,
            rd,
            rn,
            imm,
        };
        // add w2, w23, #240, lsl #12
        assert_eq!(
            decode(0x1143_C2E2),
            add(false, false, false, 2, 23, 0xF0000)
        );
        // sub w2, w23, #240, lsl #12
        assert_eq!(decode(0x5143_C2E2), add(false, true, false, 2, 23, 0xF0000));
        // add w1, w23, #16
        assert_eq!(decode(0x1100_42E1), add(false, false, false, 1, 23, 16));
        // adds w3, w4, #1
        assert_eq!(decode(0x3100_0483), add(false, false, true, 3, 4, 1));
        // add x0, x0, #128
        assert_eq!(decode(0x9102_0000), add(true, false, false, 0, 0, 128));
    }

    #[test]
    fn decodes_logical_immediate() {
        let logical = |x, kind, rd, rn, imm| Op::Logical {
            x,
            kind,
            rd,
            rn,
            imm,
        };
        // orr w2, w23, #0x10000
        assert_eq!(
            decode(0x3210_02E2),
            logical(false, Logic::Orr, 2, 23, 0x10000)
        );
        // eor w2, w23, #0xff
        assert_eq!(decode(0x5200_1EE2), logical(false, Logic::Eor, 2, 23, 0xFF));
        // and w2, w23, #0xffff
        assert_eq!(
            decode(0x1200_3EE2),
            logical(false, Logic::And, 2, 23, 0xFFFF)
        );
        // orr x2, x23, #0x8000000080000000
        assert_eq!(
            decode(0xB201_02E2),
            logical(true, Logic::Orr, 2, 23, 0x8000_0000_8000_0000)
        );
        // mov w0, #-1073741823 (orr w0, wzr, #0xc0000001)
        assert_eq!(
            decode(0x3202_0BE0),
            logical(false, Logic::Orr, 0, 31, 0xC000_0001)
        );
        // N = 1 in a 32-bit instruction is unallocated.
        assert_eq!(decode(0x3240_0000), Op::Stop);
    }

    #[test]
    fn decodes_addresses_and_loads() {
        // adrp x21, #4096
        assert_eq!(
            decode(0xB000_0015),
            Op::Adrp {
                rd: 21,
                offset: 4096
            }
        );
        // adr x0, #16
        assert_eq!(decode(0x1000_0080), Op::Adr { rd: 0, offset: 16 });
        // ldr x21, [x21, #120]
        assert_eq!(
            decode(0xF940_3EB5),
            Op::LoadX {
                rt: 21,
                rn: 21,
                offset: 120
            }
        );
        // ldr w2, #8
        assert_eq!(
            decode(0x1800_0042),
            Op::LoadLiteral {
                x: false,
                rt: 2,
                offset: 8
            }
        );
        // ldr x3, #-8
        assert_eq!(
            decode(0x58FF_FFC3),
            Op::LoadLiteral {
                x: true,
                rt: 3,
                offset: -8
            }
        );
    }

    #[test]
    fn decodes_branches() {
        assert_eq!(decode(0x9400_0010), Op::Bl { offset: 64 }); // bl #64
        assert_eq!(decode(0x17FF_FFFD), Op::B { offset: -12 }); // b #-12
        assert_eq!(decode(0xD63F_02A0), Op::Blr { rn: 21 }); // blr x21
        assert_eq!(decode(0xD61F_0040), Op::Br { rn: 2 }); // br x2
        assert_eq!(decode(0xD65F_03C0), Op::Ret { rn: 30 }); // ret
        assert_eq!(decode(0x5400_0080), Op::CondBranch { offset: 16 }); // b.eq #16
        assert_eq!(decode(0xB400_0400), Op::CondBranch { offset: 128 }); // cbz x0, #128
        assert_eq!(decode(0x37F8_0160), Op::CondBranch { offset: 44 }); // tbnz w0, #31, #44
        assert_eq!(decode(0xD73F_0822), Op::OtherCall); // blraa x1, x2
        assert_eq!(decode(0xD43E_0060), Op::Stop); // brk #0xf003
        assert_eq!(decode(0x0000_0000), Op::Stop); // udf #0
    }

    #[test]
    fn decodes_the_loads_and_stores_the_frame_tracking_reads() {
        // Words from llvm-mc; (load, size, rt, rt2, rn, offset, writeback).
        let a = |load, size, rt, rt2, rn, offset, writeback| {
            Some(Access {
                load,
                size,
                rt,
                rt2,
                rn,
                offset,
                writeback,
            })
        };
        // str w1, [sp, #4]; ldr x2, [x29, #16]
        assert_eq!(access(0xB900_07E1), a(false, 4, 1, None, 31, 4, 0));
        assert_eq!(access(0xF940_0BA2), a(true, 8, 2, None, 29, 16, 0));
        // stur w3, [x29, #-12]; ldur x4, [sp, #-8]
        assert_eq!(access(0xB81F_43A3), a(false, 4, 3, None, 29, -12, 0));
        assert_eq!(access(0xF85F_83E4), a(true, 8, 4, None, 31, -8, 0));
        // str x5, [sp, #-32]!; ldr w6, [sp], #16
        assert_eq!(access(0xF81E_0FE5), a(false, 8, 5, None, 31, -32, -32));
        assert_eq!(access(0xB841_07E6), a(true, 4, 6, None, 31, 0, 16));
        // stp x29, x30, [sp, #-16]!; ldp w7, w8, [sp, #8]; ldp x19, x20, [sp], #32
        assert_eq!(access(0xA9BF_7BFD), a(false, 8, 29, Some(30), 31, -16, -16));
        assert_eq!(access(0x2941_23E7), a(true, 4, 7, Some(8), 31, 8, 0));
        assert_eq!(access(0xA8C2_53F3), a(true, 8, 19, Some(20), 31, 0, 32));
        // strb w1, [sp, #3]: a 1-byte store, which only cancels.
        assert_eq!(access(0x3900_0FE1), a(false, 1, 1, None, 31, 3, 0));
        // ldr s0, [sp, #4] (SIMD), ldpsw, ldtr: not read.
        assert_eq!(access(0xBD40_07E0), None);
        assert_eq!(access(0x6941_0BE1), None);
        assert_eq!(access(0xB840_4BE1), None);
    }

    #[test]
    fn other_instructions_write_their_destinations() {
        let writes = |registers: &[u32]| Op::Other {
            writes: registers.iter().map(|r| 1 << r).sum(),
        };
        // stp x19, x20, [sp, #-48]!: a store; writes back sp (not tracked).
        assert_eq!(decode(0xA9BD_53F3), writes(&[]));
        // ldp x23, x30, [sp, #32]
        assert_eq!(decode(0xA942_7BF7), writes(&[23, 30]));
        // str w2, [x8], #4: post-index writes x8 back.
        assert_eq!(decode(0xB800_4502), writes(&[8]));
        // str x0, [x8, #16]
        assert_eq!(decode(0xF900_0900), writes(&[]));
        // ldr w2, [x9, w8, uxtw #2]
        assert_eq!(decode(0xB868_5922), writes(&[2]));
        // ldrh w8, [x20, #2]
        assert_eq!(decode(0x7940_0688), writes(&[8]));
        // ldr d0, [x8]: a SIMD load, conservatively x0.
        assert_eq!(decode(0xFD40_0100), writes(&[0]));
        // csel w2, w9, w8, hi
        assert_eq!(decode(0x1A88_8122), writes(&[2]));
        // ccmp x20, #0, #4, ne: flags only.
        assert_eq!(decode(0xFA40_1A84), writes(&[]));
        // stxr w9, x1, [x0]: the status register w9 (and conservatively the others).
        assert!(matches!(decode(0xC809_7C01), Op::Other { writes } if writes & (1 << 9) != 0));
        // ldadd w1, w2, [x0]: writes w2.
        assert!(matches!(decode(0xB821_0002), Op::Other { writes } if writes & (1 << 2) != 0));
        // mrs x0, tpidr_el1
        assert_eq!(decode(0xD538_D080), writes(&[0]));
        // nop
        assert_eq!(decode(NOP), writes(&[]));
    }

    #[test]
    fn bit_masks_follow_the_architecture() {
        // Reserved: all-ones element, and N:imms with no set bit.
        assert_eq!(bit_mask(0, 0b111111, 0, false), None);
        assert_eq!(bit_mask(1, 0b111111, 0, true), None);
        assert_eq!(bit_mask(0, 0b111100, 0, false), Some(0x5555_5555));
        assert_eq!(bit_mask(1, 0, 0, true), Some(1));
        // 63 ones rotated right by 63: all but bit 0.
        assert_eq!(bit_mask(1, 62, 63, true), Some(0xFFFF_FFFF_FFFF_FFFE));
        // 16 ones in 32-bit elements, rotated by 8.
        assert_eq!(bit_mask(0, 15, 8, true), Some(0xFF00_00FF_FF00_00FF));
    }

    // --- The analysis on hand-assembled code. ---

    const TEXT: u32 = 0x1000;
    const ALLOC: u32 = 0x2078; // ExAllocatePoolWithTag
    const FREE_POOL: u32 = 0x2080; // ExFreePool (no tag)
    const FREE: u32 = 0x2088; // ExFreePoolWithTag
    const LOOKASIDE: u32 = 0x2090; // ExInitializeLookasideListEx
    const UNTAGGED: u32 = 0x2098; // ExAllocatePool

    fn run_bytes(code: &[u8]) -> Findings {
        let mut rdata = vec![0u8; 0x100];
        rdata[0x40..0x44].copy_from_slice(b"Rd01");
        let imports = [
            (ALLOC, "ExAllocatePoolWithTag"),
            (FREE_POOL, "ExFreePool"),
            (FREE, "ExFreePoolWithTag"),
            (LOOKASIDE, "ExInitializeLookasideListEx"),
            (UNTAGGED, "ExAllocatePool"),
        ]
        .into_iter()
        .map(|(slot, name)| {
            let import = Import {
                module: "ntoskrnl.exe".into(),
                name: name.into(),
            };
            (slot, import)
        })
        .collect();
        let image = Image {
            arch: Arch::Arm64,
            image_base: 0x1_4000_0000,
            sections: vec![
                Section::for_test(".text", TEXT, code),
                Section::for_test(".rdata", 0x2000, &rdata),
            ],
            imports,
            exported_apis: HashMap::new(),
            export_names: Vec::new(),
            function_starts: Vec::new(),
        };
        let mut findings = Findings::default();
        crate::extract::analyse_image(&image, &mut findings);
        findings
    }

    fn run(words: &[u32]) -> Findings {
        assert!(
            words.len() * 4 < 0x1000,
            "the code must stay in the page before .rdata"
        );
        let code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        run_bytes(&code)
    }

    /// The sites as (tag, evidence, api, offset of the instruction).
    fn sites(findings: &Findings) -> Vec<(String, Evidence, Option<String>, u32)> {
        findings
            .sites
            .iter()
            .map(|s| (s.tag.to_string(), s.evidence, s.api.clone(), s.offset))
            .collect()
    }

    fn call(tag: &str, api: &str, offset: u32) -> (String, Evidence, Option<String>, u32) {
        (tag.into(), Evidence::Call, Some(api.into()), offset)
    }

    fn arg(tag: &str, api: Option<&str>, offset: u32) -> (String, Evidence, Option<String>, u32) {
        (tag.into(), Evidence::Arg, api.map(Into::into), offset)
    }

    fn level(findings: &Findings, tag: &str) -> Option<Evidence> {
        findings.levels.get(&Tag::from_value(value(tag))).copied()
    }

    #[test]
    fn a_movz_movk_tag_reaches_a_call_through_a_hoisted_iat_entry() {
        // basic.sys: adrp x21; mov w2, lo; ...; movk w2, hi; ldr x21, [x21, #0x78]; blr x21.
        let f = run(&[
            adrp(21, 1),
            movz_w(2, lo("1Ba1"), 0),
            movz_w(0, 512, 0),
            movk_w(2, hi("1Ba1"), 16),
            ldr_x(21, 21, ALLOC - 0x2000),
            blr(21),
            // x21 survives the call, w2 does not.
            blr(21),
            movz_w(2, lo("1Ba2"), 0),
            movk_w(2, hi("1Ba2"), 16),
            blr(21),
            RET,
        ]);
        assert_eq!(
            sites(&f),
            [
                call("1Ba1", "ExAllocatePoolWithTag", 0x14),
                call("1Ba2", "ExAllocatePoolWithTag", 0x24),
            ]
        );
    }

    #[test]
    fn the_halves_may_come_in_either_order() {
        let f = run(&[
            movz_w(1, hi("9Or1"), 16),
            adrp(8, 1),
            ldr_x(8, 8, FREE - 0x2000),
            movk_w(1, lo("9Or1"), 0),
            blr(8),
            RET,
        ]);
        assert_eq!(sites(&f), [call("9Or1", "ExFreePoolWithTag", 0x10)]);
    }

    #[test]
    fn a_lone_half_is_no_value() {
        // movk on an unknown register: only one half known.
        let f = run(&[
            movk_w(2, hi("1Ba1"), 16),
            adrp(8, 1),
            ldr_x(8, 8, ALLOC - 0x2000),
            blr(8),
            RET,
        ]);
        assert!(f.sites.is_empty());
        assert_eq!(level(&f, "1Ba1"), None);
    }

    #[test]
    fn tags_derived_with_immediates_are_values() {
        // freediff.sys: w23 = 2Fp1; 2Fa1 = sub w2, w23, #0xf0, lsl #12; 2Fq1 = orr w2, w23,
        // #0x10000 and add w1, w23, #0x10, lsl #12; lookaside.sys: add w6, w19, #0xa0, lsl #12.
        assert_eq!(value("2Fp1") - 0xF0000, value("2Fa1"));
        assert_eq!(value("2Fp1") | 0x10000, value("2Fq1"));
        let f = run(&[
            movz_w(23, lo("2Fp1"), 0),
            movk_w(23, hi("2Fp1"), 16),
            adrp(20, 1),
            ldr_x(20, 20, ALLOC - 0x2000),
            sub_w(2, 23, 0xF0, true),
            blr(20),     // 0x14
            0x3210_02E2, // orr w2, w23, #0x10000
            blr(20),     // 0x1c
            adrp(21, 1),
            ldr_x(21, 21, FREE - 0x2000),
            add_w(1, 23, 0x10, true),
            blr(21), // 0x2c
            adrp(22, 1),
            ldr_x(22, 22, LOOKASIDE - 0x2000),
            add_w(6, 23, 0x80, true), // 2Fp1 + 0x80 << 12 = 2Fx1
            blr(22),                  // 0x3c
            RET,
        ]);
        assert_eq!(
            sites(&f),
            [
                call("2Fa1", "ExAllocatePoolWithTag", 0x14),
                call("2Fq1", "ExAllocatePoolWithTag", 0x1c),
                call("2Fq1", "ExFreePoolWithTag", 0x2c),
                call("2Fx1", "ExInitializeLookasideListEx", 0x3c),
            ]
        );
        assert_eq!(level(&f, "2Fp1"), Some(Evidence::Code));
    }

    #[test]
    fn copies_keep_the_value() {
        let f = run(&[
            movz_w(9, lo("5Ca1"), 0),
            movk_w(9, hi("5Ca1"), 16),
            0x2A09_03E2, // mov w2, w9
            mov_x(19, 2),
            mov_x(2, 19),
            adrp(8, 1),
            ldr_x(8, 8, ALLOC - 0x2000),
            blr(8),
            RET,
        ]);
        assert_eq!(sites(&f), [call("5Ca1", "ExAllocatePoolWithTag", 0x1c)]);
    }

    #[test]
    fn a_literal_load_is_a_value() {
        let tag = value("Ml01");
        let f = run(&[
            ldr_w_literal(2, 16), // the word at 0x10
            adrp(8, 1),
            ldr_x(8, 8, ALLOC - 0x2000),
            blr(8),
            tag,
        ]);
        assert_eq!(sites(&f), [call("Ml01", "ExAllocatePoolWithTag", 0xc)]);
        // A literal in another section (.rdata, "Rd01" at 0x2040), and 64-bit literals.
        let f = run(&[
            ldr_w_literal(2, 0x1040),
            adrp(21, 1),
            ldr_x(21, 21, ALLOC - 0x2000),
            blr(21),
            0x5800_0062, // 0x10: ldr x2, #12 (the 8 bytes at 0x1c)
            blr(21),
            RET,
            value("Lo64"),
            value("Hi64"),
        ]);
        assert_eq!(
            sites(&f),
            [
                call("Lo64", "ExAllocatePoolWithTag", 0x14),
                call("Rd01", "ExAllocatePoolWithTag", 0xc),
            ]
        );
        assert_eq!(level(&f, "Hi64"), Some(Evidence::Code));
    }

    #[test]
    fn calls_and_tail_jumps_through_thunks() {
        // wrapper.sys / freediff.sys: bl thunk; b thunk; the thunk is adrp x16; ldr x16; br x16.
        let f = run(&[
            movz_w(2, lo("4Wi1"), 0),
            movk_w(2, hi("4Wi1"), 16),
            bl(0x20), // 0x08 -> thunk at 0x28
            movz_w(1, lo("4Wf1"), 0),
            movk_w(1, hi("4Wf1"), 16),
            b(0x14), // 0x14 -> thunk at 0x28: a tail jump; the thunk's IAT slot is ALLOC
            NOP,
            NOP,
            NOP,
            NOP,
            adrp(16, 1), // 0x28
            ldr_x(16, 16, ALLOC - 0x2000),
            br(16),
        ]);
        assert_eq!(sites(&f), [call("4Wi1", "ExAllocatePoolWithTag", 0x08)]);
        // 4Wf1 was in w1, not w2: the tail jump has no tag, the constant is `code` evidence.
        assert_eq!(level(&f, "4Wf1"), Some(Evidence::Code));
    }

    #[test]
    fn a_tail_jump_through_a_register() {
        // tailcall.sys: adrp x2; mov w1, lo; movk w1, hi; ldr x2, [x2, #off]; br x2.
        let f = run(&[
            adrp(2, 1),
            movz_w(1, lo("0Lf2"), 0),
            movk_w(1, hi("0Lf2"), 16),
            ldr_x(2, 2, FREE - 0x2000),
            br(2),
            // A protected tag: bit 31 set.
            adrp(3, 1),
            movz_w(2, 0x5030, 0),
            movk_w(2, 0xB170, 16),
            ldr_x(3, 3, ALLOC - 0x2000),
            br(3),
        ]);
        assert_eq!(
            sites(&f),
            [
                call("0Lf2", "ExFreePoolWithTag", 0x10),
                call("0Pp1", "ExAllocatePoolWithTag", 0x24),
            ]
        );
    }

    #[test]
    fn argument_registers_at_imports_and_unknown_callees_are_arg_sites() {
        let f = run(&[
            movz_w(1, lo("4Wr2"), 0),
            movz_w(0, 0x40, 0),
            movk_w(1, hi("4Wr2"), 16),
            bl(0x38), // 0x0c: an internal function at 0x44, which ignores its arguments
            movz_w(0, lo("4Wr3"), 0),
            movk_w(0, hi("4Wr3"), 16),
            adrp(8, 1),
            ldr_x(8, 8, FREE_POOL - 0x2000),
            blr(8), // 0x20: a non-pool import
            movz_w(19, lo("4Wr4"), 0),
            movk_w(19, hi("4Wr4"), 16),
            movz_w(3, lo("4Wr6"), 0),
            movk_w(3, hi("4Wr6"), 16),
            blr(9), // 0x34: unknown register; w19 is no argument, w3 is
            movz_w(7, lo("4Wr5"), 0),
            movk_w(7, hi("4Wr5"), 16),
            b(0x8), // 0x40: a plain jump is no call
            RET,
        ]);
        assert_eq!(
            sites(&f),
            [
                arg("4Wr3", Some("ExFreePool"), 0x20),
                arg("4Wr6", None, 0x34),
            ]
        );
        for tag in ["4Wr2", "4Wr4", "4Wr5"] {
            assert_eq!(level(&f, tag), Some(Evidence::Code), "{tag}");
        }
    }

    #[test]
    fn other_writes_cancel_a_value_and_stores_do_not() {
        let f = run(&[
            movz_w(2, lo("1Ba1"), 0),
            movk_w(2, hi("1Ba1"), 16),
            movz_w(5, lo("1Ba2"), 0),
            movk_w(5, hi("1Ba2"), 16),
            0xB900_0102, // str w2, [x8]
            0x7940_0685, // ldrh w5, [x20, #2]
            adrp(8, 1),
            ldr_x(8, 8, ALLOC - 0x2000),
            blr(8), // 0x20
            movz_w(2, lo("1Ba2"), 0),
            movk_w(2, hi("1Ba2"), 16),
            0x1A88_8122, // csel w2, w9, w8, hi
            adrp(8, 1),
            ldr_x(8, 8, ALLOC - 0x2000),
            blr(8),
            RET,
        ]);
        assert_eq!(sites(&f), [call("1Ba1", "ExAllocatePoolWithTag", 0x20)]);
    }

    #[test]
    fn conditional_branches_keep_the_state_and_unconditional_ones_clear_it() {
        let f = run(&[
            adrp(21, 1),
            ldr_x(21, 21, ALLOC - 0x2000),
            movz_w(2, lo("1Ba1"), 0),
            movk_w(2, hi("1Ba1"), 16),
            cbz_x(0, 0x20), // 0x10 -> 0x30
            blr(21),        // 0x14
            movz_w(2, lo("1Ba2"), 0),
            movk_w(2, hi("1Ba2"), 16),
            b(0x10), // 0x20 -> 0x30
            NOP,
            blr(21), // 0x28: only reached by some jump not seen: x21 unknown
            RET,
            // 0x30: reached by the cbz (state: x21 and w2 = 1Ba1) and the b (x21, w2 = 1Ba2).
            blr(21), // x21 agreed on, w2 did not
            RET,
        ]);
        assert_eq!(sites(&f), [call("1Ba1", "ExAllocatePoolWithTag", 0x14)]);
    }

    #[test]
    fn code_after_an_unconditional_branch_resumes_the_state_of_the_branches_to_it() {
        // cond.sys: the switch default is built after a `b` and reaches the hoisted `blr x21`.
        let f = run(&[
            adrp(21, 1),
            ldr_x(21, 21, ALLOC - 0x2000),
            blr(21),
            0x5400_0088,              // 0x0c: b.hi 0x1c
            0xB868_5922,              // ldr w2, [x9, w8, uxtw #2]
            b(0xc),                   // 0x14 -> 0x20
            NOP,                      // 0x18: not a branch target: nothing known
            movz_w(2, lo("5Sdf"), 0), // 0x1c
            movk_w(2, hi("5Sdf"), 16),
            blr(21), // 0x24: x21 from the b.hi, w2 from straight-line code
            RET,
        ]);
        assert_eq!(sites(&f), [call("5Sdf", "ExAllocatePoolWithTag", 0x24)]);
    }

    #[test]
    fn a_tag_passed_to_a_wrapper_by_a_call_or_a_tail_jump_is_a_call() {
        let f = run(&[
            movz_w(1, lo("AwR1"), 0),
            movk_w(1, hi("AwR1"), 16),
            movz_w(0, 0x40, 0),
            bl(0x14), // 0x0c -> the wrapper at 0x20
            movz_w(1, lo("AwR2"), 0),
            movk_w(1, hi("AwR2"), 16),
            b(0x8), // 0x18 -> 0x20: a tail jump
            NOP,
            // 0x20: MyAlloc(size, tag) tail-jumps to ExAllocatePoolWithTag(1, size, tag).
            mov_w(2, 1),
            mov_x(1, 0),
            movz_w(0, 1, 0),
            adrp(8, 1),
            ldr_x(8, 8, ALLOC - 0x2000),
            br(8),
        ]);
        assert_eq!(
            sites(&f),
            [
                call("AwR1", "ExAllocatePoolWithTag", 0x0c),
                call("AwR2", "ExAllocatePoolWithTag", 0x18),
            ]
        );
        assert!(f.sites.iter().all(|s| s.via == [TEXT + 0x20]));
    }

    #[test]
    fn a_chain_of_wrappers_through_a_callee_saved_register() {
        let f = run(&[
            movz_w(1, lo("AcH1"), 0),
            movk_w(1, hi("AcH1"), 16),
            bl(0x8), // 0x08 -> 0x10
            RET,
            // 0x10: Outer(size, tag) keeps the tag in x19 across a call, then calls Inner.
            mov_x(19, 1),
            bl(0x20), // 0x14: a function that ignores everything (0x34)
            mov_w(1, 19),
            bl(0x10), // 0x1c -> 0x2c
            RET,
            NOP,
            NOP,
            // 0x2c: Inner(size, tag).
            mov_w(2, 1),
            b(0x8), // 0x30 -> 0x38
            // 0x34
            RET,
            // 0x38: an import thunk, which a jump to is a jump to the API.
            adrp(8, 1),
            ldr_x(8, 8, ALLOC - 0x2000),
            br(8),
        ]);
        assert_eq!(sites(&f), [call("AcH1", "ExAllocatePoolWithTag", 0x08)]);
        assert_eq!(f.sites[0].via, [TEXT + 0x10, TEXT + 0x2c]);
    }

    #[test]
    fn an_o0_wrapper_spills_its_arguments_and_reloads_them() {
        // clang -O0: MyAlloc(size, tag) stores x0 through x29 and w1 through sp, reloads both
        // (encodings from `llvm-mc --triple=aarch64 -show-encoding`).
        let wrapper = |store_tag: u32| {
            run(&[
                movz_w(1, lo("AoZ1"), 0),
                movk_w(1, hi("AoZ1"), 16),
                bl(0x8), // 0x08 -> 0x10
                RET,
                0xD100_83FF, // 0x10: sub sp, sp, #32
                0xA901_7BFD, // stp x29, x30, [sp, #16]
                0x9100_43FD, // add x29, sp, #16
                0xF81F_83A0, // stur x0, [x29, #-8]
                store_tag,
                0xF85F_83A1, // ldur x1, [x29, #-8]
                0xB940_07E2, // ldr w2, [sp, #4]
                movz_w(0, 1, 0),
                adrp(8, 1),
                ldr_x(8, 8, ALLOC - 0x2000),
                blr(8),      // 0x38
                0xA941_7BFD, // ldp x29, x30, [sp, #16]
                0x9100_83FF, // add sp, sp, #32
                RET,
            ])
        };
        for store_tag in [
            0xB900_07E1, // str w1, [sp, #4]
            0xB81F_43A1, // stur w1, [x29, #-12]: the same slot
        ] {
            let f = wrapper(store_tag);
            assert_eq!(
                sites(&f),
                [call("AoZ1", "ExAllocatePoolWithTag", 0x08)],
                "{store_tag:#x}"
            );
            assert_eq!(f.sites[0].via, [TEXT + 0x10]);
        }
        // Stored elsewhere, reloaded from the slot: not the tag.
        let f = wrapper(0xB900_0BE1); // str w1, [sp, #8]
        assert_eq!(sites(&f), []);
    }

    #[test]
    fn an_untagged_allocation_is_a_call_for_none() {
        let f = run(&[adrp(8, 1), ldr_x(8, 8, UNTAGGED - 0x2000), blr(8), RET]);
        assert_eq!(sites(&f), [call("None", "ExAllocatePool", 0x08)]);
    }

    #[test]
    fn truncated_and_garbage_code_is_harmless() {
        let mut code: Vec<u8> = [movz_w(2, lo("1Ba1"), 0), movk_w(2, hi("1Ba1"), 16)]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        code.extend_from_slice(&[0x00, 0x01, 0x3F]);
        let f = run_bytes(&code);
        assert_eq!(level(&f, "1Ba1"), Some(Evidence::Code));
        run_bytes(&[]);
        run_bytes(&[0xFF; 7]);
        // Branches far outside the image, to a thunk-like pattern at the section's end.
        run(&[
            bl(-0x400_0000),
            b(0x7FF_FFFC),
            bl(4),
            adrp(16, 1),
            ldr_x(16, 16, 0x78),
        ]);
    }

    // --- Properties. ---

    mod property {
        use super::*;
        use proptest::prelude::*;
        use yaxpeax_arch::{Decoder, U8Reader};
        use yaxpeax_arm::armv8::a64::{
            InstDecoder, Instruction, Opcode, Operand, ShiftStyle, SizeCode,
        };

        /// Word patterns (mask, value) of the decoded forms, to fill with random bits.
        const FORMS: &[(u32, u32)] = &[
            (0x1F80_0000, 0x1280_0000), // move wide
            (0x7F80_0000, 0x7280_0000), // movk
            (0x7F80_0000, 0x5280_0000), // movz
            (0x1F80_0000, 0x1200_0000), // logical immediate
            (0x1F80_0000, 0x1100_0000), // add/sub immediate
            (0x1F00_0000, 0x1000_0000), // adr/adrp
            (0x7FE0_FFE0, 0x2A00_03E0), // mov register
            (0x7F20_0000, 0x2A00_0000), // orr shifted register
            (0xBF00_0000, 0x1800_0000), // ldr literal
            (0x3F00_0000, 0x1800_0000), // load literal, any size / simd
            (0xFFC0_0000, 0xF940_0000), // ldr x, unsigned offset
            (0x3FC0_0000, 0x3940_0000), // ldr, unsigned offset, any size
            (0x7C00_0000, 0x1400_0000), // b, bl
            (0xFF00_0000, 0x5400_0000), // b.cond
            (0x7C00_0000, 0x3400_0000), // cb(n)z, tb(n)z
            (0xFFFF_FC1F, 0xD61F_0000), // br
            (0xFFFF_FC1F, 0xD63F_0000), // blr
            (0xFFFF_FC1F, 0xD65F_0000), // ret
            (0xFE00_0000, 0xD600_0000), // branch (register)
        ];

        fn word() -> impl Strategy<Value = u32> {
            prop_oneof![
                any::<u32>(),
                (0..FORMS.len(), any::<u32>()).prop_map(|(i, random)| {
                    let (mask, value) = FORMS[i];
                    (random & !mask) | value
                }),
            ]
        }

        fn yaxpeax(word: u32) -> Option<Instruction> {
            let bytes = word.to_le_bytes();
            let mut reader = U8Reader::new(&bytes);
            InstDecoder::default().decode(&mut reader).ok()
        }

        fn x(size: SizeCode) -> bool {
            size == SizeCode::X
        }

        /// The decoded forms, read from yaxpeax-arm's decoding.
        fn expected(i: &Instruction) -> Option<Op> {
            use Operand::*;
            let r = |n: u16| n as u8;
            Some(match (i.opcode, i.operands) {
                (
                    Opcode::MOVZ | Opcode::MOVN | Opcode::MOVK,
                    [Register(s, rd), ImmShift(imm16, shift), Nothing, Nothing],
                ) => {
                    let kind = match i.opcode {
                        Opcode::MOVZ => Wide::Z,
                        Opcode::MOVN => Wide::N,
                        _ => Wide::K,
                    };
                    Op::MoveWide {
                        kind,
                        x: x(s),
                        rd: r(rd),
                        imm16,
                        shift,
                    }
                }
                (
                    Opcode::ORR,
                    [
                        Register(s, rd),
                        Register(_, 31),
                        RegShift(ShiftStyle::LSL, 0, _, rm),
                        Nothing,
                    ],
                ) => Op::MoveRegister {
                    x: x(s),
                    rd: r(rd),
                    rm: r(rm),
                },
                (
                    Opcode::ADD | Opcode::ADDS | Opcode::SUB | Opcode::SUBS,
                    [
                        Register(s, rd) | RegisterOrSP(s, rd),
                        RegisterOrSP(_, rn),
                        imm,
                        Nothing,
                    ],
                ) => {
                    let imm = match imm {
                        Immediate(v) => v,
                        ImmShift(v, 12) => u32::from(v) << 12,
                        _ => return None,
                    };
                    Op::AddSub {
                        x: x(s),
                        sub: matches!(i.opcode, Opcode::SUB | Opcode::SUBS),
                        flags: matches!(i.opcode, Opcode::ADDS | Opcode::SUBS),
                        rd: r(rd),
                        rn: r(rn),
                        imm,
                    }
                }
                (
                    Opcode::AND | Opcode::ORR | Opcode::EOR | Opcode::ANDS,
                    [
                        Register(s, rd) | RegisterOrSP(s, rd),
                        Register(_, rn),
                        imm,
                        Nothing,
                    ],
                ) => {
                    let imm = match imm {
                        Immediate(v) => u64::from(v),
                        Imm64(v) => v,
                        _ => return None,
                    };
                    let kind = match i.opcode {
                        Opcode::AND => Logic::And,
                        Opcode::ORR => Logic::Orr,
                        Opcode::EOR => Logic::Eor,
                        _ => Logic::Ands,
                    };
                    Op::Logical {
                        x: x(s),
                        kind,
                        rd: r(rd),
                        rn: r(rn),
                        imm,
                    }
                }
                (Opcode::ADR, [Register(_, rd), PCOffset(offset), Nothing, Nothing]) => {
                    Op::Adr { rd: r(rd), offset }
                }
                (Opcode::ADRP, [Register(_, rd), PCOffset(offset), Nothing, Nothing]) => {
                    Op::Adrp { rd: r(rd), offset }
                }
                (Opcode::LDR, [Register(s, rt), PCOffset(offset), Nothing, Nothing]) => {
                    Op::LoadLiteral {
                        x: x(s),
                        rt: r(rt),
                        offset,
                    }
                }
                (
                    Opcode::LDR,
                    [
                        Register(SizeCode::X, rt),
                        RegPreIndex(rn, offset, false),
                        Nothing,
                        Nothing,
                    ],
                ) => Op::LoadX {
                    rt: r(rt),
                    rn: r(rn),
                    offset: u32::try_from(offset).ok()?,
                },
                (Opcode::BL, [PCOffset(offset), Nothing, Nothing, Nothing]) => Op::Bl { offset },
                (Opcode::B, [PCOffset(offset), Nothing, Nothing, Nothing]) => Op::B { offset },
                (Opcode::BLR, [Register(SizeCode::X, rn), Nothing, Nothing, Nothing]) => {
                    Op::Blr { rn: r(rn) }
                }
                (Opcode::BR, [Register(SizeCode::X, rn), Nothing, Nothing, Nothing]) => {
                    Op::Br { rn: r(rn) }
                }
                (Opcode::RET, [Register(SizeCode::X, rn), Nothing, Nothing, Nothing]) => {
                    Op::Ret { rn: r(rn) }
                }
                (
                    Opcode::Bcc(_) | Opcode::BCcc(_),
                    [PCOffset(offset), Nothing, Nothing, Nothing],
                )
                | (
                    Opcode::CBZ | Opcode::CBNZ,
                    [Register(..), PCOffset(offset), Nothing, Nothing],
                )
                | (Opcode::TBZ | Opcode::TBNZ, [Register(..), _, PCOffset(offset), Nothing]) => {
                    Op::CondBranch { offset }
                }
                _ => return None,
            })
        }

        /// Encodings the architecture leaves unallocated that yaxpeax-arm 0.5 decodes anyway:
        /// 32-bit move wide with hw = 2 or 3, 32-bit logical immediate with N = 1, and a logical
        /// immediate of all ones (not encodable: its element would be all ones).
        fn unallocated(word: u32, theirs: Option<Op>) -> bool {
            let move_wide_32 = word & 0x9F80_0000 == 0x1280_0000 && bits(word, 22, 1) == 1;
            let logical_32 = word & 0x9F80_0000 == 0x1200_0000 && bits(word, 22, 1) == 1;
            let all_ones = matches!(
                theirs,
                Some(Op::Logical { x, imm, .. }) if imm == if x { u64::MAX } else { 0xFFFF_FFFF }
            );
            move_wide_32 || logical_32 || all_ones
        }

        /// True for the forms `decode` recognises (as opposed to `Other`, `Stop`...).
        fn is_form(op: &Op) -> bool {
            !matches!(op, Op::Other { .. } | Op::Stop | Op::OtherCall)
        }

        /// No regression files are written into the source tree.
        fn config(cases: u32) -> ProptestConfig {
            ProptestConfig {
                cases,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config(200_000))]

            #[test]
            fn the_decoder_agrees_with_yaxpeax(word in word()) {
                let mine = decode(word);
                let theirs = yaxpeax(word);
                let theirs_form = theirs.as_ref().and_then(expected);
                if unallocated(word, theirs_form) {
                    prop_assert_eq!(mine, Op::Stop, "{:#010x}", word);
                } else if is_form(&mine) {
                    prop_assert_eq!(
                        Some(mine), theirs_form,
                        "{:#010x}: yaxpeax reads {:?}", word, theirs.map(|i| i.to_string())
                    );
                } else if let Some(theirs_form) = theirs_form {
                    prop_assert!(
                        false,
                        "{:#010x}: yaxpeax reads {:?} ({:?}), decode gives {:?}",
                        word, theirs.map(|i| i.to_string()), theirs_form, mine
                    );
                }
            }

        }

        proptest! {
            #![proptest_config(config(2_000))]

            #[test]
            fn any_code_is_analysed_without_panic(code in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = run_bytes(&code);
            }

            #[test]
            fn any_word_sequence_is_analysed_without_panic(words in proptest::collection::vec(word(), 0..512)) {
                let _ = run(&words);
            }
        }

        /// A word of the forms the regions follow, its registers among x0..x3 (so that values
        /// meet), or any word (rarer); and whether a function is declared there.
        fn region_word() -> impl Strategy<Value = (u32, bool)> {
            let near = prop_oneof![
                8 => (0..FORMS.len(), any::<u32>(), 0u32..4, 0u32..4).prop_map(|(i, random, rd, rn)| {
                    let (mask, value) = FORMS[i];
                    ((random & !mask) | value) & !0x3FF | rd | rn << 5
                }),
                // Printable halves, so that MOVZ + MOVK may build a tag.
                4 => (0u32..4, 0x20u32..0x7f, 0x20u32..0x7f, any::<bool>(), any::<bool>())
                    .prop_map(|(rd, a, b, k, high)| {
                        let opcode = if k { 0x7280_0000 } else { 0x5280_0000 };
                        opcode | u32::from(high) << 21 | (a << 8 | b) << 5 | rd
                    }),
                // A table: adrp to .rdata's page (the code stays in the page before), an
                // indexed load from it.
                1 => (0u32..4).prop_map(|rd| adrp(rd, 1)),
                1 => (0u32..4, 0u32..4, 0u32..4)
                    .prop_map(|(rt, rn, rm)| 0xB860_7800 | rm << 16 | rn << 5 | rt),
                // Copies, through a register or the stack.
                2 => (0u32..4, 0u32..4, any::<bool>())
                    .prop_map(|(rd, rm, x)| 0x2A00_03E0 | u32::from(x) << 31 | rm << 16 | rd),
                1 => (0u32..4, any::<bool>())
                    .prop_map(|(rt, load)| 0xB900_13E0 | u32::from(load) << 22 | rt),
                // Nearby calls and jumps, so that their targets are functions of the code.
                2 => (-64i32..64, any::<bool>()).prop_map(|(n, call)| if call { bl(4 * n) } else { b(4 * n) }),
                1 => any::<u32>(),
            ];
            (near, proptest::bool::weighted(0.1))
        }

        /// Tracking only the regions that may need it finds exactly what tracking everything
        /// finds, in an image that calls no pool API.
        fn same_either_way(
            words: Vec<(u32, bool)>,
        ) -> (Vec<(Tag, Evidence)>, Vec<crate::extract::Site>) {
            let code: Vec<u8> = words.iter().flat_map(|(w, _)| w.to_le_bytes()).collect();
            let function_starts = (words.iter().enumerate())
                .filter(|(_, (_, declared))| *declared)
                .map(|(i, _)| TEXT + 4 * i as u32)
                .collect();
            // Printable text ending off a word boundary (no `data` of its own) after a table.
            let mut rdata: Vec<u8> = (0..0x401u32).map(|i| b'A' + (i * 7 % 26) as u8).collect();
            rdata[..8].copy_from_slice(b"Tb01Tb02");
            let import = |name: &str| Import {
                module: "ntoskrnl.exe".into(),
                name: name.into(),
            };
            let image = Image {
                arch: Arch::Arm64,
                image_base: 0x1_4000_0000,
                sections: vec![
                    Section::for_test(".text", TEXT, &code),
                    Section::for_test(".rdata", 0x2000, &rdata),
                ],
                imports: [
                    (ALLOC, import("KeWaitForSingleObject")),
                    (FREE, import("memcpy")),
                ]
                .into_iter()
                .collect(),
                exported_apis: HashMap::new(),
                export_names: Vec::new(),
                function_starts,
            };
            assert!(!image.uses_pool_apis());
            crate::extract::analyse_both_ways(&image)
        }

        #[test]
        fn a_half_kept_on_the_stack_and_completed_is_followed() {
            // movz w0, lo; str w0, [sp, #16]; ldr w1, [sp, #16]; movk w1, hi, lsl #16; ret.
            let words = [
                movz_w(0, lo("Stk1"), 0),
                0xB900_13E0,
                0xB940_13E1,
                movk_w(1, hi("Stk1"), 16),
                0xD65F_03C0,
            ];
            // A declared function, whose stack is followed from its entry.
            let declared = words.into_iter().enumerate().map(|(i, w)| (w, i == 0));
            let (levels, _) = same_either_way(declared.collect());
            let tag = Tag::from_value(value("Stk1"));
            assert!(levels.contains(&(tag, Evidence::Code)), "{levels:?}");
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn regions_find_what_tracking_everything_finds(
                words in proptest::collection::vec(region_word(), 0..1000usize),
            ) {
                same_either_way(words);
            }
        }
    }
}
