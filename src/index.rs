//! `pooltag index`: walk the roots, read and extract in parallel, store into a new database.
//!
//! The walk feeds rayon's workers, which read each file, classify it and extract its tags; one
//! writer thread owns the database and receives their results through a bounded channel, so at
//! most a few files' results wait in memory. Errors about single files are reported on stderr
//! and counted while the run goes on; only an error of the database itself stops it.
//!
//! Incremental: unless `--full` is given, the previous database at the same path is read. A
//! driver binary whose path, size and modification time are unchanged is not read again; a
//! content (by SHA-256) analysed before, or by another worker in this run, is not analysed again:
//! a DriverStore copy and its System32 twin share one analysis. "Analysed before" means by the
//! same analysis (pooltag's analysis version and `--bytes-only`, the content's [`Analysis`]
//! fingerprint): anything else is read and analysed again, so that an upgrade of pooltag or a
//! run without `--bytes-only` reaches every file. A run that finds the tree as the database holds
//! it writes no database at all: its record goes to the log beside it
//! ([`crate::store::unchanged`]). A previous database of schema 4 is reused through a converted
//! copy ([`crate::store::upgrade`]); one of any other older schema is rebuilt.
//!
//! A run replaces what lies under its roots (and the tag files it reads); this host's files
//! elsewhere and other tag files are kept, unless `--prune`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::iter::{ParallelBridge, ParallelIterator};
use sha2::{Digest, Sha256 as Sha256Hasher};

use crate::error::{Error, Result};
use crate::extract::{self, Analysis, bytes::WindowCollector, version};
use crate::read::{FileContent, read_file, read_tag_file};
use crate::store::write::{
    ContentRecord, FileRecord, IndexWriter, PreviousIndex, Purpose, Replaced, RunRecord, Sha256,
};
use crate::store::{Database, path_text, upgrade};
use crate::tagfile::{self, TagFile};
use crate::text::escape;
use crate::walk::{WalkItem, walk};

/// What `pooltag index` was asked to do.
#[derive(Clone, Debug)]
pub struct IndexConfig {
    pub db: PathBuf,
    /// The roots as given, and made absolute (paths are stored absolute).
    pub roots: Vec<(String, PathBuf)>,
    /// Tag files named with `--pooltag-txt`, made absolute.
    pub tag_files: Vec<PathBuf>,
    /// Draw a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// Analyse code and data for evidence above the bytes level.
    pub analyse_code: bool,
    /// (tag, content) pairs held in memory before they are spilled to disk.
    pub pair_budget: usize,
    /// Rebuild from scratch instead of reusing the previous database.
    pub full: bool,
    /// Keep only what this run finds, instead of this host's files outside the roots and the
    /// tag files not read again.
    pub prune: bool,
    /// Report every line of a tag file that is not a tag line (else only their count).
    pub verbose: bool,
    /// The host the files are recorded under (this machine's name unless `--host` says).
    pub host: String,
}

/// The counts of a finished run, as the summary line prints them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSummary {
    pub files_seen: u64,
    pub drivers_indexed: u64,
    /// Driver binaries at paths the previous database did not have.
    pub new: u64,
    /// Driver binaries whose size or modification time changed: read again.
    pub changed: u64,
    /// Driver binaries whose size and modification time did not change: not read.
    pub unchanged: u64,
    /// This host's paths in the previous database that this run did not index.
    pub removed: u64,
    /// Driver binaries whose size and modification time did not change, read again because an
    /// older pooltag or other options analysed them (counted as unchanged too).
    pub analysed_again: u64,
    pub bytes_read: u64,
    pub distinct_tags: u64,
    pub tag_file_entries: u64,
    /// Lines of the tag files read that are not tag lines (listed with `--verbose`).
    pub lines_not_understood: u64,
    /// The tag files read, as indexed.
    pub tag_files: Vec<String>,
    pub errors: u64,
    pub elapsed: Duration,
    /// The run found the database as it was and left it (its record went to the
    /// [`crate::store::unchanged`] log).
    pub database_unchanged: bool,
}

impl std::fmt::Display for IndexSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files seen, {} driver binaries indexed ({} new, {} changed, {} unchanged, \
             {} removed{}), {} read, {} distinct tags, {} Pooltag.txt entries{}{}, {} errors, \
             {:.2} s",
            self.files_seen,
            self.drivers_indexed,
            self.new,
            self.changed,
            self.unchanged,
            self.removed,
            match self.analysed_again {
                0 => String::new(),
                n => format!(", {n} analysed again"),
            },
            human_bytes(self.bytes_read),
            self.distinct_tags,
            self.tag_file_entries,
            if self.tag_files.is_empty() {
                String::new()
            } else {
                format!(" from {}", escape(&self.tag_files.join(", ")))
            },
            match self.lines_not_understood {
                0 => String::new(),
                1 => " (1 line not understood)".to_owned(),
                n => format!(" ({n} lines not understood)"),
            },
            self.errors,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Whether a driver's path was in the previous database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    New,
    Changed,
    /// Unchanged on disk, but analysed otherwise before.
    AnalysedAgain,
}

/// What a worker made of one walk item.
enum Outcome {
    /// A content analysed now.
    Driver(FileRecord, Box<ContentRecord>, Status, u64),
    /// A content analysed before or by another worker: only the path is new.
    Twin(FileRecord, Sha256, Status, u64),
    /// A path whose size and modification time did not change.
    Unchanged(FileRecord, i64),
    TagFile(String, TagFile, u64),
    Other(u64),
    Error(String, String),
}

/// One file to look at: found by the walk, or named with `--pooltag-txt`.
enum Job {
    Walked(WalkItem),
    TagFile(PathBuf),
}

/// What every worker shares.
struct Shared<'a> {
    analysis: Analysis,
    previous: &'a PreviousIndex,
    /// Contents a worker has taken to analyse in this run.
    claimed: Mutex<HashSet<Sha256>>,
}

thread_local! {
    static COLLECTOR: RefCell<WindowCollector> = RefCell::new(WindowCollector::default());
}

/// Runs an index and replaces the database. Per-file problems are reported on stderr and counted
/// in the summary; an error is returned only when no database could be written.
pub fn run(config: &IndexConfig) -> Result<IndexSummary> {
    let started = Instant::now();
    let started_at = unix_now();
    for (given, root) in &config.roots {
        if let Err(e) = std::fs::metadata(root) {
            return Err(Error::new(format!("{given}: {e}")));
        }
    }
    // A named tag file that is not there is a wrong use, not a file error to count: the run
    // would otherwise drop the entries it gave before.
    for tag_file in &config.tag_files {
        let shown = tag_file.display();
        match std::fs::metadata(tag_file) {
            Err(e) => return Err(Error::new(format!("--pooltag-txt {shown}: {e}"))),
            Ok(m) if m.is_dir() => {
                return Err(Error::new(format!(
                    "--pooltag-txt {shown}: is a directory, not a tag file"
                )));
            }
            Ok(_) => {}
        }
    }
    let host = &config.host;
    let previous = if config.full {
        None
    } else {
        reusable(&config.db, config.pair_budget)
    };
    let analysis = Analysis::current(config.analyse_code);
    let root_texts: Vec<String> = config.roots.iter().map(|(_, r)| path_text(r)).collect();
    let tag_file_texts: Vec<String> = config.tag_files.iter().map(|p| path_text(p)).collect();
    let purpose = Purpose::Index {
        host,
        analysis,
        previous: previous.as_ref().map(Previous::path),
        replaced: Replaced {
            roots: &root_texts,
            tag_files: &tag_file_texts,
            prune: config.prune,
        },
    };
    let mut writer = IndexWriter::create(&config.db, config.pair_budget, purpose)?;
    let previous_index = writer.previous_index(analysis)?;
    let shared = Shared {
        analysis,
        previous: &previous_index,
        claimed: Mutex::new(HashSet::new()),
    };
    let roots: Vec<PathBuf> = config.roots.iter().map(|(_, r)| r.clone()).collect();
    let bar = progress_bar(config.progress, &roots);
    let (sender, receiver) = sync_channel::<Outcome>(256);

    let mut summary = std::thread::scope(|scope| {
        let stored = scope
            .spawn(|| store_outcomes(&mut writer, &previous_index, receiver, &bar, config.verbose));
        walk(&roots)
            .map(Job::Walked)
            .chain(config.tag_files.iter().cloned().map(Job::TagFile))
            .par_bridge()
            // The writer stopping (a database error, a full disk) ends the run: the first
            // failed send stops the walk and every worker, instead of reading the whole tree
            // for nothing.
            .try_for_each_with(sender, |sender, job| sender.send(process(job, &shared)))
            .ok();
        stored
            .join()
            .unwrap_or_else(|_| Err(Error::new("internal error: the database writer stopped")))
    })?;
    bar.finish_and_clear();

    summary.removed = writer.count_removed()?;
    let finished = writer.finish(Some(RunRecord {
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        roots: config
            .roots
            .iter()
            .map(|(given, _)| given.clone())
            .collect(),
        started_at,
        finished_at: unix_now(),
        files_seen: summary.files_seen,
        drivers_indexed: summary.drivers_indexed,
        bytes_read: summary.bytes_read,
        tag_file_entries: summary.tag_file_entries,
        errors: summary.errors,
    }))?;
    summary.distinct_tags = finished.distinct_tags;
    summary.database_unchanged = !finished.rewritten;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The previous database of an index run.
enum Previous<'a> {
    /// The target itself, of this schema.
    Target(&'a Path),
    /// A converted copy of the target, of schema 4 (deleted when dropped).
    Converted(upgrade::Converted),
}

impl Previous<'_> {
    fn path(&self) -> &Path {
        match self {
            Previous::Target(path) => path,
            Previous::Converted(converted) => converted.path(),
        }
    }
}

/// The previous database, when it can be reused: a pooltag database of this schema, or of
/// schema 4 through a converted copy (its analyses are kept). Anything else is rebuilt from
/// scratch (an older schema is thereby upgraded); the new file replaces it.
fn reusable(db: &Path, pair_budget: usize) -> Option<Previous<'_>> {
    if !db.is_file() {
        return None; // nothing there yet, or a directory the writer will refuse
    }
    let refused = match Database::open(db) {
        Ok(_) => return Some(Previous::Target(db)),
        Err(e) => e,
    };
    match upgrade::convert(db, pair_budget) {
        Ok(Some(converted)) => {
            eprintln!(
                "pooltag: {}: converted from schema 4; its analyses are kept",
                db.display()
            );
            Some(Previous::Converted(converted))
        }
        Ok(None) => {
            eprintln!("pooltag: not reusing the previous database: {refused}");
            None
        }
        Err(e) => {
            eprintln!("pooltag: not reusing the previous database: {e}");
            None
        }
    }
}

/// The host name recorded with every file.
pub fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Reads, classifies and extracts one file. Runs on rayon's workers.
fn process(job: Job, shared: &Shared) -> Outcome {
    let (path, size, mtime_ns) = match job {
        Job::Walked(WalkItem::File {
            path,
            size,
            mtime_ns,
        }) => (path, size, mtime_ns),
        Job::Walked(WalkItem::Error { path, message }) => {
            let shown = path.map_or_else(|| "(walk)".to_owned(), |p| p.display().to_string());
            return Outcome::Error(shown, message);
        }
        Job::TagFile(path) => {
            let shown = path_text(&path);
            return match read_tag_file(&path) {
                Ok(data) => {
                    let read = data.len() as u64;
                    Outcome::TagFile(shown, tagfile::parse(&data), read)
                }
                Err(e) => Outcome::Error(shown, e.to_string()),
            };
        }
    };
    let shown = path_text(&path);
    let file = FileRecord {
        name: path
            .file_name()
            .map(|n| path_text(n.as_ref()))
            .unwrap_or_default(),
        path: shown.clone(),
        size,
        mtime_ns,
    };
    let status = match shared.previous.files.get(&shown) {
        Some(before)
            if before.size == size && before.mtime_ns == mtime_ns && mtime_ns.is_some() =>
        {
            if before.reusable {
                return Outcome::Unchanged(file, before.content_id);
            }
            Status::AnalysedAgain
        }
        Some(_) => Status::Changed,
        None => Status::New,
    };
    match read_file(&path) {
        Ok(FileContent::Driver { data, image }) => {
            let read = data.len() as u64;
            let sha256: Sha256 = Sha256Hasher::digest(&data).into();
            let analysed_before = shared.previous.contents.contains_key(&sha256);
            if analysed_before || !claim(&shared.claimed, sha256) {
                return Outcome::Twin(file, sha256, status, read);
            }
            let tags = COLLECTOR.with(|c| c.borrow_mut().collect(&data));
            let findings = if shared.analysis.code {
                extract::analyse(&data)
            } else {
                extract::Findings::default()
            };
            let content = ContentRecord {
                sha256,
                size: read,
                image,
                version: version::version_info(&data).unwrap_or_default(),
                analysis: shared.analysis,
                tags,
                findings,
            };
            Outcome::Driver(file, Box::new(content), status, read)
        }
        Ok(FileContent::TagFile { data }) => {
            let read = data.len() as u64;
            Outcome::TagFile(shown, tagfile::parse(&data), read)
        }
        Ok(FileContent::Other { bytes_read }) => Outcome::Other(bytes_read),
        Err(e) => Outcome::Error(shown, e.to_string()),
    }
}

/// Takes `sha256` for this worker to analyse; false when another worker already has.
fn claim(claimed: &Mutex<HashSet<Sha256>>, sha256: Sha256) -> bool {
    claimed
        .lock()
        .map(|mut set| set.insert(sha256))
        .unwrap_or(true)
}

/// The writer thread: stores every outcome, reports problems, counts.
fn store_outcomes(
    writer: &mut IndexWriter,
    previous: &PreviousIndex,
    receiver: Receiver<Outcome>,
    bar: &ProgressBar,
    verbose: bool,
) -> Result<IndexSummary> {
    let mut summary = IndexSummary::default();
    // Twins whose content another worker had not yet sent.
    let mut waiting: Vec<(FileRecord, Sha256)> = Vec::new();
    let count = |summary: &mut IndexSummary, status: Status| {
        summary.drivers_indexed += 1;
        match status {
            Status::New => summary.new += 1,
            Status::Changed => summary.changed += 1,
            Status::AnalysedAgain => {
                summary.unchanged += 1;
                summary.analysed_again += 1;
            }
        }
    };
    // A path this run stored already: two names that read the same once stored (a name holding
    // a literal `\xFE` beside one holding the byte 0xFE). Said, never dropped silently.
    let store_file =
        |writer: &mut IndexWriter, summary: &mut IndexSummary, file: &FileRecord, id| {
            if !writer.add_file(file, id)? {
                summary.errors += 1;
                report(
                    bar,
                    &file.path,
                    "another file's name reads the same once stored; only the first is indexed",
                );
            }
            Ok::<_, Error>(())
        };
    for outcome in receiver {
        summary.files_seen += 1;
        match outcome {
            Outcome::Driver(file, content, status, read) => {
                summary.bytes_read += read;
                let id = writer.add_content(&content)?;
                store_file(writer, &mut summary, &file, id)?;
                count(&mut summary, status);
            }
            Outcome::Twin(file, sha256, status, read) => {
                summary.bytes_read += read;
                count(&mut summary, status);
                // Stored in this run already, else kept from the previous database (only
                // those are "reused": the previous posting lists are filtered by them).
                if let Some(id) = writer.content_id(&sha256) {
                    store_file(writer, &mut summary, &file, id)?;
                } else if let Some(&id) = previous.contents.get(&sha256) {
                    writer.reuse_content(id)?;
                    store_file(writer, &mut summary, &file, id)?;
                } else {
                    waiting.push((file, sha256));
                }
            }
            Outcome::Unchanged(file, content_id) => {
                summary.drivers_indexed += 1;
                summary.unchanged += 1;
                writer.reuse_content(content_id)?;
                store_file(writer, &mut summary, &file, content_id)?;
            }
            Outcome::TagFile(path, parsed, read) => {
                summary.bytes_read += read;
                summary.lines_not_understood += parsed.problems.len() as u64;
                if verbose {
                    for problem in &parsed.problems {
                        report(bar, &format!("{path}:{}", problem.line), &problem.message);
                    }
                }
                summary.tag_file_entries += writer.add_tag_file(&path, &parsed)?;
                summary.tag_files.push(path);
            }
            Outcome::Other(read) => summary.bytes_read += read,
            Outcome::Error(path, message) => {
                summary.errors += 1;
                report(bar, &path, &message);
            }
        }
        bar.inc(1);
        if !bar.is_hidden() {
            bar.set_message(format!("{} read", human_bytes(summary.bytes_read)));
        }
    }
    for (file, sha256) in waiting {
        match writer.content_id(&sha256) {
            Some(id) => store_file(writer, &mut summary, &file, id)?,
            None => {
                summary.errors += 1;
                report(bar, &file.path, "its content was not stored");
            }
        }
    }
    Ok(summary)
}

/// One problem with one file, on stderr above the progress bar. The path and the message come
/// from the disk (a file name may hold an escape sequence): control characters are escaped.
fn report(bar: &ProgressBar, path: &str, message: &str) {
    bar.suspend(|| eprintln!("pooltag: {}: {}", escape(path), escape(message)));
}

/// A bar counting files against a total that a second, metadata-only walk fills in, so that
/// the rate and ETA are known long before the index ends. Hidden unless stderr is a terminal.
fn progress_bar(enabled: bool, roots: &[PathBuf]) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} files ({per_sec}, ETA {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let counter = bar.clone();
    let roots = roots.to_vec();
    std::thread::spawn(move || {
        for item in walk(&roots) {
            if counter.is_finished() {
                return;
            }
            if matches!(item, WalkItem::File { .. } | WalkItem::Error { .. }) {
                counter.inc_length(1);
            }
        }
    });
    bar
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `24.8 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
