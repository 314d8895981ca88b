//! What the end-to-end test files share: the binary under test, the fixtures, the outputs of a
//! run. Every test file is a crate of its own and uses only some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The `pooltag` binary, without the `POOLTAG_DB` of whoever runs the tests.
pub fn pooltag() -> Command {
    let mut cmd = Command::cargo_bin("pooltag").unwrap();
    cmd.env_remove("POOLTAG_DB");
    cmd
}

/// A committed fixture binary: `x64-O2/basic.sys` and the like.
pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bin")
        .join(relative)
}

/// The standard output of a run, as text.
pub fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

/// The standard error of a run, as text.
pub fn stderr(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stderr.clone()).unwrap()
}

/// The database of the fixture binaries (`tests/fixtures/bin`) indexed in `dir` with a tag file
/// holding `tag_lines`.
pub fn indexed_fixtures(dir: &Path, tag_lines: &str) -> PathBuf {
    let tags = dir.join("localtag.txt");
    std::fs::write(&tags, tag_lines).unwrap();
    let db = dir.join("pooltag.db");
    pooltag()
        .arg("--db")
        .arg(&db)
        .args(["index", "--pooltag-txt"])
        .arg(&tags)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin"))
        .assert()
        .success();
    db
}
