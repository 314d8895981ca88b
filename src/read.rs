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
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile};
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
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if is_tag_file_name(&name) {
        return Ok(FileContent::TagFile {
            data: read_tag_file(path)?,
        });
    }
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let named_sys = name.len() >= 4 && name[name.len() - 4..].eq_ignore_ascii_case(".sys");
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

/// Reads a tag file whole, whatever its name.
pub fn read_tag_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    if size > MAX_TAG_FILE_SIZE {
        return Err(ReadError::TooLarge(size, MAX_TAG_FILE_SIZE));
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
    let file = PeFile::<Pe, R>::parse(data).map_err(|e| e.to_string())?;
    let headers = file.nt_headers();
    let summary = PeSummary {
        machine: headers.file_header().machine.get(LE).0,
        subsystem: headers.optional_header().subsystem().0,
        timestamp: headers.file_header().time_date_stamp.get(LE),
        signed: file
            .data_directory(pe::IMAGE_DIRECTORY_ENTRY_SECURITY)
            .is_some_and(|d| d.size.get(LE) != 0),
    };
    let is_driver = summary.subsystem == pe::IMAGE_SUBSYSTEM_NATIVE.0
        || named_sys
        || imports_kernel(&file).unwrap_or(false);
    Ok(is_driver.then_some(summary))
}

/// Does the image import from ntoskrnl.exe or hal.dll, directly or delay-loaded? A damaged import
/// table answers what it could read before the damage.
fn imports_kernel<'data, Pe: ImageNtHeaders, R: ReadRef<'data>>(
    file: &PeFile<'data, Pe, R>,
) -> object::Result<bool> {
    let is_kernel = |name: &[u8]| {
        name.eq_ignore_ascii_case(b"ntoskrnl.exe") || name.eq_ignore_ascii_case(b"hal.dll")
    };
    if let Some(table) = file.import_table()? {
        for descriptor in table.descriptors()? {
            let descriptor = descriptor?;
            if is_kernel(table.name(descriptor.name.get(LE))?) {
                return Ok(true);
            }
        }
    }
    if let Some(table) = file.delay_load_import_table()? {
        for descriptor in table.descriptors()? {
            let descriptor = descriptor?;
            if is_kernel(table.name(descriptor.dll_name_rva.get(LE))?) {
                return Ok(true);
            }
        }
    }
    Ok(false)
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
