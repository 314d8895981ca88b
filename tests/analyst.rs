//! Collisions (`tags --collisions`, `check`), shell completions and the manual page.

use std::fs;
use std::path::{Path, PathBuf};

mod common;
use common::{fixture, pooltag, stdout};

/// x64-O2 and arm64-O2 indexed, with a tag file naming 3Lx1 for another driver.
fn database(dir: &Path) -> PathBuf {
    let tags = dir.join("localtag.txt");
    fs::write(&tags, "3Lx1 - other.sys - Someone else's lookaside list\n").unwrap();
    let db = dir.join("pooltag.db");
    pooltag()
        .arg("--db")
        .arg(&db)
        .args(["index", "--pooltag-txt"])
        .arg(&tags)
        .arg(fixture("x64-O2"))
        .arg(fixture("arm64-O2"))
        .assert()
        .success();
    db
}

#[test]
fn check_names_the_drivers_and_entries_already_using_a_tag() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    // A new driver of another name that reuses lookaside.sys's tags.
    let mine = dir.path().join("mydriver.sys");
    let mut data = fs::read(fixture("x64-O0/lookaside.sys")).unwrap();
    data.extend_from_slice(b"a different build");
    fs::write(&mine, &data).unwrap();
    let assert = pooltag()
        .arg("--db")
        .arg(&db)
        .arg("check")
        .arg(&mine)
        .assert()
        .code(1);
    let lookaside = |build: &str| {
        fixture(&format!("{build}/lookaside.sys"))
            .display()
            .to_string()
    };
    let collides = |build: &str| {
        format!(
            "               collides with lookaside.sys (call) {}\n",
            lookaside(build)
        )
    };
    let expected = format!(
        "{}\n  3Ln1  call\n               ExInitializeNPagedLookasideList at .text+0x4b\n{}{}\
         \x20 3Lp1  call\n               ExInitializePagedLookasideList at .text+0x88\n{}{}\
         \x20 3Lx1  call\n               ExInitializeLookasideListEx at .text+0xcd\n{}{}\
         \x20              collides with Pooltag.txt: 3Lx1 other.sys - Someone else's lookaside list ({}:1)\n",
        mine.display(),
        collides("arm64-O2"),
        collides("x64-O2"),
        collides("arm64-O2"),
        collides("x64-O2"),
        collides("arm64-O2"),
        collides("x64-O2"),
        dir.path().join("localtag.txt").display()
    );
    assert_eq!(stdout(&assert), expected);

    // Another build of an indexed driver, under its own name, collides with nothing.
    pooltag()
        .arg("--db")
        .arg(&db)
        .arg("check")
        .arg(fixture("x86-O2/obref.sys"))
        .assert()
        .code(0);
    let renamed = dir.path().join("newtail.sys");
    fs::copy(fixture("x86-O0/tailcall.sys"), &renamed).unwrap();
    let wrapper = pooltag()
        .arg("--db")
        .arg(&db)
        .args(["check", "--json"])
        .arg(&renamed)
        .assert()
        .code(1);
    let items: Vec<serde_json::Value> = serde_json::from_str(&stdout(&wrapper)).unwrap();
    let tags: Vec<&str> = items.iter().map(|i| i["tag"].as_str().unwrap()).collect();
    assert_eq!(tags, ["0Lf2", "0Lx3", "0Pp1", "0Tc1"]);
    assert_eq!(
        items[0]["collisions"]["drivers"].as_array().unwrap().len(),
        2
    );

    pooltag()
        .arg("--db")
        .arg(&db)
        .arg("check")
        .arg(dir.path().join("localtag.txt"))
        .assert()
        .code(2)
        .stderr(format!(
            "pooltag: {}: not a PE image\n",
            dir.path().join("localtag.txt").display()
        ));
}

#[test]
fn check_exits_0_without_collision() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pooltag.db");
    pooltag()
        .arg("--db")
        .arg(&db)
        .arg("index")
        .arg(fixture("x64-O2/basic.sys"))
        .assert()
        .success();
    let assert = pooltag()
        .arg("--db")
        .arg(&db)
        .arg("check")
        .arg(fixture("x64-O2/fltndis.sys"))
        .assert()
        .code(0);
    assert!(stdout(&assert).contains("  8Fa1  call\n               FltAllocatePoolAlignedWithTag at .text+0x28\n               no collision\n"));
}

#[test]
fn tags_collisions_skip_copies_of_the_same_driver() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let assert = pooltag()
        .arg("--db")
        .arg(&db)
        .args(["tags", "--collisions"])
        .arg(fixture("x64-O2/basic.sys"))
        .assert()
        .success();
    assert_eq!(
        stdout(&assert),
        format!(
            "{}\n  1Ba1  call\n               ExAllocatePoolWithTag at .text+0x1d\n               \
             ExFreePoolWithTag at .text+0x7e\n               ExFreePoolWithTag at .text+0x91\n               \
             no collision\n  1Ba2  call\n               ExAllocatePoolWithTag at .text+0x37\n               \
             ExFreePoolWithTag at .text+0x74\n               no collision\n  1Bp2  call\n               \
             ExAllocatePool2 at .text+0x51\n               no collision\n",
            fixture("x64-O2/basic.sys").display()
        )
    );
}

#[test]
fn completions_and_manual_cover_every_command() {
    let commands = [
        "index",
        "query",
        "tags",
        "annotate",
        "check",
        "completions",
        "man",
        "info",
        "merge",
        "export",
    ];
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = stdout(&pooltag().args(["completions", shell]).assert().success());
        for command in commands {
            assert!(script.contains(command), "{shell}: {command}");
        }
    }
    let manual = stdout(&pooltag().arg("man").assert().success());
    assert!(manual.contains(".TH pooltag 1"), "{manual}");
    for command in commands {
        assert!(manual.contains(command), "{command}");
        let help = stdout(&pooltag().args([command, "--help"]).assert().success());
        assert!(
            help.contains("\nExample") && help.contains(":\n  pooltag "),
            "{command}: {help}"
        );
    }
    pooltag()
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stdout("");
}
