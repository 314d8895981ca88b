//! The index run called as a library: what the command line cannot choose.

use std::path::Path;

use pooltag::index::{IndexConfig, run};
use pooltag::query::{Scope, find_files};
use pooltag::store::Database;
use pooltag::tag::TagPattern;

fn config(db: &Path, pair_budget: usize) -> IndexConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin");
    IndexConfig {
        db: db.to_owned(),
        roots: vec![(root.display().to_string(), root)],
        tag_files: Vec::new(),
        progress: false,
        analyse_code: true,
        pair_budget,
        full: true,
        prune: false,
        verbose: false,
        host: "tests".to_owned(),
    }
}

/// A budget of a few hundred pairs spills dozens of segments to disk and merges them: the answers
/// are those of a run that kept everything in memory, for every tag of the index.
#[test]
fn spilled_segments_merge_into_the_same_index() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.db");
    let spilled = dir.path().join("spilled.db");
    let a = run(&config(&whole, usize::MAX)).unwrap();
    let b = run(&config(&spilled, 300)).unwrap();
    assert_eq!(
        (a.drivers_indexed, a.distinct_tags),
        (b.drivers_indexed, b.distinct_tags)
    );
    let (whole, spilled) = (
        Database::open(&whole).unwrap(),
        Database::open(&spilled).unwrap(),
    );
    let every = [TagPattern::parse("*").unwrap()];
    let scope = Scope::AtLeast(pooltag::extract::Evidence::Bytes);
    // Content ids depend on the order workers finish in; compare what a user sees.
    let seen = |db: &Database| -> Vec<String> {
        find_files(db, &every, false, scope)
            .unwrap()
            .into_iter()
            .map(|m| format!("{} {} {:?} {:?}", m.tag, m.file.path, m.evidence, m.sites))
            .collect()
    };
    let all = seen(&whole);
    assert!(all.len() > 5000, "{}", all.len());
    let other = seen(&spilled);
    assert_eq!(all.len(), other.len());
    if let Some(i) = (0..all.len()).find(|&i| all[i] != other[i]) {
        panic!("first difference: {} / {}", all[i], other[i]);
    }
}
