//! Trust across runs, locales and inputs: file names of any script or encoding, answers that
//! stay right after re-indexing, merging and exporting (issue "Trustworthy across runs").

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bin")
        .join(relative)
}

fn pooltag() -> Command {
    let mut cmd = Command::cargo_bin("pooltag").unwrap();
    cmd.env_remove("POOLTAG_DB");
    cmd
}

fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

fn stderr(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stderr.clone()).unwrap()
}

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
