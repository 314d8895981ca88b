//! Reading one file from disk and deciding what it is: a driver binary, a tag file, or neither.
//!
//! A file is a **driver binary** when it parses as a PE image and at least one of: its subsystem
//! is NATIVE; its name ends in `.sys` (any case); it imports (directly or delay-loaded) from
//! `ntoskrnl.exe` or `hal.dll`. Ruling a file out reads only what that takes: the first bytes
//! for a file that is not a PE image, the headers and import table for one that is. Only a
//! driver binary is read whole.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use object::LittleEndian as LE;
use object::pe;
use object::read::coff::SectionTable;
use object::read::pe::{DataDirectories, ImageNtHeaders, ImageOptionalHeader};
use object::read::{FileKind, ReadCache, ReadRef};

use crate::tagfile::is_tag_file_name;

/// A driver binary larger than this is reported and skipped: reading it whole per thread would
/// break the memory bound, and no real driver comes near it.
pub const MAX_DRIVER_SIZE: u64 = 256 << 20;

/// A tag file larger than this is reported and skipped (Microsoft's is about 300 KB).
pub const MAX_TAG_FILE_SIZE: u64 = 64 << 20;

/// What a file turned out to be.
pub enum FileContent {
    /// A driver binary, read whole.
    Driver { data: Vec<u8>, image: PeSummary },
    /// A Pooltag.txt or localtag.txt, read whole.
    TagFile { data: Vec<u8> },
    /// Anything else; `bytes_read` says how much it took to rule it out.
    Other { bytes_read: u64 },
}

/// The PE header fields pooltag keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeSummary {
    /// `IMAGE_FILE_MACHINE_*` (0x8664 x64, 0x14c x86, 0xaa64 ARM64).
    pub machine: u16,
    /// `IMAGE_SUBSYSTEM_*` (1 is NATIVE).
    pub subsystem: u16,
    /// `TimeDateStamp` of the file header (a hash, not a time, in reproducible builds).
    pub timestamp: u32,
    /// Whether the image carries an Authenticode signature table (the security directory).
    pub signed: bool,
}

/// Why a file could not be read; the caller names the file.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// A `.sys` file that is not a valid PE image.
    NotPe(String),
    /// The file's size and the limit.
    TooLarge(u64, u64),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotPe(why) => write!(f, "named .sys but not a valid PE image: {why}"),
            ReadError::TooLarge(size, limit) => write!(
                f,
                "{size} bytes, larger than the {} MiB pooltag reads; skipped",
                limit >> 20
            ),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads `path` as far as needed to tell what it is.
pub fn read_file(path: &Path) -> Result<FileContent, ReadError> {
    let name = path.file_name().unwrap_or_default();
    if is_tag_file_name(&name.to_string_lossy()) {
        return Ok(FileContent::TagFile {
            data: read_tag_file(path)?,
        });
    }
    let file = open_regular(path)?;
    let size = file.metadata()?.len();
    let named_sys = is_sys_name(name);
    let cache = ReadCache::new(CountingFile {
        file,
        bytes_read: 0,
    });
    let summary = summarize_pe(&cache, named_sys);
    let CountingFile {
        mut file,
        bytes_read,
    } = cache.into_inner();
    match summary {
        Ok(Some(_)) if size > MAX_DRIVER_SIZE => Err(ReadError::TooLarge(size, MAX_DRIVER_SIZE)),
        Ok(Some(image)) => {
            io::Seek::rewind(&mut file)?;
            Ok(FileContent::Driver {
                data: read_whole(file, size)?,
                image,
            })
        }
        Err(why) if named_sys => Err(ReadError::NotPe(why)),
        Ok(None) | Err(_) => Ok(FileContent::Other { bytes_read }),
    }
}

/// Does a file name end in `.sys`, in any case? Compared as bytes: a name need not be UTF-8, and
/// its last four bytes may split a character (`ドライバ`).
pub fn is_sys_name(name: &std::ffi::OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    bytes.len() >= 4 && bytes[bytes.len() - 4..].eq_ignore_ascii_case(b".sys")
}

/// Reads a tag file whole, whatever its name.
pub fn read_tag_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    read_capped(path, MAX_TAG_FILE_SIZE)
}

/// Reads a file whole when it is at most `limit` bytes.
pub fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_regular(path)?;
    let size = file.metadata()?.len();
    if size > limit {
        return Err(ReadError::TooLarge(size, limit));
    }
    Ok(read_whole(file, size)?)
}

/// Parses the PE headers through `data`; `Ok(None)` when the image is valid but not a driver.
pub fn summarize_pe<'data, R: ReadRef<'data>>(
    data: R,
    named_sys: bool,
) -> Result<Option<PeSummary>, String> {
    match FileKind::parse(data) {
        Ok(FileKind::Pe32) => summarize::<pe::ImageNtHeaders32, R>(data, named_sys),
        Ok(FileKind::Pe64) => summarize::<pe::ImageNtHeaders64, R>(data, named_sys),
        Ok(_) => Err("not a PE image".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn summarize<'data, Pe: ImageNtHeaders, R: ReadRef<'data>>(
    data: R,
    named_sys: bool,
) -> Result<Option<PeSummary>, String> {
    // The headers, directories and section table only: `PeFile::parse` would also read the
    // COFF symbol table, which unstripped images carry by the hundred kilobytes.
    let headers = || -> object::Result<_> {
        let dos = pe::ImageDosHeader::parse(data)?;
        let mut offset = u64::from(dos.nt_headers_offset());
        let (nt, directories) = Pe::parse(data, &mut offset)?;
        let sections = nt.sections(data, offset)?;
        Ok((nt, directories, sections))
    };
    let (nt, directories, sections) = headers().map_err(|e| e.to_string())?;
    let summary = PeSummary {
        machine: nt.file_header().machine.get(LE).0,
        subsystem: nt.optional_header().subsystem().0,
        timestamp: nt.file_header().time_date_stamp.get(LE),
        signed: directories
            .get(pe::IMAGE_DIRECTORY_ENTRY_SECURITY)
            .is_some_and(|d| d.size.get(LE) != 0),
    };
    let is_driver = summary.subsystem == pe::IMAGE_SUBSYSTEM_NATIVE.0
        || named_sys
        || imports_kernel(&directories, &sections, data);
    Ok(is_driver.then_some(summary))
}

/// Descriptors read per import table at most: a table without its terminating null cannot make
/// the check read on and on.
const MAX_DESCRIPTORS: u32 = 4096;

/// Section headers searched per RVA at most (the Windows loader's limit, as in
/// `extract::image`): with 65,535 headers, each of the thousands of lookups below would scan
/// them all.
const MAX_SECTIONS: usize = 96;

/// Does the image import from ntoskrnl.exe or hal.dll, directly or delay-loaded? Reads only the
/// descriptors and the module names (a few hundred bytes), not the sections holding them: most
/// PE files on a disk are not drivers and are ruled out here. A damaged table answers what it
/// could read before the damage.
fn imports_kernel<'data, R: ReadRef<'data>>(
    directories: &DataDirectories<'data>,
    sections: &SectionTable<'data>,
    data: R,
) -> bool {
    let file_range_at = |rva: u32| {
        sections
            .iter()
            .take(MAX_SECTIONS)
            .find_map(|section| section.pe_file_range_at(rva))
    };
    let read_at = |rva: u32, len: u32| -> Option<&'data [u8]> {
        let (offset, available) = file_range_at(rva)?;
        data.read_bytes_at(u64::from(offset), u64::from(len.min(available)))
            .ok()
    };
    let name_at = |rva: u32| -> Option<&'data [u8]> {
        let (offset, available) = file_range_at(rva)?;
        let end = u64::from(offset) + u64::from(available.min(256));
        data.read_bytes_at_until(u64::from(offset)..end, 0).ok()
    };
    let is_kernel = |name: &[u8]| {
        name.eq_ignore_ascii_case(b"ntoskrnl.exe") || name.eq_ignore_ascii_case(b"hal.dll")
    };
    // (directory, descriptor size, offset of the module name's RVA in a descriptor)
    let tables = [
        (pe::IMAGE_DIRECTORY_ENTRY_IMPORT, 20u32, 12usize),
        (pe::IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT, 32, 4),
    ];
    tables.into_iter().any(|(directory, size, name_field)| {
        let Some(start) = directories
            .get(directory)
            .map(|d| d.virtual_address.get(LE))
            .filter(|rva| *rva != 0)
        else {
            return false;
        };
        (0..MAX_DESCRIPTORS)
            .map_while(|i| {
                let descriptor = read_at(start.checked_add(i.checked_mul(size)?)?, size)?;
                let descriptor = descriptor.get(..size as usize)?;
                descriptor.iter().any(|&b| b != 0).then_some(descriptor)
            })
            .any(|descriptor| {
                let rva = u32::from_le_bytes(
                    descriptor[name_field..name_field + 4]
                        .try_into()
                        .unwrap_or_default(),
                );
                name_at(rva).is_some_and(is_kernel)
            })
    })
}

/// Opens a regular file for reading. The walk passes over FIFOs, sockets and devices, but a
/// path can change between the walk and the open: on Unix the open does not wait for a FIFO's
/// writer (O_NONBLOCK, which regular files ignore), and anything but a regular file is refused.
fn open_regular(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// A file that counts the bytes read from it, so that the summary tells what ruling files out cost.
struct CountingFile {
    file: File,
    bytes_read: u64,
}

impl Read for CountingFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.bytes_read += n as u64;
        Ok(n)
    }
}

impl io::Seek for CountingFile {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Reads a whole file whose size was just measured; a file that shrinks meanwhile yields what is
/// left, and one that grows is read up to the measured size, so a file being written cannot
/// make the read unbounded.
fn read_whole(file: File, size: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(size as usize);
    file.take(size).read_to_end(&mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn sys_names_in_any_case_and_any_script() {
        assert!(is_sys_name(OsStr::new("afd.sys")));
        assert!(is_sys_name(OsStr::new("AFD.SYS")));
        assert!(is_sys_name(OsStr::new("ドライバ.sys")));
        assert!(!is_sys_name(OsStr::new("ドライバ")));
        assert!(!is_sys_name(OsStr::new("é")));
        assert!(!is_sys_name(OsStr::new("sys")));
        assert!(!is_sys_name(OsStr::new("")));
    }
}
