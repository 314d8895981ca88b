//! `pooltag index` over a tree of hostile files beside good drivers: empty and truncated images,
//! section tables that point past the end, hold 65,535 headers or overlap, import descriptors
//! and resource directories that loop, 2 GB sparse files, FIFOs, sockets, devices, names that
//! are not UTF-8 and folders that cannot be read. The run must end (exit 0) without blocking,
//! name each bad file at most once, count what it names, index every good file, and stay within
//! its memory bound.
//!
//! The malformed images are copies of committed fixtures patched here with a little offset
//! arithmetic. As root, the index runs as `nobody` (through `setpriv`) so that permission bits
//! apply; without `setpriv` the permission cases are left out.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pooltag::store::path_text;
use tempfile::TempDir;

/// The peak memory (RSS) `pooltag index` may reach on the hostile tree.
const MEMORY_LIMIT_KB: u64 = 200 << 10;
/// A run that takes longer is blocked or looping. The tree takes a fraction of a second, in a
/// debug build too; before the fixes, import-shared-thunks.sys alone took 50 s.
const TIMEOUT: Duration = Duration::from_secs(30);

fn fixture(relative: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bin")
        .join(relative);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// PE surgery.

fn le(data: &[u8], at: usize, width: usize) -> u64 {
    data[at..at + width]
        .iter()
        .rev()
        .fold(0, |v, &b| (v << 8) | u64::from(b))
}

fn put(data: &mut [u8], at: usize, width: usize, value: u64) {
    data[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
}

fn align(value: usize, to: usize) -> usize {
    value.div_ceil(to) * to
}

/// Offsets of a PE image's headers.
struct Headers {
    pe: usize,
    optional: usize,
    directories: usize,
    table: usize,
    sections: usize,
    thunk: usize,
}

impl Headers {
    fn of(image: &[u8]) -> Headers {
        let pe = le(image, 0x3c, 4) as usize;
        let optional = pe + 24;
        let plus = le(image, optional, 2) == 0x20b;
        Headers {
            pe,
            optional,
            directories: optional + if plus { 112 } else { 96 },
            table: optional + le(image, pe + 20, 2) as usize,
            sections: le(image, pe + 6, 2) as usize,
            thunk: if plus { 8 } else { 4 },
        }
    }

    fn section(&self, i: usize) -> usize {
        self.table + 40 * i
    }

    fn directory(&self, i: usize) -> usize {
        self.directories + 8 * i
    }

    /// The file offset of `rva`.
    fn offset_of(&self, image: &[u8], rva: u64) -> usize {
        (0..self.sections)
            .find_map(|i| {
                let h = self.section(i);
                let va = le(image, h + 12, 4);
                let size = le(image, h + 8, 4).max(le(image, h + 16, 4));
                (va..va + size)
                    .contains(&rva)
                    .then(|| (le(image, h + 20, 4) + rva - va) as usize)
            })
            .expect("rva in a section")
    }

    /// The RVA just past the last section.
    fn next_rva(&self, image: &[u8]) -> usize {
        (0..self.sections)
            .map(|i| {
                let h = self.section(i);
                let end = le(image, h + 12, 4) + le(image, h + 8, 4).max(le(image, h + 16, 4));
                align(end as usize, 0x1000)
            })
            .max()
            .unwrap_or(0x1000)
    }
}

/// Appends a section holding `bytes` (at the RVA `Headers::next_rva` gives); returns its RVA.
fn append_section(image: &mut Vec<u8>, name: &[u8], bytes: &[u8], characteristics: u32) -> usize {
    let h = Headers::of(image);
    let rva = h.next_rva(image);
    let raw = align(image.len(), 0x200);
    image.resize(raw, 0);
    image.extend_from_slice(bytes);
    image.resize(align(image.len(), 0x200), 0);
    let header = h.section(h.sections);
    assert!(
        header + 40 <= le(image, h.optional + 60, 4) as usize,
        "no room for a header"
    );
    image[header..header + 40].fill(0);
    image[header..header + name.len()].copy_from_slice(name);
    put(image, header + 8, 4, bytes.len() as u64);
    put(image, header + 12, 4, rva as u64);
    put(image, header + 16, 4, align(bytes.len(), 0x200) as u64);
    put(image, header + 20, 4, raw as u64);
    put(image, header + 36, 4, u64::from(characteristics));
    put(image, h.pe + 6, 2, h.sections as u64 + 1);
    put(
        image,
        h.optional + 56,
        4,
        (rva + align(bytes.len(), 0x1000)) as u64,
    );
    rva
}

/// `seed`'s headers with a section table of `count` headers, each made by `header` from the
/// seed's headers (by index, cycling), followed by the seed's section data, moved so that every
/// raw pointer still points at the same bytes.
fn with_section_table(seed: &[u8], count: usize, header: impl Fn(usize, &mut [u8])) -> Vec<u8> {
    let h = Headers::of(seed);
    let first_raw = (0..h.sections)
        .map(|i| le(seed, h.section(i) + 20, 4) as usize)
        .filter(|&p| p != 0)
        .min()
        .unwrap();
    let new_raw = align(h.table + 40 * count, 0x200);
    let mut image = seed[..h.table].to_vec();
    for i in 0..count {
        let mut bytes = seed[h.section(i % h.sections)..][..40].to_vec();
        let raw = le(&bytes, 20, 4) as usize;
        if raw != 0 {
            put(&mut bytes, 20, 4, (raw - first_raw + new_raw) as u64);
        }
        header(i, &mut bytes);
        image.extend_from_slice(&bytes);
    }
    image.resize(new_raw, 0);
    image.extend_from_slice(&seed[first_raw..]);
    put(&mut image, h.pe + 6, 2, count as u64);
    put(&mut image, h.optional + 60, 4, new_raw as u64);
    image
}

// The malformed images. `basic` is tests/fixtures/bin/x64-O2/basic.sys: 4 sections (.text,
// .pdata, .xdata, .idata), imports from ntoskrnl.exe, call sites for 1Ba1, 1Ba2 and 1Bp2.

fn section_past_end(basic: &[u8]) -> Vec<u8> {
    let mut image = basic.to_vec();
    let h = Headers::of(&image);
    put(&mut image, h.section(0) + 20, 4, 0x7fff_0000); // .text's data far past the end
    put(&mut image, h.section(1) + 16, 4, 0x7fff_0000); // .pdata's size far past the end
    put(&mut image, h.section(3) + 20, 4, 0xffff_fe00); // .idata's pointer near 4 GB
    image
}

fn sections_ffff_without_table(basic: &[u8]) -> Vec<u8> {
    let mut image = basic.to_vec();
    let h = Headers::of(&image);
    put(&mut image, h.pe + 6, 2, 0xffff);
    image
}

/// 65,535 real section headers (2.6 MB): copies of the four, all over the same bytes.
fn sections_65535(basic: &[u8]) -> Vec<u8> {
    with_section_table(basic, 0xffff, |_, _| {})
}

/// Each section twice, a zero-size one with and without a raw pointer, and one overlapping half
/// of .text: the analysis still finds what it finds in basic.sys.
fn overlapping_and_empty_sections(basic: &[u8]) -> Vec<u8> {
    with_section_table(basic, 11, |i, header| match i {
        8 | 9 => {
            put(header, 8, 4, 0); // VirtualSize
            put(header, 16, 4, 0); // SizeOfRawData
            if i == 9 {
                put(header, 20, 4, 0);
            }
        }
        10 => {
            let raw = le(header, 20, 4);
            put(header, 20, 4, raw - 0x100);
            put(header, 12, 4, 0x9000);
        }
        _ => {}
    })
}

/// The import descriptor's lookup and address tables are the descriptor table itself.
fn import_self_loop(basic: &[u8]) -> Vec<u8> {
    let mut image = basic.to_vec();
    let h = Headers::of(&image);
    let rva = le(&image, h.directory(1), 4);
    let descriptor = h.offset_of(&image, rva);
    put(&mut image, descriptor, 4, rva); // OriginalFirstThunk
    put(&mut image, descriptor + 16, 4, rva); // FirstThunk
    image
}

/// A second descriptor, over the terminating one, whose name and thunks lie outside the image;
/// a delay-load directory far past its end.
fn import_outside(basic: &[u8]) -> Vec<u8> {
    let mut image = basic.to_vec();
    let h = Headers::of(&image);
    let descriptor = h.offset_of(&image, le(&image, h.directory(1), 4)) + 20;
    assert!(image[descriptor..descriptor + 20].iter().all(|&b| b == 0));
    put(&mut image, descriptor, 4, 0x7fff_fff0); // OriginalFirstThunk
    put(&mut image, descriptor + 12, 4, 0xffff_fff0); // Name
    put(&mut image, descriptor + 16, 4, 0x7fff_fff0); // FirstThunk
    put(&mut image, h.directory(13), 4, 0xffff_0000);
    put(&mut image, h.directory(13) + 4, 4, 0x100);
    image
}

/// 10,000 import descriptors sharing one list of 10,000 thunks.
fn import_shared_thunks(basic: &[u8]) -> Vec<u8> {
    let (descriptors, thunks) = (10_000, 10_000);
    let mut image = basic.to_vec();
    let h = Headers::of(&image);
    let rva = h.next_rva(&image);
    let name = descriptors * 20 + 20;
    let hint = name + 16;
    let list = align(hint + 2 + 22, 8);
    let mut bytes = vec![0u8; list + h.thunk * (thunks + 1)];
    for i in 0..descriptors {
        put(&mut bytes, 20 * i, 4, (rva + list) as u64);
        put(&mut bytes, 20 * i + 12, 4, (rva + name) as u64);
        put(&mut bytes, 20 * i + 16, 4, (rva + list) as u64);
    }
    bytes[name..name + 12].copy_from_slice(b"ntoskrnl.exe");
    bytes[hint + 2..hint + 23].copy_from_slice(b"ExAllocatePoolWithTag");
    for i in 0..thunks {
        put(&mut bytes, list + h.thunk * i, h.thunk, (rva + hint) as u64);
    }
    assert_eq!(
        append_section(&mut image, b".imp", &bytes, 0xc000_0040),
        rva
    );
    put(&mut image, h.directory(1), 4, rva as u64);
    put(&mut image, h.directory(1) + 4, 4, name as u64);
    image
}

/// versioned.sys with every entry of its resource root pointing back at the root, and its
/// second level pointing back at the first.
fn resource_loop(versioned: &[u8]) -> Vec<u8> {
    let mut image = versioned.to_vec();
    let h = Headers::of(&image);
    let root = h.offset_of(&image, le(&image, h.directory(2), 4));
    let entries =
        |image: &[u8], table: usize| (le(image, table + 12, 2) + le(image, table + 14, 2)) as usize;
    assert!(entries(&image, root) > 0);
    for i in 0..entries(&image, root) {
        let entry = root + 16 + 8 * i;
        let target = le(&image, entry + 4, 4);
        if target & 0x8000_0000 != 0 {
            // A subdirectory: make its entries point at it, then this one at the root.
            let table = root + (target & 0x7fff_ffff) as usize;
            for j in 0..entries(&image, table) {
                put(&mut image, table + 16 + 8 * j + 4, 4, target);
            }
        }
        put(&mut image, entry + 4, 4, 0x8000_0000);
    }
    image
}

/// helper.dll (not a driver) with 22,000 one-byte sections after one holding 4,096 import
/// descriptors (also the delay-load table) whose names lie in no section: ruling it out used to
/// scan the whole section table for every name.
fn many_sections_imports_nowhere(helper: &[u8]) -> Vec<u8> {
    let count = 22_000;
    let h = Headers::of(helper);
    let raw = align(h.table + 40 * count, 0x200);
    let mut body = vec![0u8; 4096 * 20 + 20];
    for i in 0..4096 {
        put(&mut body, 20 * i, 4, 0x7fff_0000);
        put(&mut body, 20 * i + 12, 4, 0x7fff_0000 + i as u64);
        put(&mut body, 20 * i + 16, 4, 0x7fff_0000);
    }
    let mut image = helper[..h.table].to_vec();
    for i in 0..count {
        let mut header = [0u8; 40];
        let (name, va, size): (&[u8], usize, usize) = match i {
            0 => (b".idata", 0x1000, body.len()),
            _ => (b".pad", 0x10_0000 + i * 0x1000, 1),
        };
        header[..name.len()].copy_from_slice(name);
        put(&mut header, 8, 4, size as u64);
        put(&mut header, 12, 4, va as u64);
        put(&mut header, 16, 4, size as u64);
        put(&mut header, 20, 4, raw as u64);
        put(&mut header, 36, 4, 0x4000_0040);
        image.extend_from_slice(&header);
    }
    image.resize(raw, 0);
    image.extend_from_slice(&body);
    put(&mut image, h.pe + 6, 2, count as u64);
    put(&mut image, h.optional + 60, 4, raw as u64);
    for directory in [1, 13] {
        put(&mut image, h.directory(directory), 4, 0x1000);
        put(&mut image, h.directory(directory) + 4, 4, body.len() as u64);
    }
    image
}

// ---------------------------------------------------------------------------------------------
// Running the index.

/// Who runs the index: as root, `nobody` through setpriv when it is there, so that permission
/// bits apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    User,
    Nobody,
    /// Root without setpriv: permission bits do not stop reads.
    Root,
}

const SETPRIV: &str = "/usr/bin/setpriv";
const TIME: &str = "/usr/bin/time";

fn runner() -> Runner {
    let root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    match (root, Path::new(SETPRIV).exists()) {
        (false, _) => Runner::User,
        (true, true) => Runner::Nobody,
        (true, false) => Runner::Root,
    }
}

/// What a run printed and measured.
struct Run {
    stderr: String,
    /// Peak resident memory, when /usr/bin/time is there.
    peak_kb: Option<u64>,
}

impl Run {
    fn summary(&self) -> &str {
        self.stderr
            .lines()
            .rfind(|l| l.contains(" files seen, "))
            .unwrap_or_else(|| panic!("no summary line in\n{}", self.stderr))
    }

    /// The number before `what` in the summary line (`errors`, `driver binaries indexed`).
    fn count(&self, what: &str) -> u64 {
        let summary = self.summary();
        let before = &summary[..summary.find(&format!(" {what}")).expect(what)];
        before
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count of {what} in {summary}"))
    }

    /// The lines naming `path`.
    fn naming(&self, path: &Path) -> Vec<&str> {
        let prefix = format!("pooltag: {}: ", path_text(path));
        self.stderr
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .collect()
    }
}

/// A scratch folder: `root/` to index, `db/` for the database (writable by whoever runs the
/// index), `bin/` with a copy of the binary that `nobody` can run.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for (sub, mode) in [("root", 0o755), ("db", 0o777), ("bin", 0o755)] {
            fs::create_dir(dir.path().join(sub)).unwrap();
            fs::set_permissions(dir.path().join(sub), fs::Permissions::from_mode(mode)).unwrap();
        }
        let binary = dir.path().join("bin/pooltag");
        fs::copy(assert_cmd::cargo::cargo_bin("pooltag"), &binary).unwrap();
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
        Scratch { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("db/pooltag.db")
    }

    fn write(&self, relative: impl AsRef<Path>, bytes: &[u8]) -> PathBuf {
        let path = self.root().join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    /// `pooltag ARGS`, as `runner` says, under /usr/bin/time when it is there; the exit status
    /// must be 0.
    fn pooltag(&self, runner: Runner, args: &[&OsStr]) -> (String, Run) {
        let rss = self.dir.path().join("db/rss.txt");
        let _ = fs::remove_file(&rss);
        let binary = self.dir.path().join("bin/pooltag");
        let mut words: Vec<&OsStr> = Vec::new();
        let timed = Path::new(TIME).exists();
        if timed {
            words.extend([TIME, "-f", "%M", "-o"].map(OsStr::new));
            words.push(rss.as_os_str());
        }
        if runner == Runner::Nobody {
            words.extend(
                [
                    SETPRIV,
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--",
                ]
                .map(OsStr::new),
            );
        }
        words.push(binary.as_os_str());
        words.extend_from_slice(args);
        let output = assert_cmd::Command::new(words[0])
            .args(&words[1..])
            .current_dir(self.dir.path())
            .env_remove("POOLTAG_DB")
            .timeout(TIMEOUT)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "pooltag {args:?} failed ({}, timeout {TIMEOUT:?}):\n{stderr}",
            output.status
        );
        let peak_kb = timed
            .then(|| fs::read_to_string(&rss).ok()?.trim().parse().ok())
            .flatten();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (stdout, Run { stderr, peak_kb })
    }

    fn index(&self, runner: Runner) -> Run {
        let db = self.db();
        let root = self.root();
        let args = [
            OsStr::new("--db"),
            db.as_os_str(),
            OsStr::new("index"),
            root.as_os_str(),
        ];
        self.pooltag(runner, &args).1
    }

    /// `pooltag query -l TAG`: the driver paths holding the tag.
    fn files_with(&self, runner: Runner, tag: &str) -> BTreeSet<String> {
        let db = self.db();
        let args = [
            OsStr::new("--db"),
            db.as_os_str(),
            OsStr::new("query"),
            OsStr::new("-l"),
            OsStr::new(tag),
        ];
        let (stdout, _) = self.pooltag(runner, &args);
        stdout.lines().map(str::to_owned).collect()
    }

    /// `pooltag info --json`: the number of driver paths in the database.
    fn files_in_db(&self, runner: Runner) -> u64 {
        let db = self.db();
        let args = [
            OsStr::new("--db"),
            db.as_os_str(),
            OsStr::new("info"),
            OsStr::new("--json"),
        ];
        let (stdout, _) = self.pooltag(runner, &args);
        let info: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        info["files"].as_u64().unwrap()
    }

    /// `pooltag tags --evidence call PATH`: the tags the file passes to pool APIs.
    fn call_tags(&self, runner: Runner, path: &Path) -> Vec<String> {
        let db = self.db();
        let shown = path_text(path);
        let args = [
            OsStr::new("--db"),
            db.as_os_str(),
            OsStr::new("tags"),
            OsStr::new("--json"),
            OsStr::new("--evidence"),
            OsStr::new("call"),
            OsStr::new(&shown),
        ];
        let (stdout, _) = self.pooltag(runner, &args);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
        let mut tags: Vec<String> = rows
            .iter()
            .filter_map(|row| Some(row["tag"].as_str()?.to_owned()))
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }
}

fn shown(paths: &[&PathBuf]) -> BTreeSet<String> {
    paths.iter().map(|p| path_text(p)).collect()
}

/// Makes a FIFO, a socket and (as root) a device file in `dir`; their paths.
fn special_files(dir: &Path) -> Vec<PathBuf> {
    let mut made = Vec::new();
    // One named like a tag file, which is read whole.
    for name in ["fifo.sys", "pooltag.txt"] {
        let fifo = dir.join(name);
        let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        made.push(fifo);
    }
    let socket = dir.join("socket.sys");
    // The listener may go: the socket file stays.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    made.push(socket);
    let device = dir.join("null.sys");
    if Command::new("mknod")
        .arg(&device)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success())
    {
        made.push(device);
    } else {
        eprintln!("note: mknod failed (not root?): no device file in the tree");
    }
    made
}

/// Every hostile file at once, beside good drivers.
#[test]
fn the_index_survives_a_tree_of_hostile_files() {
    let runner = runner();
    eprintln!("running the index as {runner:?}");
    let s = Scratch::new();
    let basic = fixture("x64-O2/basic.sys");
    let versioned = fixture("x64-O2/versioned.sys");

    // Good drivers.
    let good = [
        s.write("good/x64-basic.sys", &basic),
        s.write("good/x86-basic.sys", &fixture("x86-O2/basic.sys")),
        s.write("good/arm64-basic.sys", &fixture("arm64-O2/basic.sys")),
        s.write("good/versioned.sys", &versioned),
        s.write(OsStr::from_bytes(b"good/caf\xe9.sys"), &basic),
    ];

    // Reported: not valid PE images, or too large.
    let empty = s.write("bad/empty.sys", b"");
    let truncated_dos = s.write("bad/truncated-dos.sys", &basic[..0x30]);
    let truncated_nt = s.write("bad/truncated-nt.sys", &basic[..0x90]);
    let truncated_table = s.write("bad/truncated-table.sys", &basic[..0x1a0]);
    let sections_ffff = s.write(
        "bad/sections-ffff.sys",
        &sections_ffff_without_table(&basic),
    );
    let junk_name = s.write(
        OsStr::from_bytes(b"bad/junk\xfe\xff.sys"),
        format!("MZ{}", " then junk".repeat(10)).as_bytes(),
    );
    let sparse_pe = s.write("bad/sparse-2g.sys", &basic);
    fs::File::options()
        .write(true)
        .open(&sparse_pe)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let sparse_zeros = s.write("bad/sparse-2g-zeros.sys", b"");
    fs::File::options()
        .write(true)
        .open(&sparse_zeros)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    assert!(
        fs::metadata(&sparse_pe).unwrap().blocks() < 1024,
        "the 2 GB file is not sparse"
    );

    // Malformed but valid enough images: indexed, not reported.
    let malformed = [
        s.write("bad/section-past-end.sys", &section_past_end(&basic)),
        s.write("bad/sections-65535.sys", &sections_65535(&basic)),
        s.write(
            "bad/overlapping-sections.sys",
            &overlapping_and_empty_sections(&basic),
        ),
        s.write("bad/import-self-loop.sys", &import_self_loop(&basic)),
        s.write("bad/import-outside.sys", &import_outside(&basic)),
        s.write(
            "bad/import-shared-thunks.sys",
            &import_shared_thunks(&basic),
        ),
        s.write("bad/resource-loop.sys", &resource_loop(&versioned)),
    ];

    // Not reported, not indexed: an empty file not named .sys, a DLL that is no driver, special
    // files.
    s.write("bad/empty.dat", b"");
    let not_driver = s.write(
        "bad/many-sections.dll",
        &many_sections_imports_nowhere(&fixture("nondriver/helper.dll")),
    );
    let specials = special_files(&s.root().join("bad"));

    // Folders that cannot be read (that nobody, or a user, cannot read).
    let locked = s.root().join("perm/locked");
    let no_exec = s.root().join("perm/no-exec");
    let no_read = s.root().join("perm/no-read");
    let in_no_exec = [no_exec.join("a.sys"), no_exec.join("b.txt")];
    for (dir, mode) in [(&locked, 0o000), (&no_exec, 0o644), (&no_read, 0o311)] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("a.sys"), &basic).unwrap();
        fs::write(dir.join("b.txt"), "text").unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
    }
    let permissions_apply = runner != Runner::Root;

    let run = s.index(runner);
    let err = &run.stderr;
    eprintln!("{err}");

    // Each bad file named once, with the reason; nothing else named.
    let not_pe = "named .sys but not a valid PE image: ";
    let mut expected: Vec<(&Path, String)> = vec![
        (&empty, format!("{not_pe}Could not read file magic")),
        (&truncated_dos, format!("{not_pe}Unknown MS-DOS file")),
        (&truncated_nt, format!("{not_pe}Unknown MS-DOS file")),
        (
            &truncated_table,
            format!("{not_pe}Invalid COFF/PE section headers"),
        ),
        (
            &sections_ffff,
            format!("{not_pe}Invalid COFF/PE section headers"),
        ),
        (&junk_name, format!("{not_pe}Unknown MS-DOS file")),
        (
            &sparse_pe,
            "2147483648 bytes, larger than the 256 MiB pooltag reads; skipped".to_owned(),
        ),
        (&sparse_zeros, format!("{not_pe}Unknown file magic")),
    ];
    let denied = "Permission denied (os error 13)".to_owned();
    if permissions_apply {
        expected.push((&locked, denied.clone()));
        expected.push((&no_read, denied.clone()));
        for path in &in_no_exec {
            expected.push((path, denied.clone()));
        }
    }
    let mut unexplained: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains(" files seen, "))
        .collect();
    for (path, message) in &expected {
        let lines = run.naming(path);
        assert_eq!(
            lines,
            vec![format!("pooltag: {}: {message}", path_text(path))],
            "{} should be named once",
            path.display()
        );
        unexplained.retain(|l| !lines.contains(l));
    }
    assert!(unexplained.is_empty(), "unexpected lines: {unexplained:#?}");
    for path in malformed
        .iter()
        .chain(&good)
        .chain(&specials)
        .chain([&not_driver])
    {
        assert!(run.naming(path).is_empty(), "{} is named", path.display());
    }

    // Counted.
    assert_eq!(
        run.count("errors"),
        expected.len() as u64,
        "{}",
        run.summary()
    );

    // Indexed: the good drivers, the malformed ones, the two basic.sys copies in folders nobody
    // may read when permissions do not apply. Every basic.sys derivative holds the bytes `1Ba1`.
    let mut indexed: Vec<&PathBuf> = good.iter().chain(&malformed).collect();
    let readable_only_to_root = [
        locked.join("a.sys"),
        no_exec.join("a.sys"),
        no_read.join("a.sys"),
    ];
    if !permissions_apply {
        indexed.extend(&readable_only_to_root);
    }
    assert_eq!(
        run.count("driver binaries indexed"),
        indexed.len() as u64,
        "{}",
        run.summary()
    );
    assert_eq!(s.files_in_db(runner), indexed.len() as u64);
    // ARM64 builds the tag in registers: its bytes are in the x64 and x86 copies only.
    let with_1ba1: BTreeSet<String> = shown(&indexed)
        .into_iter()
        .filter(|p| {
            !["arm64-basic.sys", "versioned.sys", "resource-loop.sys"]
                .iter()
                .any(|n| p.ends_with(n))
        })
        .collect();
    assert_eq!(s.files_with(runner, "1Ba1"), with_1ba1);

    // The analysis of the damaged images still finds what it can.
    // An import table pointing elsewhere leaves no IAT slot bound: no call is recognised.
    let basic_calls = vec!["1Ba1", "1Ba2", "1Bp2"];
    let none: Vec<&str> = Vec::new();
    assert_eq!(s.call_tags(runner, &good[0]), basic_calls);
    let versioned_calls = s.call_tags(runner, &good[3]);
    assert!(!versioned_calls.is_empty());
    for (path, calls) in malformed.iter().zip([
        &none,        // section-past-end: .text and .idata unreadable
        &basic_calls, // sections-65535
        &basic_calls, // overlapping-sections
        &none,        // import-self-loop
        &basic_calls, // import-outside: the first descriptor still binds
        &none,        // import-shared-thunks
    ]) {
        assert_eq!(&s.call_tags(runner, path), calls, "{}", path.display());
    }
    assert_eq!(s.call_tags(runner, &malformed[6]), versioned_calls);

    // Memory: the 2 GB files were not read; the 2.6 MB section table did not blow up.
    match run.peak_kb {
        Some(kb) => {
            eprintln!("peak RSS of the index: {kb} KB");
            assert!(kb < MEMORY_LIMIT_KB, "peak RSS {kb} KB");
        }
        None => eprintln!("note: no {TIME}: peak memory not measured"),
    }
    for dir in [&locked, &no_exec, &no_read] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// The 2 GB sparse files alone, measured: the index reads their headers, never their bodies.
#[test]
fn a_2_gb_sparse_driver_costs_no_memory() {
    let s = Scratch::new();
    let basic = fixture("x64-O2/basic.sys");
    let good = s.write("good.sys", &basic);
    let sparse = s.write("sparse.sys", &basic);
    fs::File::options()
        .write(true)
        .open(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let run = s.index(Runner::User);
    assert_eq!(
        run.naming(&sparse),
        vec![format!(
            "pooltag: {}: 2147483648 bytes, larger than the 256 MiB pooltag reads; skipped",
            sparse.display()
        )]
    );
    assert_eq!(run.count("errors"), 1);
    assert_eq!(run.count("driver binaries indexed"), 1);
    assert_eq!(s.files_with(Runner::User, "1Ba1"), shown(&[&good]));
    assert!(run.summary().contains(" KiB read, "), "{}", run.summary());
    match run.peak_kb {
        Some(kb) => {
            eprintln!("peak RSS indexing a 2 GB sparse .sys: {kb} KB");
            assert!(kb < MEMORY_LIMIT_KB, "peak RSS {kb} KB");
        }
        None => eprintln!("note: no {TIME}: peak memory not measured"),
    }
}

/// Two names that are not UTF-8 and differ only in their invalid bytes (they read the same when
/// decoded lossily) holding different drivers: both are stored, each byte that is not UTF-8
/// written `\xNN`, and every query answers.
#[test]
fn names_that_are_not_utf8() {
    let s = Scratch::new();
    let a = s.write(
        OsStr::from_bytes(b"dup\xfe.sys"),
        &fixture("x64-O2/basic.sys"),
    );
    let b = s.write(
        OsStr::from_bytes(b"dup\xff.sys"),
        &fixture("x64-O2/wrapper.sys"),
    );
    assert_ne!(a, b);
    assert_eq!(a.display().to_string(), b.display().to_string());
    let run = s.index(Runner::User);
    assert_eq!(run.count("errors"), 0, "{}", run.stderr);
    assert_eq!(run.count("driver binaries indexed"), 2);
    assert_eq!(s.files_with(Runner::User, "1Ba1"), shown(&[&a]));
    assert_eq!(s.files_with(Runner::User, "4Wr1"), shown(&[&b]));
    assert_eq!(
        shown(&[&a, &b]),
        BTreeSet::from([
            format!("{}/dup\\xFE.sys", s.root().display()),
            format!("{}/dup\\xFF.sys", s.root().display())
        ])
    );
}
