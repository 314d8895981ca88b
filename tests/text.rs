//! Untrusted text in human output: control characters in paths and tag files are shown
//! escaped, never sent to the terminal.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn pooltag() -> Command {
    let mut cmd = Command::cargo_bin("pooltag").unwrap();
    cmd.env_remove("POOLTAG_DB");
    cmd
}

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bin")
        .join(relative)
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// A driver whose file name holds ESC and a line feed, and a tag file whose fields hold an OSC
/// sequence, a C1 CSI and a tab.
#[test]
fn control_characters_from_paths_and_tag_files_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::copy(fixture("x64-O2/basic.sys"), root.join("evil\x1b[31m\n.sys")).unwrap();
    fs::write(
        root.join("localtag.txt"),
        "1Bp2 - ev\x1b]0;t\x07il.sys - C1 \u{9b}2J and\ttab\n",
    )
    .unwrap();
    let db = dir.path().join("pooltag.db");
    pooltag()
        .arg("--db")
        .arg(&db)
        .arg("index")
        .arg(&root)
        .assert()
        .success();
    let root = root.display();
    let human = pooltag()
        .arg("--db")
        .arg(&db)
        .args(["query", "1Bp2"])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&human),
        format!(
            "Pooltag.txt:\n  1Bp2  ev\\x1b]0;t\\x07il.sys - C1 \\u{{9b}}2J and\\x09tab\n        \
             {root}/localtag.txt:1\nDrivers:\n  1Bp2  call   {root}/evil\\x1b[31m\\x0a.sys\n               \
             ExAllocatePool2 at .text+0x51\n"
        )
    );
    let list = pooltag()
        .arg("--db")
        .arg(&db)
        .args(["query", "-l", "1Bp2"])
        .output()
        .unwrap();
    assert_eq!(stdout(&list), format!("{root}/evil\\x1b[31m\\x0a.sys\n"));
    let json = pooltag()
        .arg("--db")
        .arg(&db)
        .args(["query", "--json", "1Bp2"])
        .output()
        .unwrap();
    let items: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(items[0]["binary"], "ev\x1b]0;t\x07il.sys");
    assert_eq!(items[1]["path"], format!("{root}/evil\x1b[31m\n.sys"));
    let annotated = pooltag()
        .arg("--db")
        .arg(&db)
        .arg("annotate")
        .write_stdin("1Bp2\n")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&annotated),
        "1Bp2  # evil\\x1b[31m\\x0a.sys (call); Pooltag.txt: ev\\x1b]0;t\\x07il.sys - C1 \\u{9b}2J \
         and\\x09tab\n"
    );
    for output in [&human, &list, &annotated] {
        assert!(
            !output
                .stdout
                .iter()
                .any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f),
            "{:?}",
            stdout(output)
        );
        assert!(!stdout(output).contains('\u{9b}'));
    }
}
