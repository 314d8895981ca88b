//! `pooltag annotate` over transcripts written from the documented PoolMon, `!poolused` and
//! WPA CSV layouts.

use std::fs;
use std::path::{Path, PathBuf};

mod common;
use common::pooltag;

/// The fixtures indexed with a small tag file.
fn database(dir: &Path) -> PathBuf {
    common::indexed_fixtures(
        dir,
        "1Ba? - basic.sys - Basic fixture tags\nVr01 - versioned.sys - Versioned fixture\n",
    )
}

fn annotate(db: &Path, input: &str, json: bool) -> (String, i32) {
    let mut cmd = pooltag();
    cmd.arg("--db").arg(db).arg("annotate");
    if json {
        cmd.arg("--json");
    }
    let output = cmd.write_stdin(input).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    (
        String::from_utf8(output.stdout).unwrap(),
        output.status.code().unwrap(),
    )
}

const BASIC: &str = "basic.sys (call) x5; Pooltag.txt: basic.sys - Basic fixture tags";
const VERSIONED: &str = "versioned-de.sys (call, pooltag Testdaten), versioned.sys (call, \
     pooltag fixtures); Pooltag.txt: versioned.sys - Versioned fixture";

#[test]
fn poolmon_output_keeps_its_layout() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let input = " Memory: 8388148K Avail: 4126216K  PageFlts:   420   InRam Krnl: 9248K P:259156K\n\
                 \x20Commit:4262912K Limit:12582452K Peak:4426560K            Pool N:155648K P:263264K\n\
                 \n\
                 \x20Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc\n\
                 \n\
                 \x201Ba1 Nonp      1234 (   0)      1200 (   0)     34     5440 (   0)     160\n\
                 \x20Vr01 Paged      900 (   2)       899 (   2)      1      272 (   0)     272\n\
                 \x20Qq9x Nonp         2 (   0)         0 (   0)      2       64 (   0)      32\n";
    let (out, code) = annotate(&db, input, false);
    let lines: Vec<&str> = input.lines().collect();
    let expected = format!(
        "{}\n{}\n\n{}\n\n{}  # {BASIC}\n{}  # {VERSIONED}\n{}  # no driver or Pooltag.txt entry known\n",
        lines[0], lines[1], lines[3], lines[5], lines[6], lines[7]
    );
    assert_eq!(out, expected);
    assert_eq!(code, 0);
}

#[test]
fn poolused_unknown_lines_get_their_answer() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let input = " Sorting by  NonPaged Pool Consumed\n\
                 \n\
                 \x20              NonPaged                  Paged\n\
                 \x20Tag     Allocs         Used     Allocs         Used\n\
                 \n\
                 \x201Ba1         9      5251072          0            0\tUNKNOWN pooltag '1Ba1', please update pooltag.txt\n\
                 \x20TOTAL        9      5251072          0            0\n";
    let (out, _) = annotate(&db, input, false);
    let lines: Vec<&str> = input.lines().collect();
    let expected = format!(
        "{}\n\n{}\n{}\n\n{}  # {BASIC}\n{}\n",
        lines[0], lines[2], lines[3], lines[5], lines[6]
    );
    assert_eq!(out, expected);
}

#[test]
fn csv_and_plain_lists() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let (out, _) = annotate(
        &db,
        "Pool Type,Tag,Size\nNonPaged,Vr01,100\nPaged,,7\n\nPaged,\"Qq9x\",1\n",
        false,
    );
    assert_eq!(
        out,
        format!(
            "Pool Type,Tag,Size,pooltag\nNonPaged,Vr01,100,\"{VERSIONED}\"\nPaged,,7,\n\n\
             Paged,\"Qq9x\",1,\"no driver or Pooltag.txt entry known\"\n"
        )
    );
    let (out, code) = annotate(&db, "0x31614231\nnothing here\n", false);
    assert_eq!(out, format!("0x31614231  # {BASIC}\nnothing here\n"));
    assert_eq!(code, 0);
    let (out, code) = annotate(&db, "Qq9x\n", false);
    assert_eq!(out, "Qq9x  # no driver or Pooltag.txt entry known\n");
    assert_eq!(code, 1);
}

#[test]
fn tab_separated_tables_get_a_tab_separated_column() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let (out, code) = annotate(&db, "Tag\tType\tBytes\r\n1Ba1\tNonp\t160\r\n", false);
    assert_eq!(
        out,
        format!("Tag\tType\tBytes\tpooltag\r\n1Ba1\tNonp\t160\t{BASIC}\r\n")
    );
    assert_eq!(code, 0);
}

#[test]
fn short_words_in_prose_are_not_tags() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let input = "Leak report for the night\nDone\n1Ba1\n0x31614231\n";
    let (out, code) = annotate(&db, input, false);
    assert_eq!(
        out,
        format!("Leak report for the night\nDone\n1Ba1\n0x31614231  # {BASIC}\n")
    );
    assert_eq!(code, 0);
    let (out, _) = annotate(&db, "Done\n1Ba1\n\n", false);
    assert_eq!(
        out,
        format!("Done  # no driver or Pooltag.txt entry known\n1Ba1  # {BASIC}\n\n")
    );
}

#[test]
fn lines_pass_through_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let input: &[u8] = b" Tag  Type     Allocs            Frees\r\n\
                         \x201Ba1 Nonp      1234 (   0)      1200 (   0)\r\n\
                         caf\xe9 \xff\xfe stays\r\n\
                         last line without an end";
    let output = pooltag()
        .arg("--db")
        .arg(&db)
        .arg("annotate")
        .write_stdin(input)
        .output()
        .unwrap();
    let expected = [
        &b" Tag  Type     Allocs            Frees\r\n"[..],
        b" 1Ba1 Nonp      1234 (   0)      1200 (   0)  # ",
        BASIC.as_bytes(),
        b"\r\ncaf\xe9 \xff\xfe stays\r\nlast line without an end\n",
    ]
    .concat();
    assert_eq!(output.stdout, expected);
    assert_eq!(output.status.code(), Some(0));
}

fn utf16le(text: &str) -> Vec<u8> {
    [0xff, 0xfe]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect()
}

#[test]
fn inputs_saved_on_windows_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let expected = format!("1Ba1  # {BASIC}\r\nVr01  # {VERSIONED}\r\n");
    let utf16 = pooltag()
        .arg("--db")
        .arg(&db)
        .arg("annotate")
        .write_stdin(utf16le("1Ba1\r\nVr01\r\n"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(utf16.stdout).unwrap(), expected);
    assert_eq!(utf16.status.code(), Some(0));
    let bom = pooltag()
        .arg("--db")
        .arg(&db)
        .arg("annotate")
        .write_stdin("\u{feff}1Ba1\r\nVr01\r\n")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(bom.stdout).unwrap(),
        format!("\u{feff}{expected}")
    );
}

#[test]
fn each_input_is_annotated_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let first = dir.path().join("first.csv");
    let second = dir.path().join("second.txt");
    // No final newline, and a CSV header: neither may reach into the next input.
    fs::write(&first, "Type,Tag\nPaged,1Ba1").unwrap();
    fs::write(&second, "Vr01\nQq9x\n").unwrap();
    let output = pooltag()
        .arg("--db")
        .arg(&db)
        .arg("annotate")
        .arg(&first)
        .arg("-")
        .arg(&second)
        .write_stdin(utf16le("1Ba1\n"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!(
            "Type,Tag,pooltag\nPaged,1Ba1,\"{BASIC}\"\n1Ba1  # {BASIC}\nVr01  # {VERSIONED}\n\
             Qq9x  # no driver or Pooltag.txt entry known\n"
        )
    );
    let json = pooltag()
        .arg("--db")
        .arg(&db)
        .args(["annotate", "--json"])
        .arg(&first)
        .arg("-")
        .arg(&second)
        .write_stdin("1Ba1\n")
        .output()
        .unwrap();
    let items: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    let places: Vec<(String, u64, String)> = items
        .iter()
        .map(|i| {
            (
                i["input"].as_str().unwrap().to_owned(),
                i["line"].as_u64().unwrap(),
                i["tag"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let (first, second) = (first.display().to_string(), second.display().to_string());
    assert_eq!(
        places,
        vec![
            (first, 2, "1Ba1".to_owned()),
            ("-".to_owned(), 1, "1Ba1".to_owned()),
            (second.clone(), 1, "Vr01".to_owned()),
            (second, 2, "Qq9x".to_owned()),
        ]
    );
}

#[test]
fn json_names_line_tag_drivers_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let (out, _) = annotate(&db, "header\nVr01\n", true);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = value.as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["input"], "-");
    assert_eq!(items[0]["line"], 2);
    assert_eq!(items[0]["tag"], "Vr01");
    assert_eq!(items[0]["drivers"].as_array().unwrap().len(), 2);
    assert_eq!(items[0]["drivers"][1]["company"], "pooltag fixtures");
    assert_eq!(
        items[0]["pooltag"],
        serde_json::json!([{"binary": "versioned.sys", "description": "Versioned fixture"}])
    );
}
