//! The parts of a PE image that code analysis needs: sections, the image base, the import
//! address table slots with the function each one receives, the tag-taking APIs the image
//! exports itself, and the function starts it declares (entry point, exports, `.pdata`).
//! Everything borrows the file's bytes; every lookup is bounds-checked and answers `None` rather
//! than guessing.

use foldhash::{HashMap, HashMapExt};

use object::LittleEndian as LE;

use super::apis::{PoolApi, pool_api};
use object::pe;
use object::read::FileKind;
use object::read::pe::ExportTarget;
use object::read::pe::{
    ImageNtHeaders, ImageOptionalHeader, Import as ImportName, ImportThunkList, PeFile,
};

/// Import thunks read per image at most, all descriptors together: a hostile import table
/// (thousands of descriptors sharing one long thunk list) cannot make the work unbounded.
const MAX_IMPORTS: usize = 65_536;

/// Sections kept per image at most: the Windows loader's limit (PE format, `NumberOfSections`).
/// Every RVA lookup scans the sections, so 65,535 of them would make each lookup that costly.
const MAX_SECTIONS: usize = 96;

/// Export names and `.pdata` entries read per image at most, each, and function starts kept
/// (see `summary`): a hostile table or a section of call bytes cannot make the work or the list
/// unbounded. ntoskrnl.exe exports about 3,000 names and has tens of thousands of functions, to
/// which the scans for call and jump bytes add candidates.
pub const MAX_FUNCTION_STARTS: usize = 1 << 18;

/// The exception directory (`.pdata`): RUNTIME_FUNCTION entries.
const EXCEPTION_DIRECTORY: usize = 3;

/// The instruction set of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86,
    X64,
    Arm64,
    /// Anything else (ARM32, IA-64...): only the data and bytes levels apply.
    Other,
}

/// One section of the image.
#[derive(Clone, Debug)]
pub struct Section<'data> {
    /// The name, NULs trimmed (`.text`).
    pub name: String,
    pub rva: u32,
    /// The raw data present in the file (at most the virtual size).
    pub data: &'data [u8],
    pub executable: bool,
    /// Initialized data that is neither code nor discarded after load (`.data`, `.rdata`; not
    /// `.reloc` or debug sections, whose text and numbers are not tags the driver uses).
    pub initialized_data: bool,
}

#[cfg(test)]
impl<'data> Section<'data> {
    /// A section of a test image: `.text` is code, `.rdata` and `.data` initialized data.
    pub fn for_test(name: &str, rva: u32, data: &'data [u8]) -> Section<'data> {
        Section {
            name: name.into(),
            rva,
            data,
            executable: name == ".text",
            initialized_data: matches!(name, ".rdata" | ".data"),
        }
    }
}

/// A function imported from a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    pub module: String,
    pub name: String,
}

/// A parsed image.
pub struct Image<'data> {
    pub arch: Arch,
    pub image_base: u64,
    pub sections: Vec<Section<'data>>,
    /// The import each IAT slot (by RVA) is bound to, delay-load slots included. Ordinal
    /// imports are named `#N`.
    pub imports: HashMap<u32, Import>,
    /// The tag-taking APIs the image exports itself (ntoskrnl.exe, ndis.sys...), by RVA: a direct
    /// call to one inside the module is a call to the API.
    pub exported_apis: HashMap<u32, &'static PoolApi>,
    /// The names the image exports (text the code refers to, not tags: Wine's stubs pass their
    /// own name to a logging function).
    pub export_names: Vec<&'data [u8]>,
    /// Function entries the image declares, sorted: the entry point, the exports and the
    /// `.pdata` RUNTIME_FUNCTION starts (x64, ARM64).
    pub function_starts: Vec<u32>,
}

impl<'data> Image<'data> {
    /// Parses `data` as a PE image; `None` when it is not one.
    pub fn parse(data: &'data [u8]) -> Option<Image<'data>> {
        match FileKind::parse(data).ok()? {
            FileKind::Pe32 => parse_as::<pe::ImageNtHeaders32>(data),
            FileKind::Pe64 => parse_as::<pe::ImageNtHeaders64>(data),
            _ => None,
        }
    }

    /// The section holding `rva`, and the offset of `rva` in its data.
    pub fn section_at(&self, rva: u32) -> Option<(&Section<'data>, usize)> {
        self.sections.iter().find_map(|s| {
            let offset = rva.checked_sub(s.rva)? as usize;
            (offset < s.data.len()).then_some((s, offset))
        })
    }

    /// Whether the image calls a tag-taking API (an import, or its own export): if not, code
    /// that holds no candidate tag cannot change what the analysis finds (see `x86::analyse`).
    pub fn uses_pool_apis(&self) -> bool {
        !self.exported_apis.is_empty() || self.imports.values().any(|i| pool_api(&i.name).is_some())
    }

    /// Up to `len` bytes of file data at `rva` (fewer at the end of a section).
    pub fn bytes_at(&self, rva: u32, len: usize) -> Option<&'data [u8]> {
        let (section, offset) = self.section_at(rva)?;
        let end = section.data.len().min(offset.saturating_add(len));
        Some(&section.data[offset..end])
    }

    /// The bytes of the executable sections.
    pub fn code_size(&self) -> usize {
        let code = self.sections.iter().filter(|s| s.executable);
        code.map(|s| s.data.len()).sum()
    }

    /// The RVA of a virtual address (an absolute address in x86 code), if it lies in the image.
    pub fn rva_of_va(&self, va: u64) -> Option<u32> {
        u32::try_from(va.checked_sub(self.image_base)?).ok()
    }
}

fn parse_as<'data, Pe: ImageNtHeaders>(data: &'data [u8]) -> Option<Image<'data>> {
    let file = PeFile::<Pe, &'data [u8]>::parse(data).ok()?;
    let headers = file.nt_headers();
    let arch = match headers.file_header().machine.get(LE) {
        pe::IMAGE_FILE_MACHINE_I386 => Arch::X86,
        pe::IMAGE_FILE_MACHINE_AMD64 => Arch::X64,
        pe::IMAGE_FILE_MACHINE_ARM64 => Arch::Arm64,
        _ => Arch::Other,
    };
    // A hostile section table cannot multiply the work: sections without data are dropped (no
    // lookup lands in them), at most MAX_SECTIONS are kept, and together they hold at most the
    // file's length of data. A real image's sections do not overlap in the file, so theirs fit;
    // thousands of headers over the same bytes do not.
    let mut budget = data.len();
    let sections = file
        .section_table()
        .iter()
        .filter_map(|header| {
            let characteristics = header.characteristics.get(LE).0;
            let name_end = header.name.iter().position(|&b| b == 0).unwrap_or(8);
            let (rva, virtual_size) = header.pe_address_range();
            let mut section_data = header.pe_data(data).ok()?;
            if virtual_size != 0 && (virtual_size as usize) < section_data.len() {
                section_data = &section_data[..virtual_size as usize];
            }
            section_data = &section_data[..section_data.len().min(budget)];
            if section_data.is_empty() {
                return None;
            }
            budget -= section_data.len();
            Some(Section {
                name: String::from_utf8_lossy(&header.name[..name_end]).into_owned(),
                rva,
                data: section_data,
                executable: characteristics
                    & (pe::IMAGE_SCN_MEM_EXECUTE.0 | pe::IMAGE_SCN_CNT_CODE.0)
                    != 0,
                initialized_data: characteristics & pe::IMAGE_SCN_CNT_INITIALIZED_DATA.0 != 0
                    && characteristics
                        & (pe::IMAGE_SCN_MEM_EXECUTE.0 | pe::IMAGE_SCN_MEM_DISCARDABLE.0)
                        == 0,
            })
        })
        .take(MAX_SECTIONS)
        .collect();
    let mut imports = HashMap::new();
    // A damaged table gives the imports read before the damage.
    let mut budget = MAX_IMPORTS;
    let _ = read_imports(&file, &mut imports, &mut budget);
    let _ = read_delay_imports(&file, &mut imports, &mut budget);
    let mut function_starts = Vec::new();
    let entry = headers.optional_header().address_of_entry_point();
    if entry != 0 {
        function_starts.push(entry);
    }
    let mut exported_apis = HashMap::new();
    let mut export_names = Vec::new();
    let _ = read_exports(
        &file,
        &mut exported_apis,
        &mut export_names,
        &mut function_starts,
    );
    let mut image = Image {
        arch,
        image_base: headers.optional_header().image_base(),
        sections,
        imports,
        exported_apis,
        export_names,
        function_starts,
    };
    if let Some(directory) = file.data_directory(EXCEPTION_DIRECTORY) {
        image.read_pdata(directory.virtual_address.get(LE), directory.size.get(LE));
    }
    image.function_starts.sort_unstable();
    image.function_starts.dedup();
    Some(image)
}

impl Image<'_> {
    /// Adds the start of every RUNTIME_FUNCTION entry of the `.pdata` at `rva`: 12-byte entries
    /// on x64, 8-byte ones on ARM64, the start first in both.
    fn read_pdata(&mut self, rva: u32, size: u32) {
        let entry = match self.arch {
            Arch::X64 => 12,
            Arch::Arm64 => 8,
            _ => return,
        };
        let Some(table) = self.bytes_at(rva, size as usize) else {
            return;
        };
        for runtime_function in table.chunks_exact(entry).take(MAX_FUNCTION_STARTS) {
            let start = u32::from_le_bytes([
                runtime_function[0],
                runtime_function[1],
                runtime_function[2],
                runtime_function[3],
            ]);
            self.function_starts.push(start);
        }
    }
}

/// Adds every exported function's RVA to `starts` and name to `names`, and binds the exported
/// tag-taking APIs.
fn read_exports<'data, Pe: ImageNtHeaders>(
    file: &PeFile<'data, Pe, &'data [u8]>,
    apis: &mut HashMap<u32, &'static PoolApi>,
    names: &mut Vec<&'data [u8]>,
    starts: &mut Vec<u32>,
) -> object::Result<()> {
    let Some(table) = file.export_table()? else {
        return Ok(());
    };
    for address in table.addresses().iter().take(MAX_FUNCTION_STARTS) {
        let address = address.get(LE);
        if address != 0 && !table.is_forward(address) {
            starts.push(address);
        }
    }
    for (pointer, index) in table.name_iter().take(MAX_FUNCTION_STARTS) {
        let Ok(name) = table.name_from_pointer(pointer) else {
            continue;
        };
        names.push(name);
        let Some(api) = std::str::from_utf8(name).ok().and_then(pool_api) else {
            continue;
        };
        if let Ok(ExportTarget::Address(address)) = table.target_by_index(index) {
            apis.insert(address, api);
        }
    }
    Ok(())
}

fn read_imports<'data, Pe: ImageNtHeaders>(
    file: &PeFile<'data, Pe, &'data [u8]>,
    imports: &mut HashMap<u32, Import>,
    budget: &mut usize,
) -> object::Result<()> {
    let Some(table) = file.import_table()? else {
        return Ok(());
    };
    // (module name, lookup thunks, IAT); without lookup thunks the IAT names the functions.
    let descriptors = table.descriptors()?.map(|d| {
        d.map(|d| {
            let iat = d.first_thunk.get(LE);
            let names = match d.original_first_thunk.get(LE) {
                0 => iat,
                lookup => lookup,
            };
            (d.name.get(LE), names, iat)
        })
    });
    read_directory::<Pe>(
        descriptors,
        |a| table.name(a),
        |a| table.thunks(a),
        |t| table.import::<Pe>(t),
        imports,
        budget,
    )
}

fn read_delay_imports<'data, Pe: ImageNtHeaders>(
    file: &PeFile<'data, Pe, &'data [u8]>,
    imports: &mut HashMap<u32, Import>,
    budget: &mut usize,
) -> object::Result<()> {
    let Some(table) = file.delay_load_import_table()? else {
        return Ok(());
    };
    let descriptors = table.descriptors()?.map(|d| {
        d.map(|d| {
            (
                d.dll_name_rva.get(LE),
                d.import_name_table_rva.get(LE),
                d.import_address_table_rva.get(LE),
            )
        })
    });
    read_directory::<Pe>(
        descriptors,
        |a| table.name(a),
        |a| table.thunks(a),
        |t| table.import::<Pe>(t),
        imports,
        budget,
    )
}

/// Binds the IAT slots of every (module name, lookup thunks, IAT) descriptor of a table, the
/// ordinary or the delay-load one: `module`, `thunks` and `function` are that table's readers
/// (object's two table types share their methods, not a trait).
fn read_directory<'data, Pe: ImageNtHeaders>(
    descriptors: impl Iterator<Item = object::Result<(u32, u32, u32)>>,
    module: impl Fn(u32) -> object::Result<&'data [u8]>,
    thunks: impl Fn(u32) -> object::Result<ImportThunkList<'data>>,
    function: impl Fn(Pe::ImageThunkData) -> object::Result<ImportName<'data>>,
    imports: &mut HashMap<u32, Import>,
    budget: &mut usize,
) -> object::Result<()> {
    for descriptor in descriptors {
        if *budget == 0 {
            break;
        }
        let (name, names, iat) = descriptor?;
        let module = String::from_utf8_lossy(module(name)?).into_owned();
        bind_slots::<Pe>(&module, thunks(names)?, iat, &function, imports, budget)?;
    }
    Ok(())
}

/// Binds consecutive IAT slots from `slot` on to the functions the lookup thunks name, reading
/// at most `budget` thunks (less what it reads).
fn bind_slots<'data, Pe: ImageNtHeaders>(
    module: &str,
    mut thunks: ImportThunkList<'data>,
    mut slot: u32,
    resolve: impl Fn(Pe::ImageThunkData) -> object::Result<ImportName<'data>>,
    imports: &mut HashMap<u32, Import>,
    budget: &mut usize,
) -> object::Result<()> {
    while let Some(thunk) = thunks.next::<Pe>()? {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let name = match resolve(thunk)? {
            ImportName::Name(_, name) => String::from_utf8_lossy(name).into_owned(),
            ImportName::Ordinal(ordinal) => format!("#{ordinal}"),
        };
        let module = module.to_owned();
        imports.insert(slot, Import { module, name });
        slot = slot.wrapping_add(std::mem::size_of::<Pe::ImageThunkData>() as u32);
    }
    Ok(())
}
