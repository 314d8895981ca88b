//! End-to-end tests of the `pooltag` binary over the committed fixture drivers.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};

use tempfile::TempDir;

mod common;
use common::{pooltag, stderr, stdout};

const LOCALTAG: &str = "\
// tags of the fixture drivers
rem written for the tests
1Ba? - basic.sys - Basic fixture tags
1Ba1 - basic.sys - Basic fixture first buffer
7Rt1 - decoys.sys - The one real tag of decoys.sys
ZzNo - nowhere.sys - A tag no fixture uses
       <unknown>
";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin")
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A scratch folder holding `root/` (a copy of the fixture binaries and a localtag.txt) and the
/// database path `pooltag.db` beside it.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&fixtures(), &dir.path().join("root"));
        fs::write(dir.path().join("root/localtag.txt"), LOCALTAG).unwrap();
        Scratch { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("pooltag.db")
    }

    fn path(&self, relative: &str) -> String {
        self.root().join(relative).display().to_string()
    }

    fn index(&self) -> assert_cmd::assert::Assert {
        pooltag()
            .arg("--db")
            .arg(self.db())
            .arg("index")
            .arg(self.root())
            .assert()
    }

    fn query(&self, args: &[&str]) -> assert_cmd::assert::Assert {
        pooltag()
            .arg("--db")
            .arg(self.db())
            .arg("query")
            .args(args)
            .assert()
    }
}

const BUILDS: [&str; 5] = ["arm64-O2", "x64-O0", "x64-O2", "x86-O0", "x86-O2"];

#[test]
fn index_prints_one_summary_line_and_reports_malformed_tag_lines() {
    let s = Scratch::new();
    let assert = s.index().success();
    let err = stderr(&assert);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    // 10 drivers in 5 builds, kernelmod.dll, ntimport.bin, versioned.sys, versioned-de.sys,
    // app.exe, helper.dll, localtag.txt.
    assert!(
        lines[0].starts_with(
            "pooltag: 57 files seen, 54 driver binaries indexed (54 new, 0 changed, 0 unchanged, 0 removed), "
        ),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(&format!(
        " distinct tags, 4 Pooltag.txt entries from {} (1 line not understood), 0 errors, ",
        s.path("localtag.txt")
    )));
    assert!(lines[0].ends_with(&format!("; database {}", s.db().display())));
    assert!(stdout(&assert).is_empty());
    // -v lists the lines not understood.
    let verbose = pooltag()
        .arg("--db")
        .arg(s.db())
        .args(["index", "-v"])
        .arg(s.root())
        .assert()
        .success();
    let err = stderr(&verbose);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(
        lines[0],
        format!(
            "pooltag: {}:7: not a tag line (no ' - ' separator): '<unknown>'",
            s.path("localtag.txt")
        )
    );
}

#[test]
fn query_prints_pooltag_entries_then_drivers_with_their_call_sites() {
    let s = Scratch::new();
    s.index().success();
    let assert = s.query(&["1Ba1"]).success();
    let mut expected = format!(
        "Pooltag.txt:\n  1Ba?  basic.sys - Basic fixture tags\n        {0}:3\n  \
         1Ba1  basic.sys - Basic fixture first buffer\n        {0}:4\nDrivers:\n",
        s.path("localtag.txt")
    );
    expected += &format!(
        "  1Ba1  call   {}\n               ExAllocatePoolWithTag at .text+0x2c\n               \
         ExFreePoolWithTag at .text+0xac\n",
        s.path("arm64-O2/basic.sys")
    );
    for (build, offsets) in [
        ("x64-O0", [0x27, 0x75, 0xda]),
        ("x64-O2", [0x1d, 0x7e, 0x91]),
        ("x86-O0", [0x22, 0x77, 0xf0]),
        ("x86-O2", [0x22, 0xac, 0xc6]),
    ] {
        expected += &format!("  1Ba1  call   {}\n", s.path(&format!("{build}/basic.sys")));
        expected += &format!(
            "               ExAllocatePoolWithTag at .text+{:#x}\n",
            offsets[0]
        );
        for offset in &offsets[1..] {
            expected += &format!("               ExFreePoolWithTag at .text+{offset:#x}\n");
        }
    }
    assert_eq!(stdout(&assert), expected);
}

#[test]
fn wildcards_match_tags_and_tag_file_lines() {
    let s = Scratch::new();
    s.index().success();
    let out = stdout(&s.query(&["1Ba?"]).success());
    let tags: BTreeSet<&str> = out
        .lines()
        .filter(|l| l.starts_with("  1Ba") && l.ends_with("basic.sys"))
        .map(|l| &l[2..6])
        .collect();
    assert_eq!(tags, BTreeSet::from(["1Ba1", "1Ba2"]));
    let star = stdout(&s.query(&["-l", "1B*"]).success());
    let question = stdout(&s.query(&["-l", "1B??"]).success());
    assert_eq!(star, question);
}

#[test]
fn human_answers_rank_strongest_first_and_count_bytes_level_files() {
    let s = Scratch::new();
    s.index().success();
    let cond = |build: &str| s.path(&format!("{build}/cond.sys"));
    // '.SYS' sorts before '5Sdf' but is only ever bytes: it comes last, three files and a count.
    let out = stdout(&s.query(&[".SYS", "5Sdf"]).success());
    assert_eq!(
        out,
        format!(
            "Drivers:\n  5Sdf  call   {}\n               ExAllocatePoolWithTag at .text+0x74\n  \
             5Sdf  call   {}\n               ExAllocatePoolWithTag at .text+0xc4\n  \
             5Sdf  call   {}\n               ExAllocatePoolWithTag at .text+0x60\n  \
             5Sdf  call   {}\n               ExAllocatePoolWithTag at .text+0xa9\n  \
             5Sdf  call   {}\n               ExAllocatePoolWithTag at .text+0x69\n  \
             .SYS  bytes  {}\n  .SYS  bytes  {}\n  .SYS  bytes  {}\n  \
             .SYS  bytes  ... and 7 more files (--evidence bytes lists them)\n",
            cond("arm64-O2"),
            cond("x64-O0"),
            cond("x64-O2"),
            cond("x86-O0"),
            cond("x86-O2"),
            s.path("arm64-O2/fltndis.sys"),
            s.path("arm64-O2/table.sys"),
            s.path("x64-O0/fltndis.sys"),
        )
    );
    let every = stdout(&s.query(&[".SYS", "5Sdf", "--evidence", "bytes"]).success());
    let sys = every.lines().filter(|l| l.starts_with("  .SYS  bytes  /"));
    assert_eq!(sys.count(), 10);
    assert!(!every.contains("more files"));
    assert!(every.starts_with(&out[..out.find("  .SYS").unwrap()]));
    // JSON keeps its order: by tag, then strongest first.
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&s.query(&["--json", ".SYS", "5Sdf"]).success())).unwrap();
    let order: Vec<(&str, &str)> = json
        .iter()
        .map(|i| (i["tag"].as_str().unwrap(), i["evidence"].as_str().unwrap()))
        .collect();
    assert_eq!(order.len(), 15);
    assert!(order[..10].iter().all(|&p| p == (".SYS", "bytes")));
    assert!(order[10..].iter().all(|&p| p == ("5Sdf", "call")));
}

#[test]
fn ignore_case_finds_other_spellings() {
    let s = Scratch::new();
    s.index().success();
    s.query(&["-l", "1bA1"]).code(1).stdout("");
    let listed = stdout(&s.query(&["-l", "-i", "1bA1"]).success());
    let expected: String = ["x64-O0", "x64-O2", "x86-O0", "x86-O2"]
        .iter()
        .map(|b| format!("{}\n", s.path(&format!("{b}/basic.sys"))))
        .collect();
    assert_eq!(listed, expected);
}

#[test]
fn hex_and_protected_pool_values_name_the_same_tag() {
    let s = Scratch::new();
    s.index().success();
    let plain = stdout(&s.query(&["-l", "1Ba1"]).success());
    // '1Ba1' is the bytes 31 42 61 31: little-endian value 0x31614231; bit 31 set: 0xb1614231.
    assert_eq!(stdout(&s.query(&["-l", "0x31614231"]).success()), plain);
    assert_eq!(stdout(&s.query(&["-l", "0xB1614231"]).success()), plain);
}

/// The SHA-256 of a file, in hex.
fn sha256_hex(path: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn json_follows_the_contract() {
    let s = Scratch::new();
    s.index().success();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let out = stdout(&s.query(&["--json", "4Wr2"]).success());
    let mut expected = Vec::new();
    // MyAlloc, the wrapper the tag goes through, is `via` (its entry RVA).
    for (build, machine, rva, via) in [
        ("arm64-O2", "arm64", 0x1034, 0x10c8),
        ("x64-O0", "x64", 0x1085, 0x1000),
        ("x64-O2", "x64", 0x1037, 0x1000),
        ("x86-O0", "x86", 0x1076, 0x1000),
        ("x86-O2", "x86", 0x1042, 0x1000),
    ] {
        let path = s.path(&format!("{build}/wrapper.sys"));
        expected.push(format!(
            "{{\"kind\":\"file\",\"tag\":\"4Wr2\",\"host\":{},\"path\":{},\"evidence\":\"call\",\
             \"sites\":[{{\"api\":\"ExAllocatePoolWithTag\",\"rva\":{rva},\"section\":\".text\",\"via\":[{via}]}}],\"sha256\":\"{}\",\
             \"machine\":\"{machine}\",\"company\":null,\"description\":null,\"version\":null}}",
            serde_json::to_string(&host).unwrap(),
            serde_json::to_string(&path).unwrap(),
            sha256_hex(&path),
        ));
    }
    assert_eq!(out, format!("[{}]\n", expected.join(",")));

    let out = stdout(&s.query(&["--json", "ZzNo"]).success());
    assert_eq!(
        out,
        format!(
            "[{{\"kind\":\"pooltag\",\"tag\":\"ZzNo\",\"binary\":\"nowhere.sys\",\
             \"description\":\"A tag no fixture uses\",\"host\":{},\"source\":{},\"line\":6}}]\n",
            serde_json::to_string(&host).unwrap(),
            serde_json::to_string(&s.path("localtag.txt")).unwrap()
        )
    );
}

#[test]
fn a_tag_nowhere_exits_1_and_names_close_tags() {
    let s = Scratch::new();
    s.index().success();
    let assert = s.query(&["4Wr9"]).code(1);
    assert_eq!(
        stdout(&assert),
        "No Pooltag.txt entry and no indexed driver for '4Wr9'.\n\
         Known tags with the same first three characters:\n  '4Wr1' '4Wr2' '4Wr3'\n"
    );
    assert_eq!(stdout(&s.query(&["--json", "4Wr9"]).code(1)), "[]\n");
    s.query(&["-l", "4Wr9"]).code(1).stdout("");
    // A wildcard line of Pooltag.txt is an answer: 1Ba9 is one of the 1Ba? tags.
    s.query(&["1Ba9"]).success();
}

#[test]
fn drivers_below_the_level_asked_are_counted() {
    let s = Scratch::new();
    fs::create_dir(s.root().join("extra")).unwrap();
    fs::write(
        s.root().join("extra/localtag.txt"),
        "7Dmg - decoys.sys - A compared magic, not a tag\n",
    )
    .unwrap();
    s.index().success();
    s.query(&["--evidence", "call", ".SYS"]).code(1).stdout(
        "No Pooltag.txt entry for '.SYS', and no indexed driver at call level or stronger.\n\
         10 indexed drivers hold it below call (the strongest at bytes); --evidence bytes shows \
         them.\n",
    );
    s.query(&["--json", "--evidence", "call", ".SYS"])
        .code(1)
        .stdout("[]\n");
    s.query(&["-l", "--evidence", "call", ".SYS"])
        .code(1)
        .stdout("");
    s.query(&["--evidence", "call", "7Dmg"])
        .success()
        .stdout(format!(
            "Pooltag.txt:\n  7Dmg  decoys.sys - A compared magic, not a tag\n        {}:1\n\
         Drivers: no indexed driver holds it at call level or stronger\n\
         5 indexed drivers hold it below call (the strongest at code); --evidence bytes shows \
         them.\n",
            s.path("extra/localtag.txt")
        ));
    s.query(&["--evidence", "call", "Qz9q"])
        .code(1)
        .stdout("No Pooltag.txt entry and no indexed driver for 'Qz9q'.\n");
}

#[test]
fn a_tag_file_entry_without_drivers_still_matches() {
    let s = Scratch::new();
    s.index().success();
    let assert = s.query(&["ZzNo"]).success();
    assert_eq!(
        stdout(&assert),
        format!(
            "Pooltag.txt:\n  ZzNo  nowhere.sys - A tag no fixture uses\n        {}:6\n\
             Drivers: no indexed driver holds it\n",
            s.path("localtag.txt")
        )
    );
    // -l lists driver files only: none.
    s.query(&["-l", "ZzNo"]).code(1).stdout("");
}

/// Every printable window of every indexed file, and some absent tags: `-l` lists exactly the
/// files `grep -rlF` would.
#[test]
fn list_matches_a_scan_of_the_driver_files_for_every_tag() {
    let s = Scratch::new();
    s.index().success();
    let db = pooltag::store::Database::open(&s.db()).unwrap();
    let mut drivers: Vec<(String, Vec<u8>)> = Vec::new();
    for build in BUILDS {
        for entry in fs::read_dir(s.root().join(build)).unwrap() {
            let path = entry.unwrap().path();
            drivers.push((path.display().to_string(), fs::read(&path).unwrap()));
        }
    }
    let mut tags: BTreeSet<[u8; 4]> = BTreeSet::new();
    for (_, data) in &drivers {
        for w in data.windows(4) {
            if w.iter().all(|b| (0x20..=0x7e).contains(b)) {
                tags.insert(w.try_into().unwrap());
            }
        }
    }
    tags.extend([*b"Zq9!", *b"    ", *b"~~~~"]);
    assert!(tags.len() > 500, "{}", tags.len());
    for tag in &tags {
        let pattern = pooltag::tag::TagPattern::exact(pooltag::tag::Tag(*tag));
        let listed =
            pooltag::query::list_files(&db, &[pattern], false, pooltag::query::Scope::Bytes)
                .unwrap();
        let mut scanned: Vec<String> = drivers
            .iter()
            .filter(|(_, data)| data.windows(4).any(|w| w == tag))
            .map(|(p, _)| p.clone())
            .collect();
        scanned.sort();
        assert_eq!(listed, scanned, "tag {:?}", String::from_utf8_lossy(tag));
    }
}

/// The same, through the binary and the real grep, for a few tags with spaces and wildcards'
/// own characters.
#[test]
fn list_equals_grep() {
    let s = Scratch::new();
    s.index().success();
    for tag in ["1Ba1", "7Dst", "WAVE", "RIFF", "text", "    ", "Zq9!"] {
        let grep = StdCommand::new("grep")
            .env("LC_ALL", "C")
            .args([
                "-rlF",
                "--exclude=*.txt",
                "--exclude=*.exe",
                "--exclude=helper.dll",
                "--",
                tag,
            ])
            .arg(s.root())
            .output()
            .unwrap();
        let mut expected: Vec<String> = String::from_utf8(grep.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        expected.sort();
        let listed =
            stdout(
                &s.query(&["-l", "--", tag])
                    .code(if expected.is_empty() { 1 } else { 0 }),
            );
        let listed: Vec<String> = listed.lines().map(str::to_owned).collect();
        assert_eq!(listed, expected, "tag {tag:?}");
    }
}

#[test]
fn only_driver_binaries_are_indexed() {
    let s = Scratch::new();
    s.index().success();
    let out = stdout(&s.query(&["-l", "This"]).success());
    let indexed: BTreeSet<String> = out.lines().map(str::to_owned).collect();
    assert!(
        indexed.contains(&s.path("x64-O2/kernelmod.dll")),
        "native subsystem"
    );
    assert!(
        indexed.contains(&s.path("x64-O2/ntimport.bin")),
        "imports ntoskrnl.exe"
    );
    assert!(!indexed.contains(&s.path("nondriver/app.exe")));
    assert!(!indexed.contains(&s.path("nondriver/helper.dll")));
    assert_eq!(indexed.len(), 54);
}

#[test]
fn tags_lists_a_files_tags_by_path_or_unambiguous_name() {
    let s = Scratch::new();
    s.index().success();
    let by_path = stdout(
        &pooltag()
            .args(["tags", "--db"])
            .arg(s.db())
            .arg(s.path("x64-O2/basic.sys"))
            .assert()
            .success(),
    );
    // Strongest evidence first; the bytes level is one count line.
    assert_eq!(
        by_path,
        format!(
            "{}\n  1Ba1  call\n               ExAllocatePoolWithTag at .text+0x1d\n               \
             ExFreePoolWithTag at .text+0x7e\n               ExFreePoolWithTag at .text+0x91\n  \
             1Ba2  call\n               ExAllocatePoolWithTag at .text+0x37\n               \
             ExFreePoolWithTag at .text+0x74\n  1Bp2  call\n               \
             ExAllocatePool2 at .text+0x51\n  \
             ... and 84 more tags at the bytes level (--evidence bytes lists them)\n",
            s.path("x64-O2/basic.sys")
        )
    );
    let every = stdout(
        &pooltag()
            .args(["tags", "--evidence", "bytes", "--db"])
            .arg(s.db())
            .arg(s.path("x64-O2/basic.sys"))
            .assert()
            .success(),
    );
    assert!(every.starts_with(&by_path[..by_path.find("  ... and").unwrap()]));
    assert!(every.contains("\n  This  bytes\n"));
    let listed: Vec<&str> = every
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(&" ".repeat(15)))
        .collect();
    assert_eq!(listed.len(), 87);
    let rank = |l: &&str| (!l.ends_with("call"), l[2..6].to_owned());
    let mut sorted = listed.clone();
    sorted.sort_by_key(rank);
    assert_eq!(listed, sorted);

    let by_name = stdout(
        &pooltag()
            .args(["tags", "--db"])
            .arg(s.db())
            .arg("kernelmod.dll")
            .assert()
            .success(),
    );
    assert!(by_name.starts_with(&format!("{}\n", s.path("x64-O2/kernelmod.dll"))));

    let json = stdout(
        &pooltag()
            .args(["tags", "--json", "--db"])
            .arg(s.db())
            .arg(s.path("x64-O2/basic.sys"))
            .assert()
            .success(),
    );
    let items: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(items.len(), listed.len());
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let basic = s.path("x64-O2/basic.sys");
    let item = |tag: &str, evidence: &str, sites: serde_json::Value| {
        serde_json::json!({
            "tag": tag, "host": host, "path": basic, "evidence": evidence, "sites": sites,
            "sha256": sha256_hex(&basic), "machine": "x64",
            "company": null, "description": null, "version": null
        })
    };
    let alloc2 = serde_json::json!([{"api": "ExAllocatePool2", "rva": 0x1051, "section": ".text"}]);
    assert!(items.contains(&item("1Bp2", "call", alloc2)), "{json}");
    assert!(items.contains(&item("This", "bytes", serde_json::json!([]))));

    let ambiguous = pooltag()
        .args(["tags", "--db"])
        .arg(s.db())
        .arg("basic.sys")
        .assert()
        .code(2);
    let err = stderr(&ambiguous);
    assert!(
        err.starts_with(
            "pooltag: basic.sys: 5 indexed files have this name; give one of their paths:\n"
        ),
        "{err}"
    );
    pooltag()
        .args(["tags", "--db"])
        .arg(s.db())
        .arg("nothere.sys")
        .assert()
        .code(1)
        .stderr("pooltag: nothere.sys: not in the index\n");
}

#[test]
fn junk_truncated_and_unreadable_files_are_reported_and_the_rest_indexed() {
    let s = Scratch::new();
    let junk = s.root().join("junk");
    fs::create_dir(&junk).unwrap();
    fs::write(junk.join("notes.txt"), "plain text").unwrap();
    fs::write(junk.join("empty.bin"), "").unwrap();
    fs::write(junk.join("fake.sys"), "MZ but nothing more").unwrap();
    let basic = fs::read(s.root().join("x64-O2/basic.sys")).unwrap();
    fs::write(junk.join("truncated.sys"), &basic[..300]).unwrap();
    fs::write(junk.join("EMPTY.SYS"), "").unwrap();
    // A path too long to open, even for root: built from the inside out so that no call made
    // here needs the whole path.
    let level = |i: usize| format!("{i:02}{}", "d".repeat(240));
    fs::create_dir(junk.join(level(0))).unwrap();
    fs::write(junk.join(level(0)).join("f.sys"), "x").unwrap();
    for i in 1..20 {
        fs::create_dir(junk.join(level(i))).unwrap();
        fs::rename(
            junk.join(level(i - 1)),
            junk.join(level(i)).join(level(i - 1)),
        )
        .unwrap();
    }
    // Unreadable for anyone but root.
    let locked = junk.join("locked.sys");
    fs::write(&locked, &basic).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    }
    let locked_readable = fs::File::open(&locked).is_ok();

    let assert = s.index().success();
    let err = stderr(&assert);
    let summary = err.lines().last().unwrap().to_owned();
    let mut expected = vec![
        format!(
            "pooltag: {}: named .sys but not a valid PE image: Could not read file magic",
            junk.join("EMPTY.SYS").display()
        ),
        format!(
            "pooltag: {}: named .sys but not a valid PE image: Unknown MS-DOS file",
            junk.join("fake.sys").display()
        ),
        format!(
            "pooltag: {}: named .sys but not a valid PE image: Invalid PE optional header size",
            junk.join("truncated.sys").display()
        ),
    ];
    let mut errors = 4;
    if !locked_readable {
        expected.push(format!(
            "pooltag: {}: Permission denied (os error 13)",
            locked.display()
        ));
        errors += 1;
    }
    for line in &expected {
        assert!(err.lines().any(|l| l == line), "missing {line:?} in\n{err}");
    }
    let too_long = err
        .lines()
        .filter(|l| l.contains("File name too long"))
        .count();
    assert_eq!(too_long, 1, "{err}");
    assert!(
        summary.contains(&format!(
            " Pooltag.txt entries from {} (1 line not understood), {errors} errors, ",
            s.path("localtag.txt")
        )),
        "{summary}"
    );
    // The good files beside them are all there.
    assert_eq!(
        stdout(&s.query(&["-l", "This"]).success()).lines().count(),
        if locked_readable { 55 } else { 54 }
    );
}

#[cfg(unix)]
#[test]
fn symbolic_links_are_not_followed() {
    let s = Scratch::new();
    std::os::unix::fs::symlink(".", s.root().join("x64-O2/loop")).unwrap();
    std::os::unix::fs::symlink("self", s.root().join("self")).unwrap();
    std::os::unix::fs::symlink(s.root().join("x64-O2/basic.sys"), s.root().join("link.sys"))
        .unwrap();
    let assert = s.index().success();
    let err = stderr(&assert);
    assert!(
        err.lines()
            .last()
            .unwrap()
            .contains(" 54 driver binaries indexed "),
        "{err}"
    );
    assert!(err.contains(", 0 errors, "), "{err}");
}

#[test]
fn tag_files_are_found_in_any_case_and_named_ones_read_whatever_their_name() {
    let s = Scratch::new();
    fs::rename(s.root().join("localtag.txt"), s.root().join("PoolTag.TXT")).unwrap();
    let extra = s.dir.path().join("mine.tags");
    fs::write(&extra, "Mine - mine.sys - My own tag\n").unwrap();
    pooltag()
        .arg("--db")
        .arg(s.db())
        .args(["index", "--pooltag-txt"])
        .arg(&extra)
        .arg(s.root())
        .assert()
        .success();
    assert_eq!(
        stdout(&s.query(&["Mine"]).success()),
        format!(
            "Pooltag.txt:\n  Mine  mine.sys - My own tag\n        {}:1\nDrivers: no indexed driver holds it\n",
            extra.display()
        )
    );
    assert!(stdout(&s.query(&["ZzNo"]).success()).contains("PoolTag.TXT:6"));
}

#[test]
fn no_database_says_to_index_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");
    pooltag()
        .args(["query", "AfdA", "--db"])
        .arg(&db)
        .assert()
        .code(2)
        .stdout("")
        .stderr(format!(
            "pooltag: no database at {}; run 'pooltag index ROOT...' first\n",
            db.display()
        ));
    assert!(!db.exists());
}

#[test]
fn files_that_are_not_pooltag_databases_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.db");
    fs::write(
        &text,
        "hello, this is not SQLite at all, just some text to fill a page",
    )
    .unwrap();
    let other = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let before = fs::read(&other).unwrap();
    for (db, why) in [
        (&text, "not a pooltag database (not an SQLite file)"),
        (
            &other,
            "not a pooltag database (an SQLite file of another application)",
        ),
    ] {
        pooltag()
            .args(["query", "AfdA", "--db"])
            .arg(db)
            .assert()
            .code(2)
            .stdout("")
            .stderr(format!("pooltag: {}: {why}\n", db.display()));
    }
    assert_eq!(fs::read(&other).unwrap(), before);
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_newer_schema_is_refused() {
    let s = Scratch::new();
    s.index().success();
    {
        let conn = rusqlite::Connection::open(s.db()).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    s.query(&["1Ba1"]).code(2).stderr(format!(
        "pooltag: {}: made by a newer pooltag (schema 99; this pooltag reads up to schema 5); upgrade pooltag\n",
        s.db().display()
    ));
}

#[test]
fn bad_patterns_are_usage_errors() {
    let s = Scratch::new();
    s.index().success();
    s.query(&["AfdAB"]).code(2).stdout("").stderr(
        "pooltag: invalid tag pattern 'AfdAB': longer than 4 characters (a tag value is written 0x followed by up to 8 hex digits)\n",
    );
    s.query(&[""])
        .code(2)
        .stderr("pooltag: invalid tag pattern '': empty\n");
}

#[test]
fn a_failed_index_leaves_the_previous_database() {
    let s = Scratch::new();
    s.index().success();
    let before = stdout(&s.query(&["--json", "1Ba*"]).success());
    pooltag()
        .arg("--db")
        .arg(s.db())
        .arg("index")
        .arg(s.root())
        .arg(s.dir.path().join("missing"))
        .assert()
        .code(2)
        .stderr(format!(
            "pooltag: {}: No such file or directory (os error 2)\n",
            s.dir.path().join("missing").display()
        ));
    assert_eq!(stdout(&s.query(&["--json", "1Ba*"]).success()), before);
}

/// kill -9 at 60 varied moments of an index run that would change the answer: the database answers
/// exactly as before or exactly as after, and the next run leaves no temporary file.
#[cfg(unix)]
#[test]
fn an_interrupted_index_leaves_the_previous_database_queryable() {
    let s = Scratch::new();
    s.index().success();
    let old = stdout(&s.query(&["--json", "1Ba*"]).success());
    // A second tree: the fixtures, many times over, so a run takes long enough to interrupt.
    let big = s.dir.path().join("big");
    for i in 0..40 {
        copy_tree(&s.root().join("x64-O2"), &big.join(format!("copy{i}")));
    }
    for i in 0..2000 {
        fs::write(big.join(format!("copy0/filler{i}.bin")), [i as u8; 512]).unwrap();
    }
    // The index of `big` keeps what the database holds outside it: the same two runs.
    let new_answer = |s: &Scratch| {
        let scratch_db = s.dir.path().join("reference.db");
        for root in [s.root(), big.clone()] {
            pooltag()
                .arg("--db")
                .arg(&scratch_db)
                .arg("index")
                .arg(root)
                .assert()
                .success();
        }
        stdout(
            &pooltag()
                .args(["query", "--json", "1Ba*", "--db"])
                .arg(&scratch_db)
                .assert()
                .success(),
        )
    };
    let new = new_answer(&s);
    let binary = assert_cmd::cargo::cargo_bin("pooltag");
    // 60 kills spread over the whole run (about 150 ms here): before the walk, mid-analysis,
    // while the posting lists are written, around the rename.
    for delay_ms in (0..60u64).map(|i| (i * 37) % 180) {
        let mut child = StdCommand::new(&binary)
            .arg("--db")
            .arg(s.db())
            .arg("index")
            .arg(&big)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let now = stdout(&s.query(&["--json", "1Ba*"]).success());
        assert!(now == old || now == new, "after {delay_ms} ms: {now}");
    }
    pooltag()
        .arg("--db")
        .arg(s.db())
        .arg("index")
        .arg(&big)
        .assert()
        .success();
    assert_eq!(stdout(&s.query(&["--json", "1Ba*"]).success()), new);
    let leftovers: Vec<String> = fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pooltag.db.") && n != "pooltag.db.unchanged-runs")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn db_option_goes_before_or_after_the_subcommand_and_env_gives_the_default() {
    let s = Scratch::new();
    pooltag()
        .args(["index"])
        .arg(s.root())
        .arg("--db")
        .arg(s.db())
        .assert()
        .success();
    let listed = stdout(
        &pooltag()
            .arg("--db")
            .arg(s.db())
            .args(["query", "-l", "1Ba1"])
            .assert()
            .success(),
    );
    assert_eq!(listed.lines().count(), 4);
    let via_env = stdout(
        &pooltag()
            .env("POOLTAG_DB", s.db())
            .args(["query", "-l", "1Ba1"])
            .assert()
            .success(),
    );
    assert_eq!(via_env, listed);
    #[cfg(target_os = "linux")]
    {
        let data = s.dir.path().join("xdg");
        pooltag()
            .env("XDG_DATA_HOME", &data)
            .arg("index")
            .arg(s.root())
            .assert()
            .success();
        assert!(data.join("pooltag/pooltag.db").is_file());
    }
}

#[test]
fn provenance_is_recorded() {
    let s = Scratch::new();
    s.index().success();
    let conn = rusqlite::Connection::open(s.db()).unwrap();
    let (version, host, os, roots, started, finished, seen, drivers, entries, errors): (
        String,
        String,
        String,
        String,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = conn
        .query_row(
            "SELECT pooltag_version, host, os, roots, started_at, finished_at, files_seen, \
             drivers_indexed, tag_file_entries, errors FROM run",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert!(!host.is_empty());
    assert_eq!(
        os,
        format!("{} {}", std::env::consts::OS, std::env::consts::ARCH)
    );
    assert_eq!(
        roots,
        serde_json::to_string(&[s.root().display().to_string()]).unwrap()
    );
    assert!(started > 1_700_000_000 && finished >= started);
    assert_eq!((seen, drivers, entries, errors), (57, 54, 4, 0));
}

#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_quietly() {
    let s = Scratch::new();
    s.index().success();
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("pooltag"))
        .arg("--db")
        .arg(s.db())
        .args(["tags", "x64-O0/wrapper.sys"])
        .current_dir(s.root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

/// The part of the summary line that counts driver binaries by what happened to them.
fn driver_counts(assert: &assert_cmd::assert::Assert) -> String {
    let err = stderr(assert);
    let summary = err.lines().last().unwrap();
    let start = summary.find(" driver binaries indexed (").unwrap();
    let end = summary[start..].find(')').unwrap();
    summary[start + 1..start + end + 1].to_owned()
}

#[test]
fn index_again_reads_only_what_changed() {
    let s = Scratch::new();
    let first = s.index().success();
    assert_eq!(
        driver_counts(&first),
        "driver binaries indexed (54 new, 0 changed, 0 unchanged, 0 removed)"
    );
    let before = stdout(&s.query(&["--json", "1B*", "4Wr?"]).success());

    let again = s.index().success();
    assert_eq!(
        driver_counts(&again),
        "driver binaries indexed (0 new, 0 changed, 54 unchanged, 0 removed)"
    );
    // Only the non-drivers' headers and the tag file were read.
    let summary = stderr(&again).lines().last().unwrap().to_owned();
    let read = summary
        .split(", ")
        .find(|p| p.ends_with(" read"))
        .unwrap()
        .to_owned();
    assert!(
        read.ends_with(" B read") || read.starts_with(|c: char| c < '2'),
        "{read}"
    );
    assert_eq!(
        stdout(&s.query(&["--json", "1B*", "4Wr?"]).success()),
        before
    );

    // A new path holding a known content: one analysis, both paths listed.
    fs::create_dir(s.root().join("copy")).unwrap();
    fs::copy(
        s.root().join("x64-O2/basic.sys"),
        s.root().join("copy/twin.sys"),
    )
    .unwrap();
    // Same size, new modification time: read again.
    let wrapper = s.root().join("x64-O2/wrapper.sys");
    let mut content = fs::read(&wrapper).unwrap();
    content[0x400] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&wrapper, &content).unwrap();
    fs::remove_file(s.root().join("x86-O0/cond.sys")).unwrap();
    let third = s.index().success();
    assert_eq!(
        driver_counts(&third),
        "driver binaries indexed (1 new, 1 changed, 52 unchanged, 1 removed)"
    );
    let listed = stdout(&s.query(&["-l", "1Bp2"]).success());
    assert!(
        listed.contains(&format!("{}\n", s.path("copy/twin.sys"))),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("{}\n", s.path("x64-O2/basic.sys"))),
        "{listed}"
    );
    s.query(&["-l", "5Cb9", "--evidence", "call"])
        .success()
        .stdout(format!("{}\n", s.path("x64-O0/cond.sys")));

    let full = pooltag()
        .arg("--db")
        .arg(s.db())
        .args(["index", "--full"])
        .arg(s.root())
        .assert()
        .success();
    assert_eq!(
        driver_counts(&full),
        "driver binaries indexed (54 new, 0 changed, 0 unchanged, 0 removed)"
    );
    let conn = rusqlite::Connection::open(s.db()).unwrap();
    let broken: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(broken, 0);
    let contents: i64 = conn
        .query_row("SELECT count(*) FROM content", [], |r| r.get(0))
        .unwrap();
    assert_eq!(contents, 53, "twin.sys shares basic.sys's content");
}

#[cfg(not(windows))]
#[test]
fn index_without_a_root_says_what_to_pass() {
    pooltag()
        .arg("index")
        .assert()
        .code(2)
        .stdout("")
        .stderr(
            "pooltag: index: give the folders to index (ROOT...), for example a mounted Windows \
             disk's Windows/System32/drivers; only on Windows does pooltag know where drivers live\n",
        );
}

/// Every wrong use: one line on stderr naming what is wrong (with the usage line when arguments
/// are missing), exit 2, nothing on stdout.
#[test]
fn wrong_uses_get_one_clear_line() {
    let s = Scratch::new();
    s.index().success();
    let db = s.db().display().to_string();
    let missing = s.dir.path().join("missing").display().to_string();
    let dir = s.dir.path().display().to_string();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["query", ""], "invalid tag pattern '': empty".into()),
        (
            vec!["query", "AfdAB"],
            "invalid tag pattern 'AfdAB': longer than 4 characters (a tag value is written 0x \
             followed by up to 8 hex digits)"
                .into(),
        ),
        (
            vec!["query", "Afé"],
            "invalid tag pattern 'Afé': tags are ASCII".into(),
        ),
        (
            vec!["query", "*"],
            "the pattern '*' matches every tag; add --all to list them all".into(),
        ),
        (
            vec!["query", "-l", "????"],
            "the pattern '????' matches every tag; add --all to list them all".into(),
        ),
        (
            vec!["index", &missing],
            format!("{missing}: No such file or directory (os error 2)"),
        ),
        (
            vec!["query", "AfdA", "--evidence", "strong"],
            "invalid value 'strong' for '--evidence <LEVEL>': unknown evidence level 'strong' \
             (use call, arg, code, data or bytes)"
                .into(),
        ),
        (
            vec!["export", "--format", "xml"],
            "invalid value 'xml' for '--format <FORMAT>': unknown format 'xml' (use localtag, \
             csv or json)"
                .into(),
        ),
        (
            vec!["query"],
            "the following required arguments were not provided:\n  <PATTERN>...\n\n\
             Usage: pooltag query <PATTERN>..."
                .into(),
        ),
        (
            vec!["index", "--pooltag-txt", &missing, "."],
            format!("--pooltag-txt {missing}: No such file or directory (os error 2)"),
        ),
    ];
    for (args, message) in cases {
        pooltag()
            .arg("--db")
            .arg(&db)
            .args(&args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(format!("pooltag: {message}\n"));
    }
    for args in [vec!["query", "AfdA"], vec!["index", "."], vec!["info"]] {
        pooltag()
            .arg("--db")
            .arg(&dir)
            .args(&args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(format!(
                "pooltag: {dir}: is a directory, not a pooltag database\n"
            ));
    }
    let everything = stdout(&s.query(&["-l", "--all", "*"]).success());
    assert_eq!(everything.lines().count(), 54);
}

/// A database the user may not read: as an unprivileged user when the tests run as root.
#[cfg(unix)]
#[test]
fn a_database_without_permission_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    s.index().success();
    fs::set_permissions(s.db(), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = StdCommand::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    // A copy the other user can run, wherever the build tree lives.
    let binary = s.dir.path().join("pooltag");
    fs::copy(assert_cmd::cargo::cargo_bin("pooltag"), &binary).unwrap();
    let mut command = if root && Path::new("/usr/bin/setpriv").exists() {
        let mut c = StdCommand::new("/usr/bin/setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary);
        c
    } else if root {
        eprintln!("skipped: running as root without setpriv");
        return;
    } else {
        StdCommand::new(&binary)
    };
    let output = command
        .arg("--db")
        .arg(s.db())
        .args(["query", "AfdA"])
        .env_remove("POOLTAG_DB")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "pooltag: {}: Permission denied (os error 13)\n",
            s.db().display()
        )
    );
}

/// Queries running while indexes replace the database each see the old or the new one whole.
#[test]
fn queries_during_an_index_see_one_whole_database() {
    let s = Scratch::new();
    let only_x64 = s.dir.path().join("x64");
    copy_tree(&s.root().join("x64-O2"), &only_x64);
    let index = |root: &Path| {
        pooltag()
            .arg("--db")
            .arg(s.db())
            .args(["index", "--full"])
            .arg(root)
            .assert()
            .success();
    };
    let answer = |root: &Path| {
        index(root);
        stdout(&s.query(&["--json", "1B*"]).success())
    };
    let small = answer(&only_x64);
    let large = answer(&s.root());
    assert_ne!(small, large);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let binary = assert_cmd::cargo::cargo_bin("pooltag");
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut seen = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let output = StdCommand::new(&binary)
                            .arg("--db")
                            .arg(s.db())
                            .args(["query", "--json", "1B*"])
                            .output()
                            .unwrap();
                        assert_eq!(
                            output.status.code(),
                            Some(0),
                            "{}",
                            String::from_utf8_lossy(&output.stderr)
                        );
                        let text = String::from_utf8(output.stdout).unwrap();
                        assert!(text == small || text == large, "a mixture: {text}");
                        seen += 1;
                    }
                    seen
                })
            })
            .collect();
        let whole = s.root();
        for round in 0..8 {
            index(if round % 2 == 0 { &only_x64 } else { &whole });
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
    });
}

/// A full disk: a clear error, exit 2, and the previous database as it was. Needs a small tmpfs,
/// which root can mount; elsewhere the test says it was skipped.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_leaves_the_previous_database() {
    let s = Scratch::new();
    let disk = s.dir.path().join("disk");
    fs::create_dir(&disk).unwrap();
    let mounted = StdCommand::new("mount")
        .args(["-t", "tmpfs", "-o", "size=160k", "tmpfs"])
        .arg(&disk)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (not root?)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = StdCommand::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&disk);
    let db = disk.join("pooltag.db");
    pooltag()
        .arg("--db")
        .arg(&db)
        .arg("index")
        .arg(s.root().join("x64-O2").join("basic.sys"))
        .assert()
        .success();
    let before = fs::read(&db).unwrap();
    let failed = pooltag()
        .arg("--db")
        .arg(&db)
        .args(["index", "--full"])
        .arg(s.root())
        .assert()
        .code(2);
    let err = stderr(&failed);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last == format!(
            "pooltag: {}: the disk is full (the previous database is unchanged)",
            db.display()
        ),
        "{err}"
    );
    assert_eq!(fs::read(&db).unwrap(), before);
    let names: Vec<String> = fs::read_dir(&disk)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["pooltag.db".to_owned()]);
    pooltag()
        .arg("--db")
        .arg(&db)
        .args(["query", "-l", "1Ba1"])
        .assert()
        .success()
        .stdout(format!("{}\n", s.path("x64-O2/basic.sys")));
}
