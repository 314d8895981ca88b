//! The outputs of the read commands on the fixtures, byte for byte, against the outputs
//! committed under tests/golden/ (made by a pooltag whose read side did not yet stream its
//! answers, with the analysis of function summaries; the outputs of the streaming build were
//! compared with it on 29 commands, every one byte-identical): `query --json`, `-l` and human,
//! `tags` and `export`. The largest ones
//! (every pair at the bytes level, over 100 KB each) are kept as their SHA-256 and length.
//!
//! Paths are indexed under this repository's folder, which differs between checkouts: outputs
//! are compared with that folder written `$ROOT`. `POOLTAG_BLESS=1 cargo test --test golden`
//! rewrites the committed files from the current binary (only when an output is meant to change).
//! Damage met halfway through a streamed answer is an error naming the file.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use sha2::Digest;

/// (name, arguments, exit status): each output is compared with tests/golden/NAME.out.
const SHOWN: &[(&str, &[&str], i32)] = &[
    ("query-json-1Ba2", &["query", "--json", "1Ba2"], 0),
    ("query-json-1star", &["query", "--json", "1*"], 0),
    ("query-json-anyBa", &["query", "--json", "?Ba?"], 0),
    ("query-json-two", &["query", "--json", "7Rt1", "Vr01"], 0),
    ("query-json-absent", &["query", "--json", "Zq9!"], 1),
    (
        "query-json-weaker",
        &["query", "--json", "--evidence", "call", "7Dmg"],
        1,
    ),
    (
        "query-json-all-data",
        &["query", "--json", "--all", "--evidence", "data", "*"],
        0,
    ),
    ("query-list-all", &["query", "-l", "--all", "*"], 0),
    ("query-list-1star", &["query", "-l", "1*"], 0),
    (
        "query-list-call",
        &["query", "-l", "--evidence", "call", "1Ba?"],
        0,
    ),
    ("query-list-absent", &["query", "-l", "Zq9!"], 1),
    ("query-human-1star", &["query", "1*"], 0),
    (
        "query-human-weaker",
        &["query", "--evidence", "call", "7Dmg"],
        1,
    ),
    (
        "query-human-all-data",
        &["query", "--all", "--evidence", "data", "*"],
        0,
    ),
    (
        "tags-json-basic",
        &["tags", "--json", "x64-O2/basic.sys"],
        0,
    ),
    ("tags-human-basic", &["tags", "x64-O2/basic.sys"], 0),
    (
        "tags-human-bytes",
        &["tags", "--evidence", "bytes", "x64-O2/basic.sys"],
        0,
    ),
    (
        "tags-human-two",
        &["tags", "arm64-O2/table.sys", "x86-O0/cond.sys"],
        0,
    ),
    ("export-json", &["export", "--format", "json"], 0),
    (
        "export-csv-data",
        &["export", "--format", "csv", "--evidence", "data"],
        0,
    ),
    (
        "export-localtag-data",
        &["export", "--format", "localtag", "--evidence", "data"],
        0,
    ),
];

/// (name, arguments): outputs too large to commit, compared by the SHA-256 and length listed in
/// tests/golden/digests.txt.
const DIGESTED: &[(&str, &[&str])] = &[
    ("query-json-all", &["query", "--json", "--all", "*"]),
    ("query-human-all", &["query", "--all", "*"]),
    (
        "query-human-all-bytes",
        &["query", "--all", "--evidence", "bytes", "*"],
    ),
    (
        "export-json-bytes",
        &["export", "--format", "json", "--evidence", "bytes"],
    ),
    (
        "export-csv-bytes",
        &["export", "--format", "csv", "--evidence", "bytes"],
    ),
    (
        "tags-json-bytes",
        &[
            "tags",
            "--json",
            "--evidence",
            "bytes",
            "x64-O0/wrapper.sys",
        ],
    ),
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn golden(name: &str) -> PathBuf {
    repo().join("tests/golden").join(name)
}

/// The fixtures indexed under host `golden` with tests/golden/localtag.txt.
fn index(db: &Path) {
    Command::cargo_bin("pooltag")
        .unwrap()
        .env_remove("POOLTAG_DB")
        .arg("--db")
        .arg(db)
        .args(["index", "--host", "golden", "--pooltag-txt"])
        .arg(golden("localtag.txt"))
        .arg(repo().join("tests/fixtures/bin"))
        .assert()
        .success();
}

/// The standard output of `pooltag --db DB ARGS`, with this checkout's folder written `$ROOT`.
fn output(db: &Path, args: &[&str], status: i32) -> String {
    let run = Command::cargo_bin("pooltag")
        .unwrap()
        .env_remove("POOLTAG_DB")
        .env("NO_COLOR", "1")
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(status), "{args:?}");
    let text = String::from_utf8(run.stdout).unwrap();
    text.replace(repo().to_str().unwrap(), "$ROOT")
}

fn digest(text: &str) -> String {
    let hex: String = sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{hex} {}", text.len())
}

#[test]
fn read_commands_print_the_committed_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pooltag.db");
    index(&db);
    let bless = std::env::var_os("POOLTAG_BLESS").is_some();
    for (name, args, status) in SHOWN {
        let found = output(&db, args, *status);
        let file = golden(&format!("{name}.out"));
        if bless {
            std::fs::write(&file, &found).unwrap();
        }
        let expected = std::fs::read_to_string(&file).unwrap();
        assert!(
            found == expected,
            "{name}: pooltag {args:?} differs from {file:?}"
        );
    }
    let mut digests = String::new();
    for (name, args) in DIGESTED {
        digests.push_str(&format!("{name} {}\n", digest(&output(&db, args, 0))));
    }
    let file = golden("digests.txt");
    if bless {
        std::fs::write(&file, &digests).unwrap();
    }
    assert_eq!(digests, std::fs::read_to_string(&file).unwrap());
}

/// `pooltag --db DB ARGS` ends with exit status 2 and one line saying the database is damaged
/// (`what`).
fn assert_damaged(db: &Path, args: &[&str], what: &str) {
    let run = Command::cargo_bin("pooltag")
        .unwrap()
        .env_remove("POOLTAG_DB")
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8(run.stderr).unwrap();
    assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(
        stderr,
        format!(
            "pooltag: {}: the database is damaged ({what}); rebuild it with 'pooltag index'\n",
            db.display()
        ),
        "{args:?}"
    );
}

/// A damaged posting list, tag list or evidence list met while streaming an answer is an error
/// naming the database, exit status 2, for every read command that reaches it.
#[test]
fn damage_met_while_streaming_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pooltag.db");
    index(&db);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let key = u32::from_be_bytes(*b"1Ba2");
    conn.execute_batch(&format!(
        "UPDATE bytes_posting SET content_ids = x'0180' WHERE tag = {key};
         UPDATE evidence_posting SET entries = x'0180' WHERE tag = {};",
        u32::from_be_bytes(*b"1Ba1")
    ))
    .unwrap();
    // `tags` at the default level reads the content's own evidence list.
    let table: i64 = conn
        .query_row(
            "SELECT content_id FROM file WHERE path LIKE '%x64-O0/table.sys'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let changed = conn
        .execute(
            "UPDATE content_evidence SET entries = x'0180' WHERE content_id = ?1",
            [table],
        )
        .unwrap();
    assert_eq!(changed, 1);
    // `tags` reads the content's own list of its tags.
    let basic: i64 = conn
        .query_row(
            "SELECT content_id FROM file WHERE path LIKE '%x64-O2/basic.sys'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "UPDATE content_bytes SET tags = x'0180' WHERE content_id = ?1",
        [basic],
    )
    .unwrap();
    drop(conn);
    let basic_list = format!("the tag list of content {basic}");
    let table_list = format!("the evidence list of content {table}");
    for (args, what) in [
        (
            &["query", "--json", "1Ba2"][..],
            "the content list of tag 1Ba2",
        ),
        (&["query", "-l", "1Ba2"], "the content list of tag 1Ba2"),
        (&["query", "1Ba2"], "the content list of tag 1Ba2"),
        (
            &["query", "--json", "1Ba1"],
            "the evidence list of tag 1Ba1",
        ),
        (&["query", "1Ba1"], "the evidence list of tag 1Ba1"),
        (
            &["export", "--format", "csv"],
            "the evidence list of tag 1Ba1",
        ),
        (&["tags", "x64-O0/table.sys"], table_list.as_str()),
        (
            &["tags", "--evidence", "bytes", "x64-O2/basic.sys"],
            basic_list.as_str(),
        ),
    ] {
        assert_damaged(&db, args, what);
    }
}

/// Evidence lists that decode but name what is not there (a tag key beyond 32 bits, a content no
/// file holds) are damage too: an error naming the database, exit 2.
#[test]
fn evidence_naming_what_is_not_there_is_an_error_naming_the_file() {
    use pooltag::store::postings;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pooltag.db");
    index(&db);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let table: i64 = conn
        .query_row(
            "SELECT content_id FROM file WHERE path LIKE '%x64-O0/table.sys'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let list = |entry: i64| {
        let mut blob = Vec::new();
        postings::encode(&[entry], &mut blob).unwrap();
        blob
    };
    // A `code` entry for the tag key 2^32, and a `code` entry for content 99999.
    let changed = conn
        .execute(
            "UPDATE content_evidence SET entries = ?1 WHERE content_id = ?2",
            rusqlite::params![list((1 << 32) * 4 + 1), table],
        )
        .unwrap()
        + conn
            .execute(
                "UPDATE evidence_posting SET entries = ?1 WHERE tag = ?2",
                rusqlite::params![list(99_999 * 4 + 1), u32::from_be_bytes(*b"1Ba1")],
            )
            .unwrap();
    assert_eq!(changed, 2);
    drop(conn);
    for (args, what) in [
        (&["tags", "x64-O0/table.sys"][..], "a tag key out of range"),
        (
            &["query", "--json", "1Ba1"],
            "a tag names content 99999, which no file holds",
        ),
    ] {
        assert_damaged(&db, args, what);
    }
}
