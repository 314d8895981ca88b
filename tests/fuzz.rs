//! Mutation fuzzing of every parser that reads untrusted bytes: PE classification
//! (`read::summarize_pe`, and `read::read_file` on the same bytes), code and data analysis
//! (`extract::analyse`: the PE, import and section reader, the x86/x64 and ARM64 analysers, the
//! data level), the version resource parser, the Pooltag.txt parser, the tag pattern parser, and
//! the pool usage readers (`snapshot::parse_pool_buffer` for the live SYSTEM_POOLTAG_INFORMATION
//! buffer, `snapshot::parse_bytes` for saved snapshots, PoolMon and `!poolused` text).
//!
//! Each target starts from committed seeds (the fixture drivers, or tag file and pattern text),
//! applies a few mutations (bit flips, overwrites with boundary values, splices, truncation,
//! extension, and writes aimed at the PE header fields a parser trusts: `e_lfanew`,
//! `NumberOfSections`, `SizeOfOptionalHeader`, data directories, section raw pointers and sizes,
//! the bytes a data directory points at), and checks, each call on its own thread:
//! - no panic;
//! - no hang: the call returns within [`HANG`], and within [`TIME_LIMIT`] for an input under
//!   1 MB;
//! - bounded memory: the bytes the call allocates at its peak stay under [`memory_limit`];
//! - the target's own invariants (the same classification from a file as from memory, sorted
//!   and deduplicated sites, trimmed version strings, a pattern matches its own tag...).
//!
//! A failing input is written to `<target tmp dir>/fuzz-failures/<target>/` (proptest's own
//! persistence is off: nothing is written into the tree); copy the shrunk one into
//! `tests/regressions/<target>/`, where [`regressions_replay`] runs every file through its target
//! on every `cargo test`.
//!
//! `PROPTEST_CASES` sets the cases per target (256 by default). A long run:
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz -- --nocapture --test-threads 1`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use object::read::ReadCache;
use pooltag::extract::{self, version};
use pooltag::read::{FileContent, ReadError, read_file, summarize_pe};
use pooltag::snapshot::{self, BufferLayout};
use pooltag::tag::{Tag, TagPattern};
use pooltag::tagfile;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// An input under this size must be handled within [`TIME_LIMIT`].
const TIMED_INPUT: usize = 1 << 20;
/// The time bound of one call on an input under [`TIMED_INPUT`]: a hang check, not a benchmark.
const TIME_LIMIT: Duration = Duration::from_secs(1);
/// A call that has not returned after this long is reported as a hang (and its thread left).
const HANG: Duration = Duration::from_secs(20);
/// Mutated inputs are cut to this size, so that every one is timed.
const MAX_INPUT: usize = TIMED_INPUT - 1;

/// The bytes one call may have allocated at its peak: a fixed allowance plus a multiple of its
/// input. An allocation sized by a header field (gigabytes) is far beyond it.
fn memory_limit(input: usize) -> usize {
    (64 << 20) + 32 * input
}

// ---------------------------------------------------------------------------------------------
// Allocation accounting: every thread counts what it allocates and frees; a call runs on a fresh
// thread, so that thread's peak is the call's.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the accounting only touches
// const-initialised thread-local cells, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Targets.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// `read::summarize_pe` from memory and through a read cache, and `read::read_file`.
    Classify,
    /// `extract::analyse`.
    Analyse,
    /// `extract::version::version_info`.
    Version,
    /// `tagfile::parse`.
    TagFile,
    /// `tag::TagPattern::parse`.
    Pattern,
    /// `snapshot::parse_pool_buffer`, both layouts.
    PoolBuffer,
    /// `snapshot::parse_bytes`.
    Snapshot,
    /// `text::decode` and `text::escape` on any bytes, and the same bytes as a file name:
    /// `store::path_text` and `read::is_sys_name`.
    Text,
}

const TARGETS: [Target; 8] = [
    Target::Classify,
    Target::Analyse,
    Target::Version,
    Target::TagFile,
    Target::Pattern,
    Target::PoolBuffer,
    Target::Snapshot,
    Target::Text,
];

/// Calls made through [`check`], per target (shrinking included), and how many of them got past
/// the first checks.
static EXECUTIONS: [AtomicU64; TARGETS.len()] = [const { AtomicU64::new(0) }; TARGETS.len()];
static ACCEPTED: [AtomicU64; TARGETS.len()] = [const { AtomicU64::new(0) }; TARGETS.len()];

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Classify => "classify",
            Target::Analyse => "analyse",
            Target::Version => "version",
            Target::TagFile => "tagfile",
            Target::Pattern => "pattern",
            Target::PoolBuffer => "poolbuffer",
            Target::Snapshot => "snapshot",
            Target::Text => "text",
        }
    }

    fn number(self) -> usize {
        TARGETS.iter().position(|t| *t == self).unwrap_or(0)
    }

    /// Whether the seeds are PE images (and the PE mutations apply).
    fn pe(self) -> bool {
        matches!(self, Target::Classify | Target::Analyse | Target::Version)
    }

    /// Runs the target on `data`; a broken invariant panics. True when the input got past the
    /// first checks (headers parsed, something found): how much of the fuzzing reaches deep.
    fn run(self, data: &[u8]) -> bool {
        match self {
            Target::Classify => classify(data),
            Target::Analyse => analyse(data),
            Target::Version => version(data),
            Target::TagFile => tag_file(data),
            Target::Pattern => pattern(data),
            Target::PoolBuffer => pool_buffer(data),
            Target::Snapshot => snapshot_file(data),
            Target::Text => text(data),
        }
    }
}

fn classify(data: &[u8]) -> bool {
    for named_sys in [false, true] {
        let direct = summarize_pe(data, named_sys);
        let cache = ReadCache::new(Cursor::new(data));
        let cached = summarize_pe(&cache, named_sys);
        assert_eq!(direct, cached, "memory and read cache disagree");
    }
    // The same bytes as a file named .sys: a driver exactly when the headers parse.
    let mut file = tempfile::Builder::new()
        .prefix("fuzz")
        .suffix(".sys")
        .tempfile()
        .expect("temporary file");
    std::io::Write::write_all(&mut file, data).expect("write temporary file");
    let expected = summarize_pe(data, true);
    match (read_file(file.path()), expected) {
        (Ok(FileContent::Driver { data: read, image }), Ok(Some(summary))) => {
            assert!(read == data, "read_file did not read the whole file");
            assert_eq!(image, summary);
        }
        (Err(ReadError::NotPe(why)), Err(expected)) => assert_eq!(why, expected),
        (Ok(FileContent::Driver { .. }), other) => {
            panic!("read as a driver, headers say {other:?}")
        }
        (Ok(FileContent::TagFile { .. }), _) => panic!("read as a tag file"),
        (Ok(FileContent::Other { .. }), other) => panic!("a .sys file ruled out: {other:?}"),
        (Err(e), other) => panic!("read_file failed: {e}; headers say {other:?}"),
    }
    summarize_pe(data, false).is_ok()
}

fn analyse(data: &[u8]) -> bool {
    let findings = extract::analyse(data);
    assert!(
        findings.sites.windows(2).all(|w| w[0] < w[1]),
        "sites not sorted and deduplicated"
    );
    for site in &findings.sites {
        let level = findings.levels.get(&site.tag).copied();
        assert!(
            level >= Some(site.evidence),
            "site {site:?} above its tag's level {level:?}"
        );
    }
    assert!(findings.levels.keys().all(|tag| tag.is_printable()));
    !findings.levels.is_empty()
}

fn version(data: &[u8]) -> bool {
    let Some(info) = version::version_info(data) else {
        return false;
    };
    let fields = [
        &info.company,
        &info.description,
        &info.file_version,
        &info.product,
        &info.original_filename,
    ];
    assert!(fields.iter().any(|f| f.is_some()), "an empty answer");
    for text in fields.into_iter().flatten() {
        assert!(
            !text.is_empty() && text.trim() == text,
            "untrimmed {text:?}"
        );
    }
    true
}

fn tag_file(data: &[u8]) -> bool {
    let parsed = tagfile::parse(data);
    let mut last = 0;
    for entry in &parsed.entries {
        assert!(entry.line > last, "entries out of line order");
        last = entry.line;
        assert_eq!(entry.tag.len(), 4, "{entry:?}");
        let pattern = TagPattern::from_field(&entry.tag);
        let _ = pattern.key_ranges(true);
    }
    assert!(parsed.problems.windows(2).all(|w| w[0].line <= w[1].line));
    !parsed.entries.is_empty()
}

fn pattern(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    match TagPattern::parse(&text) {
        Ok(pattern) => {
            let shown = pattern.to_string();
            assert!(!shown.is_empty());
            assert!(pattern.overlaps(&pattern, false));
            if let Some(tag) = pattern.as_tag() {
                assert!(pattern.matches(tag, false) && pattern.matches(tag, true));
            }
            for ignore_case in [false, true] {
                let ranges = pattern.key_ranges(ignore_case);
                assert!(!ranges.is_empty() && ranges.len() <= 16, "{ranges:?}");
                assert!(ranges.iter().all(|(low, high)| low <= high));
                assert!(ranges.windows(2).all(|w| w[0] <= w[1]));
                for tag in [Tag(*b"AfdA"), Tag(*b"    "), Tag([0x7e; 4])] {
                    if pattern.matches(tag, ignore_case) {
                        let key = tag.key();
                        assert!(
                            ranges
                                .iter()
                                .any(|(low, high)| (*low..=*high).contains(&key)),
                            "{tag} matches but lies in no key range"
                        );
                    }
                }
            }
            true
        }
        Err(e) => {
            assert!(
                e.to_string().contains(&*text),
                "{e} does not name the pattern"
            );
            false
        }
    }
}

fn pool_buffer(data: &[u8]) -> bool {
    let mut found = false;
    for (layout, offset, size) in [(BufferLayout::X64, 8, 40), (BufferLayout::X86, 4, 28)] {
        let Ok(tags) = snapshot::parse_pool_buffer(data, layout) else {
            assert!(data.len() < 4, "an error for a buffer holding a count");
            continue;
        };
        let count = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
        let fits = data.len().saturating_sub(offset) / size;
        assert!(tags.len() <= count.min(fits), "more tags than entries");
        found |= !tags.is_empty();
    }
    found
}

fn snapshot_file(data: &[u8]) -> bool {
    let Ok(parsed) = snapshot::parse_bytes(data) else {
        return false;
    };
    assert!(parsed.problems.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(parsed.problems.iter().all(|(line, _)| *line > 0));
    // What was read is what a saved snapshot writes and reads back.
    let again = snapshot::parse(&snapshot::to_json(&parsed.snapshot)).expect("reads back");
    assert_eq!(again.snapshot, parsed.snapshot);
    !parsed.snapshot.tags.is_empty()
}

fn text(data: &[u8]) -> bool {
    let (encoding, decoded) = pooltag::text::decode(data);
    if !matches!(encoding, pooltag::text::Encoding::Utf8) {
        assert!(
            std::str::from_utf8(&decoded).is_ok() || encoding == pooltag::text::Encoding::Utf8Bom,
            "decoded UTF-16 is not UTF-8"
        );
    }
    let lossy = String::from_utf8_lossy(&decoded);
    let escaped = pooltag::text::escape(&lossy);
    assert!(
        !escaped
            .chars()
            .any(|c| matches!(u32::from(c), 0x00..=0x1f | 0x7f..=0x9f)),
        "a control character survived escaping: {escaped:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(data);
        let stored = pooltag::store::path_text(Path::new(name));
        // Lossless: bytes that are not UTF-8 become \xNN, the rest stays.
        assert!(stored.len() >= data.len(), "a stored name lost bytes");
        if std::str::from_utf8(data).is_ok() {
            assert_eq!(stored.as_bytes(), data);
        }
        let sys = pooltag::read::is_sys_name(name);
        assert_eq!(
            sys,
            data.len() >= 4 && data[data.len() - 4..].eq_ignore_ascii_case(b".sys")
        );
    }
    encoding != pooltag::text::Encoding::Utf8
}

// ---------------------------------------------------------------------------------------------
// Running one input: its own thread, a time bound, a hang bound, an allocation bound.

/// Runs `target` on `data`; `Err` says what went wrong (and where the input was saved).
fn check(target: Target, data: &[u8]) -> Result<(), String> {
    EXECUTIONS[target.number()].fetch_add(1, Ordering::Relaxed);
    let input = Arc::new(data.to_vec());
    let (sender, receiver) = mpsc::channel();
    let shared = Arc::clone(&input);
    let worker = std::thread::Builder::new()
        .name(format!("fuzz-{}", target.name()))
        .spawn(move || {
            let base = LIVE.with(Cell::get);
            PEAK.with(|peak| peak.set(base));
            let started = Instant::now();
            if target.run(&shared) {
                ACCEPTED[target.number()].fetch_add(1, Ordering::Relaxed);
            }
            let elapsed = started.elapsed();
            let peak = PEAK.with(Cell::get) - base;
            let _ = sender.send((elapsed, peak));
        })
        .map_err(|e| format!("cannot spawn a thread: {e}"))?;
    let problem = match receiver.recv_timeout(HANG) {
        Ok((elapsed, peak)) => {
            let _ = worker.join();
            if data.len() < TIMED_INPUT && elapsed > TIME_LIMIT {
                Some(format!("took {elapsed:?} (limit {TIME_LIMIT:?})"))
            } else if peak.max(0) as usize > memory_limit(data.len()) {
                Some(format!(
                    "allocated {} MiB at its peak (limit {} MiB)",
                    peak >> 20,
                    memory_limit(data.len()) >> 20
                ))
            } else {
                None
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Some(format!("no answer after {HANG:?}: a hang")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Some(match worker.join() {
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                format!("panicked: {message}")
            }
            Ok(()) => "the worker ended without an answer".to_owned(),
        }),
    };
    match problem {
        None => Ok(()),
        Some(problem) => {
            let saved = save_failure(target, data);
            Err(format!(
                "{}: {problem}; {} bytes saved to {}",
                target.name(),
                data.len(),
                saved.display()
            ))
        }
    }
}

/// Writes a failing input where a human can pick it up for `tests/regressions/`.
fn save_failure(target: Target, data: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-failures")
        .join(target.name());
    let path = dir.join(format!("{:016x}-{}.bin", fnv1a(data), data.len()));
    let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, data));
    path
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------------
// Seeds.

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every committed fixture binary.
fn pe_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut paths = Vec::new();
        files_under(&manifest().join("tests/fixtures/bin"), &mut paths);
        let seeds: Vec<Vec<u8>> = paths
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter(|d| d.starts_with(b"MZ"))
            .collect();
        assert!(seeds.len() >= 10, "fixture binaries missing");
        seeds
    })
}

/// Every committed fixture binary, with the ones in `extra/` (ARM64 -O0 builds, wrapper chains,
/// a module calling its own export) that exercise the function summaries.
fn analyse_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut paths = Vec::new();
        files_under(&manifest().join("tests/fixtures/extra"), &mut paths);
        let mut seeds = pe_seeds().to_vec();
        seeds.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
        seeds
    })
}

/// The fixtures with a version resource, 25 times each, then every fixture: about half the
/// version target's inputs start from a version resource.
fn version_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<Vec<u8>> = ["versioned.sys", "versioned-de.sys"]
            .iter()
            .filter_map(|name| {
                std::fs::read(manifest().join("tests/fixtures/bin/x64-O2").join(name)).ok()
            })
            .collect();
        let versioned = seeds.clone();
        for _ in 0..24 {
            seeds.extend(versioned.iter().cloned());
        }
        seeds.extend(pe_seeds().iter().cloned());
        seeds
    })
}

const TAG_FILE_SEED: &str = "\
//
//    Pooltag.txt
//
rem    This file lists the tags used for pool allocations
REM
AfdA - afd.sys      - AFD objects
Afd? - afd.sys - AFD wildcard - with a dash inside
Ul*  - http.sys     - Ultra
PX1  - ndproxy.sys - PX1 tag
Cc   - nt!cc      - Cache Manager
ReMo - refs.sys - ReMo is not a comment
EtwO - nt!etw   Etw memory MDL
ATmp - AppTag mount point
\t- - tab before the dash
TooLong - x.sys - too long
 Lead - lead.sys - leading space
Irp  - <unknown>    - Io, IRP packets\r
Ctl? - ctl.sys - CRLF line\r
\u{e9}t\u{e9} - utf8.sys - not ASCII
";

fn tag_file_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut with_ctrl_z = TAG_FILE_SEED.as_bytes().to_vec();
        with_ctrl_z.extend_from_slice(b"\x1aAfter - eof.sys - ignored\n");
        let mut latin1 = b"Lat1 - latin1.sys - caf\xe9 cr\xe8me\n".to_vec();
        latin1.extend_from_slice(b"\xff\xfe - bad.sys - bytes\n");
        vec![
            TAG_FILE_SEED.as_bytes().to_vec(),
            with_ctrl_z,
            latin1,
            b"- - -\n - \n-\n".to_vec(),
            Vec::new(),
        ]
    })
}

fn pattern_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        [
            "AfdA",
            "Afd?",
            "Ul*",
            "*",
            "????",
            "?*",
            "Irp",
            "I",
            "0x41646641",
            "0xC1646641",
            "0X1",
            "0x",
            "0x123456789",
            "0x12",
            "a*b",
            "**",
            " ",
            "   *",
            "\u{e9}t\u{e9}",
            "\t",
            "0xgg",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    })
}

/// SYSTEM_POOLTAG_INFORMATION buffers of two entries in both layouts, with the right count, a
/// count too large, and none.
fn pool_buffer_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds = Vec::new();
        for x64 in [true, false] {
            for count in [2u32, 0xffff_ffff, 0] {
                let mut data = count.to_le_bytes().to_vec();
                data.resize(if x64 { 8 } else { 4 }, 0);
                for (tag, n) in [(*b"AfdA", 7u32), (*b"Irp ", 0x8000_0000)] {
                    data.extend_from_slice(&tag);
                    data.extend_from_slice(&n.to_le_bytes());
                    data.extend_from_slice(&(n / 2).to_le_bytes());
                    let used = u64::from(n) * 16;
                    if x64 {
                        data.extend_from_slice(&[0; 4]);
                        data.extend_from_slice(&used.to_le_bytes());
                    } else {
                        data.extend_from_slice(&(used as u32).to_le_bytes());
                    }
                    data.extend_from_slice(&n.to_le_bytes());
                    data.extend_from_slice(&(n / 4).to_le_bytes());
                    if x64 {
                        data.extend_from_slice(&used.to_le_bytes());
                    } else {
                        data.extend_from_slice(&(used as u32).to_le_bytes());
                    }
                }
                seeds.push(data);
            }
        }
        seeds
    })
}

/// A PoolMon screen, a `poolmon /n` log, `!poolused` output and a saved snapshot.
fn snapshot_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        [
            " Memory: 8388148K Avail: 4126216K  PageFlts:   420   InRam Krnl: 9248K P:259156K\n\n \
             Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc   \
             Mapped_Driver\n\n AfdA Nonp      1234 (   0)      1200 (   0)     34     5440 (   0)  \
             160   afd.sys\n Irp  Paged       900 (   2)       899 (   2)      1      272 (   0)  \
             272   [ nt!io ]\n",
            " Tag  Type     Allocs     Frees      Diff   Bytes  Per Alloc\r\n \
             AfdA Nonp      1234      1200        34    5440      160\r\n",
            " Sorting by  NonPaged Pool Consumed\n\n               NonPaged                  Paged\n \
             Tag     Allocs         Used     Allocs         Used\n\n ConT         9      5251072  \
             0            0\tUNKNOWN pooltag 'ConT', please update pooltag.txt\n \
             TOTAL     1234     10092544          5       196608\n",
            r#"{"pooltag_snapshot":1,"host":"pc","time":1795651200,"windows":"10.0.22631","tags":[{"tag":"A\x01 \\","paged_allocs":1,"paged_frees":2,"paged_bytes":3,"nonpaged_allocs":4,"nonpaged_frees":5,"nonpaged_bytes":6}]}"#,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    })
}

fn seeds(target: Target) -> &'static [Vec<u8>] {
    match target {
        Target::PoolBuffer => pool_buffer_seeds(),
        Target::Snapshot => snapshot_seeds(),
        Target::Classify => pe_seeds(),
        Target::Analyse => analyse_seeds(),
        Target::Version => version_seeds(),
        Target::TagFile => tag_file_seeds(),
        Target::Pattern => pattern_seeds(),
        Target::Text => text_seeds(),
    }
}

/// Text as it is saved on Windows and named on disks: marks, UTF-16 both ways, control
/// characters, names in other scripts and encodings, reserved and very long names.
fn text_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let utf16 = |big: bool, text: &str| -> Vec<u8> {
            let mut out = if big {
                vec![0xfe, 0xff]
            } else {
                vec![0xff, 0xfe]
            };
            for unit in text.encode_utf16() {
                out.extend(if big {
                    unit.to_be_bytes()
                } else {
                    unit.to_le_bytes()
                });
            }
            out
        };
        vec![
            b"\xef\xbb\xbfAfdA - afd.sys - AFD\r\n".to_vec(),
            utf16(false, " Tag  Type  Allocs\r\n AfdA Nonp 1 0 1 16 16\r\n"),
            utf16(true, "AfdA\nIrp \n"),
            b"\xff\xfeA\x00\x00\xd8".to_vec(),
            "evil\u{1b}]0;title\u{7}\u{9b}2J.sys".as_bytes().to_vec(),
            "ドライバ.sys".as_bytes().to_vec(),
            b"dup\xfe.sys".to_vec(),
            b"CON.sys".to_vec(),
            vec![b'n'; 255],
            Vec::new(),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// A value to write.
#[derive(Clone, Debug)]
enum Value {
    /// A boundary value.
    Boundary(u64),
    Any(u64),
    /// The input's length plus a small delta.
    Length(i16),
    /// A data directory's RVA plus a small delta: a structure pointing back into itself.
    DirectoryRva(u8, i16),
    /// A resource directory entry's "subdirectory" flag with a small offset (a loop when it is
    /// the offset of a table above).
    Subdirectory(u16),
}

const BOUNDARIES: [u64; 18] = [
    0,
    1,
    2,
    4,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => proptest::sample::select(&BOUNDARIES[..]).prop_map(Value::Boundary),
        2 => any::<u64>().prop_map(Value::Any),
        1 => (-8i16..=8).prop_map(Value::Length),
        2 => (0u8..16, -64i16..=64).prop_map(|(d, delta)| Value::DirectoryRva(d, delta * 4)),
        1 => (0u16..0x200).prop_map(|o| Value::Subdirectory(o * 8)),
    ]
}

/// A field of the PE headers.
#[derive(Clone, Copy, Debug)]
enum Field {
    Lfanew,
    Machine,
    NumberOfSections,
    PointerToSymbolTable,
    NumberOfSymbols,
    SizeOfOptionalHeader,
    Magic,
    AddressOfEntryPoint,
    ImageBase,
    SizeOfImage,
    SizeOfHeaders,
    Subsystem,
    NumberOfRvaAndSizes,
    DirectoryRva(u8),
    DirectorySize(u8),
    /// Field of section header `n` (taken modulo the section count): offset in the header and
    /// width.
    Section(u8, u8, u8),
}

fn field() -> impl Strategy<Value = Field> {
    let section_field = prop_oneof![
        Just((8u8, 4u8)), // VirtualSize
        Just((12, 4)),    // VirtualAddress
        Just((16, 4)),    // SizeOfRawData
        Just((20, 4)),    // PointerToRawData
        Just((36, 4)),    // Characteristics
        Just((0, 8)),     // Name
    ];
    prop_oneof![
        2 => Just(Field::Lfanew),
        1 => Just(Field::Machine),
        3 => Just(Field::NumberOfSections),
        1 => Just(Field::PointerToSymbolTable),
        1 => Just(Field::NumberOfSymbols),
        3 => Just(Field::SizeOfOptionalHeader),
        1 => Just(Field::Magic),
        1 => Just(Field::AddressOfEntryPoint),
        1 => Just(Field::ImageBase),
        1 => Just(Field::SizeOfImage),
        1 => Just(Field::SizeOfHeaders),
        1 => Just(Field::Subsystem),
        2 => Just(Field::NumberOfRvaAndSizes),
        // Import (1), resource (2), security (4), IAT (12), delay import (13) the most.
        4 => prop_oneof![Just(1u8), Just(2), Just(4), Just(12), Just(13), 0u8..16]
            .prop_map(Field::DirectoryRva),
        4 => prop_oneof![Just(1u8), Just(2), Just(4), Just(12), Just(13), 0u8..16]
            .prop_map(Field::DirectorySize),
        8 => (any::<u8>(), section_field).prop_map(|(n, (o, w))| Field::Section(n, o, w)),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    /// Write a value of 1, 2, 4 or 8 bytes.
    Set(Index, u8, Value),
    /// Overwrite with random bytes.
    Fill(Index, Vec<u8>),
    /// Copy a run of another seed here.
    Splice(Index, Index, Index, u16),
    Insert(Index, Vec<u8>),
    Remove(Index, u16),
    Truncate(Index),
    /// Append bytes of one value.
    Extend(u32, u8),
    /// Write a header field (PE seeds).
    Field(Field, Value),
    /// Write 4 bytes at a data directory's target plus an offset (PE seeds): import
    /// descriptors, resource tables.
    AtDirectory(u8, u16, Value),
    /// Grow the section table to this many headers, copies of the ones there (PE seeds).
    ManySections(u16),
}

fn mutation(pe: bool) -> BoxedStrategy<Mutation> {
    let width = prop_oneof![Just(1u8), Just(2), Just(4), Just(8)];
    let generic = prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        4 => (any::<Index>(), width, value()).prop_map(|(i, w, v)| Mutation::Set(i, w, v)),
        2 => (any::<Index>(), vec(any::<u8>(), 1..64)).prop_map(|(i, b)| Mutation::Fill(i, b)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>(), 1u16..2048)
            .prop_map(|(i, s, f, n)| Mutation::Splice(i, s, f, n)),
        1 => (any::<Index>(), vec(any::<u8>(), 1..32)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1u16..512).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (
            prop_oneof![1u32..64, 64u32..4096, 4096u32..(512 << 10)],
            prop_oneof![Just(0u8), Just(0xff), Just(b'A'), Just(b'\n'), Just(0xcc), any::<u8>()]
        )
            .prop_map(|(n, b)| Mutation::Extend(n, b)),
    ];
    if !pe {
        return generic.boxed();
    }
    prop_oneof![
        6 => generic,
        6 => (field(), value()).prop_map(|(f, v)| Mutation::Field(f, v)),
        3 => (
            prop_oneof![Just(1u8), Just(2), Just(13), 0u8..16],
            (0u16..64).prop_map(|o| o * 4),
            value()
        )
            .prop_map(|(d, o, v)| Mutation::AtDirectory(d, o, v)),
        1 => prop_oneof![1u16..=96, 96u16..=4096, 4096u16..=15000].prop_map(Mutation::ManySections),
    ]
    .boxed()
}

fn le(data: &[u8], at: usize, width: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(width)?)?;
    Some(bytes.iter().rev().fold(0, |v, &b| (v << 8) | u64::from(b)))
}

fn put(data: &mut [u8], at: usize, width: usize, value: u64) {
    if let Some(bytes) = at.checked_add(width).and_then(|end| data.get_mut(at..end)) {
        bytes.copy_from_slice(&value.to_le_bytes()[..width]);
    }
}

/// Offsets of the headers of a (maybe damaged) PE image, where they lie inside it.
struct Headers {
    pe: usize,
    optional: usize,
    directories: usize,
    table: usize,
    sections: usize,
}

impl Headers {
    fn of(data: &[u8]) -> Option<Headers> {
        let pe = le(data, 0x3c, 4)? as usize;
        let optional = pe.checked_add(24)?;
        let directories = match le(data, optional, 2)? {
            0x20b => optional + 112,
            _ => optional + 96,
        };
        let table = optional.checked_add(le(data, pe + 20, 2)? as usize)?;
        let sections = le(data, pe + 6, 2)? as usize;
        Some(Headers {
            pe,
            optional,
            directories,
            table,
            sections,
        })
    }

    fn plus(&self, data: &[u8]) -> bool {
        le(data, self.optional, 2) == Some(0x20b)
    }

    /// The file offset and width of `field`.
    fn field(&self, data: &[u8], field: Field) -> Option<(usize, usize)> {
        let o = self.optional;
        let plus = self.plus(data);
        Some(match field {
            Field::Lfanew => (0x3c, 4),
            Field::Machine => (self.pe + 4, 2),
            Field::NumberOfSections => (self.pe + 6, 2),
            Field::PointerToSymbolTable => (self.pe + 12, 4),
            Field::NumberOfSymbols => (self.pe + 16, 4),
            Field::SizeOfOptionalHeader => (self.pe + 20, 2),
            Field::Magic => (o, 2),
            Field::AddressOfEntryPoint => (o + 16, 4),
            Field::ImageBase if plus => (o + 24, 8),
            Field::ImageBase => (o + 28, 4),
            Field::SizeOfImage => (o + 56, 4),
            Field::SizeOfHeaders => (o + 60, 4),
            Field::Subsystem => (o + 68, 2),
            Field::NumberOfRvaAndSizes => (if plus { o + 108 } else { o + 92 }, 4),
            Field::DirectoryRva(d) => (self.directories + 8 * usize::from(d % 16), 4),
            Field::DirectorySize(d) => (self.directories + 8 * usize::from(d % 16) + 4, 4),
            Field::Section(n, offset, width) => {
                let count = self.sections.clamp(1, 64);
                let header = self.table + 40 * (usize::from(n) % count);
                (header + usize::from(offset), usize::from(width))
            }
        })
    }

    fn directory_rva(&self, data: &[u8], d: u8) -> Option<u32> {
        Some(le(data, self.directories + 8 * usize::from(d % 16), 4)? as u32)
    }

    /// The file offset of `rva`, through the section table.
    fn offset_of(&self, data: &[u8], rva: u32) -> Option<usize> {
        (0..self.sections.min(96)).find_map(|i| {
            let h = self.table + 40 * i;
            let va = le(data, h + 12, 4)? as u32;
            let size = (le(data, h + 8, 4)? as u32).max(le(data, h + 16, 4)? as u32);
            let within = rva.checked_sub(va).filter(|d| *d < size)?;
            (le(data, h + 20, 4)? as usize).checked_add(within as usize)
        })
    }
}

fn resolve(value: &Value, data: &[u8]) -> u64 {
    match *value {
        Value::Boundary(v) | Value::Any(v) => v,
        Value::Length(delta) => (data.len() as i64 + i64::from(delta)).max(0) as u64,
        Value::DirectoryRva(d, delta) => Headers::of(data)
            .and_then(|h| h.directory_rva(data, d))
            .map_or(0, |rva| (i64::from(rva) + i64::from(delta)).max(0) as u64),
        Value::Subdirectory(offset) => 0x8000_0000 | u64::from(offset),
    }
}

fn at(index: &Index, len: usize) -> Option<usize> {
    (len > 0).then(|| index.index(len))
}

fn apply(data: &mut Vec<u8>, mutation: &Mutation, seeds: &[Vec<u8>]) {
    match mutation {
        Mutation::FlipBit(i, bit) => {
            if let Some(i) = at(i, data.len()) {
                data[i] ^= 1 << bit;
            }
        }
        Mutation::Set(i, width, value) => {
            if let Some(i) = at(i, data.len()) {
                let v = resolve(value, data);
                let width = usize::from(*width).min(data.len() - i);
                put(data, i, width, v);
            }
        }
        Mutation::Fill(i, bytes) => {
            if let Some(i) = at(i, data.len()) {
                let n = bytes.len().min(data.len() - i);
                data[i..i + n].copy_from_slice(&bytes[..n]);
            }
        }
        Mutation::Splice(i, seed, from, n) => {
            let other = &seeds[seed.index(seeds.len())];
            if let (Some(i), Some(from)) = (at(i, data.len()), at(from, other.len())) {
                let n = usize::from(*n).min(other.len() - from).min(data.len() - i);
                data[i..i + n].copy_from_slice(&other[from..from + n]);
            }
        }
        Mutation::Insert(i, bytes) => {
            let i = at(i, data.len() + 1).unwrap_or(0);
            data.splice(i..i, bytes.iter().copied());
        }
        Mutation::Remove(i, n) => {
            if let Some(i) = at(i, data.len()) {
                let end = (i + usize::from(*n)).min(data.len());
                data.drain(i..end);
            }
        }
        Mutation::Truncate(i) => {
            if let Some(i) = at(i, data.len()) {
                data.truncate(i);
            }
        }
        Mutation::Extend(n, b) => {
            let n = (*n as usize).min(MAX_INPUT.saturating_sub(data.len()));
            data.resize(data.len() + n, *b);
        }
        Mutation::Field(field, value) => {
            let v = resolve(value, data);
            if let Some((offset, width)) = Headers::of(data).and_then(|h| h.field(data, *field)) {
                put(data, offset, width, v);
            }
        }
        Mutation::AtDirectory(d, offset, value) => {
            let v = resolve(value, data);
            let target = Headers::of(data).and_then(|h| {
                let rva = h.directory_rva(data, *d)?;
                h.offset_of(data, rva.checked_add(u32::from(*offset))?)
            });
            if let Some(target) = target {
                put(data, target, 4, v);
            }
        }
        Mutation::ManySections(n) => many_sections(data, usize::from(*n)),
    }
}

/// Grows the section table to `n` headers, copies of the ones there, and moves the data after
/// it so that every raw pointer (the copies' too) still points at the same bytes.
fn many_sections(data: &mut Vec<u8>, n: usize) {
    let Some(h) = Headers::of(data) else {
        return;
    };
    let count = h.sections;
    let end = h.table.saturating_add(40 * count);
    if count == 0 || count >= n || end > data.len() {
        return;
    }
    let added = 40 * (n - count);
    if data.len() + added > MAX_INPUT {
        return;
    }
    let mut table: Vec<u8> = Vec::with_capacity(40 * n);
    for i in 0..n {
        let header = h.table + 40 * (i % count);
        table.extend_from_slice(&data[header..header + 40]);
    }
    for header in table.chunks_exact_mut(40) {
        let raw = le(header, 20, 4).unwrap_or(0) as usize;
        if raw >= end {
            put(header, 20, 4, (raw + added) as u64);
        }
    }
    data.splice(h.table..end, table);
    put(data, h.pe + 6, 2, n as u64);
    if let Some(size) = le(data, h.optional + 60, 4) {
        put(data, h.optional + 60, 4, size + added as u64);
    }
}

fn input(target: Target) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(target);
    (any::<Index>(), vec(mutation(target.pe()), 0..=6)).prop_map(move |(seed, mutations)| {
        let mut data = seeds[seed.index(seeds.len())].clone();
        for m in &mutations {
            apply(&mut data, m, seeds);
        }
        data.truncate(MAX_INPUT);
        data
    })
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn fuzz(target: Target) {
    let mut runner = TestRunner::new(config());
    let started = Instant::now();
    let counted = || {
        let n = target.number();
        (
            EXECUTIONS[n].load(Ordering::Relaxed),
            ACCEPTED[n].load(Ordering::Relaxed),
        )
    };
    let before = counted();
    let result = runner.run(&input(target), |data| {
        check(target, &data).map_err(TestCaseError::fail)
    });
    let after = counted();
    eprintln!(
        "fuzz {}: {} executions ({} past the first checks) in {:.1} s",
        target.name(),
        after.0 - before.0,
        after.1 - before.1,
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn fuzz_classify() {
    fuzz(Target::Classify);
}

#[test]
fn fuzz_analyse() {
    fuzz(Target::Analyse);
}

#[test]
fn fuzz_version() {
    fuzz(Target::Version);
}

#[test]
fn fuzz_tag_file() {
    fuzz(Target::TagFile);
}

#[test]
fn fuzz_pattern() {
    fuzz(Target::Pattern);
}

#[test]
fn fuzz_pool_buffer() {
    fuzz(Target::PoolBuffer);
}

#[test]
fn fuzz_snapshot() {
    fuzz(Target::Snapshot);
}

#[test]
fn fuzz_text() {
    fuzz(Target::Text);
}

/// Every input in `tests/regressions/<target>/` (but READMEs) passes its target's checks.
#[test]
fn regressions_replay() {
    let root = manifest().join("tests/regressions");
    let mut failures = Vec::new();
    let mut replayed = 0;
    for target in TARGETS {
        let mut paths = Vec::new();
        files_under(&root.join(target.name()), &mut paths);
        for path in paths {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.to_ascii_lowercase().starts_with("readme") {
                continue;
            }
            let data = std::fs::read(&path).expect("read a regression input");
            replayed += 1;
            if let Err(e) = check(target, &data) {
                failures.push(format!("{}: {e}", path.display()));
            }
        }
    }
    eprintln!("replayed {replayed} regression inputs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The mutations do what they say on a real fixture (so that the fuzzing reaches the fields it
/// aims at).
#[test]
fn mutations_reach_the_header_fields() {
    let seed = std::fs::read(manifest().join("tests/fixtures/bin/x64-O2/basic.sys")).unwrap();
    let h = Headers::of(&seed).unwrap();
    assert_eq!((h.pe, h.sections), (0x80, 4));
    assert_eq!(
        h.field(&seed, Field::SizeOfHeaders),
        Some((0x80 + 24 + 60, 4))
    );
    // The import directory's descriptors are in .idata at file offset 0xa00.
    assert_eq!(
        h.offset_of(&seed, h.directory_rva(&seed, 1).unwrap()),
        Some(0xa00)
    );
    let mut data = seed.clone();
    apply(&mut data, &Mutation::ManySections(10), &[]);
    assert_eq!(data.len(), seed.len() + 6 * 40);
    let grown = Headers::of(&data).unwrap();
    assert_eq!(grown.sections, 10);
    // Still a valid image whose copies point at the same bytes.
    assert!(summarize_pe(&data[..], false).unwrap().is_some());
    assert_eq!(
        extract::analyse(&data).levels,
        extract::analyse(&seed).levels
    );
}

// ---------------------------------------------------------------------------------------------
// Inputs too big for the corpus, built here: what they cost must not grow with what they hold.

/// Runs `f` on a fresh thread; its result, time and peak allocation.
fn measured<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> (T, Duration, usize) {
    std::thread::spawn(move || {
        let base = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(base));
        let started = Instant::now();
        let out = f();
        let elapsed = started.elapsed();
        (out, elapsed, (PEAK.with(Cell::get) - base).max(0) as usize)
    })
    .join()
    .expect("no panic")
}

/// basic.sys (x64) with `code` as its .text section.
fn x64_image_with_code(code: &[u8]) -> Vec<u8> {
    let mut image = std::fs::read(manifest().join("tests/fixtures/bin/x64-O2/basic.sys")).unwrap();
    let h = Headers::of(&image).unwrap();
    let text = h.table;
    assert_eq!(&image[text..text + 5], b".text");
    let raw = image.len();
    put(&mut image, text + 8, 4, code.len() as u64);
    put(&mut image, text + 16, 4, code.len() as u64);
    put(&mut image, text + 20, 4, raw as u64);
    image.extend_from_slice(code);
    image
}

/// 4 MB of `mov ecx/edx/r8d/r9d, <four different tags>; call <a new target>`: every call has
/// four `arg` sites, every target a thunk check. Sites and the thunk cache stay bounded.
#[test]
fn a_section_of_calls_keeps_sites_and_caches_bounded() {
    let mut code = Vec::new();
    let mut k = 0u32;
    while code.len() < 4 << 20 {
        let tag = 0x3041_4141 + (k % 40);
        code.push(0xb9); // mov ecx, imm32
        code.extend_from_slice(&tag.to_le_bytes());
        code.push(0xba); // mov edx, imm32
        code.extend_from_slice(&(tag + 0x0100_0000).to_le_bytes());
        code.extend_from_slice(&[0x41, 0xb8]); // mov r8d, imm32
        code.extend_from_slice(&(tag + 0x0200_0000).to_le_bytes());
        code.extend_from_slice(&[0x41, 0xb9]); // mov r9d, imm32
        code.extend_from_slice(&(tag + 0x0300_0000).to_le_bytes());
        code.push(0xe8); // call rel32, each to a new target
        code.extend_from_slice(&(k * 16).to_le_bytes());
        k += 1;
    }
    let image = x64_image_with_code(&code);
    let (sites, elapsed, peak) = measured(move || extract::analyse(&image).sites.len());
    eprintln!(
        "{k} calls: {sites} sites, {elapsed:?}, {} MiB allocated at the peak",
        peak >> 20
    );
    assert!(sites <= extract::MAX_SITES, "{sites} sites");
    assert!(peak < 48 << 20, "{} MiB", peak >> 20);
}

/// A tag file of 4 million junk lines reports a bounded number of problems; one of 300,000 tag
/// lines keeps a bounded number of entries.
#[test]
fn a_tag_file_of_junk_or_of_millions_of_lines_stays_bounded() {
    let junk = b"x\n".repeat(4 << 20);
    let ((entries, problems), elapsed, peak) = measured(move || {
        let parsed = tagfile::parse(&junk);
        (parsed.entries.len(), parsed.problems.len())
    });
    eprintln!(
        "junk: {problems} problems, {elapsed:?}, {} KiB peak",
        peak >> 10
    );
    assert_eq!(entries, 0);
    assert!(problems <= 101, "{problems} problems");
    assert!(peak < 1 << 20, "{} KiB", peak >> 10);

    let lines = b"Abcd - a.sys - x\n".repeat(300_000);
    let (parsed, _, peak) = measured(move || tagfile::parse(&lines));
    assert_eq!(parsed.entries.len(), 1 << 18);
    assert_eq!(parsed.problems.len(), 101);
    assert_eq!(parsed.problems[0].line, (1 << 18) + 1);
    assert!(parsed.problems[0].message.contains("entries"));
    assert!(peak < 64 << 20, "{} MiB", peak >> 20);
}
