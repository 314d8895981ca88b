//! `pooltag index`: walk the roots, read and extract in parallel, store into a new database.
//!
//! The walk feeds rayon's workers, which read each file, classify it and extract its tags; one
//! writer thread owns the database and receives their results through a bounded channel, so at
//! most a few files' results wait in memory. Errors about single files are reported on stderr
//! and counted while the run goes on; only an error of the database itself stops it.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::iter::{ParallelBridge, ParallelIterator};

use crate::error::{Error, Result};
use crate::extract::{self, bytes::WindowCollector};
use crate::read::{FileContent, read_file, read_tag_file};
use crate::store::write::{DriverRecord, IndexWriter, RunRecord};
use crate::tagfile::{self, TagFile};
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
    /// (tag, file) pairs held in memory before they are spilled to disk.
    pub pair_budget: usize,
}

/// The counts of a finished run, as the summary line prints them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSummary {
    pub files_seen: u64,
    pub drivers_indexed: u64,
    pub bytes_read: u64,
    pub distinct_tags: u64,
    pub tag_file_entries: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for IndexSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files seen, {} driver binaries indexed, {} read, {} distinct tags, \
             {} Pooltag.txt entries, {} errors, {:.2} s",
            self.files_seen,
            self.drivers_indexed,
            human_bytes(self.bytes_read),
            self.distinct_tags,
            self.tag_file_entries,
            self.errors,
            self.elapsed.as_secs_f64()
        )
    }
}

/// What a worker made of one walk item.
enum Outcome {
    Driver(DriverRecord, u64),
    TagFile(String, TagFile, u64),
    Other(u64),
    Error(String, String),
}

/// One file to look at: found by the walk, or named with `--pooltag-txt`.
enum Job {
    Walked(WalkItem),
    TagFile(PathBuf),
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
    let mut writer = IndexWriter::create(&config.db, config.pair_budget)?;
    let roots: Vec<PathBuf> = config.roots.iter().map(|(_, r)| r.clone()).collect();
    let bar = progress_bar(config.progress, &roots);
    let (sender, receiver) = sync_channel::<Outcome>(256);

    let mut summary = std::thread::scope(|scope| {
        let stored = scope.spawn(|| store_outcomes(&mut writer, receiver, &bar));
        walk(&roots)
            .map(Job::Walked)
            .chain(config.tag_files.iter().cloned().map(Job::TagFile))
            .par_bridge()
            .for_each_with(sender, |sender, job| {
                // The writer stopping (a database error) ends the run: stop sending.
                let _ = sender.send(process(job, config.analyse_code));
            });
        stored
            .join()
            .unwrap_or_else(|_| Err(Error::new("internal error: the database writer stopped")))
    })?;
    bar.finish_and_clear();

    summary.distinct_tags = writer.finish(RunRecord {
        host: gethostname::gethostname().to_string_lossy().into_owned(),
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
    })?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Reads, classifies and extracts one file. Runs on rayon's workers.
fn process(job: Job, analyse_code: bool) -> Outcome {
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
            let shown = path.display().to_string();
            return match read_tag_file(&path) {
                Ok(data) => {
                    let read = data.len() as u64;
                    Outcome::TagFile(shown, tagfile::parse(&data), read)
                }
                Err(e) => Outcome::Error(shown, e.to_string()),
            };
        }
    };
    let shown = path.display().to_string();
    match read_file(&path) {
        Ok(FileContent::Driver { data, image }) => {
            let tags = COLLECTOR.with(|c| c.borrow_mut().collect(&data));
            let findings = if analyse_code {
                extract::analyse(&data)
            } else {
                extract::Findings::default()
            };
            let record = DriverRecord {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: shown,
                size,
                mtime_ns,
                image,
                tags,
                findings,
            };
            Outcome::Driver(record, data.len() as u64)
        }
        Ok(FileContent::TagFile { data }) => {
            let read = data.len() as u64;
            Outcome::TagFile(shown, tagfile::parse(&data), read)
        }
        Ok(FileContent::Other { bytes_read }) => Outcome::Other(bytes_read),
        Err(e) => Outcome::Error(shown, e.to_string()),
    }
}

/// The writer thread: stores every outcome, reports problems, counts.
fn store_outcomes(
    writer: &mut IndexWriter,
    receiver: Receiver<Outcome>,
    bar: &ProgressBar,
) -> Result<IndexSummary> {
    let mut summary = IndexSummary::default();
    let report = |summary: &mut IndexSummary, message: String| {
        summary.errors += 1;
        bar.suspend(|| eprintln!("pooltag: {message}"));
    };
    for outcome in receiver {
        match outcome {
            Outcome::Driver(record, read) => {
                summary.files_seen += 1;
                summary.bytes_read += read;
                writer.add_driver(&record)?;
                summary.drivers_indexed += 1;
            }
            Outcome::TagFile(path, parsed, read) => {
                summary.files_seen += 1;
                summary.bytes_read += read;
                for problem in &parsed.problems {
                    bar.suspend(|| {
                        eprintln!("pooltag: {path}:{}: {}", problem.line, problem.message)
                    });
                }
                summary.tag_file_entries += writer.add_tag_file(&path, &parsed)?;
            }
            Outcome::Other(read) => {
                summary.files_seen += 1;
                summary.bytes_read += read;
            }
            Outcome::Error(path, message) => {
                summary.files_seen += 1;
                report(&mut summary, format!("{path}: {message}"));
            }
        }
        bar.inc(1);
        bar.set_message(format!(
            "{} files, {} read",
            summary.files_seen,
            human_bytes(summary.bytes_read)
        ));
    }
    Ok(summary)
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
