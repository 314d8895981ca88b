//! Text in and out: control characters in paths and tag files are shown escaped, never sent
//! to the terminal; tag files saved on Windows (UTF-8 with a BOM, UTF-16) are read whole.

use std::fs;

mod common;
use common::{fixture, pooltag};

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

/// A localtag.txt saved by PowerShell (UTF-16LE) or Notepad (UTF-8 with a BOM) gives every
/// entry, the first line's included.
#[test]
fn tag_files_saved_on_windows_are_read_whole() {
    let lines = "1Bp2 - basic.sys - Pool2 buffer\r\n1Ba1 - basic.sys - First buffer\r\n";
    let utf16: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain(lines.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let bom = [&b"\xef\xbb\xbf"[..], lines.as_bytes()].concat();
    for content in [utf16, bom] {
        let dir = tempfile::tempdir().unwrap();
        let tags = dir.path().join("localtag.txt");
        fs::write(&tags, content).unwrap();
        let db = dir.path().join("pooltag.db");
        pooltag()
            .arg("--db")
            .arg(&db)
            .args(["index", "--pooltag-txt"])
            .arg(&tags)
            .arg(fixture("x64-O2/basic.sys"))
            .assert()
            .success();
        let json = pooltag()
            .arg("--db")
            .arg(&db)
            .args(["query", "--json", "1B*"])
            .output()
            .unwrap();
        let items: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
        let entries: Vec<(&str, &str, u64)> = items
            .iter()
            .filter(|i| i["kind"] == "pooltag")
            .map(|i| {
                (
                    i["tag"].as_str().unwrap(),
                    i["description"].as_str().unwrap(),
                    i["line"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![("1Bp2", "Pool2 buffer", 1), ("1Ba1", "First buffer", 2)]
        );
    }
}
