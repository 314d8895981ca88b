//! What the scan of code that may need no tracking (see `Region`) knows of an instruction,
//! decoded by pooltag itself where it can and by iced-x86 for the rest.
//!
//! Most code is only scanned: of the bench corpus's 219 MB of x86 and x64 code, 31 MB are
//! tracked, and iced-x86's full decoding of every scanned instruction was about half of the
//! analysis's time. The scan needs an instruction's length and whether it may matter; for the
//! few that may, their 32-bit immediates, memory operand and whether they are a `mov`, a `push`
//! or a RIP-relative `lea` (a [`Brief`]).
//! - [`skim`] finds the length and whether the instruction may matter for the one-byte opcodes,
//!   the common two-byte integer ones, SSE (with its mandatory `66`/`F3`/`F2`) and x87, with
//!   the segment, operand-size and REX prefixes;
//! - [`skim_length`] answers the same through [`Lengths`], a table by opcode and ModRM byte
//!   worked out from `skim` (97.6% of the bench corpus's x86 instructions, 94.1% of x64's);
//! - [`Skim::brief`] decodes the brief of those that may matter, but of SSE and x87 (iced-x86's).
//!
//! Anything else (a lock prefix, VEX, a three-byte opcode, an invalid or overlong encoding, the
//! last 14 bytes of a section: 98 K of the corpus's 60 M instructions) is left to iced-x86, so
//! that every instruction boundary and every field is iced-x86's: the tests compare the two on
//! every opcode and ModRM byte under 17 prefix sets and 3 SIB bytes, and on random code.

use std::sync::LazyLock;

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::{gpr_index, immediates};
use crate::tag::Tag;

/// A register as the scan tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reg {
    None,
    /// A general-purpose register, any width, by number (`eax`, `rax`, `al`, `ah` -> 0).
    Gpr(u8),
    /// Any other register (`rip`, a segment or vector register).
    Other,
}

impl Reg {
    pub(super) fn of(register: Register) -> Reg {
        match gpr_index(register) {
            Some(index) => Reg::Gpr(index as u8),
            None if register == Register::None => Reg::None,
            None => Reg::Other,
        }
    }

    /// The register's bit in a set of general-purpose registers (none for any other).
    pub(super) fn bit(self) -> u16 {
        match self {
            Reg::Gpr(index) => 1 << index,
            Reg::None | Reg::Other => 0,
        }
    }
}

/// A memory operand through a register (an absolute address is none: no table is read through
/// it, and it is no stack slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Memory {
    pub base: Reg,
    pub index: Reg,
    /// 1 without an index.
    pub scale: u8,
    /// As iced-x86 gives it: the address for `[rip+d]`, unextended with 32-bit addressing.
    pub displacement: u64,
    /// Bytes read or written (0 for `lea`).
    pub size: u32,
}

impl Memory {
    /// The memory operand of `instruction`, if it goes through a register; a multi-byte `nop`
    /// (padding) has none: it reads nothing.
    pub(super) fn of(instruction: &Instruction) -> Option<Memory> {
        let (base, index) = (instruction.memory_base(), instruction.memory_index());
        if (base == Register::None && index == Register::None)
            || instruction.mnemonic() == Mnemonic::Nop
        {
            return None;
        }
        Some(Memory {
            base: Reg::of(base),
            index: Reg::of(index),
            scale: match index {
                Register::None => 1,
                _ => instruction.memory_index_scale() as u8,
            },
            displacement: instruction.memory_displacement64(),
            size: instruction.memory_size().size() as u32,
        })
    }

    /// `[rsp+k]` or `[rbp+k]`, any width.
    pub(super) fn on_stack(&self) -> bool {
        self.index == Reg::None && matches!(self.base, Reg::Gpr(4 | 5))
    }

    /// An x64 read of a 4-byte element by index: the registers that may hold the table's
    /// address (the base, and the index when unscaled: gcc -O0 scales the other register
    /// itself) and the displacement.
    pub(super) fn x64_table_read(&self) -> Option<([Reg; 2], i64)> {
        if self.index == Reg::None || self.size != 4 {
            return None;
        }
        let unscaled = if self.scale == 1 {
            self.index
        } else {
            Reg::None
        };
        Some(([self.base, unscaled], self.displacement as i64))
    }

    /// The address of an x86 table `[table+reg*4]`.
    pub(super) fn x86_table(&self) -> Option<u32> {
        (self.index != Reg::None && self.base == Reg::None && self.scale == 4)
            .then_some(self.displacement as u32)
    }
}

/// Where a `mov` or `push` operand is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Operand {
    /// A register, as its bit (0 for one that is not general-purpose).
    Register(u16),
    Memory,
    /// An immediate, or nothing the scan follows.
    Other,
}

/// What the scan follows an instruction for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Operation {
    /// `lea reg, [rip+d]`: the register's bit and the address.
    LeaIpRelative {
        to: u16,
        address: u64,
    },
    Move {
        from: Operand,
        to: Operand,
    },
    Push {
        from: Operand,
    },
    Other,
}

/// What the scan knows of one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Brief {
    pub length: usize,
    pub invalid: bool,
    /// The 32-bit immediates, both halves of a 64-bit one.
    pub immediates: [Option<u32>; 2],
    pub memory: Option<Memory>,
    pub operation: Operation,
}

impl Brief {
    /// What iced-x86's decoding of an instruction tells the scan.
    pub(super) fn of(instruction: &Instruction) -> Brief {
        let mut brief = Brief {
            length: instruction.len(),
            invalid: instruction.is_invalid(),
            immediates: [None; 2],
            memory: None,
            operation: Operation::Other,
        };
        if brief.invalid {
            return brief;
        }
        for (slot, value) in brief.immediates.iter_mut().zip(immediates(instruction)) {
            *slot = Some(value);
        }
        brief.memory = Memory::of(instruction);
        let operand = |n| match instruction.op_kind(n) {
            OpKind::Register => Operand::Register(Reg::of(instruction.op_register(n)).bit()),
            OpKind::Memory => Operand::Memory,
            _ => Operand::Other,
        };
        brief.operation = match instruction.mnemonic() {
            Mnemonic::Lea if instruction.is_ip_rel_memory_operand() => Operation::LeaIpRelative {
                to: Reg::of(instruction.op0_register()).bit(),
                address: instruction.ip_rel_memory_address(),
            },
            Mnemonic::Mov => Operation::Move {
                from: operand(1),
                to: operand(0),
            },
            Mnemonic::Push => Operation::Push { from: operand(0) },
            _ => Operation::Other,
        };
        brief
    }
}

/// The immediate after the ModRM byte and displacement (in the order of [`IMMEDIATES`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Immediate {
    None,
    /// 1 byte (an `imm8`, a `rel8`): never a 32-bit immediate.
    Byte,
    /// 2 bytes (`ret imm16`).
    Word,
    /// 3 bytes (`enter imm16, imm8`).
    Enter,
    /// 2 bytes with a 16-bit operand size, else 4 (a 32-bit immediate).
    Z,
    /// The operand size (`mov reg, imm32`): 2, 4 or 8 bytes.
    V,
    /// A `rel32` branch displacement.
    Rel32,
    /// A `moffs` address: 4 bytes, 8 on x64.
    Moffs,
}

/// The size of the memory operand.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Size {
    Byte,
    Word,
    /// The operand size.
    V,
    /// The operand size, at most 4 bytes (`movsxd`).
    AtMostDword,
    /// A stack or branch operand: 8 bytes on x64 (2 with `66`), 4 on x86.
    Stack,
    /// `lea` reads nothing.
    Zero,
}

/// The `mov`, `push` and `lea` forms the scan follows (the groups last: see [`skim`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Other,
    /// `mov r/m, reg` (88, 89).
    MoveToRm,
    /// `mov reg, r/m` (8A, 8B).
    MoveFromRm,
    /// `mov r/m, imm` (C6, C7).
    MoveImmediateToRm,
    /// `mov reg, imm` (B0-BF), the register in the opcode.
    MoveImmediate,
    /// `mov al/eax, [moffs]` (A0, A1).
    MoveFromMoffs,
    /// `mov [moffs], al/eax` (A2, A3).
    MoveToMoffs,
    Lea,
    /// `push reg` (50-57).
    PushRegister,
    /// `push imm` (68, 6A).
    PushImmediate,
    /// `nop r/m` (0F 1F /0): its memory operand reads nothing.
    Nop,
    /// FF: `inc`, `dec`, `call`, `jmp` or `push` by the ModRM reg field.
    GroupFf,
    /// F6, F7: an immediate for `test` (reg 0, 1) only.
    Group3,
    /// D8..DF: the forms in [`X87_MEMORY_FORMS`] and [`X87_REGISTER_FORMS`].
    X87,
}

/// How an opcode is decoded, when [`skim`] decodes it (16 bytes: its address in [`FORMS`] is a
/// shift).
#[derive(Clone, Copy)]
#[repr(align(16))]
struct Form {
    /// Bit 0: decoded in 32-bit code; bit 1: in 64-bit code. None: left to iced-x86.
    modes: u8,
    modrm: bool,
    immediate: Immediate,
    size: Size,
    kind: Kind,
    /// The registers and memory are bytes (`al`..`bh`, `spl`..`r15b` with REX).
    byte: bool,
    /// The ModRM reg values decoded (a bit each); others are left to iced-x86.
    regs: u8,
    /// The mandatory prefixes decoded (bits: [`NO_PREFIX`], [`P66`], [`PF3`], [`PF2`]). Only
    /// SSE forms take `F2`/`F3`; branches leave `66` to iced-x86 (its meaning there differs
    /// between vendors).
    prefixes: u8,
    /// What the scan needs beyond the length (the memory operand's size, for a [`Brief`]) is
    /// left to iced-x86: SSE and x87, which never carry a tag.
    briefless: bool,
    /// A register operand is left to iced-x86 (`lea reg, reg` is invalid).
    memory_only: bool,
    /// What every instruction of the form may matter for ([`follows`]).
    follows: u8,
    /// [`follows::INDEXED`] if a memory operand with an index matters (not for a `nop`).
    indexed: u8,
    /// The immediate's size by operand size, from [`IMMEDIATES`] (looked up with the form:
    /// a second lookup would lengthen the chain from one instruction to the next).
    sizes: [u8; 3],
}

const NONE: Form = Form {
    modes: 0,
    modrm: false,
    immediate: Immediate::None,
    size: Size::V,
    kind: Kind::Other,
    byte: false,
    regs: 0xFF,
    prefixes: NO_PREFIX | P66,
    briefless: false,
    memory_only: false,
    follows: 0,
    indexed: 0,
    sizes: [0; 3],
};
const BOTH: u8 = 0b11;
const ONLY_32: u8 = 0b01;
const NO_PREFIX: u8 = 1;
const P66: u8 = 2;
const PF3: u8 = 4;
const PF2: u8 = 8;
const ALL_PREFIXES: u8 = NO_PREFIX | P66 | PF3 | PF2;

/// No ModRM byte, the given immediate.
const fn plain(modes: u8, immediate: Immediate) -> Form {
    Form {
        modes,
        immediate,
        ..NONE
    }
}

/// A ModRM byte with an operand of `size`.
const fn modrm(size: Size, byte: bool, immediate: Immediate) -> Form {
    Form {
        modes: BOTH,
        modrm: true,
        indexed: follows::INDEXED,
        immediate,
        size,
        byte,
        ..NONE
    }
}

const fn with_kind(form: Form, kind: Kind) -> Form {
    // A move from an immediate or an absolute address, or to one, moves no address the scan
    // follows.
    let follows = match kind {
        Kind::MoveToRm | Kind::MoveFromRm | Kind::PushRegister => follows::MOVES,
        _ => 0,
    };
    Form {
        kind,
        follows,
        ..form
    }
}

const fn only_regs(form: Form, regs: u8) -> Form {
    Form { regs, ..form }
}

const fn no_66(form: Form) -> Form {
    Form {
        prefixes: NO_PREFIX,
        ..form
    }
}

/// An SSE form (a ModRM byte) under the mandatory `prefixes`.
const fn sse(prefixes: u8, immediate: Immediate) -> Form {
    Form {
        prefixes,
        briefless: true,
        ..modrm(Size::V, false, immediate)
    }
}

/// The x87 memory forms iced-x86 decodes (bit `n`: ModRM reg `n`), for D8..DF, as iced-x86 1.22
/// decodes them in 32- and 64-bit code (the tests check every ModRM byte).
static X87_MEMORY_FORMS: [u8; 8] = [0xFF, 0xFD, 0xFF, 0xAF, 0xFF, 0xDF, 0xFF, 0xFF];

/// The x87 register forms iced-x86 decodes (bit `n`: ModRM `0xC0 + n`), for D8..DF.
static X87_REGISTER_FORMS: [u64; 8] = [
    0xFFFF_FFFF_FFFF_FFFF,
    0xFFFF_7F33_FF01_FFFF,
    0x0000_0200_FFFF_FFFF,
    0x00FF_FF1F_FFFF_FFFF,
    0xFFFF_FFFF_FFFF_FFFF,
    0x0000_FFFF_FFFF_FFFF,
    0xFFFF_FFFF_02FF_FFFF,
    0x00FF_FF01_FFFF_FFFF,
];

/// The one-byte opcodes (0..256) and the two-byte ones after 0F (256..512), in x86 code and
/// in x64 code.
static FORMS: [[Form; 512]; 2] = [with_sizes(forms(), 0), with_sizes(forms(), 1)];

/// The forms of x86 (`mode` 0) or x64 code (1), with their [`Form::sizes`].
const fn with_sizes(mut forms: [Form; 512], mode: usize) -> [Form; 512] {
    let mut op = 0;
    while op < 512 {
        forms[op].sizes = IMMEDIATES[mode][forms[op].immediate as usize];
        op += 1;
    }
    forms
}

const fn forms() -> [Form; 512] {
    use Immediate as I;
    let mut forms = [NONE; 512];
    let mut op = 0;
    while op < 256 {
        forms[op] = match op as u8 {
            // The eight ALU operations: r/m,reg / reg,r/m in bytes and words, then al/eax,imm.
            0x00..=0x3F if op & 7 < 4 => modrm(Size::V, op & 1 == 0, I::None),
            0x00..=0x3F if op & 7 == 4 => plain(BOTH, I::Byte),
            0x00..=0x3F if op & 7 == 5 => plain(BOTH, I::Z),
            0x40..=0x4F => plain(ONLY_32, I::None),
            0x50..=0x57 => with_kind(plain(BOTH, I::None), Kind::PushRegister),
            0x58..=0x5F => plain(BOTH, I::None),
            0x63 => Form {
                modes: 0b10,
                ..modrm(Size::AtMostDword, false, I::None)
            },
            0x68 => with_kind(plain(BOTH, I::Z), Kind::PushImmediate),
            0x69 => modrm(Size::V, false, I::Z),
            0x6A => with_kind(plain(BOTH, I::Byte), Kind::PushImmediate),
            0x6B => modrm(Size::V, false, I::Byte),
            0x70..=0x7F | 0xEB => no_66(plain(BOTH, I::Byte)),
            0x80 => modrm(Size::Byte, true, I::Byte),
            0x81 => modrm(Size::V, false, I::Z),
            0x82 => Form {
                modes: ONLY_32,
                ..modrm(Size::Byte, true, I::Byte)
            },
            0x83 => modrm(Size::V, false, I::Byte),
            0x84..=0x87 => modrm(Size::V, op & 1 == 0, I::None),
            0x88 | 0x89 => with_kind(modrm(Size::V, op & 1 == 0, I::None), Kind::MoveToRm),
            0x8A | 0x8B => with_kind(modrm(Size::V, op & 1 == 0, I::None), Kind::MoveFromRm),
            0x8D => Form {
                memory_only: true,
                ..with_kind(modrm(Size::Zero, false, I::None), Kind::Lea)
            },
            0x8F => only_regs(modrm(Size::Stack, false, I::None), 1),
            0x90..=0x99 | 0x9C..=0x9F => plain(BOTH, I::None),
            0xA0 | 0xA1 => with_kind(plain(BOTH, I::Moffs), Kind::MoveFromMoffs),
            0xA2 | 0xA3 => with_kind(plain(BOTH, I::Moffs), Kind::MoveToMoffs),
            0xA8 => plain(BOTH, I::Byte),
            0xA9 => plain(BOTH, I::Z),
            0xB0..=0xB7 => Form {
                byte: true,
                ..with_kind(plain(BOTH, I::Byte), Kind::MoveImmediate)
            },
            0xB8..=0xBF => with_kind(plain(BOTH, I::V), Kind::MoveImmediate),
            0xC0 | 0xC1 => modrm(Size::V, op & 1 == 0, I::Byte),
            0xD0..=0xD3 => modrm(Size::V, op & 1 == 0, I::None),
            0xC2 => no_66(plain(BOTH, I::Word)),
            0xC3 => no_66(plain(BOTH, I::None)),
            0xC6 => only_regs(
                with_kind(modrm(Size::Byte, true, I::Byte), Kind::MoveImmediateToRm),
                1,
            ),
            0xC7 => only_regs(
                with_kind(modrm(Size::V, false, I::Z), Kind::MoveImmediateToRm),
                1,
            ),
            0xC8 => plain(BOTH, I::Enter),
            0xC9 | 0xCC | 0xF4 | 0xF5 | 0xF8..=0xFD => plain(BOTH, I::None),
            0xCD => plain(BOTH, I::Byte),
            0xE8 | 0xE9 => no_66(plain(BOTH, I::Rel32)),
            0xF6 => with_kind(modrm(Size::Byte, true, I::None), Kind::Group3),
            0xF7 => with_kind(modrm(Size::V, false, I::None), Kind::Group3),
            0xFE => only_regs(modrm(Size::Byte, true, I::None), 0b11),
            0xFF => only_regs(
                with_kind(modrm(Size::V, false, I::None), Kind::GroupFf),
                0b0101_0111,
            ),
            // x87: see X87_MEMORY_FORMS and X87_REGISTER_FORMS.
            0xD8..=0xDF => Form {
                briefless: true,
                ..with_kind(modrm(Size::V, false, I::None), Kind::X87)
            },
            _ => NONE,
        };
        forms[256 + op] = match op as u8 {
            0x0B | 0x31 | 0xA2 => no_66(plain(BOTH, I::None)),
            0x1F => Form {
                indexed: 0,
                ..only_regs(with_kind(modrm(Size::V, false, I::None), Kind::Nop), 1)
            },
            0x40..=0x4F
            | 0xA3
            | 0xAB
            | 0xAF
            | 0xB3
            | 0xBB
            | 0xBC
            | 0xBD
            | 0xA5
            | 0xAD
            | 0xB1
            | 0xC1 => modrm(Size::V, false, I::None),
            0x80..=0x8F => no_66(plain(BOTH, I::Rel32)),
            0x90..=0x9F => only_regs(modrm(Size::Byte, true, I::None), 1),
            0xA4 | 0xAC => modrm(Size::V, false, I::Byte),
            0xB0 | 0xC0 => modrm(Size::Byte, true, I::None),
            0xB6 | 0xBE => modrm(Size::Byte, false, I::None),
            0xB7 | 0xBF => modrm(Size::Word, false, I::None),
            0xBA => only_regs(modrm(Size::V, false, I::Byte), 0xF0),
            0x10 | 0x11 | 0x2A | 0x2C | 0x2D | 0x51 | 0x58..=0x5A | 0x5C..=0x5F => {
                sse(ALL_PREFIXES, I::None)
            }
            0x14
            | 0x15
            | 0x28
            | 0x29
            | 0x2E
            | 0x2F
            | 0x54..=0x57
            | 0x60..=0x6B
            | 0x6E
            | 0x74..=0x76
            | 0xD1..=0xD5
            | 0xD8..=0xDF
            | 0xE0..=0xE5
            | 0xE8..=0xEF
            | 0xF1..=0xF6
            | 0xF8..=0xFE => sse(NO_PREFIX | P66, I::None),
            0x52 | 0x53 => sse(NO_PREFIX | PF3, I::None),
            0x5B | 0x6F | 0x7E | 0x7F => sse(NO_PREFIX | P66 | PF3, I::None),
            0x6C | 0x6D | 0xD6 => sse(P66, I::None),
            0xE6 => sse(P66 | PF3 | PF2, I::None),
            0x70 | 0xC2 => sse(ALL_PREFIXES, I::Byte),
            0xC6 => sse(NO_PREFIX | P66, I::Byte),
            0x2B => Form {
                memory_only: true,
                ..sse(ALL_PREFIXES, I::None)
            },
            0xE7 => Form {
                memory_only: true,
                ..sse(NO_PREFIX | P66, I::None)
            },
            _ => NONE,
        };
        op += 1;
    }
    forms
}

/// The bytes [`skim`] looks at: an instruction is at most 15 bytes long.
const WINDOW: usize = 15;

/// What a skimmed instruction may matter for ([`Skim::follows`]).
pub(super) mod follows {
    /// A 32-bit immediate that is a printable tag (either half of a 64-bit one).
    pub const PRINTABLE_IMMEDIATE: u8 = 1;
    /// A memory operand with an index register (a table read).
    pub const INDEXED: u8 = 2;
    /// `lea reg, [rip+d]`.
    pub const LEA_RIP: u8 = 4;
    /// A `mov` or `push`.
    pub const MOVES: u8 = 8;
}

/// An instruction's length and layout, as [`skim`] finds them.
#[derive(Clone, Copy)]
pub(super) struct Skim {
    pub length: usize,
    /// What it may matter for ([`follows`]): an instruction with none of what the scan
    /// follows at a point needs no [`Brief`].
    pub follows: u8,
    rex: u8,
    has_66: bool,
    /// Into [`FORMS`].
    opcode: usize,
    /// Where the ModRM byte is, if the form has one.
    modrm_at: usize,
    immediate: Immediate,
    immediate_size: usize,
}

/// [`IMMEDIATES`]: a 32-bit immediate (the rest of the byte is the size).
const IMMEDIATE_32: u8 = 0x80;

/// Immediate sizes by [`Immediate`] and operand size (2, 4, 8 bytes), for x86 and for x64,
/// with [`IMMEDIATE_32`].
static IMMEDIATES: [[[u8; 3]; 8]; 2] = {
    const Z: u8 = IMMEDIATE_32;
    let x86 = [
        [0, 0, 0],
        [1, 1, 1],
        [2, 2, 2],
        [3, 3, 3],
        [2, 4 | Z, 4 | Z],
        [2, 4 | Z, 8 | Z],
        [4, 4, 4],
        [4, 4, 4],
    ];
    let mut x64 = x86;
    x64[Immediate::Moffs as usize] = [8, 8, 8];
    [x86, x64]
};

/// Bytes that are a prefix [`skim`] takes: the segment ones (which change nothing the scan
/// sees), the operand size and the mandatory `F2`/`F3` of SSE.
static PREFIX: [bool; 256] = {
    let mut prefix = [false; 256];
    let mut i = 0;
    let bytes = [0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0xF2, 0xF3];
    while i < bytes.len() {
        prefix[bytes[i]] = true;
        i += 1;
    }
    prefix
};

/// Finds the length of the instruction at the start of `code` (64-bit code when `long_mode`)
/// and what it may matter for, when it is one of the forms decoded here; `None` leaves it to
/// iced-x86. Most instructions are only skimmed: this is written to avoid branches the CPU
/// cannot predict (on ModRM, SIB, escape, immediate), which cost more than the decoding.
#[inline(always)]
pub(super) fn skim(code: &[u8], long_mode: bool) -> Option<Skim> {
    if code.len() < WINDOW {
        return None;
    }
    // One load, then shifts: loading each byte where the one before says would make a chain
    // of loads from one instruction to the next. What follows at most three prefixes is in
    // these 8 bytes.
    let head = u64::from_le_bytes(code[..8].try_into().ok()?);
    let at = |i: usize| (head >> (8 * i)) as u8;
    let mut i = 0;
    // The mandatory prefix: one kind of `66`, `F3`, `F2` (which one counts among several is
    // left to iced-x86).
    let mut mandatory = NO_PREFIX;
    while PREFIX[usize::from(at(i))] {
        let kind = match at(i) {
            0x66 => P66,
            0xF3 => PF3,
            0xF2 => PF2,
            _ => mandatory,
        };
        if mandatory != NO_PREFIX && kind != mandatory {
            return None;
        }
        mandatory = kind;
        i += 1;
        if i == 4 {
            return None;
        }
    }
    let has_66 = mandatory == P66;
    let is_rex = long_mode & (at(i) & 0xF0 == 0x40);
    let rex = at(i) & 0u8.wrapping_sub(u8::from(is_rex));
    i += usize::from(is_rex);
    let escape = usize::from(at(i) == 0x0F);
    let opcode = escape << 8 | usize::from(at(i + escape));
    i += 1 + escape;
    let form = &FORMS[usize::from(long_mode)][opcode];
    let mode = if long_mode { 0b10 } else { 0b01 };
    if form.modes & mode == 0 || form.prefixes & mandatory == 0 {
        return None;
    }
    let operand_size = if rex & 8 != 0 {
        2
    } else if has_66 {
        0
    } else {
        1
    };
    let modrm_at = i;
    // Read whether or not the form has a ModRM byte (then `regs` is all, `memory_only` false).
    let modrm = at(i);
    let reg = (modrm >> 3) & 7;
    // `|` and `&`, not `||` and `&&`: whether an operand is a register is no branch to predict.
    if (form.regs & (1 << reg) == 0) | ((modrm >= 0xC0) & form.memory_only) {
        return None;
    }
    let mut immediate = form.immediate;
    let mut sized = form.sizes[operand_size];
    let mut follows = form.follows;
    if form.kind >= Kind::GroupFf {
        match form.kind {
            Kind::Group3 if reg < 2 => {
                immediate = if form.byte {
                    Immediate::Byte
                } else {
                    Immediate::Z
                };
                sized = IMMEDIATES[usize::from(long_mode)][immediate as usize][operand_size];
            }
            Kind::GroupFf if (reg == 2 || reg == 4) && has_66 => return None,
            Kind::GroupFf if reg == 6 => follows |= follows::MOVES,
            Kind::X87 => {
                let decoded = match modrm >= 0xC0 {
                    true => X87_REGISTER_FORMS[opcode & 7] & 1 << (modrm - 0xC0) != 0,
                    false => X87_MEMORY_FORMS[opcode & 7] & 1 << reg != 0,
                };
                if !decoded {
                    return None;
                }
            }
            _ => {}
        }
    }
    let extra = MODRM_EXTRA[usize::from(modrm)] & 0u8.wrapping_sub(u8::from(form.modrm));
    let sib = at(i + 1);
    // A SIB byte without a base takes a 32-bit displacement (with ModRM mod 0).
    let no_base = (extra & SIB_MOD_0 != 0) & (sib & 7 == 5);
    let indexed = (extra & SIB != 0) & (((sib >> 3) & 7 != 4) | (rex & 2 != 0));
    let lea_rip = (form.kind == Kind::Lea) & long_mode & (modrm & 0xC7 == 0x05);
    i += usize::from(form.modrm) + usize::from(extra & LENGTH) + 4 * usize::from(no_base);
    let immediate_size = usize::from(sized & !IMMEDIATE_32);
    follows |= (form.indexed * u8::from(indexed)) | (follows::LEA_RIP * u8::from(lea_rip));
    let length = i + immediate_size;
    if length > WINDOW {
        return None;
    }
    if sized & IMMEDIATE_32 != 0 && printable_immediate(code, length, immediate_size) {
        follows |= follows::PRINTABLE_IMMEDIATE;
    }
    Some(Skim {
        length,
        follows,
        rex,
        has_66,
        opcode,
        modrm_at,
        immediate,
        immediate_size,
    })
}

/// The bit of general-purpose register `number` as an operand of form `opcode` (into
/// [`FORMS`]) under `rex`: a byte register without REX, 4-7, is ah, ch, dh or bh (rax..rbx).
fn register_bit(opcode: usize, rex: u8, number: u8) -> u16 {
    let number = if FORMS[0][opcode].byte && rex == 0 && number >= 4 {
        number & 3
    } else {
        number
    };
    1 << number
}

/// Where a `mov` or `push` of form `opcode` (into [`FORMS`]) takes its value, from its REX
/// and ModRM bytes.
fn move_source(opcode: usize, rex: u8, modrm: u8) -> Operand {
    let register = |number: u8| Operand::Register(register_bit(opcode, rex, number));
    let rm = match modrm >= 0xC0 {
        true => register(modrm & 7 | (rex & 1) << 3),
        false => Operand::Memory,
    };
    let reg = (modrm >> 3) & 7;
    match FORMS[0][opcode].kind {
        Kind::MoveToRm => register(reg | (rex & 4) << 1),
        Kind::MoveFromRm => rm,
        Kind::PushRegister => register((opcode as u8 & 7) | (rex & 1) << 3),
        Kind::GroupFf if reg == 6 => rm,
        _ => Operand::Other,
    }
}

/// [`Skim::move_source`] of the instruction at the start of `code`, read straight from its
/// bytes when it has no prefix but REX (the `mov` and `push` forms have no escape).
pub(super) fn move_source_at(code: &[u8], long_mode: bool) -> Operand {
    let is_rex = long_mode && code.first().is_some_and(|b| b & 0xF0 == 0x40);
    let rex = if is_rex { code[0] } else { 0 };
    let i = usize::from(is_rex);
    match code.get(i..i + 2) {
        Some(&[opcode, modrm]) if !PREFIX[usize::from(opcode)] && opcode != 0x0F => {
            move_source(usize::from(opcode), rex, modrm)
        }
        _ => skim(code, long_mode).map_or(Operand::Other, |skim| skim.move_source(code)),
    }
}

/// Whether the 32-bit immediate (`size` 4), or either half of the 64-bit one (8), that ends
/// at `end` in `code` is a printable tag: most are small numbers or addresses, and only a
/// printable one matters.
fn printable_immediate(code: &[u8], end: usize, size: usize) -> bool {
    let printable = |at: usize| {
        let word = u32::from_le_bytes([code[at], code[at + 1], code[at + 2], code[at + 3]]);
        Tag::from_value(word).is_printable()
    };
    printable(end - 4) || (size == 8 && printable(end - 8))
}

/// [`skim`]'s answers for an instruction without a prefix other than REX (most), by escape
/// (none or 0F), opcode and ModRM byte: the length after the opcode with a 4-byte operand size
/// and a SIB base other than 5 (the low 4 bits), what changes it ([`SIB_BASE`], [`WIDE`]),
/// what may make it matter ([`SIB_INDEX`], [`IMMEDIATE`], and [`follows`] bits shifted by 8);
/// 0 leaves the instruction to [`skim`].
pub(super) struct Lengths([u16; 1 << 17]);

const SIB_BASE: u16 = 0x10;
const SIB_INDEX: u16 = 0x20;
const WIDE: u16 = 0x40;
const IMMEDIATE: u16 = 0x80;
const VALID: u16 = 0x8000;

/// The [`Lengths`] of x86 (`long_mode` false) or x64 code, worked out once (in a few ms)
/// from [`skim`] itself: each entry is what `skim` answers for the opcode and ModRM byte under
/// the SIB bytes and REX prefixes that change it.
pub(super) fn lengths(long_mode: bool) -> &'static Lengths {
    static X86: LazyLock<Box<Lengths>> = LazyLock::new(|| Lengths::new(false));
    static X64: LazyLock<Box<Lengths>> = LazyLock::new(|| Lengths::new(true));
    if long_mode { &X64 } else { &X86 }
}

impl Lengths {
    fn new(long_mode: bool) -> Box<Lengths> {
        let mut lengths = Box::new(Lengths([0; 1 << 17]));
        let mode = if long_mode { 0b10 } else { 0b01 };
        for index in 0..1 << 17 {
            let (escape, opcode, modrm) = (index >> 16 == 1, (index >> 8) as u8, index as u8);
            let form =
                &FORMS[usize::from(long_mode)][usize::from(escape) << 8 | usize::from(opcode)];
            let is_rex = long_mode && opcode & 0xF0 == 0x40;
            if form.modes & mode == 0 || PREFIX[usize::from(opcode)] || is_rex {
                continue;
            }
            // Without a ModRM byte, what follows the opcode is the same for every second byte.
            if !form.modrm && modrm > 0 {
                lengths.0[index] = lengths.0[index & !0xFF];
                continue;
            }
            lengths.0[index] = Lengths::entry(long_mode, escape, opcode, modrm);
        }
        lengths
    }

    /// The entry of an opcode (after the escape 0F when `escape`) and a ModRM byte.
    fn entry(long_mode: bool, escape: bool, opcode: u8, modrm: u8) -> u16 {
        // The skim of the instruction after `rex`, and its length without the REX prefix.
        let skim_of = |rex: Option<u8>, sib: u8| {
            let mut code = [0u8; WINDOW];
            let bytes = rex
                .into_iter()
                .chain(escape.then_some(0x0F))
                .chain([opcode, modrm, sib]);
            for (byte, value) in code.iter_mut().zip(bytes) {
                *byte = value;
            }
            skim(&code, long_mode).map(|skim| (skim.length - usize::from(rex.is_some()), skim))
        };
        let variants = [
            skim_of(None, 0x00),
            skim_of(None, 0x05),
            skim_of(None, 0x24),
            skim_of(long_mode.then_some(0x48), 0x00),
            skim_of(long_mode.then_some(0x47), 0x00),
        ];
        let [
            Some((length, plain)),
            Some((base_5, _)),
            Some((_, no_index)),
            Some((wide, _)),
            Some((other, _)),
        ] = variants
        else {
            return 0;
        };
        if other != length {
            return 0;
        }
        let counted =
            matches!(plain.immediate, Immediate::Z | Immediate::V) && plain.immediate_size >= 4;
        let opcode_bytes = 1 + usize::from(escape);
        let flag = |flag: u16, set: bool| if set { flag } else { 0 };
        VALID
            | (length - opcode_bytes) as u16
            | flag(SIB_BASE, base_5 != length)
            | flag(SIB_INDEX, plain.follows & follows::INDEXED != 0)
            | flag(WIDE, wide != length)
            | flag(IMMEDIATE, counted)
            | (u16::from(no_index.follows & !follows::INDEXED) << 8)
    }
}

/// [`skim`]'s length and [`follows`], through [`Lengths`] where it can: 97.6% of the bench
/// corpus's x86 instructions and 94.1% of its x64 ones take a third of the instructions
/// `skim`'s decoding takes.
#[inline(always)]
pub(super) fn skim_length(code: &[u8], long_mode: bool, lengths: &Lengths) -> Option<(usize, u8)> {
    if code.len() < WINDOW {
        return None;
    }
    let head = u64::from_le_bytes(code[..8].try_into().ok()?);
    let at = |i: usize| (head >> (8 * i)) as u8;
    let is_rex = long_mode & (at(0) & 0xF0 == 0x40);
    let rex = at(0) & 0u8.wrapping_sub(u8::from(is_rex));
    let escape = usize::from(at(usize::from(is_rex)) == 0x0F);
    // Where the opcode is: after REX and the escape.
    let i = usize::from(is_rex) + escape;
    let entry = lengths.0[escape << 16 | usize::from(at(i)) << 8 | usize::from(at(i + 1))];
    if entry & VALID == 0 {
        return skim(code, long_mode).map(|skim| (skim.length, skim.follows));
    }
    let sib = at(i + 2);
    let wide = (entry & WIDE != 0) & (rex & 8 != 0);
    let length = i
        + 1
        + usize::from(entry & 0x0F)
        + 4 * usize::from((entry & SIB_BASE != 0) & (sib & 7 == 5))
        + 4 * usize::from(wide);
    let indexed = (entry & SIB_INDEX != 0) & (((sib >> 3) & 7 != 4) | (rex & 2 != 0));
    let mut follows = ((entry >> 8) as u8 & 0x0F) | (follows::INDEXED * u8::from(indexed));
    if entry & IMMEDIATE != 0 && printable_immediate(code, length, if wide { 8 } else { 4 }) {
        follows |= follows::PRINTABLE_IMMEDIATE;
    }
    Some((length, follows))
}

/// [`MODRM_EXTRA`]: the bytes after the ModRM byte before the immediate (SIB, displacement)...
const LENGTH: u8 = 0x0F;
/// ...a SIB byte follows...
const SIB: u8 = 0x10;
/// ...with mod 0 (no base when the SIB base is 5).
const SIB_MOD_0: u8 = 0x20;

/// By ModRM byte (32- and 64-bit addressing): see [`LENGTH`], [`SIB`], [`SIB_MOD_0`].
static MODRM_EXTRA: [u8; 256] = {
    let mut extra = [0; 256];
    let mut modrm = 0;
    while modrm < 256 {
        let (mode, rm) = (modrm >> 6, modrm & 7);
        let displacement = match mode {
            0 if rm == 5 => 4,
            1 => 1,
            2 => 4,
            _ => 0,
        };
        extra[modrm] = match (mode, rm) {
            (3, _) => 0,
            (0, 4) => 1 | SIB | SIB_MOD_0,
            (_, 4) => (1 + displacement) | SIB,
            _ => displacement,
        };
        modrm += 1;
    }
    extra
};

impl Skim {
    /// The bit of general-purpose register `number` as an operand of the instruction.
    fn register_bit(&self, number: u8) -> u16 {
        register_bit(self.opcode, self.rex, number)
    }

    /// Where a `mov` or `push` ([`follows::MOVES`]) at the start of `code` takes its value:
    /// what [`Skim::brief`] would say of it, without decoding the rest.
    pub(super) fn move_source(&self, code: &[u8]) -> Operand {
        move_source(self.opcode, self.rex, code[self.modrm_at])
    }

    /// The [`Brief`] of the skimmed instruction at the start of `code`, at `ip`; none for a
    /// form whose brief is left to iced-x86 (SSE, x87).
    pub(super) fn brief(&self, code: &[u8], ip: u64, long_mode: bool) -> Option<Brief> {
        let form = &FORMS[usize::from(long_mode)][self.opcode];
        if form.briefless {
            return None;
        }
        let (rex, length) = (self.rex, self.length);
        let operand_size: u32 = if rex & 8 != 0 {
            8
        } else if self.has_66 {
            2
        } else {
            4
        };
        // A byte register without REX: 4-7 are ah, ch, dh, bh (rax..rbx).
        let register = |number: u8| Operand::Register(self.register_bit(number));
        let word =
            |at: usize| u32::from_le_bytes([code[at], code[at + 1], code[at + 2], code[at + 3]]);
        let next_ip = ip.wrapping_add(length as u64);
        let mut kind = form.kind;
        let mut reg = 0;
        let mut rm_operand = Operand::Memory;
        let mut memory = None;
        let mut rip_relative = false;
        if form.modrm {
            let modrm = code[self.modrm_at];
            let (mode, rm) = (modrm >> 6, modrm & 7);
            reg = (modrm >> 3) & 7 | (rex & 4) << 1;
            let mut size = form.size;
            if kind == Kind::GroupFf && (2..=6).contains(&(reg & 7)) {
                size = Size::Stack;
            }
            if kind == Kind::GroupFf && reg & 7 == 6 {
                kind = Kind::PushRegister;
            }
            if mode == 3 {
                rm_operand = register(rm | (rex & 1) << 3);
            } else {
                let mut at = self.modrm_at + 1;
                let mut base = Reg::Gpr(rm | (rex & 1) << 3);
                let mut index = Reg::None;
                let mut scale = 1;
                let mut displacement_size = [0, 1, 4][usize::from(mode)];
                if rm == 4 {
                    let sib = code[at];
                    at += 1;
                    let number = ((sib >> 3) & 7) | (rex & 2) << 2;
                    if number != 4 {
                        index = Reg::Gpr(number);
                        scale = 1 << (sib >> 6);
                    }
                    base = Reg::Gpr((sib & 7) | (rex & 1) << 3);
                    if sib & 7 == 5 && mode == 0 {
                        base = Reg::None;
                        displacement_size = 4;
                    }
                } else if rm == 5 && mode == 0 {
                    displacement_size = 4;
                    base = if long_mode { Reg::Other } else { Reg::None };
                    rip_relative = long_mode;
                }
                let raw = match displacement_size {
                    0 => 0,
                    1 => i64::from(code[at] as i8),
                    _ => i64::from(word(at) as i32),
                };
                let displacement = if rip_relative {
                    next_ip.wrapping_add(raw as u64)
                } else if long_mode {
                    raw as u64
                } else {
                    u64::from(raw as u32)
                };
                let size = match size {
                    Size::Byte => 1,
                    Size::V if form.byte => 1,
                    Size::Word => 2,
                    Size::V => operand_size,
                    Size::AtMostDword => operand_size.min(4),
                    Size::Stack if long_mode && self.has_66 && rex & 8 == 0 => 2,
                    Size::Stack if long_mode => 8,
                    Size::Stack if self.has_66 => 2,
                    Size::Stack => 4,
                    Size::Zero => 0,
                };
                // An absolute address is no memory operand to the scan (see `Memory`).
                memory = (base != Reg::None || index != Reg::None).then_some(Memory {
                    base,
                    index,
                    scale,
                    displacement,
                    size,
                });
            }
        }
        let mut immediates = [None; 2];
        if matches!(self.immediate, Immediate::Z | Immediate::V) && self.immediate_size >= 4 {
            let at = length - self.immediate_size;
            immediates[0] = Some(word(at));
            if self.immediate_size == 8 {
                immediates[1] = Some(word(at + 4));
            }
        }
        let reg_operand = register(reg);
        let opcode_register = register((self.opcode as u8 & 7) | (rex & 1) << 3);
        let operation = match kind {
            Kind::MoveToRm => Operation::Move {
                from: self.move_source(code),
                to: rm_operand,
            },
            Kind::MoveFromRm => Operation::Move {
                from: self.move_source(code),
                to: reg_operand,
            },
            Kind::MoveImmediateToRm => Operation::Move {
                from: Operand::Other,
                to: rm_operand,
            },
            Kind::MoveImmediate => Operation::Move {
                from: Operand::Other,
                to: opcode_register,
            },
            Kind::MoveFromMoffs => Operation::Move {
                from: Operand::Memory,
                to: Operand::Register(1),
            },
            Kind::MoveToMoffs => Operation::Move {
                from: Operand::Register(1),
                to: Operand::Memory,
            },
            Kind::Lea if rip_relative => Operation::LeaIpRelative {
                to: 1 << reg,
                address: memory.map_or(0, |m| m.displacement),
            },
            Kind::PushRegister => Operation::Push {
                from: self.move_source(code),
            },
            Kind::PushImmediate => Operation::Push {
                from: Operand::Other,
            },
            Kind::Nop => {
                memory = None;
                Operation::Other
            }
            Kind::Lea | Kind::Other | Kind::GroupFf | Kind::Group3 | Kind::X87 => Operation::Other,
        };
        Some(Brief {
            length,
            invalid: false,
            immediates,
            memory,
            operation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};
    use proptest::prelude::*;

    const IP32: u64 = 0x6100_1000;
    const IP64: u64 = 0x1_4000_1000;

    /// iced-x86's view of the instruction at the start of `code`.
    fn iced(code: &[u8], ip: u64, bitness: u32) -> Brief {
        let mut decoder = Decoder::with_ip(bitness, code, ip, DecoderOptions::NONE);
        Brief::of(&decoder.decode())
    }

    /// The skim and brief of the instruction at the start of `code` (iced-x86's brief for a
    /// form whose brief is left to it, once the skim's length is checked).
    fn quick(code: &[u8], ip: u64, bitness: u32) -> Option<Brief> {
        let long_mode = bitness == 64;
        let through_lengths = skim_length(code, long_mode, lengths(long_mode));
        let skim = skim(code, long_mode);
        assert_eq!(
            through_lengths,
            skim.map(|s| (s.length, s.follows)),
            "{code:02x?}"
        );
        let skim = skim?;
        let brief = match skim.brief(code, ip, bitness == 64) {
            Some(brief) => brief,
            None => {
                let brief = iced(code, ip, bitness);
                assert_eq!(skim.length, brief.length, "{:02x?}", &code[..skim.length]);
                brief
            }
        };
        // The skim may say more (a `mov` to any memory), never less.
        let missed = follows_of(&brief) & !skim.follows;
        assert_eq!(missed, 0, "{:02x?}", &code[..brief.length]);
        if skim.follows & follows::MOVES != 0 {
            let source = match brief.operation {
                Operation::Move { from, .. } | Operation::Push { from } => from,
                _ => Operand::Other,
            };
            let shown = &code[..brief.length];
            assert_eq!(skim.move_source(code), source, "{shown:02x?}");
            assert_eq!(move_source_at(code, long_mode), source, "{shown:02x?}");
        }
        Some(brief)
    }

    /// What a brief shows the instruction may matter for: what its skim must say at least.
    fn follows_of(brief: &Brief) -> u8 {
        let mut flags = 0;
        let printable = |value: &u32| Tag::from_value(*value).is_printable();
        if brief.immediates.iter().flatten().any(printable) {
            flags |= follows::PRINTABLE_IMMEDIATE;
        }
        if brief.memory.is_some_and(|m| m.index != Reg::None) {
            flags |= follows::INDEXED;
        }
        // As `Region::needs_tracking` follows them: registers and stack slots.
        let on_stack = brief.memory.is_some_and(|m| m.on_stack());
        let moves = |operand| match operand {
            Operand::Register(_) => true,
            Operand::Memory => on_stack,
            Operand::Other => false,
        };
        match brief.operation {
            Operation::LeaIpRelative { .. } => flags |= follows::LEA_RIP,
            Operation::Move { from, to } if moves(from) && moves(to) => flags |= follows::MOVES,
            Operation::Push { from } if moves(from) => flags |= follows::MOVES,
            _ => {}
        }
        flags
    }

    /// Whether the quick decoding of `code` is iced-x86's (true when it is left to iced-x86);
    /// the second value says whether it was decoded quickly.
    fn agrees(code: &[u8], bitness: u32) -> (bool, bool) {
        let ip = if bitness == 64 { IP64 } else { IP32 };
        match quick(code, ip, bitness) {
            Some(brief) => (brief == iced(code, ip, bitness), true),
            None => (true, false),
        }
    }

    /// Every one- and two-byte opcode with every ModRM byte, under each prefix set (the
    /// mandatory `F2`/`F3` of SSE included), followed
    /// by a SIB byte (an index scaled by 4; no index and no base; no index scaled by 2) and
    /// bytes that make displacements and immediates distinct.
    #[test]
    fn every_opcode_and_modrm_decodes_as_iced_does() {
        let after = [
            0x81, 0xF2, 0x7E, 0x93, 0x45, 0xA7, 0x1B, 0x6F, 0xD0, 0x39, 0x52,
        ];
        let prefixes32: &[&[u8]] = &[&[], &[0x66], &[0x64], &[0x2E, 0x66], &[0xF3], &[0xF2]];
        let prefixes64: &[&[u8]] = &[
            &[],
            &[0x66],
            &[0x65],
            &[0x41],
            &[0x48],
            &[0x4C],
            &[0x42],
            &[0x66, 0x4F],
            &[0x40],
            &[0xF3, 0x41],
            &[0xF2, 0x48],
        ];
        let mut decoded = 0;
        let mut disagreements = Vec::new();
        let encodings = [(32, prefixes32), (64, prefixes64)]
            .into_iter()
            .flat_map(|(bitness, prefixes)| prefixes.iter().map(move |p| (bitness, p)));
        for (bitness, prefix) in encodings {
            for opcode in 0..512usize {
                for modrm in 0..=255u8 {
                    for sib in [0x8C, 0x25, 0x65] {
                        let mut code = prefix.to_vec();
                        if opcode >= 256 {
                            code.push(0x0F);
                        }
                        code.extend_from_slice(&[opcode as u8, modrm, sib]);
                        code.extend_from_slice(&after);
                        code.resize(24, 0xCC);
                        let (agree, handled) = agrees(&code, bitness);
                        decoded += usize::from(handled);
                        if !agree && disagreements.len() < 20 {
                            let ip = if bitness == 64 { IP64 } else { IP32 };
                            disagreements.push((
                                bitness,
                                code[..8].to_vec(),
                                quick(&code, ip, bitness),
                                iced(&code, ip, bitness),
                            ));
                        }
                    }
                }
            }
        }
        assert_eq!(disagreements, Vec::new());
        // 17 prefix sets of 3 x 131,072 encodings each: 3,163,738 are skimmed.
        assert!(decoded > 3_100_000, "{decoded} decoded");
    }

    #[test]
    fn the_forms_the_scan_follows() {
        let cases: [(u32, &[u8], Operation, usize); 7] = [
            // mov [rsp+0x28], r9
            (
                64,
                &[0x4C, 0x89, 0x4C, 0x24, 0x28],
                Operation::Move {
                    from: Operand::Register(1 << 9),
                    to: Operand::Memory,
                },
                5,
            ),
            // lea rcx, [rip+0x100]
            (
                64,
                &[0x48, 0x8D, 0x0D, 0x00, 0x01, 0x00, 0x00],
                Operation::LeaIpRelative {
                    to: 1 << 1,
                    address: IP64 + 7 + 0x100,
                },
                7,
            ),
            // push 0x656E6F4E ('None')
            (
                32,
                &[0x68, 0x4E, 0x6F, 0x6E, 0x65],
                Operation::Push {
                    from: Operand::Other,
                },
                5,
            ),
            // push dword [ebp+8]
            (
                32,
                &[0xFF, 0x75, 0x08],
                Operation::Push {
                    from: Operand::Memory,
                },
                3,
            ),
            // mov ah, [rsi] (no REX: ah is rax's) and mov sil, al (REX: sil)
            (
                32,
                &[0x8A, 0x26],
                Operation::Move {
                    from: Operand::Memory,
                    to: Operand::Register(1),
                },
                2,
            ),
            (
                64,
                &[0x40, 0x88, 0xC6],
                Operation::Move {
                    from: Operand::Register(1),
                    to: Operand::Register(1 << 6),
                },
                3,
            ),
            // mov r10, 0x1122334455667788
            (
                64,
                &[0x49, 0xBA, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11],
                Operation::Move {
                    from: Operand::Other,
                    to: Operand::Register(1 << 10),
                },
                10,
            ),
        ];
        for (bitness, bytes, operation, length) in cases {
            let mut code = bytes.to_vec();
            code.resize(WINDOW, 0x90);
            let ip = if bitness == 64 { IP64 } else { IP32 };
            let brief = quick(&code, ip, bitness).expect("decoded quickly");
            assert_eq!(
                (brief.operation, brief.length),
                (operation, length),
                "{bytes:02x?}"
            );
            assert_eq!(brief, iced(&code, ip, bitness), "{bytes:02x?}");
        }
        let mut code = vec![0x49, 0xBA, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11];
        code.resize(WINDOW, 0x90);
        assert_eq!(
            quick(&code, IP64, 64).unwrap().immediates,
            [Some(0x5566_7788), Some(0x1122_3344)]
        );
        // What is left to iced-x86: a lock prefix, a three-byte opcode (pshufb), VEX
        // (vmovaps), a section's last bytes.
        let left: [&[u8]; 5] = [
            &[0xF0, 0x01, 0x08],
            &[0x66, 0x0F, 0x38, 0x00, 0xC1],
            &[0xC5, 0xF8, 0x28, 0xC1],
            &[0x90; 14],
            &[0x0F, 0x28, 0xC1],
        ];
        for code in &left[..4] {
            let mut padded = code.to_vec();
            if padded.len() < 14 {
                padded.resize(WINDOW, 0x90);
            }
            assert_eq!(quick(&padded, IP64, 64), None, "{code:02x?}");
        }
        // SSE and x87 are skimmed; their brief is iced-x86's (movaps xmm0, xmm1; fld dword
        // [table+eax*4]).
        let mut movaps = left[4].to_vec();
        movaps.resize(WINDOW, 0x90);
        let skimmed = skim(&movaps, true).expect("skimmed");
        assert_eq!(
            (skimmed.length, skimmed.brief(&movaps, IP64, true)),
            (3, None)
        );
        let mut fld = vec![0xD9, 0x04, 0x85, 0x00, 0x20, 0x00, 0x61];
        fld.resize(WINDOW, 0x90);
        let skimmed = skim(&fld, false).expect("skimmed");
        assert_eq!((skimmed.length, skimmed.follows), (7, follows::INDEXED));
        let table = iced(&fld, IP32, 32).memory.and_then(|m| m.x86_table());
        assert_eq!(table, Some(0x6100_2000));
    }

    /// Any prefixes (those left to iced-x86 included), an opcode, then any bytes.
    fn instruction() -> impl Strategy<Value = Vec<u8>> {
        let prefix = prop::sample::select(vec![
            0x26u8, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x40, 0x41, 0x44,
            0x48, 0x4D,
        ]);
        (
            prop::collection::vec(prefix, 0..5),
            prop::bool::ANY,
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 16),
        )
            .prop_map(|(mut code, two_byte, opcode, tail)| {
                if two_byte {
                    code.push(0x0F);
                }
                code.push(opcode);
                code.extend(tail);
                code
            })
    }

    proptest! {
        #[test]
        fn random_instructions_decode_as_iced_does(code in instruction(), long in any::<bool>()) {
            let bitness = if long { 64 } else { 32 };
            prop_assert!(agrees(&code, bitness).0, "{:02x?}", code);
        }
    }
}
