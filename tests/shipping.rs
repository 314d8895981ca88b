//! A database that travels: info, merge, export, and opening files that came from elsewhere.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

mod common;
use common::{pooltag, stderr, stdout};

fn fixtures(build: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bin")
        .join(build)
}

/// Indexes `roots` as `host` into `db`.
fn index(db: &Path, host: &str, roots: &[PathBuf]) {
    pooltag()
        .arg("--db")
        .arg(db)
        .args(["index", "--host", host])
        .args(roots)
        .assert()
        .success();
}

/// Every (tag, file) pair of a database at every level, as CSV: what a database says.
fn dump(db: &Path) -> String {
    stdout(
        &pooltag()
            .arg("--db")
            .arg(db)
            .args(["export", "--format", "csv", "--evidence", "bytes"])
            .assert()
            .success(),
    )
}

/// Two hosts: alpha indexed x64-O2, beta x64-O2 and x86-O2, with a tag file each.
fn two_hosts(dir: &TempDir) -> (PathBuf, PathBuf) {
    let tags = dir.path().join("tags");
    fs::create_dir(&tags).unwrap();
    fs::write(
        tags.join("localtag.txt"),
        "1Ba1 - basic.sys - Basic fixture first buffer\n",
    )
    .unwrap();
    let alpha = dir.path().join("alpha.db");
    let beta = dir.path().join("beta.db");
    index(&alpha, "alpha", &[fixtures("x64-O2"), tags.clone()]);
    index(
        &beta,
        "beta",
        &[fixtures("x64-O2"), fixtures("x86-O2"), tags],
    );
    (alpha, beta)
}

#[test]
fn merge_keeps_files_per_host_and_shares_contents() {
    let dir = tempfile::tempdir().unwrap();
    let (alpha, beta) = two_hosts(&dir);
    let all = dir.path().join("all.db");
    let merged = pooltag()
        .arg("--db")
        .arg(&all)
        .arg("merge")
        .arg(&alpha)
        .arg(&beta)
        .assert()
        .success();
    assert!(
        stderr(&merged).starts_with("pooltag: merged 2 databases, hosts alpha, beta, "),
        "{}",
        stderr(&merged)
    );
    let basic = fixtures("x64-O2").join("basic.sys").display().to_string();
    let listed = stdout(
        &pooltag()
            .arg("--db")
            .arg(&all)
            .args(["query", "1Bp2", "--evidence", "call"])
            .assert()
            .success(),
    );
    assert!(
        listed.contains(&format!("  1Bp2  call   alpha: {basic}\n")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("  1Bp2  call   beta: {basic}\n")),
        "{listed}"
    );
    // The same tag line read on both hosts is one entry with both sources.
    assert_eq!(
        listed
            .matches("1Ba1  basic.sys - Basic fixture first buffer")
            .count(),
        0
    );
    let entry = stdout(
        &pooltag()
            .arg("--db")
            .arg(&all)
            .args(["query", "1Ba1"])
            .assert()
            .success(),
    );
    assert_eq!(
        entry
            .matches("  1Ba1  basic.sys - Basic fixture first buffer\n")
            .count(),
        1,
        "{entry}"
    );
    assert!(entry.contains("        alpha: "), "{entry}");
    assert!(entry.contains("        beta: "), "{entry}");

    let conn = rusqlite::Connection::open(&all).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM file"), 14 + 24);
    assert_eq!(count("SELECT count(*) FROM content"), 24);
    assert_eq!(count("SELECT count(*) FROM tag_entry"), 1);
    assert_eq!(count("SELECT count(*) FROM tag_entry_source"), 2);
    assert_eq!(count("SELECT count(*) FROM run"), 2);
    assert_eq!(count("SELECT count(*) FROM pragma_foreign_key_check"), 0);
}

#[test]
fn merging_twice_or_into_itself_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (alpha, beta) = two_hosts(&dir);
    let all = dir.path().join("all.db");
    let merge = |inputs: &[&Path]| {
        pooltag()
            .arg("--db")
            .arg(&all)
            .arg("merge")
            .args(inputs)
            .assert()
            .success();
    };
    merge(&[&alpha, &beta]);
    let once = dump(&all);
    assert!(once.lines().count() > 1000);
    merge(&[&alpha, &beta]);
    assert_eq!(dump(&all), once);
    merge(&[&all]);
    assert_eq!(dump(&all), once);
    merge(&[&beta]);
    assert_eq!(dump(&all), once);
}

#[test]
fn index_on_one_host_keeps_the_others_files() {
    let dir = tempfile::tempdir().unwrap();
    let (alpha, beta) = two_hosts(&dir);
    let all = dir.path().join("all.db");
    pooltag()
        .arg("--db")
        .arg(&all)
        .args(["merge"])
        .arg(&alpha)
        .arg(&beta)
        .assert()
        .success();
    // alpha now indexes x86-O0: its x64-O2 files outside that root stay, and so do beta's.
    index(&all, "alpha", &[fixtures("x86-O0")]);
    let per_host = |all: &Path| -> Vec<(String, i64)> {
        let conn = rusqlite::Connection::open(all).unwrap();
        conn.prepare("SELECT host, count(*) FROM file GROUP BY host ORDER BY host")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(
        per_host(&all),
        vec![("alpha".into(), 24), ("beta".into(), 24)]
    );
    // With --prune, only what that run found: alpha's x64-O2 files go, beta's stay.
    pooltag()
        .arg("--db")
        .arg(&all)
        .args(["index", "--prune", "--host", "alpha"])
        .arg(fixtures("x86-O0"))
        .assert()
        .success();
    let hosts = stdout(
        &pooltag()
            .arg("--db")
            .arg(&all)
            .args(["query", "-l", "1Ba1", "--evidence", "call"])
            .assert()
            .success(),
    );
    assert_eq!(hosts.lines().count(), 3, "{hosts}");
    assert_eq!(
        per_host(&all),
        vec![("alpha".into(), 10), ("beta".into(), 24)]
    );
    let conn = rusqlite::Connection::open(&all).unwrap();
    let broken: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(broken, 0);
}

#[test]
fn info_reports_hosts_counts_and_integrity() {
    let dir = tempfile::tempdir().unwrap();
    let (_, beta) = two_hosts(&dir);
    let text = stdout(
        &pooltag()
            .arg("--db")
            .arg(&beta)
            .arg("info")
            .assert()
            .success(),
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("pooltag database {}", beta.display()));
    assert!(
        lines[1].ends_with(", schema 5, integrity ok"),
        "{}",
        lines[1]
    );
    assert!(text.contains("\n    beta, "), "{text}");
    assert!(
        text.contains("\n      25 files seen, 24 driver binaries, 0 errors\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\n  24 files, 24 distinct contents\n  contents by analysis: {}:code 24\n",
            pooltag::extract::ANALYSIS_VERSION
        )),
        "{text}"
    );
    assert!(
        text.contains("\n  files by machine: x64 14, x86 10\n"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(
        &pooltag()
            .arg("--db")
            .arg(&beta)
            .args(["info", "--json"])
            .assert()
            .success(),
    ))
    .unwrap();
    assert_eq!(json["schema"], pooltag::store::SCHEMA_VERSION);
    assert_eq!(json["integrity"], "ok");
    assert_eq!(
        json["analyses"],
        serde_json::json!({ format!("{}:code", pooltag::extract::ANALYSIS_VERSION): 24 })
    );
    assert_eq!(json["files"], 24);
    assert_eq!(json["machines"], serde_json::json!({"x64": 14, "x86": 10}));
    assert_eq!(json["runs"][0]["host"], "beta");
    assert_eq!(json["tag_files"][0]["entries"], 1);
    assert!(json["tags"]["call"].as_i64().unwrap() > 20);
}

#[test]
fn localtag_export_reads_back_and_uses_pooltag_descriptions() {
    let dir = tempfile::tempdir().unwrap();
    let (_, beta) = two_hosts(&dir);
    let written = dir.path().join("localtag.txt");
    pooltag()
        .arg("--db")
        .arg(&beta)
        .args(["export", "--format", "localtag", "-o"])
        .arg(&written)
        .assert()
        .success()
        .stdout("");
    let text = fs::read_to_string(&written).unwrap();
    assert!(
        text.contains("\n1Ba1 - basic.sys - Basic fixture first buffer\n"),
        "{text}"
    );
    assert!(text.contains("\n1Bp2 - basic.sys - found by pooltag (call: ExAllocatePool2)\n"));
    let parsed = pooltag::tagfile::parse(text.as_bytes());
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    assert_eq!(parsed.entries.len(), text.lines().count() - 1);
    // Every (tag, driver name) at call level, once.
    let listed: Vec<String> = parsed
        .entries
        .iter()
        .map(|e| format!("{} {}", e.tag, e.binary))
        .collect();
    assert!(listed.contains(&"4Wi1 wrapper.sys".to_owned()));
    // A tag passed to the driver's own allocation wrapper is a call of the API.
    assert!(listed.contains(&"4Wr1 wrapper.sys".to_owned()));
    assert!(
        !listed.iter().any(|l| l.starts_with("7Dmg")),
        "code level is not exported"
    );
    let mut unique = listed.clone();
    unique.dedup();
    assert_eq!(unique, listed);
}

#[test]
fn csv_export_has_a_header_and_a_row_per_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (alpha, _) = two_hosts(&dir);
    let csv = stdout(
        &pooltag()
            .arg("--db")
            .arg(&alpha)
            .args(["export", "--format", "csv"])
            .assert()
            .success(),
    );
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("tag,evidence,host,path,sha256,machine,company,description,version,apis")
    );
    let versioned = fixtures("x64-O2")
        .join("versioned.sys")
        .display()
        .to_string();
    assert!(
        csv.lines().any(|l| l.starts_with(&format!("Vr01,call,alpha,{versioned},"))
            && l.ends_with(",x64,pooltag fixtures,Versioned fixture driver,1.2.3.4,ExAllocatePoolWithTag;ExFreePoolWithTag")),
        "{csv}"
    );
    let refused = pooltag()
        .arg("--db")
        .arg(&alpha)
        .args(["export", "--format", "xml"])
        .assert()
        .code(2);
    assert!(stderr(&refused).contains(
        "invalid value 'xml' for '--format <FORMAT>': unknown format 'xml' (use localtag, csv or json)"
    ));
}

/// A database tampered with after pooltag wrote it is refused before anything is read.
#[test]
fn tampered_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (alpha, _) = two_hosts(&dir);
    let copy = |name: &str| {
        let path = dir.path().join(name);
        fs::copy(&alpha, &path).unwrap();
        path
    };
    let query = |db: &Path| {
        pooltag()
            .arg("--db")
            .arg(db)
            .args(["query", "1Ba1"])
            .assert()
            .code(2)
            .stdout("")
    };
    let trigger = copy("trigger.db");
    rusqlite::Connection::open(&trigger)
        .unwrap()
        .execute_batch("CREATE TRIGGER evil AFTER INSERT ON file BEGIN DELETE FROM content; END;")
        .unwrap();
    query(&trigger).stderr(format!(
        "pooltag: {}: not a pooltag database as pooltag writes it: it holds trigger 'evil', \
         which pooltag did not create\n",
        trigger.display()
    ));
    let view = copy("view.db");
    rusqlite::Connection::open(&view)
        .unwrap()
        .execute_batch("CREATE VIEW v AS SELECT 1;")
        .unwrap();
    query(&view).stderr(format!(
        "pooltag: {}: not a pooltag database as pooltag writes it: it holds view 'v', which \
         pooltag did not create\n",
        view.display()
    ));
    let other = copy("other-app.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .pragma_update(None, "application_id", 7)
        .unwrap();
    query(&other).stderr(format!(
        "pooltag: {}: not a pooltag database (an SQLite file of another application)\n",
        other.display()
    ));
    let truncated = copy("truncated.db");
    let bytes = fs::read(&truncated).unwrap();
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let message = stderr(&query(&truncated));
    assert!(
        message.starts_with(&format!(
            "pooltag: {}: the database is truncated (",
            truncated.display()
        )),
        "{message}"
    );
    // Info's integrity check finds damage inside a page.
    let damaged = copy("damaged.db");
    let mut bytes = fs::read(&damaged).unwrap();
    let page = 4096;
    for b in &mut bytes[3 * page + 100..3 * page + 400] {
        *b = 0xa5;
    }
    fs::write(&damaged, &bytes).unwrap();
    let info = pooltag().arg("--db").arg(&damaged).arg("info").assert();
    let shown = format!("{}{}", stdout(&info), stderr(&info));
    assert!(
        shown.contains("damaged") || shown.contains("malformed"),
        "{shown}"
    );
}

/// A database on a read-only share, read by someone who may not write there: nothing is
/// created beside it.
#[cfg(unix)]
#[test]
fn a_read_only_copy_is_queried_without_writing_anything() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (alpha, _) = two_hosts(&dir);
    let share = dir.path().join("share");
    fs::create_dir(&share).unwrap();
    let db = share.join("pooltag.db");
    fs::copy(&alpha, &db).unwrap();
    fs::set_permissions(&db, fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(&share, fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let expected = stdout(
        &pooltag()
            .arg("--db")
            .arg(&alpha)
            .args(["query", "--json", "1B*"])
            .assert()
            .success(),
    );
    // A copy the other user can run, wherever the build tree lives.
    let binary = dir.path().join("pooltag");
    fs::copy(assert_cmd::cargo::cargo_bin("pooltag"), &binary).unwrap();
    // As an unprivileged user when the tests run as root (setpriv ships with util-linux).
    let as_nobody = std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        == b"0\n"
        && Path::new("/usr/bin/setpriv").exists();
    let mut command = if as_nobody {
        let mut c = std::process::Command::new("/usr/bin/setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary);
        c
    } else {
        std::process::Command::new(&binary)
    };
    let output = command
        .arg("--db")
        .arg(&db)
        .args(["query", "--json", "1B*"])
        .env_remove("POOLTAG_DB")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "as nobody: {as_nobody}"
    );
    assert_eq!(String::from_utf8(output.stdout).unwrap(), expected);
    let names: Vec<String> = fs::read_dir(&share)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["pooltag.db".to_owned()]);
    fs::set_permissions(&share, fs::Permissions::from_mode(0o755)).unwrap();
}
