//! Trust across runs, locales and inputs: file names of any script or encoding, answers that
//! stay right after re-indexing, merging and exporting (issue "Trustworthy across runs").

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

mod common;
use common::{fixture, pooltag, stderr, stdout};

/// The part of an index summary line that counts driver binaries.
fn driver_counts(assert: &assert_cmd::assert::Assert) -> String {
    let err = stderr(assert);
    let summary = err.lines().last().unwrap();
    let start = summary.find(" driver binaries indexed (").unwrap();
    let end = summary[start..].find(')').unwrap();
    summary[start + 1..start + end + 1].to_owned()
}

/// A scratch folder with a database path beside the trees the test writes.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn db(&self) -> PathBuf {
        self.path("pooltag.db")
    }

    /// Copies a fixture to `relative` (folders made as needed).
    fn put(&self, fixture_path: &str, relative: impl AsRef<Path>) -> PathBuf {
        let to = self.dir.path().join(relative);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(fixture(fixture_path), &to).unwrap();
        to
    }

    fn pooltag(&self, args: &[&std::ffi::OsStr]) -> assert_cmd::assert::Assert {
        pooltag().arg("--db").arg(self.db()).args(args).assert()
    }

    fn index(&self, roots: &[&Path]) -> assert_cmd::assert::Assert {
        pooltag()
            .arg("--db")
            .arg(self.db())
            .arg("index")
            .args(roots)
            .assert()
    }
}

#[test]
fn names_in_any_script_are_indexed() {
    let s = Scratch::new();
    // The last four bytes of each name split a character (`ドライバ` ends in three-byte
    // characters); one is a driver by its .sys name, one only by its subsystem.
    let root = s.path("root");
    s.put("x64-O2/basic.sys", "root/ドライバ");
    s.put("x64-O2/wrapper.sys", "root/ドライバ.sys");
    s.put("x86-O2/basic.sys", "root/é");
    let assert = s.index(&[&root]).success();
    assert_eq!(
        driver_counts(&assert),
        "driver binaries indexed (3 new, 0 changed, 0 unchanged, 0 removed)"
    );
    let listed = stdout(
        &s.pooltag(&["query".as_ref(), "-l".as_ref(), "1Ba1".as_ref()])
            .success(),
    );
    assert_eq!(
        listed,
        format!(
            "{}\n{}\n",
            root.join("é").display(),
            root.join("ドライバ").display()
        )
    );
}

/// `export --format json --evidence bytes`: every (tag, file) pair the database answers.
fn export_all(s: &Scratch) -> String {
    stdout(
        &s.pooltag(&[
            "export".as_ref(),
            "--format".as_ref(),
            "json".as_ref(),
            "--evidence".as_ref(),
            "bytes".as_ref(),
        ])
        .success(),
    )
}

#[test]
fn a_run_with_code_analysis_redoes_a_bytes_only_one() {
    let s = Scratch::new();
    let root = s.path("root");
    s.put("x64-O2/basic.sys", "root/basic.sys");
    s.put("x64-O2/wrapper.sys", "root/copy/wrapper.sys");
    let bytes_only = pooltag()
        .arg("--db")
        .arg(s.db())
        .args(["index", "--bytes-only"])
        .arg(&root)
        .assert()
        .success();
    assert_eq!(
        driver_counts(&bytes_only),
        "driver binaries indexed (2 new, 0 changed, 0 unchanged, 0 removed)"
    );
    let call = [
        "query".as_ref(),
        "-l".as_ref(),
        "--evidence".as_ref(),
        "call".as_ref(),
    ];
    s.pooltag(&[&call[..], &["1Ba1".as_ref()]].concat()).code(1);
    let full = s.index(&[&root]).success();
    assert_eq!(
        driver_counts(&full),
        "driver binaries indexed (0 new, 0 changed, 2 unchanged, 0 removed, 2 analysed again)"
    );
    s.pooltag(&[&call[..], &["1Ba1".as_ref()]].concat())
        .success()
        .stdout(format!("{}\n", root.join("basic.sys").display()));
    // The same analysis again: nothing is read.
    let again = s.index(&[&root]).success();
    assert_eq!(
        driver_counts(&again),
        "driver binaries indexed (0 new, 0 changed, 2 unchanged, 0 removed)"
    );
    // The result is what one full run gives.
    let reference = Scratch::new();
    pooltag()
        .arg("--db")
        .arg(reference.db())
        .arg("index")
        .arg(&root)
        .assert()
        .success();
    assert_eq!(export_all(&s), export_all(&reference));
    let info: serde_json::Value = serde_json::from_str(&stdout(
        &s.pooltag(&["info".as_ref(), "--json".as_ref()]).success(),
    ))
    .unwrap();
    assert_eq!(
        info["analyses"],
        serde_json::json!({ format!("{}:code", pooltag::extract::ANALYSIS_VERSION): 2 })
    );
}

#[test]
fn a_second_root_adds_to_the_first_and_prune_keeps_only_the_last() {
    let s = Scratch::new();
    let (a, b) = (s.path("a"), s.path("b"));
    s.put("x64-O2/basic.sys", "a/basic.sys");
    s.put("x86-O2/basic.sys", "b/basic.sys");
    let tags = s.path("tags.txt");
    fs::write(&tags, "1Ba1 - basic.sys - named with --pooltag-txt\n").unwrap();
    pooltag()
        .arg("--db")
        .arg(s.db())
        .arg("index")
        .arg("--pooltag-txt")
        .arg(&tags)
        .arg(&a)
        .assert()
        .success();
    let second = s.index(&[&b]).success();
    assert_eq!(
        driver_counts(&second),
        "driver binaries indexed (1 new, 0 changed, 0 unchanged, 0 removed)"
    );
    let both = format!(
        "{}\n{}\n",
        a.join("basic.sys").display(),
        b.join("basic.sys").display()
    );
    let list = ["query".as_ref(), "-l".as_ref(), "1Ba1".as_ref()];
    s.pooltag(&list).success().stdout(both.clone());
    // The tag file named in the first run is still there.
    let answer = stdout(&s.pooltag(&["query".as_ref(), "1Ba1".as_ref()]).success());
    assert!(
        answer.starts_with(&format!(
            "Pooltag.txt:\n  1Ba1  basic.sys - named with --pooltag-txt\n        {}:1\n",
            tags.display()
        )),
        "{answer}"
    );
    // A file removed under a root goes; the same root written another way is the same root.
    fs::remove_file(b.join("basic.sys")).unwrap();
    let third = s.index(&[&s.path("b/../b")]).success();
    assert_eq!(
        driver_counts(&third),
        "driver binaries indexed (0 new, 0 changed, 0 unchanged, 1 removed)"
    );
    s.put("x86-O2/basic.sys", "b/basic.sys");
    s.index(&[&b]).success();
    s.pooltag(&list).success().stdout(both);
    // --prune: only what this run found.
    let pruned = pooltag()
        .arg("--db")
        .arg(s.db())
        .args(["index", "--prune"])
        .arg(&b)
        .assert()
        .success();
    assert_eq!(
        driver_counts(&pruned),
        "driver binaries indexed (0 new, 0 changed, 1 unchanged, 1 removed)"
    );
    s.pooltag(&list)
        .success()
        .stdout(format!("{}\n", b.join("basic.sys").display()));
    assert_eq!(
        stdout(&s.pooltag(&["query".as_ref(), "1Ba1".as_ref()]).success())
            .lines()
            .next(),
        Some("Drivers:")
    );
}

#[test]
fn a_root_given_twice_or_inside_another_is_walked_once() {
    let s = Scratch::new();
    s.put("x64-O2/basic.sys", "root/sub/basic.sys");
    s.put("x64-O2/wrapper.sys", "root/wrapper.sys");
    let root = s.path("root");
    let assert = s
        .index(&[&root, &s.path("root/sub"), &s.path("root/sub/../../root")])
        .success();
    let summary = stderr(&assert);
    assert!(
        summary.starts_with(
            "pooltag: 2 files seen, 2 driver binaries indexed (2 new, 0 changed, 0 unchanged, \
             0 removed), "
        ),
        "{summary}"
    );
}

#[test]
fn merge_keeps_the_stronger_analysis_in_any_order() {
    let s = Scratch::new();
    let root = s.path("root");
    s.put("x64-O2/basic.sys", "root/basic.sys");
    let (full, bytes) = (s.path("full.db"), s.path("bytes.db"));
    for (db, extra) in [(&full, None), (&bytes, Some("--bytes-only"))] {
        pooltag()
            .arg("--db")
            .arg(db)
            .arg("index")
            .args(extra)
            .arg(&root)
            .assert()
            .success();
    }
    for (first, second) in [(&full, &bytes), (&bytes, &full)] {
        let merged = s.path("merged.db");
        let _ = fs::remove_file(&merged);
        pooltag()
            .arg("--db")
            .arg(&merged)
            .arg("merge")
            .arg(first)
            .arg(second)
            .assert()
            .success();
        let tags = stdout(
            &pooltag()
                .arg("--db")
                .arg(&merged)
                .args(["tags", "--evidence", "call", "--json"])
                .arg(root.join("basic.sys"))
                .assert()
                .success(),
        );
        assert!(tags.contains(r#""tag":"1Ba1","#), "{tags}");
        // Every answer is the code analysis's: none is left of the bytes-only one, whichever
        // input came first.
        let evidence = |db: &Path| {
            stdout(
                &pooltag()
                    .arg("--db")
                    .arg(db)
                    .args(["export", "--format", "csv", "--evidence", "data"])
                    .assert()
                    .success(),
            )
        };
        assert_eq!(evidence(&merged), evidence(&full));
    }
}

#[test]
fn a_damaged_evidence_list_is_named_after_the_merge_input_and_changes_nothing() {
    let s = Scratch::new();
    let root = s.path("root");
    s.put("x64-O0/table.sys", "root/table.sys");
    let (good, bad, out) = (s.path("good.db"), s.path("bad.db"), s.path("out.db"));
    for db in [&good, &bad] {
        pooltag()
            .arg("--db")
            .arg(db)
            .arg("index")
            .arg(&root)
            .assert()
            .success();
    }
    pooltag()
        .arg("--db")
        .arg(&out)
        .arg("merge")
        .arg(&good)
        .assert()
        .success();
    let before = fs::read(&out).unwrap();
    let conn = rusqlite::Connection::open(&bad).unwrap();
    let changed = conn
        .execute("UPDATE content_evidence SET entries = x'0180'", [])
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    // The last input is absorbed first (its files win): its content is new there, its list read.
    let assert = pooltag()
        .arg("--db")
        .arg(&out)
        .arg("merge")
        .arg(&bad)
        .assert()
        .code(2);
    assert_eq!(
        stderr(&assert),
        format!(
            "pooltag: {}: the database is damaged (truncated or corrupt); rebuild it with \
             'pooltag index'\n",
            bad.display()
        )
    );
    assert_eq!(fs::read(&out).unwrap(), before);
}

#[cfg(unix)]
#[test]
fn tags_finds_a_file_by_a_relative_path_a_link_or_a_name_of_identical_copies() {
    let s = Scratch::new();
    let root = s.path("root");
    s.put("x64-O2/basic.sys", "root/a/basic.sys");
    s.put("x64-O2/basic.sys", "root/b/basic.sys");
    s.put("x86-O2/wrapper.sys", "root/a/wrapper.sys");
    std::os::unix::fs::symlink(root.join("a"), s.path("link")).unwrap();
    s.index(&[&root]).success();
    let call_tags = |given: &str| {
        pooltag()
            .current_dir(s.path("root/a"))
            .arg("--db")
            .arg(s.db())
            .args(["tags", "--evidence", "call", given])
            .assert()
    };
    let wrapper = format!("{}\n  4Wi1  call\n", root.join("a/wrapper.sys").display());
    let wrapper_out = stdout(&call_tags("../a/wrapper.sys").success());
    assert!(
        wrapper_out.starts_with(&wrapper[..wrapper.find('\n').unwrap()]),
        "{wrapper_out}"
    );
    let through_link = s.path("link/wrapper.sys").display().to_string();
    assert_eq!(stdout(&call_tags(&through_link).success()), wrapper_out);
    // Two copies of one content under one name: one answer, the first path.
    let basic = stdout(
        &pooltag()
            .current_dir(&root)
            .arg("--db")
            .arg(s.db())
            .args(["tags", "--evidence", "call", "basic.sys"])
            .assert()
            .success(),
    );
    assert!(
        basic.starts_with(&format!("{}\n", root.join("a/basic.sys").display())),
        "{basic}"
    );
}

#[test]
fn a_localtag_export_leaves_out_tags_that_read_back_as_wildcards() {
    let s = Scratch::new();
    let root = s.path("root");
    for build in ["x64-O0", "x64-O2", "x86-O2", "arm64-O2"] {
        for fixture in ["cond", "table", "decoys"] {
            s.put(
                &format!("{build}/{fixture}.sys"),
                format!("root/{build}/{fixture}.sys"),
            );
        }
    }
    // Text in the file holding `?` and `*`: windows such as `Ab?d` are tags at the bytes level.
    let mut with_text = fs::read(fixture("x64-O2/basic.sys")).unwrap();
    with_text.extend_from_slice(b"\0Ab?dXy*z\0");
    fs::write(root.join("text.sys"), with_text).unwrap();
    s.index(&[&root]).success();
    let exported = s.path("localtag.txt");
    let assert = s
        .pooltag(&[
            "export".as_ref(),
            "--format".as_ref(),
            "localtag".as_ref(),
            "--evidence".as_ref(),
            "bytes".as_ref(),
            "-o".as_ref(),
            exported.as_os_str(),
        ])
        .success();
    let text = fs::read_to_string(&exported).unwrap();
    let written: Vec<&str> = text.lines().skip(1).map(|l| &l[..4]).collect();
    assert!(written.len() > 100, "{}", written.len());
    assert!(written.iter().all(|t| !t.contains(['?', '*'])), "{text}");
    let left_out = stderr(&assert);
    assert!(
        left_out.starts_with("pooltag: left out ")
            && left_out.contains(" tags the tag-file format cannot carry: "),
        "{left_out}"
    );
    let named: Vec<&str> = left_out
        .trim_end()
        .split("carry: ")
        .nth(1)
        .unwrap()
        .split("' '")
        .collect();
    assert!(named.iter().any(|t| t.contains(['?', '*'])), "{left_out}");
    // Read back, the file answers no tag it does not name.
    let other = Scratch::new();
    pooltag()
        .arg("--db")
        .arg(other.db())
        .arg("index")
        .arg("--pooltag-txt")
        .arg(&exported)
        .arg(&root)
        .assert()
        .success();
    other
        .pooltag(&[
            "query".as_ref(),
            "--evidence".as_ref(),
            "call".as_ref(),
            "AfdA".as_ref(),
        ])
        .code(1);
}

#[cfg(unix)]
#[test]
fn file_names_reach_the_terminal_escaped_on_stderr_too() {
    let s = Scratch::new();
    let root = s.path("root");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("bad\x1b]0;pwned\x07.sys"), "MZ but nothing more").unwrap();
    let assert = s.index(&[&root]).success();
    let err = stderr(&assert);
    assert!(!err.contains(['\x1b', '\x07']), "{err:?}");
    assert_eq!(
        err.lines().next().unwrap(),
        format!(
            "pooltag: {}/bad\\x1b]0;pwned\\x07.sys: named .sys but not a valid PE image: \
             Unknown MS-DOS file",
            root.display()
        )
    );
}

/// `info --json` as a value.
fn info_json(s: &Scratch) -> serde_json::Value {
    serde_json::from_str(&stdout(
        &s.pooltag(&["info".as_ref(), "--json".as_ref()]).success(),
    ))
    .unwrap()
}

/// The summary's ending for a run that left the database as it was.
fn left_as_it_was(s: &Scratch) -> String {
    let db = s.db().display().to_string();
    format!(
        "; database {db} left as it was (nothing changed; the run is recorded in \
         {db}.unchanged-runs)\n"
    )
}

#[test]
fn an_unchanged_run_leaves_the_database_as_it_was_and_logs_itself() {
    let s = Scratch::new();
    let root = s.path("root");
    s.put("x64-O2/basic.sys", "root/basic.sys");
    s.put("x86-O2/wrapper.sys", "root/sub/wrapper.sys");
    fs::write(
        s.path("root/pooltag.txt"),
        "Abcd - basic.sys - A test tag\n",
    )
    .unwrap();
    s.index(&[&root]).success();
    let before = export_all(&s);
    let bytes = fs::read(s.db()).unwrap();
    let modified = fs::metadata(s.db()).unwrap().modified().unwrap();
    for _ in 0..3 {
        let again = s.index(&[&root]).success();
        assert_eq!(
            driver_counts(&again),
            "driver binaries indexed (0 new, 0 changed, 2 unchanged, 0 removed)"
        );
        assert!(
            stderr(&again).ends_with(&left_as_it_was(&s)),
            "{}",
            stderr(&again)
        );
    }
    // Not a byte written: a reader holding the file never sees it change.
    assert_eq!(fs::read(s.db()).unwrap(), bytes);
    assert_eq!(fs::metadata(s.db()).unwrap().modified().unwrap(), modified);
    assert_eq!(export_all(&s), before);
    let info = info_json(&s);
    let runs = info["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{info}");
    assert_eq!(runs[0]["drivers_indexed"], 2);
    assert_eq!(info["unchanged_run_count"], 3);
    let unchanged = info["unchanged_runs"].as_array().unwrap();
    assert_eq!(unchanged.len(), 3, "{info}");
    for run in unchanged {
        for same in ["host", "os", "roots", "pooltag_version"] {
            assert_eq!(run[same], runs[0][same], "{same}: {info}");
        }
        assert_eq!(run["files_seen"], 3);
        assert_eq!(run["drivers_indexed"], 2);
        assert_eq!(run["errors"], 0);
    }
    assert_eq!(info["files"], 2);
    assert_eq!(info["integrity"], "ok");
    let human = stdout(&s.pooltag(&["info".as_ref()]).success());
    let lines: Vec<&str> = human.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "  runs since that changed nothing: 3")
        .unwrap_or_else(|| panic!("{human}"));
    assert_eq!(lines[at + 2], format!("      roots: {}", root.display()));
    assert_eq!(
        lines[at + 3],
        "      3 files seen, 2 driver binaries, 0 errors"
    );
}

#[test]
fn a_changed_tag_file_is_written_and_a_written_database_ends_the_log() {
    let s = Scratch::new();
    let root = s.path("root");
    s.put("x64-O2/basic.sys", "root/basic.sys");
    let tag_file = s.path("root/pooltag.txt");
    fs::write(&tag_file, "Abcd - basic.sys - First words\n").unwrap();
    s.index(&[&root]).success();
    s.index(&[&root]).success();
    let log = s.path("pooltag.db.unchanged-runs");
    assert!(log.exists());
    // The same size, the same files: only the line differs.
    fs::write(&tag_file, "Abcd - basic.sys - Other words\n").unwrap();
    let again = s.index(&[&root]).success();
    assert!(
        stderr(&again).ends_with(&format!("; database {}\n", s.db().display())),
        "{}",
        stderr(&again)
    );
    assert!(!log.exists());
    let answer = stdout(&s.pooltag(&["query".as_ref(), "Abcd".as_ref()]).success());
    assert!(answer.contains("Other words"), "{answer}");
    assert!(!answer.contains("First words"), "{answer}");
    let info = info_json(&s);
    assert_eq!(info["unchanged_run_count"], 0);
    assert_eq!(info["unchanged_runs"], serde_json::json!([]));
    // A removed tag file is a change too.
    fs::remove_file(&tag_file).unwrap();
    let again = s.index(&[&root]).success();
    assert!(
        !stderr(&again).contains("left as it was"),
        "{}",
        stderr(&again)
    );
    assert_eq!(info_json(&s)["tag_files"], serde_json::json!([]));
}

#[test]
fn info_shows_only_the_log_lines_of_the_database_as_it_is() {
    let s = Scratch::new();
    let root = s.path("root");
    s.put("x64-O2/basic.sys", "root/basic.sys");
    s.index(&[&root]).success();
    s.index(&[&root]).success();
    let log = s.path("pooltag.db.unchanged-runs");
    let line = fs::read_to_string(&log).unwrap();
    assert_eq!(line.lines().count(), 1);
    let other_database = line.replacen("\"size\":", "\"size\":1", 1);
    let long = format!("{}\n", "x".repeat(1 << 20));
    let mut text = format!("{line}not json\n{other_database}{long}");
    for _ in 0..104 {
        text.push_str(&line);
    }
    text.push_str("{\"database\"");
    fs::write(&log, text).unwrap();
    let assert = s.pooltag(&["info".as_ref(), "--json".as_ref()]).success();
    let shown = log.display();
    assert_eq!(
        stderr(&assert),
        format!(
            "pooltag: {shown}:2: not a run record: expected ident at line 1 column 2; ignored\n\
             pooltag: {shown}:4: longer than 1048576 bytes; ignored\n\
             pooltag: {shown}:109: not a run record: EOF while parsing an object at line 1 \
             column 11; ignored\n"
        )
    );
    let info: serde_json::Value = serde_json::from_str(&stdout(&assert)).unwrap();
    assert_eq!(info["unchanged_run_count"], 105);
    assert_eq!(info["unchanged_runs"].as_array().unwrap().len(), 100);
    let human = stdout(&s.pooltag(&["info".as_ref()]).success());
    assert!(
        human.contains("\n  runs since that changed nothing: 105 (the 5 earliest not shown)\n"),
        "{human}"
    );
    // The same bytes, but another file put in its place (written anew: a later modification
    // time): the log is not its own.
    let copy = s.path("copy.db");
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&copy, fs::read(s.db()).unwrap()).unwrap();
    fs::rename(&copy, s.db()).unwrap();
    let info = info_json(&s);
    assert_eq!(info["unchanged_run_count"], 0);
    assert_eq!(info["unchanged_runs"], serde_json::json!([]));
}

#[cfg(unix)]
#[test]
fn every_kind_of_file_name_is_indexed_once() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    let root = s.path("root");
    let names: Vec<&[u8]> = vec![
        b"CON.sys",
        b"nul",
        b"AUX.SYS",
        b"COM1.sys",
        b"trailing dot.sys.",
        b" leading space.sys",
        "日本語のドライバ.sys".as_bytes(),
        "Ñandú".as_bytes(),
        b"latin1-\xe9.sys",
        b"dup\xfe.sys",
        b"dup\xff.sys",
        b"back\\slash.sys",
    ];
    let long = vec![b'l'; 251]
        .into_iter()
        .chain(*b".sys")
        .collect::<Vec<u8>>();
    let mut all = names.clone();
    all.push(&long);
    for name in &all {
        let path = root.join(std::ffi::OsStr::from_bytes(name));
        fs::create_dir_all(&root).unwrap();
        fs::copy(fixture("x64-O2/basic.sys"), &path).unwrap();
    }
    let assert = s.index(&[&root]).success();
    assert_eq!(
        driver_counts(&assert),
        format!(
            "driver binaries indexed ({} new, 0 changed, 0 unchanged, 0 removed)",
            all.len()
        )
    );
    assert!(
        stderr(&assert).contains(", 0 errors, "),
        "{}",
        stderr(&assert)
    );
    let listed = stdout(
        &s.pooltag(&["query".as_ref(), "-l".as_ref(), "1Ba1".as_ref()])
            .success(),
    );
    assert_eq!(listed.lines().count(), all.len(), "{listed}");
    for shown in [
        "dup\\xFE.sys",
        "dup\\xFF.sys",
        "latin1-\\xE9.sys",
        "日本語のドライバ.sys",
    ] {
        assert!(
            listed.contains(&format!("{}/{shown}\n", root.display())),
            "{shown} in {listed}"
        );
    }
}

/// The one way two names can read the same once stored: a name holding the text `\xFE` beside
/// one holding the byte 0xFE. The second is reported, not dropped silently.
#[cfg(unix)]
#[test]
fn two_names_that_read_the_same_are_reported() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    let root = s.path("root");
    fs::create_dir_all(&root).unwrap();
    for name in [&b"a\\xFE.sys"[..], b"a\xfe.sys"] {
        fs::copy(
            fixture("x64-O2/basic.sys"),
            root.join(std::ffi::OsStr::from_bytes(name)),
        )
        .unwrap();
    }
    let err = stderr(&s.index(&[&root]).success());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "pooltag: {}/a\\xFE.sys: another file's name reads the same once stored; only the \
             first is indexed",
            root.display()
        )
    );
    assert!(lines[1].contains(", 1 errors, "), "{err}");
}

/// Turns a database of the current schema back into schema 4, as the previous pooltag wrote it:
/// evidence as `content_tag` rows.
fn downgrade_to_schema_4(db: &Path) {
    use pooltag::store::postings;
    let conn = rusqlite::Connection::open(db).unwrap();
    let initial = pooltag::store::MIGRATIONS[0];
    let start = initial.find("CREATE TABLE content_tag").unwrap();
    let end = start + initial[start..].find(") WITHOUT ROWID;").unwrap() + ") WITHOUT ROWID;".len();
    conn.execute_batch(&initial[start..end]).unwrap();
    let rows: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT content_id, entries FROM content_evidence")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(!rows.is_empty());
    for (id, entries) in rows {
        for (key, level) in postings::decode_evidence(&entries).unwrap() {
            conn.execute(
                "INSERT INTO content_tag (tag, content_id, evidence) VALUES (?1, ?2, ?3)",
                rusqlite::params![key, id, level as i64],
            )
            .unwrap();
        }
    }
    conn.execute_batch(
        "CREATE INDEX content_tag_by_content ON content_tag(content_id); \
         DROP TABLE evidence_posting; DROP TABLE content_evidence; PRAGMA user_version = 4;",
    )
    .unwrap();
}

#[test]
fn a_schema_4_database_is_converted_and_its_analyses_kept() {
    let s = Scratch::new();
    let root = s.path("root");
    s.put("x64-O2/basic.sys", "root/basic.sys");
    s.put("x64-O0/table.sys", "root/table.sys");
    s.index(&[&root]).success();
    let before = export_all(&s);
    downgrade_to_schema_4(&s.db());
    // Read commands refuse it, as before: only `index` converts.
    let refused = s.pooltag(&["query".as_ref(), "1Ba1".as_ref()]).code(2);
    assert!(
        stderr(&refused).contains("made by an older pooltag (schema 4)"),
        "{}",
        stderr(&refused)
    );
    let again = s.index(&[&root]).success();
    assert!(
        stderr(&again).starts_with(&format!(
            "pooltag: {}: converted from schema 4; its analyses are kept\n",
            s.db().display()
        )),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        driver_counts(&again),
        "driver binaries indexed (0 new, 0 changed, 2 unchanged, 0 removed)"
    );
    assert_eq!(export_all(&s), before);
    let info = info_json(&s);
    assert_eq!(info["schema"], pooltag::store::SCHEMA_VERSION);
    assert_eq!(info["integrity"], "ok");
    let leftovers: Vec<String> = fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pooltag"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A schema-4 file holding anything pooltag did not create is not converted: rebuilt.
    downgrade_to_schema_4(&s.db());
    let conn = rusqlite::Connection::open(s.db()).unwrap();
    conn.execute_batch("CREATE TABLE planted (x);").unwrap();
    drop(conn);
    let rebuilt = s.index(&[&root]).success();
    assert!(
        stderr(&rebuilt).starts_with("pooltag: not reusing the previous database: "),
        "{}",
        stderr(&rebuilt)
    );
    assert_eq!(
        driver_counts(&rebuilt),
        "driver binaries indexed (2 new, 0 changed, 0 unchanged, 0 removed)"
    );
    assert_eq!(export_all(&s), before);
}
