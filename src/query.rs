//! `pooltag query` and `pooltag tags`: answering from the database.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::extract::Evidence;
use crate::store::{Database, StoredEntry, StoredFile, StoredSite, path_text};
use crate::tag::{Tag, TagPattern};

/// How `pooltag query` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryOutput {
    /// Pooltag.txt entries, then drivers, for a person.
    Human,
    /// The JSON contract of the README.
    Json,
    /// `-l`: matching driver paths only, like `findstr /m`.
    List,
}

/// What `pooltag query` was asked.
#[derive(Clone, Debug)]
pub struct QueryConfig {
    pub db: PathBuf,
    pub patterns: Vec<TagPattern>,
    pub ignore_case: bool,
    pub output: QueryOutput,
    /// `--evidence`: only pairs at this level or stronger. Without it, `-l` lists the files that
    /// hold the bytes (findstr's answer) and the other outputs show every level.
    pub evidence: Option<Evidence>,
}

/// What `pooltag tags` was asked.
#[derive(Clone, Debug)]
pub struct TagsConfig {
    pub db: PathBuf,
    pub files: Vec<String>,
    pub json: bool,
    /// `--evidence`: only tags at this level or stronger.
    pub evidence: Option<Evidence>,
    /// `--collisions`: the `call` and `arg` tags, each with its other users.
    pub collisions: bool,
}

/// One driver file holding a matching tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMatch {
    pub tag: Tag,
    pub file: StoredFile,
    pub evidence: Evidence,
    /// The `call` and `arg` sites behind the pair, by RVA.
    pub sites: Vec<StoredSite>,
}

/// Which (file, tag) pairs a lookup considers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only files holding the four bytes: findstr's answer.
    Bytes,
    /// Pairs whose strongest evidence is this level or stronger.
    AtLeast(Evidence),
}

impl Scope {
    /// `--evidence LEVEL`, or else what the output shows by default.
    pub fn from_option(evidence: Option<Evidence>, default: Scope) -> Scope {
        evidence.map_or(default, Scope::AtLeast)
    }

    /// What a walk over the tags reads for this scope (see [`Database::each_tag`]): the
    /// posting lists, and the stronger evidence from which level.
    fn walk(self) -> (bool, Option<Evidence>) {
        match self {
            Scope::Bytes => (true, None),
            Scope::AtLeast(Evidence::Bytes) => (true, Some(Evidence::Data)),
            Scope::AtLeast(minimum) => (false, Some(minimum)),
        }
    }
}

/// One tag of a file, for `pooltag tags`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileTag {
    pub tag: Tag,
    pub evidence: Evidence,
    pub sites: Vec<StoredSite>,
}

/// What a person is told beside the drivers of a query (which stream: [`each_shown`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryAnswer {
    /// Pooltag.txt lines whose tag (or wildcard) meets a pattern, in source and line order.
    pub entries: Vec<StoredEntry>,
    /// When nothing matched: known tags sharing the first three characters of an exact pattern.
    pub neighbours: Vec<Tag>,
    /// When no file meets the `--evidence` level asked but some hold a match at a weaker level:
    /// how many, so that the answer can say they exist.
    pub weaker: Option<Weaker>,
    /// Whether the database holds files of several hosts (paths then show their host).
    pub several_hosts: bool,
}

/// Files holding a match below the `--evidence` level asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weaker {
    /// Distinct paths.
    pub files: usize,
    /// The strongest level among them.
    pub strongest: Evidence,
}

/// One driver file holding a matching tag, as [`each_file`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found<'a> {
    pub tag: Tag,
    pub evidence: Evidence,
    pub file: &'a StoredFile,
    /// The `call` and `arg` sites behind the pair, by RVA.
    pub sites: &'a [StoredSite],
}

impl Found<'_> {
    /// The same, owning its file and sites.
    pub fn to_match(self) -> FileMatch {
        FileMatch {
            tag: self.tag,
            file: self.file.clone(),
            evidence: self.evidence,
            sites: self.sites.to_vec(),
        }
    }
}

/// The key ranges of `patterns`, ascending and disjoint: walking them visits each tag that may
/// match once, in key order, however the patterns overlap.
fn merged_ranges(patterns: &[TagPattern], ignore_case: bool) -> Vec<(u32, u32)> {
    let mut ranges: Vec<(u32, u32)> = patterns
        .iter()
        .flat_map(|p| p.key_ranges(ignore_case))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (low, high) in ranges {
        match merged.last_mut() {
            Some(last) if low <= last.1.saturating_add(1) => last.1 = last.1.max(high),
            _ => merged.push((low, high)),
        }
    }
    merged
}

/// Calls `each` with every tag matching any of `patterns`, in key order, with its contents (by
/// id) and their strongest evidence in `scope`. One tag at a time is in memory.
fn each_matching_tag(
    db: &Database,
    patterns: &[TagPattern],
    ignore_case: bool,
    scope: Scope,
    mut each: impl FnMut(Tag, &[(i64, Evidence)]) -> Result<()>,
) -> Result<()> {
    let (bytes, stronger) = scope.walk();
    for range in merged_ranges(patterns, ignore_case) {
        db.each_tag(range, bytes, stronger, |tag, pairs| {
            if patterns.iter().any(|p| p.matches(tag, ignore_case)) {
                each(tag, pairs)
            } else {
                Ok(())
            }
        })?;
    }
    Ok(())
}

/// Calls `each` with every driver file holding a tag that matches any of `patterns`, with its
/// strongest evidence in `scope`: by tag, strongest first, then by host and path (the JSON
/// order). The answer streams: one tag's files are in memory at a time, and the files of the
/// contents seen so far (each read once).
pub fn each_file(
    db: &Database,
    patterns: &[TagPattern],
    ignore_case: bool,
    scope: Scope,
    mut each: impl FnMut(Found<'_>) -> Result<()>,
) -> Result<()> {
    let mut holders: HashMap<i64, Vec<StoredFile>> = HashMap::new();
    let mut sites: Vec<Vec<StoredSite>> = Vec::new();
    each_matching_tag(db, patterns, ignore_case, scope, |tag, pairs| {
        db.files_of(pairs.iter().map(|(id, _)| *id), &mut holders)?;
        sites.clear();
        for &(id, evidence) in pairs {
            sites.push(sites_of(db, id, tag, evidence)?);
        }
        let mut found: Vec<Found> =
            Vec::with_capacity(pairs.iter().map(|(id, _)| holders[id].len()).sum());
        for (&(id, evidence), sites) in pairs.iter().zip(&sites) {
            found.extend(holders[&id].iter().map(|file| Found {
                tag,
                evidence,
                file,
                sites,
            }));
        }
        // A file holds a tag once: no two are equal, so an unstable sort gives the one order.
        found.sort_unstable_by(|a, b| {
            (b.evidence, &a.file.host, &a.file.path).cmp(&(a.evidence, &b.file.host, &b.file.path))
        });
        found.into_iter().try_for_each(&mut each)
    })
}

/// The driver files holding a tag that matches any of `patterns`, with their strongest evidence
/// in `scope`, in the order of [`each_file`]. For answers known to be small; a large one
/// streams through [`each_file`].
pub fn find_files(
    db: &Database,
    patterns: &[TagPattern],
    ignore_case: bool,
    scope: Scope,
) -> Result<Vec<FileMatch>> {
    let mut files = Vec::new();
    each_file(db, patterns, ignore_case, scope, |found| {
        files.push(found.to_match());
        Ok(())
    })?;
    Ok(files)
}

/// The entries (of [`Database::tag_entries`], read once by the caller) whose tag field meets any
/// of `patterns`: `AfdA` meets the line `Afd?`.
pub fn find_entries(
    entries: &[StoredEntry],
    patterns: &[TagPattern],
    ignore_case: bool,
) -> Vec<StoredEntry> {
    entries
        .iter()
        .filter(|entry| {
            let field = TagPattern::from_field(&entry.tag);
            patterns.iter().any(|p| p.overlaps(&field, ignore_case))
        })
        .cloned()
        .collect()
}

/// Known tags (indexed in a driver, or in Pooltag.txt without wildcards) that share the first
/// three characters of an exact pattern, itself excluded.
pub fn find_neighbours(
    db: &Database,
    entries: &[StoredEntry],
    patterns: &[TagPattern],
    ignore_case: bool,
) -> Result<Vec<Tag>> {
    let mut near: BTreeSet<Tag> = BTreeSet::new();
    for pattern in patterns {
        let Some(tag) = pattern.as_tag() else {
            continue;
        };
        let prefix = TagPattern::from_field(&format!("{}*", String::from_utf8_lossy(&tag.0[..3])));
        for (low, high) in prefix.key_ranges(ignore_case) {
            near.extend(db.postings(low, high)?.into_iter().map(|(t, _)| t));
            near.extend(
                db.stronger_evidence(low, high)?
                    .into_iter()
                    .map(|(t, _, _)| t),
            );
        }
        near.extend(entries.iter().filter_map(|e| {
            let known = Tag(e.tag.as_bytes().try_into().ok()?);
            TagPattern::from_field(&e.tag).as_tag()?;
            prefix.matches(known, ignore_case).then_some(known)
        }));
        near.retain(|t| !pattern.matches(*t, ignore_case));
    }
    Ok(near.into_iter().collect())
}

/// What a person is told of a query before its drivers: the matching Pooltag.txt entries, and
/// whether paths show their host. [`explain_none`] adds the rest when no driver matched.
pub fn answer(db: &Database, patterns: &[TagPattern], ignore_case: bool) -> Result<QueryAnswer> {
    Ok(QueryAnswer {
        entries: find_entries(&db.tag_entries()?, patterns, ignore_case),
        several_hosts: db.host_count()? > 1,
        ..QueryAnswer::default()
    })
}

/// For a query that found no driver in `scope`: known tags near an exact pattern (when no entry
/// matched either), and the drivers holding a match below the level asked.
pub fn explain_none(
    db: &Database,
    answer: &mut QueryAnswer,
    patterns: &[TagPattern],
    ignore_case: bool,
    scope: Scope,
) -> Result<()> {
    if answer.entries.is_empty() {
        answer.neighbours = find_neighbours(db, &db.tag_entries()?, patterns, ignore_case)?;
    }
    if scope != Scope::AtLeast(Evidence::Bytes) {
        answer.weaker = weaker_files(db, patterns, ignore_case)?;
    }
    Ok(())
}

/// Bytes-level files a person is shown per tag before the rest are counted.
pub const BYTES_SHOWN: usize = 3;

/// One line of the drivers a person is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown<'a> {
    File(Found<'a>),
    /// How many more files hold `tag` at the bytes level only.
    MoreBytes {
        tag: Tag,
        count: usize,
    },
}

/// Calls `each` with the drivers of a query as a person reads them: strongest evidence first
/// across every matched tag (then by tag, host and path), so that a wildcard's `call` answers
/// are not scattered among thousands of `bytes` lines; unless `list_bytes`, each tag's
/// bytes-level files are the first [`BYTES_SHOWN`] and a count. The JSON and `-l` orders are not
/// this one: they are contracts. One walk over the matching tags per level, strongest first, so
/// that memory holds one tag at a time however large the answer.
pub fn each_shown(
    db: &Database,
    patterns: &[TagPattern],
    ignore_case: bool,
    scope: Scope,
    list_bytes: bool,
    mut each: impl FnMut(Shown<'_>) -> Result<()>,
) -> Result<()> {
    let levels = Evidence::ALL.into_iter().filter(|level| match scope {
        Scope::Bytes => *level == Evidence::Bytes,
        Scope::AtLeast(minimum) => *level >= minimum,
    });
    for level in levels {
        // Stronger evidence than `level` comes along (a pair's strongest level decides where it
        // is shown) and is left to its own walk.
        let walk = if level == Evidence::Bytes {
            scope
        } else {
            Scope::AtLeast(level)
        };
        let counted = level == Evidence::Bytes && !list_bytes;
        // The tag whose bytes-level files are being counted, and how many so far.
        let mut counting: Option<(Tag, usize)> = None;
        each_file(db, patterns, ignore_case, walk, |found| {
            if found.evidence != level {
                return Ok(());
            }
            if !counted {
                return each(Shown::File(found));
            }
            if let Some((tag, count)) = counting.take_if(|(tag, _)| *tag != found.tag) {
                more_bytes(tag, count, &mut each)?;
            }
            let (_, count) = counting.get_or_insert((found.tag, 0));
            *count += 1;
            if *count <= BYTES_SHOWN {
                each(Shown::File(found))?;
            }
            Ok(())
        })?;
        if let Some((tag, count)) = counting {
            more_bytes(tag, count, &mut each)?;
        }
    }
    Ok(())
}

/// The count line after a tag's first [`BYTES_SHOWN`] bytes-level files, when there are more.
fn more_bytes(
    tag: Tag,
    count: usize,
    each: &mut impl FnMut(Shown<'_>) -> Result<()>,
) -> Result<()> {
    if count > BYTES_SHOWN {
        each(Shown::MoreBytes {
            tag,
            count: count - BYTES_SHOWN,
        })?;
    }
    Ok(())
}

/// The `-l` answer: matching driver paths, sorted, each once.
pub fn list_files(
    db: &Database,
    patterns: &[TagPattern],
    ignore_case: bool,
    scope: Scope,
) -> Result<Vec<String>> {
    let mut contents = BTreeSet::new();
    each_matching_tag(db, patterns, ignore_case, scope, |_, pairs| {
        contents.extend(pairs.iter().map(|(id, _)| *id));
        Ok(())
    })?;
    db.paths_of(&contents)
}

/// The files holding a match at any level, for a query that found none at the level asked.
fn weaker_files(
    db: &Database,
    patterns: &[TagPattern],
    ignore_case: bool,
) -> Result<Option<Weaker>> {
    let mut contents = BTreeSet::new();
    let mut strongest = None;
    let scope = Scope::AtLeast(Evidence::Bytes);
    each_matching_tag(db, patterns, ignore_case, scope, |_, pairs| {
        for &(id, evidence) in pairs {
            contents.insert(id);
            strongest = strongest.max(Some(evidence));
        }
        Ok(())
    })?;
    let Some(strongest) = strongest else {
        return Ok(None);
    };
    let files = db.paths_of(&contents)?.len();
    Ok(Some(Weaker { files, strongest }))
}

/// The file a `pooltag tags` argument names: its path as indexed (as given, made absolute and
/// normalised as `index` stores roots, or with symbolic links resolved), else the one indexed
/// file whose path ends with the given one (`x64\\afd.sys`, `afd.sys`; either slash). Several
/// indexed files of that name holding the same content (a DriverStore copy and its System32
/// twin) are one answer.
pub fn resolve_file(db: &Database, given: &str) -> Result<Option<StoredFile>> {
    let as_path = std::path::Path::new(given);
    let absolute = std::path::absolute(as_path)
        .map(|p| path_text(&crate::walk::normalise(&p)))
        .unwrap_or_else(|_| given.to_owned());
    let resolved = std::fs::canonicalize(as_path).map(|p| path_text(&p)).ok();
    for path in [Some(given), Some(absolute.as_str()), resolved.as_deref()]
        .into_iter()
        .flatten()
    {
        if let Some(file) = db.file_with_path(path)? {
            return Ok(Some(file));
        }
    }
    let normalize = |p: &str| p.replace('\\', "/").to_lowercase();
    let wanted = normalize(given);
    let name = wanted.rsplit('/').next().unwrap_or_default();
    let named: Vec<StoredFile> = db
        .files_named(name)?
        .into_iter()
        .filter(|f| {
            let path = normalize(&f.path);
            path == wanted || path.ends_with(&format!("/{}", wanted.trim_start_matches("./")))
        })
        .collect();
    match named.len() {
        0 => Ok(None),
        _ if named.iter().all(|f| f.sha256 == named[0].sha256) => Ok(named.into_iter().next()),
        n => Err(Error::new(format!(
            "{given}: {n} indexed files have this name; give one of their paths:\n  {}",
            named
                .iter()
                .map(|f| crate::text::escape(&f.path))
                .collect::<Vec<_>>()
                .join("\n  ")
        ))),
    }
}

/// The tags of one indexed content at `minimum` or stronger, with the sites behind `call` and
/// `arg`.
pub fn file_tags(db: &Database, content_id: i64, minimum: Evidence) -> Result<Vec<FileTag>> {
    db.tags_of_content(content_id, minimum)?
        .into_iter()
        .map(|(tag, evidence)| {
            let sites = sites_of(db, content_id, tag, evidence)?;
            Ok(FileTag {
                tag,
                evidence,
                sites,
            })
        })
        .collect()
}

/// The sites behind a pair; only `call` and `arg` evidence has any.
fn sites_of(
    db: &Database,
    content_id: i64,
    tag: Tag,
    evidence: Evidence,
) -> Result<Vec<StoredSite>> {
    if evidence >= Evidence::Arg {
        db.sites(content_id, tag)
    } else {
        Ok(Vec::new())
    }
}

/// Who else uses a tag: drivers of another name tied to it at `call` or `arg` level, and
/// Pooltag.txt entries for other binaries (a wildcard entry counts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collision {
    pub drivers: Vec<FileMatch>,
    pub entries: Vec<StoredEntry>,
}

impl Collision {
    pub fn is_empty(&self) -> bool {
        self.drivers.is_empty() && self.entries.is_empty()
    }
}

/// The other users of `tag` than the driver named `own_name` (any case; its copies under the
/// same name, and the content `own_content`, are the driver itself). `entries` are the
/// database's tag-file entries, read once by the caller.
pub fn collisions(
    db: &Database,
    entries: &[StoredEntry],
    tag: Tag,
    own_name: &str,
    own_content: Option<i64>,
) -> Result<Collision> {
    let pattern = TagPattern::exact(tag);
    let is_own = |name: &str| name.eq_ignore_ascii_case(own_name);
    let drivers = find_files(
        db,
        std::slice::from_ref(&pattern),
        false,
        Scope::AtLeast(Evidence::Arg),
    )?
    .into_iter()
    .filter(|f| {
        let name = crate::store::file_name(&f.file.path);
        !is_own(name) && Some(f.file.content_id) != own_content
    })
    .collect();
    let entries = find_entries(entries, std::slice::from_ref(&pattern), false)
        .into_iter()
        .filter(|e| !is_own(&e.binary))
        .collect();
    Ok(Collision { drivers, entries })
}
