//! Call-site analysis of x86 and x64 code, decoded with iced-x86.
//!
//! One linear pass over an executable section tracks, within straight-line code, which
//! registers and stack slots hold a 32-bit immediate or the address of an imported function:
//! - `mov reg32, imm32` (and `mov reg64, imm`), register-to-register `mov`, `push imm32`,
//!   `mov [rsp/esp+k], imm32` or `mov [rsp/esp+k], reg`;
//! - `mov reg, [IAT slot]` (RIP-relative on x64, absolute on x86), later `call reg`.
//!
//! Any other write to a register or slot cancels what it held; a call clears the volatile
//! registers and the stack slots; a return or an unconditional jump clears everything.
//!
//! At a call (or a tail jump) whose target is a known tag-taking API, through the IAT, a
//! `jmp [IAT]` thunk, or a register holding an IAT slot, the tag argument's immediate is a
//! `call` site. At a call to anything else, each argument register or slot holding a printable
//! immediate is an `arg` site. Every 32-bit immediate (and both halves of a 64-bit one) is
//! `code` evidence.

use std::collections::HashMap;

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic,
    OpAccess, OpKind, Register,
};

use super::Findings;
use super::apis::{UNTAGGED, X86TagPlace, pool_api};
use super::image::{Image, Section};

/// Call targets whose thunk check is remembered, at most: a section of calls to millions of
/// distinct targets cannot grow the cache without bound (a check is cheap anyway).
const MAX_THUNK_CACHE: usize = 1 << 16;

/// What a register or stack slot is known to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Unknown,
    Immediate(u32),
    /// The address of the function imported through this IAT slot (by RVA).
    Import(u32),
}

/// Registers and stack slots of straight-line code.
struct State {
    /// rax..r15 by number.
    registers: [Value; 16],
    /// Stack slots by offset from the current stack pointer.
    slots: Vec<(i64, Value)>,
}

impl State {
    fn new() -> State {
        State {
            registers: [Value::Unknown; 16],
            slots: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.registers = [Value::Unknown; 16];
        self.slots.clear();
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.registers.iter().all(|v| *v == Value::Unknown)
    }

    fn register(&self, register: Register) -> Value {
        gpr_index(register).map_or(Value::Unknown, |i| self.registers[i])
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
        if value != Value::Unknown && self.slots.len() < 64 {
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
    }
}

/// The index of a general-purpose register, any width (`eax`, `rax` -> 0).
fn gpr_index(register: Register) -> Option<usize> {
    let full = register.full_register();
    let index = (full as usize).checked_sub(Register::RAX as usize)?;
    (index < 16).then_some(index)
}

/// Where the arguments are at a call, for one bitness.
struct Convention {
    bitness: u32,
    pointer: i64,
    stack_pointer: Register,
    /// Registers a call may change.
    volatile: &'static [Register],
    /// Registers that carry arguments (x64 rcx, rdx, r8, r9; x86 ecx, edx for fastcall and
    /// gcc's regparm).
    argument_registers: &'static [Register],
    /// Stack arguments looked at for `arg` sites: offsets from the stack pointer at the call.
    argument_slots: &'static [i64],
}

const X64: Convention = Convention {
    bitness: 64,
    pointer: 8,
    stack_pointer: Register::RSP,
    volatile: &[
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
    ],
    argument_registers: &[Register::RCX, Register::RDX, Register::R8, Register::R9],
    argument_slots: &[0x20, 0x28, 0x30, 0x38],
};

const X86: Convention = Convention {
    bitness: 32,
    pointer: 4,
    stack_pointer: Register::ESP,
    volatile: &[Register::EAX, Register::ECX, Register::EDX],
    argument_registers: &[Register::ECX, Register::EDX],
    argument_slots: &[0, 4, 8, 12, 16, 20, 24, 28],
};

/// The analysis of one section.
struct Analysis<'a, 'data> {
    image: &'a Image<'data>,
    section: &'a Section<'data>,
    convention: &'static Convention,
    state: State,
    /// Call targets already checked for being `jmp [IAT]` thunks.
    thunks: HashMap<u32, Option<u32>>,
    findings: &'a mut Findings,
}

/// Analyses `code`, the start of `section`, as `bitness`-bit code.
pub fn analyse(
    image: &Image,
    section: &Section,
    code: &[u8],
    bitness: u32,
    findings: &mut Findings,
) {
    let convention = if bitness == 64 { &X64 } else { &X86 };
    let mut analysis = Analysis {
        image,
        section,
        convention,
        state: State::new(),
        thunks: HashMap::new(),
        findings,
    };
    let ip = image.image_base.wrapping_add(u64::from(section.rva));
    let mut decoder = Decoder::with_ip(bitness, code, ip, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            analysis.state.clear();
            continue;
        }
        analysis.step(&instruction, &mut info);
    }
}

impl Analysis<'_, '_> {
    fn rva(&self, va: u64) -> Option<u32> {
        self.image.rva_of_va(va)
    }

    fn step(&mut self, instruction: &Instruction, info: &mut InstructionInfoFactory) {
        self.record_immediates(instruction);
        match instruction.flow_control() {
            FlowControl::Call | FlowControl::IndirectCall => {
                self.at_call(instruction, false);
                for &register in self.convention.volatile {
                    self.state.set_register(register, Value::Unknown);
                }
                self.state.slots.clear();
            }
            FlowControl::UnconditionalBranch | FlowControl::IndirectBranch => {
                self.at_call(instruction, true);
                self.state.clear();
            }
            FlowControl::Return | FlowControl::Interrupt | FlowControl::Exception => {
                self.state.clear();
            }
            FlowControl::ConditionalBranch | FlowControl::XbeginXabortXend => {}
            FlowControl::Next => self.track(instruction, info),
        }
    }

    /// `code` evidence: every 32-bit immediate, both halves of a 64-bit one.
    fn record_immediates(&mut self, instruction: &Instruction) {
        for operand in 0..instruction.op_count() {
            match instruction.op_kind(operand) {
                OpKind::Immediate32 | OpKind::Immediate32to64 => {
                    self.findings.code(instruction.immediate(operand) as u32);
                }
                OpKind::Immediate64 => {
                    let value = instruction.immediate(operand);
                    self.findings.code(value as u32);
                    self.findings.code((value >> 32) as u32);
                }
                _ => {}
            }
        }
    }

    /// Updates the state for an instruction that does not change the control flow.
    fn track(&mut self, instruction: &Instruction, info: &mut InstructionInfoFactory) {
        let stack_pointer = self.convention.stack_pointer;
        // First what the instruction overwrites, then what it is known to put there.
        let mut moves_stack_pointer = false;
        // Nothing tracked, nothing to cancel: most instructions skip the costly operand analysis.
        if self.state.is_empty() {
            return self.track_effect(instruction, false);
        }
        let used = info.info(instruction);
        for register in used.used_registers() {
            if matches!(
                register.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            ) {
                if register.register().full_register() == stack_pointer.full_register() {
                    moves_stack_pointer = true;
                } else {
                    self.state.set_register(register.register(), Value::Unknown);
                }
            }
        }
        for memory in used.used_memory() {
            if matches!(
                memory.access(),
                OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite
            ) && memory.base().full_register() == stack_pointer.full_register()
                && memory.index() == Register::None
            {
                self.state.forget_slot(memory.displacement() as i64);
            }
        }
        self.track_effect(instruction, moves_stack_pointer);
    }

    /// What an instruction is known to put in a register or slot, and how it moves the stack.
    fn track_effect(&mut self, instruction: &Instruction, moves_stack_pointer: bool) {
        let stack_pointer = self.convention.stack_pointer;
        let pointer = self.convention.pointer;
        match instruction.mnemonic() {
            Mnemonic::Mov => self.track_mov(instruction),
            Mnemonic::Push => {
                let value = match instruction.op0_kind() {
                    OpKind::Immediate32 | OpKind::Immediate32to64 => {
                        Value::Immediate(instruction.immediate(0) as u32)
                    }
                    OpKind::Register => self.state.register(instruction.op0_register()),
                    _ => Value::Unknown,
                };
                self.state.shift(pointer);
                self.state.set_slot(0, value);
            }
            Mnemonic::Pop => self.state.shift(-pointer),
            Mnemonic::Sub | Mnemonic::Add
                if instruction.op0_kind() == OpKind::Register
                    && instruction.op0_register().full_register()
                        == stack_pointer.full_register()
                    && is_immediate(instruction.op1_kind()) =>
            {
                let amount = instruction.immediate(1) as i64;
                let delta = if instruction.mnemonic() == Mnemonic::Sub {
                    amount
                } else {
                    -amount
                };
                self.state.shift(delta);
            }
            _ if moves_stack_pointer => self.state.slots.clear(),
            _ => {}
        }
    }

    fn track_mov(&mut self, instruction: &Instruction) {
        let source = match instruction.op1_kind() {
            kind if is_immediate(kind) => Value::Immediate(instruction.immediate(1) as u32),
            OpKind::Register => self.state.register(instruction.op1_register()),
            OpKind::Memory => self
                .memory_slot(instruction)
                .filter(|slot| self.image.imports.contains_key(slot))
                .map_or(Value::Unknown, Value::Import),
            _ => Value::Unknown,
        };
        match instruction.op0_kind() {
            OpKind::Register => self.state.set_register(instruction.op0_register(), source),
            OpKind::Memory => {
                if let Some(offset) = self.stack_offset(instruction) {
                    self.state.set_slot(offset, source);
                }
            }
            _ => {}
        }
    }

    /// The offset of a `[rsp+k]` / `[esp+k]` memory operand.
    fn stack_offset(&self, instruction: &Instruction) -> Option<i64> {
        let stack_pointer = self.convention.stack_pointer;
        (instruction.memory_base().full_register() == stack_pointer.full_register()
            && instruction.memory_index() == Register::None)
            .then(|| instruction.memory_displacement64() as i64)
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

    /// The IAT slot a call or jump goes through, if any.
    fn callee_slot(&mut self, instruction: &Instruction) -> Option<u32> {
        match instruction.op0_kind() {
            OpKind::Memory => self.memory_slot(instruction),
            OpKind::Register => match self.state.register(instruction.op0_register()) {
                Value::Import(slot) => Some(slot),
                _ => None,
            },
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                let target = self.rva(instruction.near_branch_target())?;
                self.thunk_slot(target)
            }
            _ => None,
        }
        .filter(|slot| self.image.imports.contains_key(slot))
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
        });
        if self.thunks.len() < MAX_THUNK_CACHE {
            self.thunks.insert(target, slot);
        }
        slot
    }

    /// Records the sites of a call, or of a jump when `tail` (the return address is then still
    /// on the stack, one pointer above the arguments).
    fn at_call(&mut self, instruction: &Instruction, tail: bool) {
        let callee = self
            .callee_slot(instruction)
            .and_then(|slot| self.image.imports.get(&slot))
            .map(|import| import.name.clone());
        if tail && callee.is_none() {
            return; // an ordinary jump
        }
        let rva = self.rva(instruction.ip()).unwrap_or_default();
        let above = if tail { self.convention.pointer } else { 0 };
        if let Some(api) = callee.as_deref().and_then(pool_api) {
            let value = match api.tag {
                None => Value::Immediate(UNTAGGED),
                Some(tag) => match (self.convention.bitness, tag.x86) {
                    (32, X86TagPlace::Stack(n)) => self.state.slot(above + 4 * (i64::from(n) - 1)),
                    (32, X86TagPlace::Edx) => self.state.register(Register::EDX),
                    (_, _) => match tag.number {
                        n @ 1..=4 => self
                            .state
                            .register(X64.argument_registers[usize::from(n) - 1]),
                        n => self.state.slot(above + 0x20 + 8 * (i64::from(n) - 5)),
                    },
                },
            };
            if let Value::Immediate(value) = value {
                self.findings.call(api.name, value, rva, self.section);
            }
            return;
        }
        let registers = self
            .convention
            .argument_registers
            .iter()
            .map(|r| self.state.register(*r));
        let slots = self
            .convention
            .argument_slots
            .iter()
            .map(|o| self.state.slot(above + o));
        let values: Vec<u32> = registers
            .chain(slots)
            .filter_map(|v| match v {
                Value::Immediate(value) => Some(value),
                _ => None,
            })
            .collect();
        for value in values {
            self.findings
                .arg(callee.as_deref(), value, rva, self.section);
        }
    }
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
