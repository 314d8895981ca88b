//! Call-site analysis of the fixture drivers, checked against what their sources pass to each
//! API (tests/fixtures/tags.tsv). Where a compiler's output moves a tag away from the call, the
//! deviation is listed here with the reason, not hidden.

use std::collections::BTreeSet;
use std::path::Path;

use pooltag::extract::{Evidence, Findings, analyse};

const DRIVERS: [&str; 12] = [
    "basic",
    "freediff",
    "lookaside",
    "wrapper",
    "cond",
    "table",
    "decoys",
    "fltndis",
    "obref",
    "tailcall",
    "chains",
    "kexport",
];

/// (fixture, tag, role, api, note) rows of tags.tsv.
fn source_rows() -> Vec<(String, String, String, String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tags.tsv");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].into(),
                f[1].into(),
                f[3].into(),
                f[4].into(),
                f.get(6).copied().unwrap_or_default().into(),
            )
        })
        .collect()
}

/// The analysis of a fixture driver: in `bin/`, or in `extra/` (the fixtures added with function
/// summaries and the arm64-O0 builds, kept apart from the files the CLI tests count).
fn findings(build: &str, fixture: &str) -> Findings {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let name = format!("{fixture}.sys");
    let path = ["bin", "extra"]
        .iter()
        .map(|dir| fixtures.join(dir).join(build).join(&name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{build}/{name} in neither bin/ nor extra/"));
    analyse(&std::fs::read(path).unwrap())
}

/// (tag, API, number of wrappers the tag goes through) of the sites at `level`.
fn sites_at(findings: &Findings, level: Evidence) -> BTreeSet<(String, String, usize)> {
    findings
        .sites
        .iter()
        .filter(|s| s.evidence == level)
        .map(|s| {
            let api = s.api.clone().unwrap_or_default();
            (s.tag.to_string(), api, s.via.len())
        })
        .collect()
}

/// What the compilers did differently from "the constant reaches the API" (EXPECTED.md):
/// - wrapper: MyAlloc(size, tag) passes its tag on to ExAllocatePoolWithTag, so 4Wr1..3 are
///   `call` sites through one wrapper in every build; the inlinable helper is inlined at -O2
///   (4Wi1 reaches ExAllocatePoolWithTag directly) and kept at -O0 (through the helper);
/// - cond: the ternary's false arm 5Cb9 is loaded right before the call at -O0; at -O2 the choice
///   is computed arithmetically and the switch reads a table, so no other arm reaches a call;
///   the switch default 5Sdf is the straight-line value where the cases join (each case jumps
///   there with its own tag, so no other case's tag is pinned to the call);
/// - table: the tags are loaded from a const table in .rdata (`data` level); clang -O2 unrolls
///   the ARM64 loop and builds each tag in the register (`call`);
/// - cond on ARM64: `csel` picks the ternary's tag from two registers (-O0 too), and the switch
///   indexes a .rdata table (-O2) or stores each case's tag to a local before the join (-O0: the
///   default case falls through to it), so only the default case's tag 5Sdf reaches the call;
/// - chains: see below.
fn expected_calls(
    build: &str,
    fixture: &str,
    rows: &[(String, String, String, String, String)],
) -> BTreeSet<(String, String, usize)> {
    let optimized = build.ends_with("O2");
    let arm64 = build.starts_with("arm64");
    let mut expected: BTreeSet<(String, String, usize)> = rows
        .iter()
        .filter(|(f, _, _, _, _)| f == fixture)
        .filter_map(|(_, tag, role, api, note)| match role.as_str() {
            // PROTECTED_POOL is cleared: the protected tag 0Pp\xb1 is the tag 0Pp1.
            "api" | "protected" => Some((tag.clone(), api.clone(), 0)),
            "wrapper" => Some((tag.clone(), "ExAllocatePoolWithTag".into(), 1)),
            "inline" => Some((tag.clone(), api.clone(), usize::from(!optimized))),
            // The note names the chain of functions: "First>Second: ...".
            "wrapped" => {
                let chain = note.split(':').next().unwrap_or_default();
                Some((tag.clone(), api.clone(), chain.split('>').count()))
            }
            "untagged" => Some((tag.clone(), api.clone(), 0)),
            _ => None,
        })
        .collect();
    match fixture {
        "cond" => {
            expected.insert(("5Sdf".into(), "ExAllocatePoolWithTag".into(), 0));
            if !optimized && !arm64 {
                expected.insert(("5Cb9".into(), "ExAllocatePoolWithTag".into(), 0));
            }
        }
        "table" if arm64 && optimized => {
            for tag in ["6Tb1", "6Tq7", "6T3Z", "6Tjm"] {
                expected.insert((tag.into(), "ExAllocatePoolWithTag".into(), 0));
            }
        }
        // Chain4d is a lone tail jump through the IAT at -O2 on x64 and ARM64, the shape of
        // an import thunk: a call to it is a call of ExFreePoolWithTag, one wrapper less.
        "chains" if optimized && build != "x86-O2" => {
            for tag in ["Jz41", "Jz42"] {
                expected.remove(&(tag.into(), "ExFreePoolWithTag".into(), 4));
                expected.insert((tag.into(), "ExFreePoolWithTag".into(), 3));
            }
        }
        _ => {}
    }
    expected
}

const BUILDS: [&str; 6] = [
    "x64-O0", "x64-O2", "x86-O0", "x86-O2", "arm64-O0", "arm64-O2",
];

#[test]
fn call_sites_are_exactly_the_sources() {
    let rows = source_rows();
    for build in BUILDS {
        for fixture in DRIVERS {
            let found = sites_at(&findings(build, fixture), Evidence::Call);
            assert_eq!(
                found,
                expected_calls(build, fixture, &rows),
                "{build}/{fixture}.sys"
            );
        }
    }
}

#[test]
fn wrapper_tags_go_through_one_function_and_decoys_never_reach_an_argument() {
    let rows = source_rows();
    for build in BUILDS {
        let wrapper = findings(build, "wrapper");
        // 4Wr1..3 go through the same function, MyAlloc, whatever the call site.
        let via: BTreeSet<&Vec<u32>> = wrapper
            .sites
            .iter()
            .filter(|s| s.tag.to_string().starts_with("4Wr"))
            .map(|s| &s.via)
            .collect();
        assert_eq!(via.len(), 1, "{build}/wrapper.sys: {via:x?}");
        for fixture in DRIVERS {
            let found = findings(build, fixture);
            assert_eq!(
                sites_at(&found, Evidence::Arg),
                BTreeSet::new(),
                "{build}/{fixture}.sys"
            );
            for (f, tag, role, _, _) in &rows {
                if f == fixture && role == "decoy" {
                    let level = found
                        .levels
                        .get(&pooltag::tag::Tag(tag.as_bytes().try_into().unwrap()));
                    assert!(
                        level.is_none_or(|l| *l < Evidence::Arg),
                        "{build}/{fixture}.sys: decoy {tag} at {level:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn table_tags_are_data_and_decoy_immediates_are_code() {
    for build in ["x64-O0", "x64-O2", "x86-O0", "x86-O2", "arm64-O0"] {
        let table = findings(build, "table");
        for tag in ["6Tb1", "6Tq7", "6T3Z", "6Tjm"] {
            let key = pooltag::tag::Tag(tag.as_bytes().try_into().unwrap());
            assert_eq!(
                table.levels.get(&key),
                Some(&Evidence::Data),
                "{build} {tag}"
            );
        }
        let decoys = findings(build, "decoys");
        for tag in ["RIFF", "7Dmg"] {
            let key = pooltag::tag::Tag(tag.as_bytes().try_into().unwrap());
            assert_eq!(
                decoys.levels.get(&key),
                Some(&Evidence::Code),
                "{build} {tag}"
            );
        }
    }
}

/// chains.sys: the tag table between two strings is `data` in every build (the code indexes
/// it), and so are the first two words of the text right after it ("after text\n": nothing
/// tells where the table ends); the FourCCs passed to Trace, which only records them, stay
/// `code`.
#[test]
fn a_table_between_strings_is_data_and_a_traced_fourcc_is_code() {
    for build in BUILDS {
        let chains = findings(build, "chains");
        let level = |tag: &str| {
            let key = pooltag::tag::Tag(tag.as_bytes().try_into().unwrap());
            chains.levels.get(&key).copied()
        };
        for tag in ["JzB1", "JzB2", "JzB3", "JzB4", "afte", "r te"] {
            assert_eq!(level(tag), Some(Evidence::Data), "{build} {tag}");
        }
        for tag in ["JzD1", "JzD2"] {
            assert_eq!(level(tag), Some(Evidence::Code), "{build} {tag}");
        }
    }
}

#[test]
fn call_sites_name_their_section_and_offset() {
    let basic = findings("x64-O2", "basic");
    let first = basic
        .sites
        .iter()
        .find(|s| s.tag.to_string() == "1Bp2")
        .unwrap();
    assert_eq!(
        (
            first.api.as_deref(),
            first.section.as_str(),
            first.offset,
            first.rva
        ),
        (Some("ExAllocatePool2"), ".text", 0x51, 0x1051)
    );
}

#[test]
fn analysing_garbage_finds_nothing_and_never_panics() {
    assert_eq!(analyse(b""), Findings::default());
    assert_eq!(analyse(b"MZ"), Findings::default());
    let mut basic = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin/x64-O2/basic.sys"),
    )
    .unwrap();
    for cut in (0..basic.len()).step_by(97) {
        let _ = analyse(&basic[..cut]);
    }
    // Every byte of the headers and code overwritten in turn.
    for i in (0..basic.len()).step_by(13) {
        let saved = basic[i];
        basic[i] ^= 0xa5;
        let _ = analyse(&basic);
        basic[i] = saved;
    }
}

/// clang never writes these tags' bytes into the ARM64 files (MOVZ/MOVK pairs, values derived
/// with add/orr): only the code analysis finds them.
#[test]
fn arm64_finds_tags_whose_bytes_are_not_in_the_file() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin/arm64-O2/basic.sys");
    let data = std::fs::read(path).unwrap();
    for tag in ["1Ba1", "1Ba2", "1Bp2"] {
        assert!(
            !data.windows(4).any(|w| w == tag.as_bytes()),
            "{tag} is in the file"
        );
        let key = pooltag::tag::Tag(tag.as_bytes().try_into().unwrap());
        assert_eq!(
            analyse(&data).levels.get(&key),
            Some(&Evidence::Call),
            "{tag}"
        );
    }
    let decoys = findings("arm64-O2", "decoys");
    for tag in ["RIFF", "7Dmg"] {
        let key = pooltag::tag::Tag(tag.as_bytes().try_into().unwrap());
        assert_eq!(decoys.levels.get(&key), Some(&Evidence::Code), "{tag}");
    }
}

/// The DDK header directories of mingw-w64, where installed (Debian: mingw-w64-common).
fn ddk_header_dirs() -> Vec<std::path::PathBuf> {
    [
        "/usr/share/mingw-w64/include/ddk",
        "/usr/x86_64-w64-mingw32/include/ddk",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .filter(|d| d.is_dir())
    .collect()
}

/// The text of a C header with comments and preprocessor lines blanked out.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
            out.push(' ');
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The functions a header declares (`...Name(params);`, not typedefs, not bodies) with a ULONG
/// parameter named Tag, PoolTag or AllocateTag.
fn tag_taking_declarations(header: &str) -> Vec<String> {
    let text = without_comments(header);
    let mut found = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if !matches!(c, ';' | '{' | '}') {
            continue;
        }
        let statement = text[start..i].trim();
        start = i + 1;
        if c != ';' || statement.contains("typedef") || !statement.ends_with(')') {
            continue;
        }
        // The last top-level parenthesised group is the parameter list.
        let mut depth = 0;
        let mut open = None;
        for (j, ch) in statement.char_indices().rev() {
            match ch {
                ')' => depth += 1,
                '(' => {
                    depth -= 1;
                    if depth == 0 {
                        open = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(open) = open else { continue };
        let name: String = statement[..open]
            .trim_end()
            .chars()
            .rev()
            .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if name.is_empty() {
            continue;
        }
        let params = &statement[open + 1..statement.len() - 1];
        let mut depth = 0;
        let mut words: Vec<String> = Vec::new();
        let mut word = String::new();
        let mut tagged = false;
        for ch in params.chars().chain([',']) {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth > 0 => {}
                ch if ch.is_ascii_alphanumeric() || ch == '_' => word.push(ch),
                ch => {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    if ch == ',' {
                        let last: Vec<&str> =
                            words.iter().rev().take(2).map(String::as_str).collect();
                        if matches!(last[..], ["Tag" | "PoolTag" | "AllocateTag", "ULONG"]) {
                            tagged = true;
                        }
                        words.clear();
                    }
                }
            }
        }
        if tagged {
            found.push(name);
        }
    }
    found
}

/// Every function mingw-w64's DDK headers declare with a ULONG Tag, PoolTag or AllocateTag
/// parameter is in data/pool_apis.tsv, or named in its comments as left out.
#[test]
fn the_api_table_covers_the_ddk_headers() {
    let dirs = ddk_header_dirs();
    if dirs.is_empty() {
        eprintln!("skipped: no mingw-w64 DDK headers (apt-get install mingw-w64-common)");
        return;
    }
    let table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pool_apis.tsv"))
            .unwrap();
    let comments: String = table.lines().filter(|l| l.starts_with('#')).collect();
    let mut missing = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "h") {
                continue;
            }
            let header = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            for name in tag_taking_declarations(&header) {
                seen.insert(name.clone());
                if pooltag::extract::apis::pool_api(&name).is_none() && !comments.contains(&name) {
                    missing.insert(name);
                }
            }
        }
    }
    for known in [
        "ExAllocatePoolWithTag",
        "ObOpenObjectByPointerWithTag",
        "NdisAllocateGenericObject",
    ] {
        assert!(seen.contains(known), "the parser found {seen:?}");
    }
    assert_eq!(
        missing,
        BTreeSet::new(),
        "tag-taking functions not in data/pool_apis.tsv"
    );
}
