//! `pooltag pool`: `--diff` over PoolMon captures, `!poolused` output and saved snapshots (each
//! written from the documented layouts), against a database of the fixtures; and the live table's
//! one line where the system does not report pool usage.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

mod common;
use common::pooltag;

/// The fixtures indexed with a small tag file.
fn database(dir: &Path) -> PathBuf {
    common::indexed_fixtures(
        dir,
        "1Ba? - basic.sys - Basic fixture tags\nVr01 - versioned.sys - Versioned fixture\n",
    )
}

/// A PoolMon screen: 1Ba1 and Gone in nonpaged pool, Vr01 in paged pool.
const POOLMON: &str = " Memory: 8388148K Avail: 4126216K  PageFlts:   420   InRam Krnl: 9248K P:259156K\n\
    \x20Commit:4262912K Limit:12582452K Peak:4426560K            Pool N:155648K P:263264K\n\
    \n\
    \x20Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc\n\
    \n\
    \x201Ba1 Nonp       100 (   0)        90 (   0)     10     1600 (   0)     160\n\
    \x20Vr01 Paged       10 (   0)         5 (   0)      5      500 (   0)     100\n\
    \x20Gone Nonp         3 (   0)         0 (   0)      3       96 (   0)      32\n";

/// `!poolused` later: 1Ba1 grew, Vr01 shrank, Gone is gone, Qq9x is new.
const POOLUSED: &str = " Sorting by  NonPaged Pool Consumed\n\
    \n\
    \x20              NonPaged                  Paged\n\
    \x20Tag     Allocs         Used     Allocs         Used\n\
    \n\
    \x201Ba1        40         6400          0            0\tUNKNOWN pooltag '1Ba1', please update pooltag.txt\n\
    \x20Vr01         0            0          4          400\tVersioned\n\
    \x20Qq9x         2           64          0            0\n\
    \x20TOTAL       42         6464          4          400\n";

/// A snapshot saved by `pooltag pool --save` with the same counters as [`POOLUSED`].
const SAVED: &str = r#"{"pooltag_snapshot":1,"host":"pc","time":1795651200,"windows":"10.0.22631","tags":[
{"tag":"1Ba1","paged_allocs":0,"paged_frees":0,"paged_bytes":0,"nonpaged_allocs":40,"nonpaged_frees":0,"nonpaged_bytes":6400},
{"tag":"Qq9x","paged_allocs":0,"paged_frees":0,"paged_bytes":0,"nonpaged_allocs":2,"nonpaged_frees":0,"nonpaged_bytes":64},
{"tag":"Vr01","paged_allocs":4,"paged_frees":0,"paged_bytes":400,"nonpaged_allocs":0,"nonpaged_frees":0,"nonpaged_bytes":0}]}
"#;

const HEADER: &str = "Tag   Bytes growth  Outstanding   Bytes after  Driver; Pooltag.txt\n";
const BASIC: &str = "basic.sys (call); Pooltag.txt: basic.sys - Basic fixture tags";
const VERSIONED: &str =
    "versioned-de.sys 1.2.3.4 (call) +1 other; Pooltag.txt: versioned.sys - Versioned fixture";

/// The expected human diff of [`POOLMON`] then [`POOLUSED`] (or [`SAVED`]).
fn grown() -> String {
    format!(
        "{HEADER}\
         1Ba1      +4.7 KiB          +30       6.2 KiB  {BASIC}\n\
         Qq9x         +64 B           +2          64 B  unknown\n\
         Gone         -96 B           -3           0 B  unknown\n\
         Vr01        -100 B           -1         400 B  {VERSIONED}\n"
    )
}

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

/// `pooltag --db DB pool ARGS...` in `dir`, where the snapshot files are.
fn pool(dir: &Path, db: &Path, args: &[&str]) -> Run {
    let output = pooltag()
        .current_dir(dir)
        .arg("--db")
        .arg(db)
        .arg("pool")
        .args(args)
        .output()
        .unwrap();
    Run {
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
        code: output.status.code().unwrap(),
    }
}

/// A folder with the database and the three snapshot files.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    fs::write(dir.path().join("poolmon.txt"), POOLMON).unwrap();
    fs::write(dir.path().join("poolused.txt"), POOLUSED).unwrap();
    fs::write(dir.path().join("saved.json"), SAVED).unwrap();
    (dir, db)
}

#[test]
fn poolmon_then_poolused_names_the_growing_tags_first() {
    let (dir, db) = setup();
    let run = pool(dir.path(), &db, &["--diff", "poolmon.txt", "poolused.txt"]);
    assert_eq!(run.stderr, "");
    assert_eq!(run.stdout, grown());
    assert_eq!(run.code, 0);
}

#[test]
fn a_saved_snapshot_reads_like_the_capture_it_matches() {
    let (dir, db) = setup();
    let run = pool(dir.path(), &db, &["--diff", "poolmon.txt", "saved.json"]);
    assert_eq!(
        (run.stdout, run.stderr.as_str(), run.code),
        (grown(), "", 0)
    );
    // The other way round: every growth is a shrink, so the order reverses (ties by tag).
    let run = pool(dir.path(), &db, &["--diff", "saved.json", "poolmon.txt"]);
    assert_eq!(
        run.stdout,
        format!(
            "{HEADER}\
             Vr01        +100 B           +1         500 B  {VERSIONED}\n\
             Gone         +96 B           +3          96 B  unknown\n\
             Qq9x         -64 B           -2           0 B  unknown\n\
             1Ba1      -4.7 KiB          -30       1.6 KiB  {BASIC}\n"
        )
    );
    // Two snapshots of the same counters: nothing grew, every tag is still listed, by tag.
    let run = pool(dir.path(), &db, &["--diff", "poolused.txt", "saved.json"]);
    assert_eq!(
        run.stdout,
        format!(
            "{HEADER}\
             1Ba1           0 B            0       6.2 KiB  {BASIC}\n\
             Qq9x           0 B            0          64 B  unknown\n\
             Vr01           0 B            0         400 B  {VERSIONED}\n"
        )
    );
    assert_eq!(run.code, 0);
}

#[test]
fn top_keeps_the_largest_growth() {
    let (dir, db) = setup();
    let run = pool(
        dir.path(),
        &db,
        &["--diff", "poolmon.txt", "poolused.txt", "--top", "1"],
    );
    assert_eq!(
        run.stdout,
        format!("{HEADER}1Ba1      +4.7 KiB          +30       6.2 KiB  {BASIC}\n")
    );
}

#[test]
fn json_without_a_database_is_exact_and_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("poolmon.txt"), POOLMON).unwrap();
    fs::write(dir.path().join("saved.json"), SAVED).unwrap();
    let run = pool(
        dir.path(),
        Path::new("none.db"),
        &[
            "--diff",
            "poolmon.txt",
            "saved.json",
            "--json",
            "--top",
            "2",
        ],
    );
    assert_eq!(
        run.stderr,
        "pooltag: no database at none.db; tags are shown without their drivers \
         (run 'pooltag index ROOT...' to name them)\n"
    );
    let zero = r#"{"allocs_before":0,"allocs_after":0,"frees_before":0,"frees_after":0,"bytes_before":0,"bytes_after":0,"bytes_delta":0,"outstanding_before":0,"outstanding_after":0,"outstanding_delta":0}"#;
    let expected = format!(
        concat!(
            r#"[{{"tag":"1Ba1","bytes_before":1600,"bytes_after":6400,"bytes_delta":4800,"#,
            r#""outstanding_before":10,"outstanding_after":40,"outstanding_delta":30,"#,
            r#""paged":{zero},"#,
            r#""nonpaged":{{"allocs_before":100,"allocs_after":40,"frees_before":90,"frees_after":0,"#,
            r#""bytes_before":1600,"bytes_after":6400,"bytes_delta":4800,"#,
            r#""outstanding_before":10,"outstanding_after":40,"outstanding_delta":30}},"#,
            r#""drivers":[],"entries":[]}},"#,
            r#"{{"tag":"Qq9x","bytes_before":0,"bytes_after":64,"bytes_delta":64,"#,
            r#""outstanding_before":0,"outstanding_after":2,"outstanding_delta":2,"#,
            r#""paged":{zero},"#,
            r#""nonpaged":{{"allocs_before":0,"allocs_after":2,"frees_before":0,"frees_after":0,"#,
            r#""bytes_before":0,"bytes_after":64,"bytes_delta":64,"#,
            r#""outstanding_before":0,"outstanding_after":2,"outstanding_delta":2}},"#,
            r#""drivers":[],"entries":[]}}]"#,
            "\n"
        ),
        zero = zero
    );
    assert_eq!(run.stdout, expected);
    assert_eq!(run.code, 0);
}

/// `query --json TAG`'s elements of one kind.
fn query_elements(db: &Path, tag: &str, kind: &str) -> Vec<Value> {
    let output = pooltag()
        .arg("--db")
        .arg(db)
        .args(["query", "--json", tag])
        .output()
        .unwrap();
    let all: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    all.into_iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn json_drivers_and_entries_are_the_query_objects() {
    let (dir, db) = setup();
    let run = pool(
        dir.path(),
        &db,
        &["--diff", "poolmon.txt", "poolused.txt", "--json"],
    );
    assert_eq!((run.stderr.as_str(), run.code), ("", 0));
    let items: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    let tags: Vec<&str> = items.iter().map(|i| i["tag"].as_str().unwrap()).collect();
    assert_eq!(tags, ["1Ba1", "Qq9x", "Gone", "Vr01"]);
    for item in &items {
        let tag = item["tag"].as_str().unwrap();
        assert_eq!(
            item["drivers"],
            Value::Array(query_elements(&db, tag, "file")),
            "{tag}"
        );
        assert_eq!(
            item["entries"],
            Value::Array(query_elements(&db, tag, "pooltag")),
            "{tag}"
        );
    }
    assert_eq!(items[0]["drivers"].as_array().unwrap().len(), 5);
    assert_eq!(items[1]["drivers"], json!([]));
    assert_eq!(items[1]["entries"], json!([]));
    let vr01 = &items[3];
    assert_eq!(
        (
            &vr01["bytes_before"],
            &vr01["bytes_after"],
            &vr01["bytes_delta"]
        ),
        (&json!(500), &json!(400), &json!(-100))
    );
    assert_eq!(vr01["paged"]["frees_before"], 5);
    assert_eq!(vr01["paged"]["outstanding_delta"], -1);
    assert_eq!(vr01["drivers"][1]["company"], "pooltag fixtures");
}

#[test]
fn unreadable_lines_are_named_and_skipped() {
    let (dir, db) = setup();
    let broken = POOLMON.replace("  10 (   0)         5", "  1O (   0)         5");
    fs::write(dir.path().join("broken.txt"), broken).unwrap();
    let run = pool(dir.path(), &db, &["--diff", "broken.txt", "poolused.txt"]);
    assert_eq!(
        run.stderr,
        "pooltag: broken.txt:7: 'Vr01': no Allocs, Frees, Diff and Bytes numbers; line skipped\n"
    );
    // Vr01 now counts as absent before: it grew by its 400 bytes.
    assert!(
        run.stdout.contains(&format!(
            "Vr01        +400 B           +4         400 B  {VERSIONED}\n"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(run.code, 0);
}

#[test]
fn empty_snapshots_find_nothing_and_bad_files_are_errors() {
    let (dir, db) = setup();
    fs::write(
        dir.path().join("empty.txt"),
        " Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc\n",
    )
    .unwrap();
    let run = pool(dir.path(), &db, &["--diff", "empty.txt", "empty.txt"]);
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str(), run.code),
        (HEADER, "", 1)
    );

    fs::write(dir.path().join("notes.txt"), "nothing to see\n").unwrap();
    let run = pool(dir.path(), &db, &["--diff", "poolmon.txt", "notes.txt"]);
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str(), run.code),
        (
            "",
            "pooltag: notes.txt: not a pooltag snapshot, PoolMon capture or !poolused output \
             (no 'Tag Type Allocs Frees' or 'Tag Allocs Used' header)\n",
            2
        )
    );

    fs::write(
        dir.path().join("bad.json"),
        "{\"pooltag_snapshot\": 2, \"tags\": []}",
    )
    .unwrap();
    let run = pool(dir.path(), &db, &["--diff", "bad.json", "poolmon.txt"]);
    assert_eq!(
        (run.stderr.as_str(), run.code),
        (
            "pooltag: bad.json: a pooltag snapshot of version 2, this pooltag reads version 1\n",
            2
        )
    );

    let run = pool(dir.path(), &db, &["--diff", "poolmon.txt", "missing.txt"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with("pooltag: missing.txt: "),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1);
}

#[test]
fn options_that_do_not_go_together_are_usage_errors() {
    let (dir, db) = setup();
    for (args, message) in [
        (
            &["--diff", "a", "b", "--sort", "tag"][..],
            "pooltag: the argument '--diff <BEFORE> <AFTER>' cannot be used with '--sort <KEY>'\n",
        ),
        (
            &["--sort", "size"][..],
            "pooltag: invalid value 'size' for '--sort <KEY>': unknown sort key 'size' (use \
             bytes, outstanding, allocs or tag)\n",
        ),
        (
            &["--watch", "0"][..],
            "pooltag: invalid value '0' for '--watch [<SECONDS>]': invalid interval '0' (use \
             seconds, more than 0 and at most 86400)\n",
        ),
        (
            &["--diff", "a"][..],
            "pooltag: 2 values required for '--diff <BEFORE> <AFTER>' but 1 was provided\n",
        ),
    ] {
        let run = pool(dir.path(), &db, args);
        assert_eq!((run.stderr.as_str(), run.code), (message, 2), "{args:?}");
    }
}

/// Only Windows reports pool usage: every live mode says so in one line and names --diff.
#[cfg(not(windows))]
#[test]
fn the_live_table_needs_windows() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[][..],
        &["--json"][..],
        &["--watch"][..],
        &["--save", "snap.json"][..],
    ] {
        let run = pool(dir.path(), Path::new("none.db"), args);
        assert_eq!(
            (run.stdout.as_str(), run.stderr.as_str(), run.code),
            (
                "",
                "pooltag: this system does not report pool usage (only Windows does); read \
                 snapshots taken elsewhere with 'pooltag pool --diff BEFORE AFTER'\n",
                2
            ),
            "{args:?}"
        );
    }
    assert!(!dir.path().join("snap.json").exists());
}
