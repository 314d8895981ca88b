//! Call-site analysis of x86 and x64 code, decoded with iced-x86.
//!
//! One linear pass over an executable section tracks, within straight-line code, which
//! registers and stack slots hold a 32-bit immediate, the address of an imported function, or an
//! incoming argument of the function being read:
//! - `mov reg32, imm32` (and `mov reg64, imm`), register-to-register `mov`, `push imm32`,
//!   `push reg`, `push [slot]`, `mov [slot], imm32` or `mov [slot], reg`, `mov reg, [slot]`,
//!   where a slot is `[rsp+k]`, or `[rbp+k]` once `mov rbp, rsp` (or `lea rbp, [rsp+k]`) has tied
//!   the frame register to the stack pointer (`leave` and `mov rsp, rbp` move the slots back);
//! - `mov reg, [IAT slot]` (RIP-relative on x64, absolute on x86), later `call reg`.
//!
//! Only 32- and 64-bit moves carry a value. Any other write to a register or slot cancels what
//! it held (a write through `[rsp+reg*k+d]` cancels every slot); a call clears the volatile
//! registers and the stack slots (those holding an incoming argument stay: a callee cannot
//! reach its caller's frame); a return or an unconditional jump clears everything. At the target
//! of a forward branch seen earlier, what straight-line code does not know takes the value the
//! branches to it agreed on (so an error path placed after a `jmp` keeps its registers).
//!
//! At each function start (see [`super::summary`]; a start that is only a jump target counts
//! when nothing is known there, i.e. the code before it ended), the incoming arguments
//! are marked: x64 rcx, rdx, r8, r9 and `[rsp+0x28+8k]` (arguments 0-7); x86 `[esp+4+4k]`
//! (arguments 0-7), ecx (8) and edx (9) for fastcall and gcc's regparm.
//!
//! At a call (or a tail jump) whose target is a known tag-taking API (through the IAT, a
//! `jmp [IAT]` thunk, a register holding an IAT slot, or the image's own export), the tag
//! argument's immediate is a `call` site, and an incoming argument there makes the function a
//! wrapper. At a direct call or jump to a function of the image, immediates and incoming
//! arguments in its arguments go to the summaries. At a call to anything else (an import, a
//! register, a memory slot), each argument holding a printable immediate is an `arg` site. Every
//! 32-bit immediate (and both halves of a 64-bit one) is `code` evidence.

mod brief;

use foldhash::{HashMap, HashMapExt};

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic,
    OpAccess, OpKind, Register,
};

use self::brief::{Brief, Memory, Operand, Operation, Reg};
use super::Findings;
use super::apis::{PoolApi, UNTAGGED, X86TagPlace, pool_api};
use super::image::{Image, Section};
use super::pending::Pending;
use super::summary::{Start, Summaries};
use super::tables::References;
use crate::tag::Tag;

/// Call targets whose thunk check is remembered, at most: a section of calls to millions of
/// distinct targets cannot grow the cache without bound (a check is cheap anyway).
const MAX_THUNK_CACHE: usize = 1 << 16;
/// Stack slots tracked at most.
const MAX_SLOTS: usize = 64;
/// Forward branch targets whose state is kept, at most.
const MAX_PENDING: usize = 256;
/// How far ahead (bytes) a branch target may be for its state to be kept.
const MAX_PENDING_DISTANCE: u64 = 1 << 20;

/// What a register or stack slot is known to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Unknown,
    Immediate(u32),
    /// The address of the function imported through this IAT slot (by RVA).
    Import(u32),
    /// Incoming argument N of the function being read (numbered as in [`Convention`]).
    Argument(u8),
    /// An address in the image (by RVA), from `lea reg, [rip+d]`.
    Address(u32),
}

/// Registers and stack slots of straight-line code.
#[derive(Clone, Debug)]
struct State {
    /// rax..r15 by number.
    registers: [Value; 16],
    /// Stack slots by offset from the current stack pointer.
    slots: Vec<(i64, Value)>,
    /// The frame register (rbp/ebp) is the stack pointer plus this many bytes.
    frame: Option<i64>,
}

impl State {
    fn new() -> State {
        State {
            registers: [Value::Unknown; 16],
            slots: Vec::new(),
            frame: None,
        }
    }

    fn clear(&mut self) {
        self.registers = [Value::Unknown; 16];
        self.slots.clear();
        self.frame = None;
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
            && self.frame.is_none()
            && self.registers.iter().all(|v| *v == Value::Unknown)
    }

    fn register(&self, register: Register) -> Value {
        gpr_index(register).map_or(Value::Unknown, |i| self.registers[i])
    }

    fn value(&self, register: Reg) -> Value {
        match register {
            Reg::Gpr(i) => self.registers[usize::from(i)],
            Reg::None | Reg::Other => Value::Unknown,
        }
    }

    fn set_register(&mut self, register: Register, value: Value) {
        if let Some(i) = gpr_index(register) {
            self.registers[i] = value;
        }
    }

    fn slot(&self, offset: i64) -> Value {
        self.slots
            .iter()
            .find(|(o, _)| *o == offset)
            .map_or(Value::Unknown, |(_, v)| *v)
    }

    fn set_slot(&mut self, offset: i64, value: Value) {
        self.forget_slot(offset);
        if value != Value::Unknown && self.slots.len() < MAX_SLOTS {
            self.slots.push((offset, value));
        }
    }

    fn forget_slot(&mut self, offset: i64) {
        self.slots.retain(|(o, _)| (*o - offset).abs() >= 4);
    }

    /// The stack pointer moved down by `delta` bytes (a push, `sub rsp, n`).
    fn shift(&mut self, delta: i64) {
        for (offset, _) in &mut self.slots {
            *offset += delta;
        }
        self.slots.retain(|(o, _)| *o >= 0);
        if let Some(frame) = &mut self.frame {
            *frame += delta;
        }
    }

    /// Keeps what both this state (one branch to a point) and `other` (another) agree on.
    fn agree(&mut self, other: &State) {
        for (mine, theirs) in self.registers.iter_mut().zip(other.registers) {
            if *mine != theirs {
                *mine = Value::Unknown;
            }
        }
        self.slots.retain(|(o, v)| other.slot(*o) == *v);
        if self.frame != other.frame {
            self.frame = None;
        }
    }

    /// Takes from `saved` (what the branches to this point agreed on) whatever straight-line
    /// code does not know.
    fn join(&mut self, saved: &State) {
        for (current, saved) in self.registers.iter_mut().zip(saved.registers) {
            if *current == Value::Unknown {
                *current = saved;
            }
        }
        for &(offset, value) in &saved.slots {
            if self.slot(offset) == Value::Unknown && self.slots.len() < MAX_SLOTS {
                self.slots.push((offset, value));
            }
        }
        if self.frame.is_none() {
            self.frame = saved.frame;
        }
    }
}

/// The index of a general-purpose register, any width (`eax`, `rax` -> 0).
fn gpr_index(register: Register) -> Option<usize> {
    let full = register.full_register();
    let index = (full as usize).checked_sub(Register::RAX as usize)?;
    (index < 16).then_some(index)
}

/// Where an argument is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Register(Register),
    /// Offset from the stack pointer at the call.
    Slot(i64),
}

/// Where the arguments are at a call, for one bitness.
struct Convention {
    bitness: u32,
    pointer: i64,
    stack_pointer: Register,
    frame_pointer: Register,
    /// Registers a call may change.
    volatile: &'static [Register],
    /// The arguments, by number: where each is at a call.
    arguments: &'static [Place],
}

const X64: Convention = Convention {
    bitness: 64,
    pointer: 8,
    stack_pointer: Register::RSP,
    frame_pointer: Register::RBP,
    volatile: &[
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
    ],
    arguments: &[
        Place::Register(Register::RCX),
        Place::Register(Register::RDX),
        Place::Register(Register::R8),
        Place::Register(Register::R9),
        Place::Slot(0x20),
        Place::Slot(0x28),
        Place::Slot(0x30),
        Place::Slot(0x38),
    ],
};

/// x86: eight stack dwords, then ecx and edx (fastcall, gcc's regparm).
const X86: Convention = Convention {
    bitness: 32,
    pointer: 4,
    stack_pointer: Register::ESP,
    frame_pointer: Register::EBP,
    volatile: &[Register::EAX, Register::ECX, Register::EDX],
    arguments: &[
        Place::Slot(0),
        Place::Slot(4),
        Place::Slot(8),
        Place::Slot(12),
        Place::Slot(16),
        Place::Slot(20),
        Place::Slot(24),
        Place::Slot(28),
        Place::Register(Register::ECX),
        Place::Register(Register::EDX),
    ],
};

/// The argument number of x86's edx.
const X86_EDX: u8 = 9;

impl Convention {
    /// The number of the argument carrying `api`'s tag (`None` for an untagged allocator).
    fn tag_argument(&self, api: &PoolApi) -> Option<u8> {
        let tag = api.tag?;
        Some(match (self.bitness, tag.x86) {
            (32, X86TagPlace::Stack(n)) => n - 1,
            (32, X86TagPlace::Edx) => X86_EDX,
            _ => tag.number - 1,
        })
    }
}

/// What a call or jump goes to.
enum Callee {
    /// A known tag-taking API.
    Api(&'static PoolApi),
    /// Another imported function, by IAT slot.
    Import(u32),
    /// A function of the image, by entry RVA.
    Function(u32),
    /// Anything else: a register, a memory slot, a plain jump target.
    Unknown,
}

/// The direct call and jump targets (`E8`/`E9 rel32`, `EB rel8`) of `code`, the start of
/// `section`, found by scanning its bytes (a linear decoding would cost as much as the
/// analysis): a byte that is not the start of an instruction rarely gives a target in an
/// executable section, and then only matters if the decoding reaches that target. gcc tail-jumps
/// to a nearby function with a short jump.
pub fn call_targets<'i>(
    image: &'i Image,
    section: &'i Section,
    code: &'i [u8],
) -> impl Iterator<Item = (u32, Start)> + 'i {
    let near = memchr::memchr2_iter(0xE8, 0xE9, code).filter_map(move |offset| {
        let bytes = code.get(offset..offset + 5)?;
        let next = section.rva.wrapping_add(offset as u32 + 5);
        let target =
            next.wrapping_add(u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]));
        let start = if bytes[0] == 0xE8 {
            Start::Called
        } else {
            Start::Jumped
        };
        // Most targets are in the section itself: no lookup among the others.
        let inside = target
            .checked_sub(section.rva)
            .is_some_and(|o| (o as usize) < code.len());
        (inside || image.section_at(target).is_some_and(|(s, _)| s.executable))
            .then_some((target, start))
    });
    let short = memchr::memchr_iter(0xEB, code).filter_map(move |offset| {
        // A jump to the next instruction starts no function.
        let displacement = i64::from(*code.get(offset + 1)? as i8);
        if displacement == 0 {
            return None;
        }
        let target = usize::try_from(offset as i64 + 2 + displacement).ok()?;
        (target < code.len()).then(|| (section.rva.wrapping_add(target as u32), Start::Jumped))
    });
    near.chain(short)
}

/// The analysis of one section.
struct Analysis<'a, 'data> {
    image: &'a Image<'data>,
    section: &'a Section<'data>,
    convention: &'static Convention,
    state: State,
    /// The function being read (its entry RVA), once a start was passed.
    function: Option<u32>,
    /// The next function start of the linear pass (see [`Summaries::start_at`]).
    cursor: usize,
    /// The state at forward branches, by target RVA.
    pending: Pending<u32, State>,
    /// Call targets already checked for being `jmp [IAT]` thunks.
    thunks: HashMap<u32, Option<u32>>,
    summaries: &'a mut Summaries,
    references: &'a mut References,
    findings: &'a mut Findings,
}

/// Analyses `code`, the start of `section`, as `bitness`-bit code, into what the image's
/// analysis collects: the summaries, the addresses the code takes, the findings. Every
/// instruction is tracked when `track_everything` (needed where the image calls a pool API),
/// else only the regions (`Region`) that may need it.
pub fn analyse(
    image: &Image,
    section: &Section,
    (code, bitness, track_everything): (&[u8], u32, bool),
    (summaries, references, findings): (&mut Summaries, &mut References, &mut Findings),
) {
    let convention = if bitness == 64 { &X64 } else { &X86 };
    let mut analysis = Analysis {
        image,
        section,
        convention,
        state: State::new(),
        function: None,
        cursor: summaries.first_start(section.rva),
        pending: Pending::default(),
        thunks: HashMap::new(),
        summaries,
        references,
        findings,
    };
    let ip = image.image_base.wrapping_add(u64::from(section.rva));
    let mut decoder = Decoder::with_ip(bitness, code, ip, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut instruction = Instruction::default();
    if track_everything {
        while decoder.can_decode() {
            decoder.decode_out(&mut instruction);
            analysis.visit(&instruction, &mut info);
        }
        return;
    }
    let mut region = Region::default();
    let mut cursor = analysis.cursor;
    let mut position = 0;
    let long_mode = bitness == 64;
    let mut entries = cursor;
    while position < code.len() {
        // A tracked region needs iced-x86's decoding; the scan, mostly, only a skim.
        let mut skim = None;
        if !region.tracked {
            let rva = analysis
                .rva(ip.wrapping_add(position as u64))
                .unwrap_or_default();
            let next = analysis.summaries.next_entry(&mut entries, rva);
            position = skim_quiet((image, code, ip, bitness), position, next, &region);
            if position == code.len() {
                break;
            }
            skim = brief::skim(&code[position..], long_mode);
        }
        let at = ip.wrapping_add(position as u64);
        // iced-x86 decodes what the skim leaves to it, and the brief of a briefless form.
        let decode_here = |decoder: &mut Decoder, instruction: &mut Instruction| {
            if decoder.position() != position {
                // Within the code: `position` is below its length.
                let _ = decoder.set_position(position);
                decoder.set_ip(at);
            }
            decoder.decode_out(instruction);
        };
        if skim.is_none() {
            decode_here(&mut decoder, &mut instruction);
        }
        let (length, invalid) = match &skim {
            Some(skim) => (skim.length, false),
            None => (instruction.len(), instruction.is_invalid()),
        };
        let rva = analysis.rva(at).unwrap_or_default();
        let start = analysis.summaries.start_at(&mut cursor, rva);
        // As in `visit`: a function is not entered at an invalid instruction.
        if matches!(start, Some(Start::Declared | Start::Called)) && !invalid {
            analysis.finish(&mut region);
            region = Region {
                entry: Some(rva),
                position,
                ..Region::default()
            };
        }
        let end = position + length;
        if region.tracked {
            analysis.visit(&instruction, &mut info);
        } else if skim.is_none_or(|skim| {
            region.may_need(skim.follows, bitness, || {
                skim.move_source(&code[position..])
            })
        }) {
            let brief = match skim {
                None => Brief::of(&instruction),
                Some(skim) => match skim.brief(&code[position..], at, long_mode) {
                    Some(brief) => brief,
                    None => {
                        decode_here(&mut decoder, &mut instruction);
                        Brief::of(&instruction)
                    }
                },
            };
            if region.needs_tracking(&brief, image, bitness) {
                // Track the region from its start, decoded again up to here.
                let _ = decoder.set_position(region.position);
                decoder.set_ip(ip.wrapping_add(region.position as u64));
                while decoder.position() < end {
                    decoder.decode_out(&mut instruction);
                    analysis.visit(&instruction, &mut info);
                }
                region.tracked = true;
                region.tables.clear();
            } else if bitness == 32
                && let Some(table) = brief.memory.and_then(|m| m.x86_table())
                && let Some(table) = analysis.rva(u64::from(table))
            {
                region.tables.push(table);
            }
        }
        position = end;
    }
    analysis.finish(&mut region);
}

/// Skims `code` (`bitness`-bit, at `ip` in `image`) from `position` past the instructions that
/// `region` does not need ([`Region::may_need`]) before the function entry at RVA `next`: the
/// commonest case, in a loop (and registers) of its own. Returns where it stopped.
#[inline(never)]
fn skim_quiet(
    (image, code, ip, bitness): (&Image, &[u8], u64, u32),
    mut position: usize,
    next: u32,
    region: &Region,
) -> usize {
    // Where the start at `next` is, as `Image::rva_of_va` places it: RVAs run with positions
    // (but in an image whose addresses wrap: there, every instruction takes the general path).
    let limit = ip
        .checked_sub(image.image_base)
        .filter(|base| base.saturating_add(code.len() as u64) <= u64::from(u32::MAX))
        .map_or(0, |base| u64::from(next).saturating_sub(base) as usize);
    let long_mode = bitness == 64;
    let lengths = brief::lengths(long_mode);
    while position < limit {
        // Only the length lives from one instruction to the next: the caller skims again
        // where this stops.
        let here = &code[position..];
        let Some((length, follows)) = brief::skim_length(here, long_mode, lengths) else {
            break;
        };
        if region.may_need(follows, bitness, || brief::move_source_at(here, long_mode)) {
            break;
        }
        position += length;
    }
    position
}

/// Addresses taken that a [`Region`] follows, at most: a region taking more is tracked.
const MAX_TAKEN: usize = 64;

/// The code from one function start (declared or called, where the state is cleared) to the
/// next, in an image that calls no tag-taking API. There, straight-line tracking only matters
/// to a region holding a candidate tag as an immediate (a `code`, `arg` or `call`-through-a-
/// wrapper site) or reading a table through an address it took (x64): a region is tracked from
/// its start (decoded again) once one of its instructions shows it may; a region that never
/// does is only entered, and its x86 tables (which need no tracking) recorded. In Wine's
/// modules, 90% of the regions and more than half of the code need no tracking.
#[derive(Default)]
struct Region {
    /// The function start the region begins at.
    entry: Option<u32>,
    /// Where the region begins in the code.
    position: usize,
    /// The addresses taken with `lea reg, [rip+d]` (x64 tables are read through one), the
    /// first [`MAX_TAKEN`] (a region taking more is tracked), each with where it may be.
    taken: Vec<Taken>,
    /// The tables (x86) the region reads, recorded when it ends untracked.
    tables: Vec<u32>,
    /// The region is tracked.
    tracked: bool,
}

impl Region {
    /// Whether a skimmed instruction that may matter for `follows` (see [`brief::follows`])
    /// may need tracking ([`Region::needs_tracking`] tells): a `mov` or `push` only from where
    /// a taken address may be (`source`, asked only then).
    #[inline(always)]
    fn may_need(&self, follows: u8, bitness: u32, source: impl FnOnce() -> Operand) -> bool {
        match follows & self.follows(bitness) {
            0 => false,
            brief::follows::MOVES => self.may_hold(source()),
            _ => true,
        }
    }

    /// Whether `source` (of a `mov` or `push`) may hold an address the region took.
    fn may_hold(&self, source: Operand) -> bool {
        match source {
            Operand::Register(bits) => self.taken.iter().any(|t| t.registers & bits != 0),
            Operand::Memory => self.taken.iter().any(|t| t.stored),
            Operand::Other => false,
        }
    }

    /// What an instruction may matter for, for [`Region::needs_tracking`] to tell (see
    /// [`brief::follows`]): on x64, table reads and moves only once the region took an address.
    fn follows(&self, bitness: u32) -> u8 {
        use brief::follows::*;
        match bitness {
            32 => PRINTABLE_IMMEDIATE | INDEXED,
            _ if self.taken.is_empty() => PRINTABLE_IMMEDIATE | LEA_RIP,
            _ => PRINTABLE_IMMEDIATE | LEA_RIP | INDEXED | MOVES,
        }
    }

    /// Whether tracking the instruction of `brief` may find something: a printable immediate,
    /// or (x64) a memory operand that may read a table through a taken address (see
    /// [`Analysis::record_table`]: x86 tables need no tracking).
    fn needs_tracking(&mut self, brief: &Brief, image: &Image, bitness: u32) -> bool {
        let printable = |value: &u32| Tag::from_value(*value).is_printable();
        if brief.immediates.iter().flatten().any(printable) {
            return true;
        }
        if bitness == 32 {
            return false;
        }
        // A 4-byte load through a register that may hold a taken address, from a table that
        // matters ([`References::may_matter`]).
        if let Some(([base, unscaled], displacement)) =
            brief.memory.and_then(|m| m.x64_table_read())
        {
            let through = base.bit() | unscaled.bit();
            let matters = |taken: &Taken| {
                taken.registers & through != 0
                    && u32::try_from(i64::from(taken.rva) + displacement)
                        .is_ok_and(|rva| References::may_matter(image, rva))
            };
            if self.taken.iter().any(matters) {
                return true;
            }
        }
        // Where each address may go: as the tracker moves values (see `track_mov`), from a
        // register or a stack slot to a register or a stack slot.
        let on_stack = brief.memory.is_some_and(|m| m.on_stack());
        let (source, destination) = match brief.operation {
            Operation::LeaIpRelative { to, address } => {
                let Some(rva) = image.rva_of_va(address) else {
                    return false;
                };
                if let Some(taken) = self.taken.iter_mut().find(|taken| taken.rva == rva) {
                    taken.registers |= to;
                    return false;
                }
                if self.taken.len() == MAX_TAKEN {
                    return true;
                }
                self.taken.push(Taken {
                    rva,
                    registers: to,
                    stored: false,
                });
                return false;
            }
            Operation::Move { from, to } => (from, Some(to)),
            Operation::Push { from } => (from, None),
            Operation::Other => return false,
        };
        let from = match source {
            Operand::Register(registers) => Some(registers),
            Operand::Memory if on_stack => None,
            _ => return false,
        };
        let to = match destination {
            Some(Operand::Register(registers)) => Some(registers),
            Some(Operand::Memory) if !on_stack => return false,
            None | Some(Operand::Memory) => None,
            Some(Operand::Other) => return false,
        };
        for taken in &mut self.taken {
            let held = match from {
                Some(registers) => taken.registers & registers != 0,
                None => taken.stored,
            };
            match to {
                Some(registers) if held => taken.registers |= registers,
                None if held => taken.stored = true,
                _ => {}
            }
        }
        false
    }
}

/// An address a [`Region`] takes, and where it may be: the registers (bits by number) and
/// whether in a stack slot. What may hold it only grows: a branch target may get back a value
/// straight-line code overwrote.
struct Taken {
    rva: u32,
    registers: u16,
    stored: bool,
}

impl Analysis<'_, '_> {
    /// Tracks one instruction of the linear pass.
    fn visit(&mut self, instruction: &Instruction, info: &mut InstructionInfoFactory) {
        if instruction.is_invalid() {
            self.state.clear();
            return;
        }
        let rva = self.rva(instruction.ip()).unwrap_or_default();
        if !self.start(rva) {
            self.join(rva);
        }
        self.step(instruction, info);
    }

    /// Ends `region`: one that needed no tracking only enters its function and reads its
    /// tables, which is all tracking it would have left behind (the next region starts with a
    /// cleared state).
    fn finish(&mut self, region: &mut Region) {
        if region.tracked {
            return;
        }
        if let Some(entry) = region.entry {
            self.summaries.enter(entry);
        }
        for &table in &region.tables {
            self.references.add(table);
        }
    }

    fn rva(&self, va: u64) -> Option<u32> {
        self.image.rva_of_va(va)
    }

    /// Before the instruction at `rva`: what the branches to it agreed on fills in what
    /// straight-line code does not know; targets left behind are forgotten.
    fn join(&mut self, rva: u32) {
        if let Some(saved) = self.pending.take(rva) {
            self.state.join(&saved);
        }
    }

    /// At a function start, marks the incoming arguments (where they are at a jump: the
    /// return address is on the stack); true when it did. A start that is only a jump target
    /// counts where straight-line code ended (after a return, a jump, padding): branches to it
    /// are then tail calls, not jumps inside a function.
    fn start(&mut self, rva: u32) -> bool {
        let entered = match self.summaries.start_at(&mut self.cursor, rva) {
            Some(Start::Declared | Start::Called) => true,
            Some(Start::Jumped) => self.state.is_empty(),
            None => false,
        };
        if !entered {
            return false;
        }
        self.summaries.enter(rva);
        self.function = Some(rva);
        self.pending.clear();
        self.state.clear();
        for (n, place) in self.convention.arguments.iter().enumerate() {
            let value = Value::Argument(n as u8);
            match *place {
                Place::Register(register) => self.state.set_register(register, value),
                Place::Slot(offset) => self.state.set_slot(offset + self.convention.pointer, value),
            }
        }
        true
    }

    /// Remembers the state for a branch from here to `target` (a VA), when it is ahead.
    fn branch(&mut self, from: u64, target: u64) {
        let (Some(from), Some(target)) = (self.rva(from), self.rva(target)) else {
            return;
        };
        let distance = u64::from(target.wrapping_sub(from));
        if target <= from || distance > MAX_PENDING_DISTANCE {
            return;
        }
        if self.state.is_empty() {
            // Nothing to carry, and nothing the other branches to `target` agree on.
            self.pending.remove(&target);
            return;
        }
        let full = self.pending.len() >= MAX_PENDING;
        match self.pending.get_mut(&target) {
            Some(saved) => saved.agree(&self.state),
            None if !full => {
                self.pending.insert(target, self.state.clone());
            }
            None => {}
        }
    }

    fn step(&mut self, instruction: &Instruction, info: &mut InstructionInfoFactory) {
        self.record_immediates(instruction);
        self.record_table(instruction);
        match instruction.flow_control() {
            FlowControl::Call | FlowControl::IndirectCall => {
                self.at_call(instruction, false);
                for &register in self.convention.volatile {
                    self.state.set_register(register, Value::Unknown);
                }
                self.state
                    .slots
                    .retain(|(_, value)| matches!(value, Value::Argument(_)));
            }
            FlowControl::UnconditionalBranch | FlowControl::IndirectBranch => {
                // A jump to a function is a tail call; one to a mere jump target may be a
                // jump inside the function, whose state the target needs.
                let function = self.at_call(instruction, true);
                if is_near_branch(instruction.op0_kind()) {
                    let target = self.rva(instruction.near_branch_target());
                    let start = target.and_then(|t| self.summaries.start(t));
                    if !function || start == Some(Start::Jumped) {
                        self.branch(instruction.ip(), instruction.near_branch_target());
                    }
                }
                self.state.clear();
            }
            FlowControl::Return | FlowControl::Interrupt | FlowControl::Exception => {
                self.state.clear();
            }
            FlowControl::ConditionalBranch => {
                if is_near_branch(instruction.op0_kind()) {
                    self.branch(instruction.ip(), instruction.near_branch_target());
                }
            }
            FlowControl::XbeginXabortXend => {}
            FlowControl::Next => self.track(instruction, info),
        }
    }

    /// `code` evidence: every 32-bit immediate, both halves of a 64-bit one.
    fn record_immediates(&mut self, instruction: &Instruction) {
        for value in immediates(instruction) {
            self.findings.code(value);
        }
    }

    /// A memory operand reads a table of 4-byte elements: x86 `[table+reg*4]`; x64 a 4-byte
    /// load from `[base+index*k+d]` where the base, or the unscaled index (gcc -O0 scales the
    /// other register itself), holds an address taken with `lea reg, [rip+...]`.
    fn record_table(&mut self, instruction: &Instruction) {
        if let Some(rva) = self.table(instruction) {
            self.references.add(rva);
        }
    }

    /// The table `instruction` reads, if it reads one (see [`Analysis::record_table`]).
    fn table(&self, instruction: &Instruction) -> Option<u32> {
        let memory = Memory::of(instruction)?;
        if self.convention.bitness == 32 {
            return self.rva(u64::from(memory.x86_table()?));
        }
        let ([base, unscaled], displacement) = memory.x64_table_read()?;
        let address = match (self.state.value(base), self.state.value(unscaled)) {
            (Value::Address(rva), _) | (_, Value::Address(rva)) => rva,
            _ => return None,
        };
        u32::try_from(i64::from(address) + displacement).ok()
    }

    /// True for the stack pointer or the frame pointer, any width.
    fn is(&self, register: Register, which: Register) -> bool {
        register.full_register() == which.full_register()
    }

    /// Updates the state for an instruction that does not change the control flow.
    fn track(&mut self, instruction: &Instruction, info: &mut InstructionInfoFactory) {
        // Nothing tracked, nothing to cancel: most instructions skip the costly operand analysis.
        if self.state.is_empty() {
            return self.track_effect(instruction, false);
        }
        // First what the instruction overwrites, then what it is known to put there.
        let mut moves_stack_pointer = false;
        match writes_only_operand_0(instruction) {
            // The commonest instructions: no need for iced's (costlier) operand analysis.
            Some(false) => {}
            Some(true) => match instruction.op0_kind() {
                OpKind::Register => {
                    moves_stack_pointer = self.cancel_register(instruction.op0_register());
                }
                OpKind::Memory => self.cancel_memory(
                    instruction.memory_base(),
                    instruction.memory_index(),
                    instruction.memory_displacement64(),
                ),
                _ => {}
            },
            None => {
                let used = info.info(instruction);
                for register in used.used_registers() {
                    if matches!(
                        register.access(),
                        OpAccess::Write
                            | OpAccess::CondWrite
                            | OpAccess::ReadWrite
                            | OpAccess::ReadCondWrite
                    ) {
                        moves_stack_pointer |= self.cancel_register(register.register());
                    }
                }
                for memory in used.used_memory() {
                    if matches!(
                        memory.access(),
                        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite
                    ) {
                        self.cancel_memory(memory.base(), memory.index(), memory.displacement());
                    }
                }
            }
        }
        self.track_effect(instruction, moves_stack_pointer);
    }

    /// Forgets what `register` held; true when it is the stack pointer.
    fn cancel_register(&mut self, register: Register) -> bool {
        if self.is(register, self.convention.stack_pointer) {
            return true;
        }
        if self.is(register, self.convention.frame_pointer) {
            self.state.frame = None;
        }
        self.state.set_register(register, Value::Unknown);
        false
    }

    /// Forgets the slot a write to `[base+index*k+displacement]` lands on; an indexed write
    /// into the frame may land on any slot.
    fn cancel_memory(&mut self, base: Register, index: Register, displacement: u64) {
        let frame = if self.is(base, self.convention.stack_pointer) {
            Some(0)
        } else if self.is(base, self.convention.frame_pointer) {
            self.state.frame
        } else {
            None
        };
        match frame {
            Some(frame) if index == Register::None => {
                self.state
                    .forget_slot(frame + self.displacement(displacement));
            }
            Some(_) => self.state.slots.clear(),
            None => {}
        }
    }

    /// A memory displacement as a signed number: iced gives 32-bit addressing's unextended.
    fn displacement(&self, raw: u64) -> i64 {
        if self.convention.bitness == 32 {
            i64::from(raw as u32 as i32)
        } else {
            raw as i64
        }
    }

    /// What an instruction is known to put in a register or slot, and how it moves the stack.
    fn track_effect(&mut self, instruction: &Instruction, moves_stack_pointer: bool) {
        let stack_pointer = self.convention.stack_pointer;
        let frame_pointer = self.convention.frame_pointer;
        let pointer = self.convention.pointer;
        let op0_register =
            (instruction.op0_kind() == OpKind::Register).then(|| instruction.op0_register());
        let to = |which: Register| op0_register.is_some_and(|r| self.is(r, which));
        match instruction.mnemonic() {
            // `mov rsp, rbp`: the slots move back by the frame's size.
            Mnemonic::Mov
                if to(stack_pointer)
                    && instruction.op1_kind() == OpKind::Register
                    && self.is(instruction.op1_register(), frame_pointer) =>
            {
                self.stack_to_frame(0);
            }
            // `mov rbp, rsp`: the frame is tied to the stack pointer.
            Mnemonic::Mov
                if to(frame_pointer)
                    && instruction.op1_kind() == OpKind::Register
                    && self.is(instruction.op1_register(), stack_pointer) =>
            {
                self.state.frame = Some(0);
            }
            Mnemonic::Lea
                if to(frame_pointer)
                    && self.is(instruction.memory_base(), stack_pointer)
                    && instruction.memory_index() == Register::None =>
            {
                self.state.frame = Some(self.displacement(instruction.memory_displacement64()));
            }
            Mnemonic::Lea
                if to(stack_pointer)
                    && self.is(instruction.memory_base(), frame_pointer)
                    && instruction.memory_index() == Register::None =>
            {
                self.stack_to_frame(self.displacement(instruction.memory_displacement64()));
            }
            Mnemonic::Lea if instruction.is_ip_rel_memory_operand() => {
                let value = self
                    .rva(instruction.ip_rel_memory_address())
                    .map_or(Value::Unknown, Value::Address);
                if let Some(register) = op0_register.filter(|r| r.size() == 8) {
                    self.state.set_register(register, value);
                }
            }
            Mnemonic::Leave => {
                self.stack_to_frame(0);
                self.state.shift(-pointer);
                self.state.frame = None;
            }
            Mnemonic::Mov => self.track_mov(instruction),
            Mnemonic::Push => {
                let value = match instruction.op0_kind() {
                    kind if is_immediate(kind) => Value::Immediate(instruction.immediate(0) as u32),
                    OpKind::Register => self.state.register(instruction.op0_register()),
                    OpKind::Memory => self
                        .stack_slot(instruction)
                        .map_or(Value::Unknown, |o| self.state.slot(o)),
                    _ => Value::Unknown,
                };
                self.state.shift(pointer);
                self.state.set_slot(0, value);
            }
            Mnemonic::Pop => self.state.shift(-pointer),
            Mnemonic::Sub | Mnemonic::Add
                if to(stack_pointer) && is_immediate(instruction.op1_kind()) =>
            {
                let amount = instruction.immediate(1) as i64;
                let delta = if instruction.mnemonic() == Mnemonic::Sub {
                    amount
                } else {
                    -amount
                };
                self.state.shift(delta);
            }
            _ if moves_stack_pointer => {
                self.state.slots.clear();
                self.state.frame = None;
            }
            _ => {}
        }
    }

    /// The stack pointer becomes the frame pointer plus `displacement`.
    fn stack_to_frame(&mut self, displacement: i64) {
        match self.state.frame {
            Some(frame) => {
                self.state.shift(-(frame + displacement));
            }
            None => self.state.slots.clear(),
        }
    }

    fn track_mov(&mut self, instruction: &Instruction) {
        let source = match instruction.op1_kind() {
            kind if is_immediate(kind) => Value::Immediate(instruction.immediate(1) as u32),
            OpKind::Register if is_wide(instruction.op1_register()) => {
                self.state.register(instruction.op1_register())
            }
            OpKind::Memory if instruction.memory_size().size() >= 4 => {
                match self.memory_slot(instruction) {
                    Some(slot) if self.image.imports.contains_key(&slot) => Value::Import(slot),
                    Some(_) => Value::Unknown,
                    None => self
                        .stack_slot(instruction)
                        .map_or(Value::Unknown, |offset| self.state.slot(offset)),
                }
            }
            _ => Value::Unknown,
        };
        match instruction.op0_kind() {
            OpKind::Register => {
                let register = instruction.op0_register();
                let value = if is_wide(register) {
                    source
                } else {
                    Value::Unknown
                };
                self.state.set_register(register, value);
            }
            OpKind::Memory => {
                if let Some(offset) = self.stack_slot(instruction) {
                    let value = if instruction.memory_size().size() >= 4 {
                        source
                    } else {
                        Value::Unknown
                    };
                    self.state.set_slot(offset, value);
                }
            }
            _ => {}
        }
    }

    /// The slot (offset from the stack pointer) of a `[rsp+k]` memory operand, or `[rbp+k]`
    /// when the frame is known.
    fn stack_slot(&self, instruction: &Instruction) -> Option<i64> {
        if instruction.memory_index() != Register::None {
            return None;
        }
        let base = instruction.memory_base();
        let frame = if self.is(base, self.convention.stack_pointer) {
            0
        } else if self.is(base, self.convention.frame_pointer) {
            self.state.frame?
        } else {
            return None;
        };
        Some(frame + self.displacement(instruction.memory_displacement64()))
    }

    /// The RVA a memory operand reads when it is fixed: `[rip+disp]` on x64, `[abs32]` on x86.
    fn memory_slot(&self, instruction: &Instruction) -> Option<u32> {
        if instruction.is_ip_rel_memory_operand() {
            return self.rva(instruction.ip_rel_memory_address());
        }
        if self.convention.bitness == 32
            && instruction.memory_base() == Register::None
            && instruction.memory_index() == Register::None
        {
            return self.rva(u64::from(instruction.memory_displacement32()));
        }
        None
    }

    /// What a call or jump goes to.
    fn callee(&mut self, instruction: &Instruction) -> Callee {
        let slot = match instruction.op0_kind() {
            OpKind::Memory => self.memory_slot(instruction),
            OpKind::Register => match self.state.register(instruction.op0_register()) {
                Value::Import(slot) => Some(slot),
                _ => None,
            },
            kind if is_near_branch(kind) => {
                let Some(target) = self.rva(instruction.near_branch_target()) else {
                    return Callee::Unknown;
                };
                match self.thunk_slot(target) {
                    Some(slot) => Some(slot),
                    None => {
                        return match self.image.exported_apis.get(&target) {
                            Some(api) => Callee::Api(api),
                            None if self.summaries.start(target).is_some() => {
                                Callee::Function(target)
                            }
                            None => Callee::Unknown,
                        };
                    }
                }
            }
            _ => None,
        };
        match slot.and_then(|slot| Some((slot, self.image.imports.get(&slot)?))) {
            Some((slot, import)) => match pool_api(&import.name) {
                Some(api) => Callee::Api(api),
                None => Callee::Import(slot),
            },
            None => Callee::Unknown,
        }
    }

    /// The IAT slot of a `jmp [IAT]` thunk at `target`, decoded once per target.
    fn thunk_slot(&mut self, target: u32) -> Option<u32> {
        if let Some(known) = self.thunks.get(&target) {
            return *known;
        }
        let slot = self.image.bytes_at(target, 16).and_then(|bytes| {
            let ip = self.image.image_base.wrapping_add(u64::from(target));
            let mut decoder =
                Decoder::with_ip(self.convention.bitness, bytes, ip, DecoderOptions::NONE);
            let jump = decoder.decode();
            matches!(jump.code(), Code::Jmp_rm64 | Code::Jmp_rm32)
                .then(|| self.memory_slot(&jump))
                .flatten()
                .filter(|slot| self.image.imports.contains_key(slot))
        });
        if self.thunks.len() < MAX_THUNK_CACHE {
            self.thunks.insert(target, slot);
        }
        slot
    }

    /// Whether the function being read is an import thunk.
    fn in_thunk(&mut self) -> bool {
        self.function.is_some_and(|f| self.thunk_slot(f).is_some())
    }

    /// Argument `n` where a call sees it; at a jump (`tail`) the return address is still on
    /// the stack, one pointer above the arguments.
    fn argument(&self, n: usize, tail: bool) -> Value {
        let above = if tail { self.convention.pointer } else { 0 };
        match self.convention.arguments.get(n) {
            Some(Place::Register(register)) => self.state.register(*register),
            Some(Place::Slot(offset)) => self.state.slot(above + offset),
            None => Value::Unknown,
        }
    }

    /// Records what a call, or a jump when `tail`, passes; false for a plain jump.
    fn at_call(&mut self, instruction: &Instruction, tail: bool) -> bool {
        let callee = self.callee(instruction);
        let rva = self.rva(instruction.ip()).unwrap_or_default();
        match callee {
            Callee::Api(api) => {
                let value = match self.convention.tag_argument(api) {
                    // An import thunk (`jmp [IAT]`, alone or at a function start) is no use of
                    // the API of its own.
                    None if tail && (self.state.is_empty() || self.in_thunk()) => Value::Unknown,
                    None => Value::Immediate(UNTAGGED),
                    Some(n) => self.argument(usize::from(n), tail),
                };
                match value {
                    Value::Immediate(value) => {
                        self.findings.call(api.name, value, rva, self.section)
                    }
                    Value::Argument(k) => {
                        if let Some(function) = self.function {
                            self.summaries.reaches(function, k, api.name);
                        }
                    }
                    _ => {}
                }
            }
            Callee::Function(target) => {
                for n in 0..self.convention.arguments.len() {
                    match self.argument(n, tail) {
                        Value::Immediate(value) => {
                            self.summaries.constant(value, target, n as u8, rva, tail);
                        }
                        Value::Argument(k) => {
                            if let Some(function) = self.function {
                                self.summaries.passes(function, k, target, n as u8);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Callee::Unknown if tail => return false,
            Callee::Import(_) | Callee::Unknown => {
                let name = match callee {
                    Callee::Import(slot) => self.image.imports.get(&slot).map(|i| i.name.as_str()),
                    _ => None,
                };
                for n in 0..self.convention.arguments.len() {
                    if let Value::Immediate(value) = self.argument(n, tail) {
                        self.findings.arg(name, value, rva, self.section);
                    }
                }
            }
        }
        true
    }
}

/// The 32-bit immediates of an instruction, both halves of a 64-bit one.
fn immediates(instruction: &Instruction) -> impl Iterator<Item = u32> + '_ {
    (0..instruction.op_count()).flat_map(move |operand| {
        let halves = match instruction.op_kind(operand) {
            OpKind::Immediate32 | OpKind::Immediate32to64 => {
                [Some(instruction.immediate(operand) as u32), None]
            }
            OpKind::Immediate64 => {
                let value = instruction.immediate(operand);
                [Some(value as u32), Some((value >> 32) as u32)]
            }
            _ => [None, None],
        };
        halves.into_iter().flatten()
    })
}

fn is_immediate(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Immediate8
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate32to64
            | OpKind::Immediate64
    )
}

fn is_near_branch(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    )
}

/// Whether `instruction` writes its operand 0 and nothing else but the flags (`Some(true)`),
/// writes no register or memory at all (`Some(false)`), or may write others (`None`: ask
/// iced's operand analysis). The commonest instructions, known without that analysis.
fn writes_only_operand_0(instruction: &Instruction) -> Option<bool> {
    use Mnemonic::*;
    match instruction.mnemonic() {
        Cmp | Test | Nop | Bt => Some(false),
        Mov | Movzx | Movsx | Movsxd | Lea | Add | Sub | And | Or | Xor | Adc | Sbb | Shl | Shr
        | Sar | Rol | Ror | Inc | Dec | Neg | Not | Sete | Setne | Seta | Setae | Setb | Setbe
        | Setg | Setge | Setl | Setle | Sets | Setns | Cmove | Cmovne | Cmova | Cmovae | Cmovb
        | Cmovbe | Cmovg | Cmovge | Cmovl | Cmovle | Cmovs | Cmovns => Some(true),
        // The one-operand form writes rdx:rax.
        Imul if instruction.op_count() >= 2 => Some(true),
        _ => None,
    }
}

/// A 32- or 64-bit register: a move into it or from it carries the whole value.
fn is_wide(register: Register) -> bool {
    register.size() >= 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::image::{Arch, Import};
    use crate::extract::{Evidence, analyse_image};
    use crate::tag::Tag;
    use iced_x86::BlockEncoderOptions;
    use iced_x86::code_asm::*;

    const TEXT: u32 = 0x1000;

    /// The tag displayed as `text`, as an immediate.
    fn tag(text: &str) -> u32 {
        u32::from_le_bytes(text.as_bytes().try_into().unwrap())
    }

    /// Where the IAT of a 32-bit program is (absolute addresses: no RIP-relative labels).
    const IDATA: u32 = 0x3000;
    /// Where a program's read-only data is.
    const RDATA: u32 = 0x4000;

    /// Code assembled at .text; its IAT after it (64-bit) or in .idata (32-bit).
    struct Program {
        asm: CodeAssembler,
        base: u64,
        /// 64-bit IAT slots, by label, and 32-bit ones (at IDATA + 4 * index).
        labelled_slots: Vec<(CodeLabel, &'static str)>,
        fixed_slots: Vec<&'static str>,
        /// Labels of functions the image declares (.pdata), and of exported tag-taking APIs.
        declared: Vec<CodeLabel>,
        exported: Vec<(CodeLabel, &'static str)>,
        /// The contents of .rdata.
        rdata: Vec<u8>,
    }

    impl Program {
        fn new(bitness: u32) -> Program {
            Program {
                asm: CodeAssembler::new(bitness).unwrap(),
                base: if bitness == 64 {
                    0x1_4000_0000
                } else {
                    0x40_0000
                },
                labelled_slots: Vec::new(),
                fixed_slots: Vec::new(),
                declared: Vec::new(),
                exported: Vec::new(),
                rdata: Vec::new(),
            }
        }

        fn bitness(&self) -> u32 {
            self.asm.bitness()
        }

        /// The IAT slot of an import named `name`, as a memory operand for `call`/`jmp`/`mov`.
        fn import(&mut self, name: &'static str) -> AsmMemoryOperand {
            if self.bitness() == 64 {
                let label = self.asm.create_label();
                self.labelled_slots.push((label, name));
                qword_ptr(label)
            } else {
                let va = self.base + u64::from(IDATA) + 4 * self.fixed_slots.len() as u64;
                self.fixed_slots.push(name);
                dword_ptr(va)
            }
        }

        /// Assembles and analyses the program.
        fn run(self) -> Findings {
            self.run_with(&[]).0
        }

        /// Assembles and analyses the program; also gives the RVAs of `labels`.
        fn run_with(mut self, labels: &[CodeLabel]) -> (Findings, Vec<u32>) {
            for (label, _) in &mut self.labelled_slots {
                self.asm.set_label(label).unwrap();
                self.asm.dq(&[0]).unwrap();
            }
            let base = self.base;
            let result = self
                .asm
                .assemble_options(
                    base + u64::from(TEXT),
                    BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
                )
                .unwrap();
            let rva = |label: &CodeLabel| (result.label_ip(label).unwrap() - base) as u32;
            let module = |name: &str| Import {
                module: "ntoskrnl.exe".into(),
                name: name.into(),
            };
            let imports = self
                .labelled_slots
                .iter()
                .map(|(label, name)| (rva(label), module(name)))
                .chain(
                    (self.fixed_slots.iter().enumerate())
                        .map(|(i, name)| (IDATA + 4 * i as u32, module(name))),
                )
                .collect();
            let exported_apis = self
                .exported
                .iter()
                .map(|(label, name)| (rva(label), pool_api(name).unwrap()))
                .collect();
            let mut function_starts: Vec<u32> = self.declared.iter().map(rva).collect();
            function_starts.sort_unstable();
            let code = &result.inner.code_buffer;
            let idata = vec![0u8; 4 * self.fixed_slots.len()];
            let image = Image {
                arch: if self.bitness() == 64 {
                    Arch::X64
                } else {
                    Arch::X86
                },
                image_base: base,
                sections: vec![
                    Section::for_test(".text", TEXT, code),
                    Section::for_test(".idata", IDATA, &idata),
                    Section::for_test(".rdata", RDATA, &self.rdata),
                ],
                imports,
                exported_apis,
                export_names: Vec::new(),
                function_starts,
            };
            let mut findings = Findings::default();
            analyse_image(&image, &mut findings);
            (findings, labels.iter().map(rva).collect())
        }
    }

    /// The sites as (tag, evidence, api, number of wrappers).
    fn sites(findings: &Findings) -> Vec<(String, Evidence, Option<String>, usize)> {
        findings
            .sites
            .iter()
            .map(|s| (s.tag.to_string(), s.evidence, s.api.clone(), s.via.len()))
            .collect()
    }

    fn call(text: &str, api: &str, via: usize) -> (String, Evidence, Option<String>, usize) {
        (text.into(), Evidence::Call, Some(api.into()), via)
    }

    fn level(findings: &Findings, text: &str) -> Option<Evidence> {
        findings.levels.get(&Tag::from_value(tag(text))).copied()
    }

    const ALLOC: &str = "ExAllocatePoolWithTag";
    const FREE: &str = "ExFreePoolWithTag";

    #[test]
    fn a_tail_jump_into_a_wrapper_is_a_call_of_the_api_it_reaches() {
        // MSVC: KphAllocatePaged(size, 'KpA0') in tail position, the wrapper placed after it
        // and reached by nothing but that jump.
        let mut p = Program::new(64);
        let alloc = p.import(ALLOC);
        let mut wrapper = p.asm.create_label();
        let a = &mut p.asm;
        a.mov(edx, tag("KpA0")).unwrap();
        a.mov(ecx, 0x40).unwrap();
        a.jmp(wrapper).unwrap();
        // Far enough for a `jmp rel32`, as between functions in a real driver.
        a.db(&[0xCC; 200]).unwrap();
        a.set_label(&mut wrapper).unwrap();
        a.sub(rsp, 0x28).unwrap();
        a.mov(r8d, edx).unwrap();
        a.mov(edx, ecx).unwrap();
        a.mov(ecx, 1).unwrap();
        a.call(alloc).unwrap();
        a.add(rsp, 0x28).unwrap();
        a.ret().unwrap();
        let (f, rvas) = p.run_with(&[wrapper]);
        assert_eq!(sites(&f), [call("KpA0", ALLOC, 1)]);
        assert_eq!(f.sites[0].via, rvas);
    }

    /// x64: `depth` wrappers, each passing its second argument on as the next one's (the last
    /// one's to ExAllocatePoolWithTag's third); the innermost spills it into its frame and
    /// reloads it, as -O0 code does.
    fn chain(depth: usize) -> Findings {
        let mut p = Program::new(64);
        let alloc = p.import(ALLOC);
        let mut labels: Vec<CodeLabel> = (0..depth).map(|_| p.asm.create_label()).collect();
        let a = &mut p.asm;
        a.mov(edx, tag("Ch01")).unwrap();
        a.mov(ecx, 0x20).unwrap();
        a.call(labels[0]).unwrap();
        a.ret().unwrap();
        for i in 0..depth {
            a.set_label(&mut labels[i]).unwrap();
            if i + 1 < depth {
                a.push(rbx).unwrap();
                a.mov(ebx, edx).unwrap();
                a.mov(edx, ebx).unwrap();
                a.call(labels[i + 1]).unwrap();
                a.pop(rbx).unwrap();
                a.ret().unwrap();
            } else {
                a.push(rbp).unwrap();
                a.mov(rbp, rsp).unwrap();
                a.sub(rsp, 0x30).unwrap();
                a.mov(dword_ptr(rbp + 0x18), edx).unwrap();
                a.mov(dword_ptr(rbp + 0x10), ecx).unwrap();
                a.mov(eax, dword_ptr(rbp + 0x18)).unwrap();
                a.mov(r8d, eax).unwrap();
                a.mov(edx, dword_ptr(rbp + 0x10)).unwrap();
                a.xor(ecx, ecx).unwrap();
                a.call(alloc).unwrap();
                a.leave().unwrap();
                a.ret().unwrap();
            }
        }
        p.run()
    }

    #[test]
    fn chains_of_wrappers_are_followed() {
        assert_eq!(sites(&chain(1)), [call("Ch01", ALLOC, 1)]);
        assert_eq!(sites(&chain(2)), [call("Ch01", ALLOC, 2)]);
        assert_eq!(sites(&chain(4)), [call("Ch01", ALLOC, 4)]);
        assert_eq!(sites(&chain(8)), [call("Ch01", ALLOC, 8)]);
        // Past MAX_DEPTH the tag is not followed: the summarised chain reaches nothing.
        assert_eq!(sites(&chain(9)), []);
        assert_eq!(level(&chain(9), "Ch01"), Some(Evidence::Code));
    }

    #[test]
    fn a_wrapper_taking_the_tag_as_its_fifth_argument() {
        let mut p = Program::new(64);
        let free = p.import(FREE);
        let mut wrapper = p.asm.create_label();
        let a = &mut p.asm;
        a.sub(rsp, 0x38).unwrap();
        a.mov(dword_ptr(rsp + 0x20), tag("Fa05")).unwrap();
        a.xor(r9d, r9d).unwrap();
        a.call(wrapper).unwrap();
        a.add(rsp, 0x38).unwrap();
        a.ret().unwrap();
        a.set_label(&mut wrapper).unwrap();
        a.mov(edx, dword_ptr(rsp + 0x28)).unwrap();
        a.jmp(free).unwrap();
        let f = p.run();
        assert_eq!(sites(&f), [call("Fa05", FREE, 1)]);
    }

    #[test]
    fn an_x86_fastcall_wrapper_and_a_stdcall_one() {
        let mut p = Program::new(32);
        let alloc = p.import(ALLOC);
        let mut fastcall = p.asm.create_label();
        let mut stdcall = p.asm.create_label();
        let a = &mut p.asm;
        a.mov(edx, tag("Fc01")).unwrap();
        a.mov(ecx, 0x10).unwrap();
        a.call(fastcall).unwrap();
        a.push(tag("Sc01")).unwrap();
        a.push(0x10).unwrap();
        a.call(stdcall).unwrap();
        a.ret().unwrap();
        // MyAlloc(ecx = size, edx = tag).
        a.set_label(&mut fastcall).unwrap();
        a.push(edx).unwrap();
        a.push(ecx).unwrap();
        a.push(0).unwrap();
        a.call(alloc).unwrap();
        a.ret().unwrap();
        // MyAlloc(size, tag), stdcall with a frame.
        a.set_label(&mut stdcall).unwrap();
        a.push(ebp).unwrap();
        a.mov(ebp, esp).unwrap();
        a.push(dword_ptr(ebp + 0xc)).unwrap();
        a.push(dword_ptr(ebp + 8)).unwrap();
        a.push(1).unwrap();
        a.call(alloc).unwrap();
        a.pop(ebp).unwrap();
        a.ret_1(8).unwrap();
        let f = p.run();
        assert_eq!(sites(&f), [call("Fc01", ALLOC, 1), call("Sc01", ALLOC, 1)]);
    }

    #[test]
    fn an_x86_o0_wrapper_spills_its_tag_below_the_frame() {
        // gcc -O0: MyAlloc(size, tag) copies its arguments to locals at [ebp-4], [ebp-8].
        let mut p = Program::new(32);
        let alloc = p.import(ALLOC);
        let mut wrapper = p.asm.create_label();
        let a = &mut p.asm;
        a.sub(esp, 8).unwrap();
        a.mov(dword_ptr(esp + 4), tag("Lo01")).unwrap();
        a.mov(dword_ptr(esp), 0x20).unwrap();
        a.call(wrapper).unwrap();
        a.add(esp, 8).unwrap();
        a.ret().unwrap();
        a.set_label(&mut wrapper).unwrap();
        a.push(ebp).unwrap();
        a.mov(ebp, esp).unwrap();
        a.sub(esp, 0x18).unwrap();
        a.mov(eax, dword_ptr(ebp + 0xc)).unwrap();
        a.mov(dword_ptr(ebp - 4), eax).unwrap();
        a.mov(eax, dword_ptr(ebp + 8)).unwrap();
        a.mov(dword_ptr(ebp - 8), eax).unwrap();
        a.mov(eax, dword_ptr(ebp - 4)).unwrap();
        a.mov(dword_ptr(esp + 8), eax).unwrap();
        a.mov(eax, dword_ptr(ebp - 8)).unwrap();
        a.mov(dword_ptr(esp + 4), eax).unwrap();
        a.mov(dword_ptr(esp), 0).unwrap();
        a.call(alloc).unwrap();
        a.sub(esp, 12).unwrap();
        a.leave().unwrap();
        a.ret().unwrap();
        let f = p.run();
        assert_eq!(sites(&f), [call("Lo01", ALLOC, 1)]);
    }

    #[test]
    fn a_table_the_code_indexes_is_data_whatever_surrounds_it() {
        // The table at 0x10, text before it in the same printable run.
        let rdata = b"Hello, world!\0abTb01Tb02\0\0\0\0".to_vec();
        let data = |f: &Findings| {
            let mut found: Vec<String> = f.levels.keys().map(|t| t.to_string()).collect();
            found.sort();
            found
        };
        // x64 (gcc): lea rax, [rip+table]; mov r8d, [rax+rcx*4]. The lea is the first
        // instruction, so that its displacement is known before assembling.
        let mut p = Program::new(64);
        let lea = (RDATA + 0x10 - (TEXT + 7)).to_le_bytes();
        p.asm
            .db(&[0x48, 0x8D, 0x05, lea[0], lea[1], lea[2], lea[3]])
            .unwrap();
        p.asm.mov(r8d, dword_ptr(rax + rcx * 4)).unwrap();
        p.asm.ret().unwrap();
        p.rdata = rdata.clone();
        let f = p.run();
        assert_eq!(data(&f), ["Tb01", "Tb02"]);
        assert_eq!(level(&f, "Tb01"), Some(Evidence::Data));
        // x86: mov eax, [table+ecx*4].
        let mut p = Program::new(32);
        let table = p.base + u64::from(RDATA) + 0x10;
        p.asm.mov(eax, dword_ptr(ecx * 4 + table as i32)).unwrap();
        p.asm.ret().unwrap();
        p.rdata = rdata;
        assert_eq!(data(&p.run()), ["Tb01", "Tb02"]);
    }

    #[test]
    fn a_table_read_through_an_address_kept_on_the_stack_is_data() {
        // gcc -O0, in an image that calls no pool API (only the regions that may need it are
        // tracked): lea rdx, [rip+table]; mov [rsp+0x20], rdx; mov rcx, [rsp+0x20];
        // mov eax, [rcx+rax*4]. The copy from one register to another keeps it too.
        let rdata = b"Hello, world!\0abTb01Tb02\0\0\0\0".to_vec();
        for through_stack in [true, false] {
            let mut p = Program::new(64);
            let lea = (RDATA + 0x10 - (TEXT + 7)).to_le_bytes();
            p.asm
                .db(&[0x48, 0x8D, 0x15, lea[0], lea[1], lea[2], lea[3]])
                .unwrap();
            if through_stack {
                p.asm.mov(qword_ptr(rsp + 0x20), rdx).unwrap();
                p.asm.mov(rcx, qword_ptr(rsp + 0x20)).unwrap();
            } else {
                p.asm.mov(rcx, rdx).unwrap();
            }
            p.asm.mov(eax, dword_ptr(rcx + rax * 4)).unwrap();
            p.asm.ret().unwrap();
            p.rdata = rdata.clone();
            let f = p.run();
            assert_eq!(level(&f, "Tb01"), Some(Evidence::Data), "{through_stack}");
            assert_eq!(level(&f, "Tb02"), Some(Evidence::Data), "{through_stack}");
        }
    }

    #[test]
    fn a_padding_nop_through_a_taken_address_reads_no_table() {
        // lea rax, [rip+text]; nop dword [rax+rax*1+0]; mov edx, [rax+rcx*4]: only the last
        // reads, and without it the text is no table. With and without an import of a pool
        // API (everything tracked, or only the regions that may need it).
        let rdata = b"\0\0\0\0MN_QUERY_X\0\0\0\0\0\0".to_vec();
        for (read, pool_api) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut p = Program::new(64);
            if pool_api {
                p.import("ExAllocatePoolWithTag");
            }
            let lea = (RDATA + 4 - (TEXT + 7)).to_le_bytes();
            p.asm
                .db(&[0x48, 0x8D, 0x05, lea[0], lea[1], lea[2], lea[3]])
                .unwrap();
            p.asm.db(&[0x0F, 0x1F, 0x44, 0x00, 0x00]).unwrap();
            if read {
                p.asm.mov(edx, dword_ptr(rax + rcx * 4)).unwrap();
            }
            p.asm.ret().unwrap();
            p.rdata = rdata.clone();
            let f = p.run();
            let expected = read.then_some(Evidence::Data);
            assert_eq!(level(&f, "MN_Q"), expected, "{read} {pool_api}");
            assert_eq!(level(&f, "UERY"), expected, "{read} {pool_api}");
        }
    }

    #[test]
    fn a_fourcc_passed_to_a_function_that_keeps_it_is_code() {
        let mut p = Program::new(64);
        let mut trace = p.asm.create_label();
        let mut seen = p.asm.create_label();
        let a = &mut p.asm;
        a.mov(edx, tag("Trc1")).unwrap();
        a.call(trace).unwrap();
        a.ret().unwrap();
        a.set_label(&mut trace).unwrap();
        a.mov(dword_ptr(seen), edx).unwrap();
        a.ret().unwrap();
        a.set_label(&mut seen).unwrap();
        a.dd(&[0]).unwrap();
        let f = p.run();
        assert_eq!(sites(&f), []);
        assert_eq!(level(&f, "Trc1"), Some(Evidence::Code));
    }

    #[test]
    fn a_module_calling_its_own_exported_api() {
        let mut p = Program::new(64);
        let mut export = p.asm.create_label();
        let a = &mut p.asm;
        a.mov(r8d, tag("Ex01")).unwrap();
        a.call(export).unwrap();
        a.mov(edx, tag("Ex02")).unwrap();
        a.jmp(export).unwrap();
        a.set_label(&mut export).unwrap();
        a.xor(eax, eax).unwrap();
        a.ret().unwrap();
        p.exported.push((export, ALLOC));
        p.declared.push(export);
        let f = p.run();
        assert_eq!(sites(&f), [call("Ex01", ALLOC, 0)]);
        assert_eq!(level(&f, "Ex02"), Some(Evidence::Code));
    }

    #[test]
    fn untagged_allocations_are_calls_for_none() {
        for bitness in [32, 64] {
            let mut p = Program::new(bitness);
            let untagged = p.import("ExAllocatePool");
            let quota = p.import("ExAllocatePoolWithQuota");
            p.asm.call(untagged).unwrap();
            // MyQuotaAlloc(size) { return ExAllocatePoolWithQuota(PagedPool, size); }
            p.asm.mov(ecx, 1).unwrap();
            p.asm.jmp(quota).unwrap();
            // A linker's import thunk: no use of the API of its own.
            p.asm.jmp(untagged).unwrap();
            let f = p.run();
            assert_eq!(
                sites(&f),
                [
                    call("None", "ExAllocatePool", 0),
                    call("None", "ExAllocatePoolWithQuota", 0)
                ],
                "{bitness}"
            );
        }
    }

    #[test]
    fn leaving_a_frame_forgets_its_locals() {
        // A local at [ebp-4] must not become ExFreePoolWithTag's tag after `mov esp, ebp`.
        for leave in [false, true] {
            let mut p = Program::new(32);
            let free = p.import(FREE);
            let a = &mut p.asm;
            a.push(ebp).unwrap();
            a.mov(ebp, esp).unwrap();
            a.sub(esp, 16).unwrap();
            a.mov(dword_ptr(esp + 12), tag("Lc01")).unwrap();
            if leave {
                a.leave().unwrap();
            } else {
                a.mov(esp, ebp).unwrap();
                a.pop(ebp).unwrap();
            }
            a.jmp(free).unwrap();
            let f = p.run();
            assert_eq!(sites(&f), [], "leave: {leave}");
        }
    }

    #[test]
    fn indexed_and_narrow_writes_cancel_what_they_overwrite() {
        let mut p = Program::new(64);
        let alloc = p.import(ALLOC);
        let free = p.import(FREE);
        let a = &mut p.asm;
        a.sub(rsp, 0x48).unwrap();
        a.mov(dword_ptr(rsp + 0x28), tag("Ix01")).unwrap();
        a.mov(dword_ptr(rsp + rax * 4 + 0x10), ecx).unwrap();
        a.call(alloc).unwrap(); // ExAllocatePoolWithTag's 6th slot: not read anyway
        a.mov(ecx, tag("Nb01")).unwrap();
        a.mov(r8b, cl).unwrap();
        a.call(alloc).unwrap();
        a.mov(edx, tag("Nb02")).unwrap();
        a.mov(dx, 0x4141).unwrap();
        a.call(free).unwrap();
        a.add(rsp, 0x48).unwrap();
        a.ret().unwrap();
        let f = p.run();
        assert_eq!(sites(&f), []);
    }

    #[test]
    fn an_indexed_write_into_the_frame_cancels_the_arguments_there() {
        let mut p = Program::new(32);
        let free = p.import(FREE);
        let a = &mut p.asm;
        a.sub(esp, 8).unwrap();
        a.mov(dword_ptr(esp + 4), tag("Ix02")).unwrap();
        a.mov(dword_ptr(esp + eax * 4), ecx).unwrap();
        a.call(free).unwrap();
        a.sub(esp, 8).unwrap();
        a.mov(dword_ptr(esp + 4), tag("Ix03")).unwrap();
        a.call(free).unwrap();
        a.ret().unwrap();
        let f = p.run();
        assert_eq!(sites(&f), [call("Ix03", FREE, 0)]);
    }

    #[test]
    fn the_state_at_a_forward_branch_reaches_its_target() {
        // gcc: the IAT entry hoisted into rsi, an error path placed after an unconditional jump.
        let mut p = Program::new(64);
        let alloc = p.import(ALLOC);
        let mut error = p.asm.create_label();
        let mut done = p.asm.create_label();
        let a = &mut p.asm;
        a.push(rsi).unwrap();
        a.mov(rsi, alloc).unwrap();
        a.mov(r8d, tag("Mg01")).unwrap();
        a.test(ecx, ecx).unwrap();
        a.je(error).unwrap();
        a.call(rsi).unwrap();
        a.jmp(done).unwrap();
        a.set_label(&mut error).unwrap();
        a.call(rsi).unwrap();
        a.set_label(&mut done).unwrap();
        a.pop(rsi).unwrap();
        a.ret().unwrap();
        let f = p.run();
        // Both calls: the straight line, and the error path from the je.
        assert_eq!(f.sites.len(), 2);
        assert_eq!(sites(&f)[0], call("Mg01", ALLOC, 0));
    }

    /// Tracking only the regions that may need it finds exactly what tracking everything finds,
    /// on code made of the forms that matter (taken addresses, table reads, stack spills,
    /// printable and other immediates, calls, jumps, returns) mixed with random bytes.
    mod regions {
        use super::*;
        use proptest::prelude::*;

        const BASE32: u64 = 0x6100_0000;
        const BASE64: u64 = 0x1_4000_0000;

        /// One piece of code: a form the analysis cares about, or random bytes (rarer).
        fn piece(bitness: u32) -> impl Strategy<Value = Vec<u8>> {
            // Mostly into .rdata, which lies before .text.
            let near = 0u32..0x1400;
            let printable = || proptest::array::uniform4(0x20u8..0x7f);
            let absolute = near.prop_map(move |rva| (BASE32 as u32 + rva).to_le_bytes().to_vec());
            let relative = || (-0x1800i32..0x400).prop_map(|d| d.to_le_bytes().to_vec());
            let with = |prefix: &'static [u8], operand: BoxedStrategy<Vec<u8>>| {
                operand.prop_map(move |o| [prefix, &o].concat()).boxed()
            };
            let fixed = |bytes: &'static [u8]| Just(bytes.to_vec()).boxed();
            let rare: Vec<BoxedStrategy<Vec<u8>>> = vec![
                proptest::collection::vec(any::<u8>(), 1..8).boxed(),
                with(&[0xB9], printable().prop_map(Vec::from).boxed()),
                with(&[0x68], printable().prop_map(Vec::from).boxed()),
                with(
                    &[0xC7, 0x44, 0x24, 0x08],
                    printable().prop_map(Vec::from).boxed(),
                ),
            ];
            let mut common: Vec<BoxedStrategy<Vec<u8>>> = vec![
                with(&[0xE8], relative().boxed()),
                with(&[0xE9], relative().boxed()),
                (0u8..0x40).prop_map(|d| vec![0xEB, d]).boxed(),
                (0u8..0x40).prop_map(|d| vec![0x74, d]).boxed(),
                fixed(&[0xC3]),
                fixed(&[0x55]),
                fixed(&[0xC9]),
                fixed(&[0x50]),
                fixed(&[0x8B, 0x04, 0x90]),
                fixed(&[0x8B, 0x04, 0x10]),
                fixed(&[0x89, 0x44, 0x24, 0x10]),
                fixed(&[0x8B, 0x54, 0x24, 0x10]),
            ];
            if bitness == 64 {
                common.extend([
                    with(&[0x48, 0x8D, 0x05], relative().boxed()),
                    with(&[0x48, 0x8D, 0x15], relative().boxed()),
                    with(&[0xFF, 0x15], relative().boxed()),
                    fixed(&[0x48, 0x63, 0x04, 0x82]),
                    fixed(&[0x8B, 0x04, 0x02]),
                    fixed(&[0x48, 0x89, 0xC1]),
                    fixed(&[0x48, 0x89, 0xD1]),
                    fixed(&[0x48, 0x89, 0xE5]),
                    fixed(&[0x48, 0x89, 0x54, 0x24, 0x20]),
                    fixed(&[0x48, 0x8B, 0x4C, 0x24, 0x20]),
                    fixed(&[0x8B, 0x04, 0x81]),
                    fixed(&[0x48, 0x83, 0xEC, 0x28]),
                ]);
            } else {
                common.extend([
                    with(&[0x8B, 0x04, 0x85], absolute.clone().boxed()),
                    with(&[0xFF, 0x24, 0x85], absolute.clone().boxed()),
                    with(&[0xFF, 0x15], absolute.clone().boxed()),
                    with(&[0xA1], absolute.clone().boxed()),
                    with(&[0x68], absolute.boxed()),
                    fixed(&[0x89, 0xE5]),
                    fixed(&[0x83, 0xEC, 0x10]),
                ]);
            }
            let weighted = rare
                .into_iter()
                .map(|s| (1, s))
                .chain(common.into_iter().map(|s| (8, s)));
            proptest::strategy::Union::new_weighted(weighted.collect())
        }

        /// Analyses the pieces, those marked as declared function starts, both ways.
        fn same_either_way(bitness: u32, pieces: Vec<(Vec<u8>, bool)>) {
            let mut code = Vec::new();
            let mut declared = Vec::new();
            for (piece, starts) in pieces {
                if starts {
                    declared.push(code.len());
                }
                code.extend(piece);
            }
            // One printable run that ends off a word boundary: no `data` of its own, only the
            // tables the code reads in it.
            let rdata: Vec<u8> = (0..0xE01u32).map(|i| b'A' + (i * 7 % 26) as u8).collect();
            let imports = (0..16u32)
                .map(|i| {
                    let name = ["KeWaitForSingleObject", "RtlCopyMemory", "memcpy"][i as usize % 3];
                    let import = Import {
                        module: "ntoskrnl.exe".into(),
                        name: name.into(),
                    };
                    (IDATA + 8 * i, import)
                })
                .collect();
            let mut function_starts: Vec<u32> = declared.iter().map(|&n| TEXT + n as u32).collect();
            function_starts.dedup();
            let image = Image {
                arch: if bitness == 64 { Arch::X64 } else { Arch::X86 },
                image_base: if bitness == 64 { BASE64 } else { BASE32 },
                sections: vec![
                    Section::for_test(".text", TEXT, &code),
                    Section::for_test(".idata", IDATA, &[0; 0x80]),
                    Section::for_test(".rdata", 0x200, &rdata),
                ],
                imports,
                exported_apis: HashMap::new(),
                export_names: Vec::new(),
                function_starts,
            };
            assert!(!image.uses_pool_apis());
            crate::extract::analyse_both_ways(&image);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn x64_regions_find_what_tracking_everything_finds(
                pieces in proptest::collection::vec((piece(64), proptest::bool::weighted(0.1)), 0..400),
            ) {
                same_either_way(64, pieces);
            }

            #[test]
            fn x86_regions_find_what_tracking_everything_finds(
                pieces in proptest::collection::vec((piece(32), proptest::bool::weighted(0.1)), 0..400),
            ) {
                same_either_way(32, pieces);
            }
        }
    }
}
