//! Turns data/pool_apis.tsv, the table of tag-taking APIs, into a Rust table at build time, so
//! the domain data stays in data/ and a malformed row fails the build, not a run.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let source = "data/pool_apis.tsv";
    println!("cargo::rerun-if-changed={source}");
    let text = std::fs::read_to_string(source).expect("read data/pool_apis.tsv");
    let mut rows = String::new();
    let mut seen_header = false;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !seen_header {
            seen_header = true;
            assert_eq!(
                line, "name\tmodule\ttag_arg\trole\tx86_tag",
                "{source}:{number}: header"
            );
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, module, tag_arg, role, x86_tag] = fields[..] else {
            panic!("{source}:{number}: expected 5 tab-separated fields");
        };
        let role = match role {
            "alloc" => "Alloc",
            "free" => "Free",
            "lookaside" => "Lookaside",
            "reference" => "Reference",
            "other" => "Other",
            "untagged" => "Untagged",
            _ => panic!("{source}:{number}: unknown role {role}"),
        };
        // An untagged allocator has no tag argument; every other row has one.
        let tag = match (role, tag_arg, x86_tag) {
            ("Untagged", "-", "-") => "None".to_owned(),
            ("Untagged", _, _) => {
                panic!("{source}:{number}: an untagged row has - for tag_arg and x86_tag")
            }
            (_, tag_arg, x86_tag) => {
                let tag_arg: u8 = tag_arg
                    .parse()
                    .ok()
                    .filter(|n| (1..=8).contains(n))
                    .unwrap_or_else(|| panic!("{source}:{number}: tag_arg must be 1 to 8"));
                let x86 = match x86_tag.strip_prefix("stack:") {
                    Some(n) => {
                        let n: u8 = n
                            .parse()
                            .ok()
                            .filter(|n| (1..=8).contains(n))
                            .unwrap_or_else(|| {
                                panic!("{source}:{number}: x86_tag stack:N, N 1 to 8")
                            });
                        format!("X86TagPlace::Stack({n})")
                    }
                    None if x86_tag == "edx" => "X86TagPlace::Edx".to_owned(),
                    None => panic!("{source}:{number}: x86_tag must be stack:N or edx"),
                };
                format!("Some(TagArgument {{ number: {tag_arg}, x86: {x86} }})")
            }
        };
        writeln!(
            rows,
            "    PoolApi {{ name: {name:?}, module: {module:?}, role: Role::{role}, tag: {tag} }},"
        )
        .unwrap();
    }
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("pool_apis.rs");
    std::fs::write(
        out,
        format!("pub static POOL_APIS: &[PoolApi] = &[\n{rows}];\n"),
    )
    .expect("write pool_apis.rs");
}
