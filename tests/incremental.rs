//! Any sequence of incremental index runs (files added, changed and removed; `--bytes-only` or
//! not; different roots; tag files added, changed and removed) followed by a final run answers
//! exactly what one `--full` run over the same final state answers.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use pooltag::export::{ExportFormat, export};
use pooltag::extract::Evidence;
use pooltag::index::{IndexConfig, run};
use pooltag::store::Database;

/// Driver binaries the files are copies of.
const FIXTURES: [&str; 6] = [
    "x64-O2/basic.sys",
    "x64-O2/wrapper.sys",
    "x86-O2/cond.sys",
    "arm64-O2/table.sys",
    "x64-O0/obref.sys",
    "x86-O0/tailcall.sys",
];

/// Where a file lives: the two roots, and a folder inside the first.
const FOLDERS: [&str; 3] = ["a", "b", "a/sub"];

#[derive(Clone, Debug)]
enum Step {
    /// Writes fixture `.0` at folder `.1`, name `.2` (adds or changes it).
    Write(usize, usize, usize),
    Remove(usize, usize),
    /// A pooltag.txt inside root `a`, with line `.0`, or none.
    InnerTagFile(Option<usize>),
    /// Rewrites the tag file named with --pooltag-txt.
    NamedTagFile(usize),
    /// An index run of these folders, with or without code analysis, pruning or not, spilling
    /// its (tag, content) pairs to segments or keeping them in memory.
    Index(Vec<usize>, bool, bool, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..FIXTURES.len(), 0..FOLDERS.len(), 0..3usize)
            .prop_map(|(f, d, n)| Step::Write(f, d, n)),
        1 => (0..FOLDERS.len(), 0..3usize).prop_map(|(d, n)| Step::Remove(d, n)),
        1 => proptest::option::of(0..3usize).prop_map(Step::InnerTagFile),
        1 => (0..3usize).prop_map(Step::NamedTagFile),
        3 => (
            proptest::collection::vec(0..FOLDERS.len(), 1..3),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(roots, code, prune, spill)| Step::Index(roots, code, prune, spill)),
    ]
}

struct Tree {
    dir: tempfile::TempDir,
    /// Every write gets a later modification time, so that a change is seen even when the
    /// size stays the same and the clock is coarse.
    clock: SystemTime,
}

impl Tree {
    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn write(&mut self, relative: &str, bytes: &[u8]) {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        self.clock += Duration::from_secs(1);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(self.clock)
            .unwrap();
    }

    fn index(
        &self,
        db: &Path,
        folders: &[usize],
        code: bool,
        full: bool,
        prune: bool,
        spill: bool,
    ) {
        let roots = folders
            .iter()
            .map(|&f| {
                let root = self.path(FOLDERS[f]);
                fs::create_dir_all(&root).unwrap();
                (root.display().to_string(), root)
            })
            .collect();
        run(&IndexConfig {
            db: db.to_owned(),
            roots: pooltag::walk::outermost(roots),
            tag_files: vec![self.path("named.txt")],
            progress: false,
            analyse_code: code,
            pair_budget: if spill { 64 } else { 1 << 22 },
            full,
            prune,
            verbose: false,
            host: "tests".to_owned(),
        })
        .unwrap();
    }
}

/// What a database answers: every (tag, file) pair with its evidence and sites, every tag-file
/// line, and the counts of `info`.
fn answers(db: &Path) -> (String, String, String) {
    let database = Database::open(db).unwrap();
    let mut pairs = Vec::new();
    export(&database, ExportFormat::Json, Evidence::Bytes, &mut pairs).unwrap();
    let entries = format!("{:?}", database.tag_entries().unwrap());
    let info = database.info().unwrap();
    let counts = format!(
        "{} files, {} contents, {:?}, {:?}, {:?}",
        info.files, info.contents, info.analyses, info.tags, info.tag_files
    );
    (String::from_utf8(pairs).unwrap(), entries, counts)
}

/// Each content's bytes-level tags (`content_bytes`) are exactly the posting lists it is in.
fn forward_matches_postings(db: &Path) {
    use std::collections::BTreeMap;
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut from_postings: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut rows = conn
        .prepare("SELECT tag, content_ids FROM bytes_posting ORDER BY tag")
        .unwrap();
    for row in rows
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap()
    {
        let (tag, ids) = row.unwrap();
        for id in pooltag::store::postings::decode(&ids).unwrap() {
            from_postings.entry(id).or_default().push(tag);
        }
    }
    let mut forward: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut rows = conn
        .prepare("SELECT content_id, tags FROM content_bytes")
        .unwrap();
    for row in rows
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap()
    {
        let (id, tags) = row.unwrap();
        let tags = pooltag::store::postings::decode(&tags).unwrap();
        if !tags.is_empty() {
            forward.insert(id, tags);
        }
    }
    assert_eq!(
        forward, from_postings,
        "content_bytes and bytes_posting disagree"
    );
    let contents: i64 = conn
        .query_row("SELECT count(*) FROM content", [], |r| r.get(0))
        .unwrap();
    let listed: i64 = conn
        .query_row("SELECT count(*) FROM content_bytes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(contents, listed, "a content without its content_bytes row");
    // The counts the database keeps of itself (`tally`) are what it holds.
    let tally: (i64, i64) = conn
        .query_row("SELECT distinct_tags, posting_lists FROM tally", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let counted: (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM (SELECT tag FROM bytes_posting UNION \
             SELECT tag FROM evidence_posting)), (SELECT count(*) FROM bytes_posting)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(tally, counted, "tally (distinct tags, posting lists)");
}

fn fixture(index: usize) -> Vec<u8> {
    fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bin")
            .join(FIXTURES[index]),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn incremental_runs_end_where_a_full_run_does(steps in proptest::collection::vec(step(), 1..10)) {
        let mut tree = Tree {
            dir: tempfile::tempdir().unwrap(),
            clock: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        tree.write("named.txt", b"Nm00 - named.sys - named 0\n");
        let db = tree.path("incremental.db");
        for step in &steps {
            match step {
                Step::Write(f, d, n) => {
                    tree.write(&format!("{}/f{n}.sys", FOLDERS[*d]), &fixture(*f));
                }
                Step::Remove(d, n) => {
                    let _ = fs::remove_file(tree.path(&format!("{}/f{n}.sys", FOLDERS[*d])));
                }
                Step::InnerTagFile(Some(line)) => {
                    tree.write("a/pooltag.txt", format!("In{line:02} - inner.sys - inner {line}\n").as_bytes());
                }
                Step::InnerTagFile(None) => {
                    let _ = fs::remove_file(tree.path("a/pooltag.txt"));
                }
                Step::NamedTagFile(line) => {
                    tree.write("named.txt", format!("Nm{line:02} - named.sys - named {line}\n").as_bytes());
                }
                Step::Index(folders, code, prune, spill) => {
                    tree.index(&db, folders, *code, false, *prune, *spill);
                    forward_matches_postings(&db);
                }
            }
        }
        tree.index(&db, &[0, 1], true, false, false, false);
        // Once more, nothing changed: the counts kept are reported and kept again.
        tree.index(&db, &[0, 1], true, false, false, false);
        let full = tree.path("full.db");
        tree.index(&full, &[0, 1], true, true, false, true);
        forward_matches_postings(&db);
        forward_matches_postings(&full);
        let (got, want) = (answers(&db), answers(&full));
        prop_assert_eq!(got.0, want.0);
        prop_assert_eq!(got.1, want.1);
        prop_assert_eq!(got.2, want.2);
    }
}
