//! `pooltag pool`: the live pool tag table with the driver behind each tag (once, saved as a
//! snapshot, or redrawn like PoolMon), and `--diff` of two snapshots of any kind, so that a leak
//! is found and named with one tool.
//!
//! Only the call that reads the table is Windows code; the rest runs on every OS, and elsewhere
//! the live modes end with one line naming `--diff`.

use crate::text::escape;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::extract::Evidence;
use crate::index::human_bytes;
use crate::print;
use crate::query::{FileMatch, Scope, find_entries, find_files};
use crate::snapshot::{self, Change, Counters, Pool, Snapshot, Usage, signed};
use crate::store::{Database, StoredEntry, file_name};
use crate::tag::{Tag, TagPattern};

/// What `pooltag pool` was asked to do.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub db: PathBuf,
    pub mode: PoolMode,
    /// `--top N`: print at most N rows.
    pub top: Option<usize>,
    pub json: bool,
}

/// The modes of `pooltag pool`.
#[derive(Clone, Debug, PartialEq)]
pub enum PoolMode {
    /// The live table once.
    Table(PoolSort),
    /// The live table redrawn every interval, with the growth since the start.
    Watch(Duration),
    /// The live snapshot written to a file.
    Save(PathBuf),
    /// What grew between two snapshot files.
    Diff { before: PathBuf, after: PathBuf },
}

/// The order of the live table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolSort {
    Bytes,
    Outstanding,
    Allocs,
    Tag,
}

impl PoolSort {
    /// `--sort NAME`.
    pub fn from_name(name: &str) -> Option<PoolSort> {
        match name {
            "bytes" => Some(PoolSort::Bytes),
            "outstanding" => Some(PoolSort::Outstanding),
            "allocs" => Some(PoolSort::Allocs),
            "tag" => Some(PoolSort::Tag),
            _ => None,
        }
    }
}

/// Runs `pooltag pool`; true when it printed or saved at least one row.
pub fn run(config: &PoolConfig) -> Result<bool> {
    match &config.mode {
        PoolMode::Diff { before, after } => diff(config, before, after),
        PoolMode::Save(path) => save(path),
        PoolMode::Table(sort) => table(config, *sort),
        PoolMode::Watch(interval) => watch(config, *interval),
    }
}

// ---------------------------------------------------------------------------------------------
// Answers.

/// What the index knows of a tag: every driver holding it, strongest evidence first (as `query`
/// lists them), and Pooltag.txt's entries, exact tags before wildcards.
#[derive(Debug)]
struct Answer {
    files: Vec<FileMatch>,
    entries: Vec<StoredEntry>,
}

/// The answer for a tag not looked up.
static NO_ANSWER: Answer = Answer {
    files: Vec::new(),
    entries: Vec::new(),
};

impl Answer {
    /// `versioned.sys 1.2.3.4 (call) +1 other`: the first driver (the strongest evidence), its
    /// version, and how many other driver names hold the tag.
    fn driver(&self) -> Option<String> {
        let best = self.files.first()?;
        let name = file_name(&best.file.path);
        let others = self
            .files
            .iter()
            .map(|f| file_name(&f.file.path).to_lowercase())
            .filter(|n| *n != name.to_lowercase())
            .collect::<BTreeSet<_>>()
            .len();
        let mut text = name.to_owned();
        if let Some(version) = &best.file.version {
            text = format!("{text} {version}");
        }
        text = format!("{text} ({})", best.evidence.name());
        match others {
            0 => {}
            1 => text.push_str(" +1 other"),
            n => text.push_str(&format!(" +{n} others")),
        }
        // A file name and a version string come from the disk: shown escaped.
        Some(escape(&text).into_owned())
    }

    /// `Pooltag.txt: afd.sys - AFD objects`.
    fn description(&self) -> Option<String> {
        let entry = self.entries.first()?;
        Some(format!(
            "Pooltag.txt: {} - {}",
            escape(&entry.binary),
            escape(&entry.description)
        ))
    }
}

/// The answers of the index, each tag looked up once.
struct Answers {
    db: Option<Database>,
    entries: Vec<StoredEntry>,
    known: HashMap<Tag, Answer>,
}

impl Answers {
    /// Opens the database as the read commands do. When there is none, says so once on stderr
    /// and answers nothing: the counters are worth reading without names.
    fn open(db: &Path) -> Result<Answers> {
        let database = match std::fs::metadata(db) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!(
                    "pooltag: no database at {}; tags are shown without their drivers \
                     (run 'pooltag index ROOT...' to name them)",
                    db.display()
                );
                None
            }
            _ => Some(Database::open(db)?),
        };
        let entries = match &database {
            Some(database) => database.tag_entries()?,
            None => Vec::new(),
        };
        Ok(Answers {
            db: database,
            entries,
            known: HashMap::new(),
        })
    }

    /// Looks up every tag not known yet.
    fn look_up(&mut self, tags: impl IntoIterator<Item = Tag>) -> Result<()> {
        for tag in tags {
            if self.known.contains_key(&tag) {
                continue;
            }
            let pattern = [TagPattern::exact(tag)];
            let files = match &self.db {
                Some(db) => find_files(db, &pattern, false, Scope::AtLeast(Evidence::Bytes))?,
                None => Vec::new(),
            };
            let mut entries = find_entries(&self.entries, &pattern, false);
            entries.sort_by_key(|e| e.tag.contains(['?', '*']));
            self.known.insert(tag, Answer { files, entries });
        }
        Ok(())
    }

    /// The answer of a tag passed to [`Answers::look_up`].
    fn of(&self, tag: Tag) -> &Answer {
        self.known.get(&tag).unwrap_or(&NO_ANSWER)
    }
}

/// The drivers and entries of an answer as the `query --json` objects.
#[derive(Serialize)]
struct Named<D, E> {
    drivers: Vec<D>,
    entries: Vec<E>,
}

fn named(answer: &Answer) -> Named<impl Serialize + '_, impl Serialize + '_> {
    Named {
        drivers: answer.files.iter().map(print::file_item).collect(),
        entries: answer.entries.iter().map(print::entry_item).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// The live table.

/// One row of the live table: a tag in one pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    tag: Tag,
    pool: Pool,
    counters: Counters,
    /// Bytes since the watch began (0 outside `--watch`).
    growth: i64,
}

impl Row {
    fn per_alloc(&self) -> u64 {
        match u64::try_from(self.counters.outstanding()) {
            Ok(n) if n > 0 => self.counters.bytes / n,
            _ => 0,
        }
    }
}

/// The rows of `now` (a tag and pool that never allocated is left out, as PoolMon does),
/// sorted; with `start`, each row's growth since then, the largest first.
fn rows(now: &Snapshot, start: Option<&Snapshot>, sort: PoolSort) -> Vec<Row> {
    let mut rows = Vec::new();
    for (tag, usage) in &now.tags {
        for pool in [Pool::NonPaged, Pool::Paged] {
            let counters = usage.pool(pool);
            if counters == Counters::default() {
                continue;
            }
            let before = start
                .and_then(|s| s.tags.get(tag))
                .map_or(0, |u| signed(u.pool(pool).bytes));
            rows.push(Row {
                tag: *tag,
                pool,
                counters,
                growth: signed(counters.bytes).saturating_sub(before),
            });
        }
    }
    let key = |r: &Row| match sort {
        _ if start.is_some() => r.growth,
        PoolSort::Bytes => signed(r.counters.bytes),
        PoolSort::Outstanding => r.counters.outstanding(),
        PoolSort::Allocs => signed(r.counters.allocs),
        PoolSort::Tag => 0,
    };
    rows.sort_by(|a, b| (key(b), a.tag, a.pool).cmp(&(key(a), b.tag, b.pool)));
    rows
}

/// The live table of this machine, with where and when it was read.
pub fn live() -> Result<Snapshot> {
    let tags = live_table()?;
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Ok(Snapshot {
        host: Some(crate::index::host_name()),
        time: Some(time),
        windows: windows_version(),
        tags,
    })
}

/// The error of a system that does not report pool usage.
fn unsupported(why: &str) -> Error {
    Error::new(format!(
        "this system does not report pool usage ({why}); read snapshots taken elsewhere with \
         'pooltag pool --diff BEFORE AFTER'"
    ))
}

#[cfg(not(windows))]
fn live_table() -> Result<BTreeMap<Tag, Usage>> {
    Err(unsupported("only Windows does"))
}

#[cfg(not(windows))]
fn windows_version() -> Option<String> {
    None
}

#[cfg(windows)]
mod nt {
    //! The two ntdll calls, declared here: no crate is needed for them.

    use std::ffi::c_void;

    pub const SYSTEM_POOL_TAG_INFORMATION: u32 = 22;
    pub const STATUS_INVALID_INFO_CLASS: u32 = 0xC000_0003;
    pub const STATUS_INFO_LENGTH_MISMATCH: u32 = 0xC000_0004;

    /// RTL_OSVERSIONINFOW.
    #[repr(C)]
    pub struct OsVersionInfo {
        pub size: u32,
        pub major: u32,
        pub minor: u32,
        pub build: u32,
        pub platform: u32,
        pub service_pack: [u16; 128],
    }

    #[link(name = "ntdll")]
    unsafe extern "system" {
        pub fn NtQuerySystemInformation(
            class: u32,
            information: *mut c_void,
            length: u32,
            returned: *mut u32,
        ) -> i32;
        pub fn RtlGetVersion(information: *mut OsVersionInfo) -> i32;
    }
}

/// SystemPoolTagInformation, the buffer grown while the kernel says it is too small (the table
/// can grow between two calls).
#[cfg(windows)]
fn live_table() -> Result<BTreeMap<Tag, Usage>> {
    /// A table this large is not a pool tag table (a few thousand tags make ~200 KB).
    const MAX_BUFFER: usize = 256 << 20;
    // u64 words: the kernel wants the buffer aligned for the SIZE_T fields.
    let mut words = 8192;
    loop {
        let mut buffer = vec![0u64; words];
        let length = u32::try_from(words * 8).unwrap_or(u32::MAX);
        let mut returned = 0u32;
        // SAFETY: `buffer` is `length` writable, 8-aligned bytes and `returned` a writable ULONG;
        // the call writes no more than that.
        let status = unsafe {
            nt::NtQuerySystemInformation(
                nt::SYSTEM_POOL_TAG_INFORMATION,
                buffer.as_mut_ptr().cast(),
                length,
                &mut returned,
            )
        } as u32;
        match status {
            0 => {
                let bytes: Vec<u8> = buffer.iter().flat_map(|w| w.to_ne_bytes()).collect();
                let used = usize::try_from(returned).map_or(bytes.len(), |n| n.min(bytes.len()));
                return snapshot::parse_pool_buffer(&bytes[..used], snapshot::BufferLayout::NATIVE)
                    .map_err(|e| Error::new(format!("NtQuerySystemInformation: {e}")));
            }
            nt::STATUS_INFO_LENGTH_MISMATCH if words * 8 < MAX_BUFFER => {
                let asked = usize::try_from(returned).unwrap_or(MAX_BUFFER) / 8 + 1024;
                words = asked.max(words * 2).min(MAX_BUFFER / 8);
            }
            nt::STATUS_INVALID_INFO_CLASS => {
                return Err(unsupported(
                    "NtQuerySystemInformation answers STATUS_INVALID_INFO_CLASS",
                ));
            }
            other => {
                return Err(Error::new(format!(
                    "NtQuerySystemInformation(SystemPoolTagInformation) failed: \
                     NTSTATUS {other:#010x}"
                )));
            }
        }
    }
}

/// `10.0.22631` from RtlGetVersion (GetVersionEx lies to programs without a manifest).
#[cfg(windows)]
fn windows_version() -> Option<String> {
    let mut info = nt::OsVersionInfo {
        size: std::mem::size_of::<nt::OsVersionInfo>() as u32,
        major: 0,
        minor: 0,
        build: 0,
        platform: 0,
        service_pack: [0; 128],
    };
    // SAFETY: `info` is an RTL_OSVERSIONINFOW with its size set, as the call requires.
    let status = unsafe { nt::RtlGetVersion(&mut info) };
    (status == 0).then(|| format!("{}.{}.{}", info.major, info.minor, info.build))
}

/// `pooltag pool`: the table once, as text or JSON.
fn table(config: &PoolConfig, sort: PoolSort) -> Result<bool> {
    let now = live()?;
    let mut answers = Answers::open(&config.db)?;
    let mut rows = rows(&now, None, sort);
    rows.truncate(config.top.unwrap_or(usize::MAX));
    answers.look_up(rows.iter().map(|r| r.tag))?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if config.json {
        table_json(&mut out, &rows, &answers)?;
    } else {
        table_human(&mut out, &rows, &answers, false)?;
    }
    out.flush()?;
    Ok(!rows.is_empty())
}

/// PoolMon's columns, then the answer: the best driver, else Pooltag.txt's description. With
/// `growth`, a column of the bytes since the watch began.
fn table_human(
    out: &mut impl Write,
    rows: &[Row],
    answers: &Answers,
    growth: bool,
) -> io::Result<()> {
    let growth_column = |text: &str| {
        if growth {
            format!(" {text:>12}")
        } else {
            String::new()
        }
    };
    writeln!(
        out,
        "Tag  Type      Allocs      Frees      Diff        Bytes{} Per Alloc  Driver",
        growth_column("Growth")
    )?;
    for row in rows {
        let answer = answers.of(row.tag);
        let note = answer
            .driver()
            .or_else(|| answer.description())
            .unwrap_or_else(|| "unknown".to_owned());
        writeln!(
            out,
            "{} {:<5} {:>10} {:>10} {:>9} {:>12}{} {:>9}  {note}",
            row.tag,
            row.pool.name(),
            row.counters.allocs,
            row.counters.frees,
            row.counters.outstanding(),
            row.counters.bytes,
            growth_column(&signed_count(row.growth)),
            row.per_alloc(),
        )?;
    }
    Ok(())
}

/// `pooltag pool --json`: one element per row.
fn table_json(out: &mut impl Write, rows: &[Row], answers: &Answers) -> io::Result<()> {
    #[derive(Serialize)]
    struct Item<N> {
        tag: String,
        #[serde(rename = "type")]
        pool: &'static str,
        allocs: u64,
        frees: u64,
        outstanding: i64,
        bytes: u64,
        per_alloc: u64,
        #[serde(flatten)]
        named: N,
    }
    let items: Vec<_> = rows
        .iter()
        .map(|row| Item {
            tag: row.tag.to_string(),
            pool: pool_key(row.pool),
            allocs: row.counters.allocs,
            frees: row.counters.frees,
            outstanding: row.counters.outstanding(),
            bytes: row.counters.bytes,
            per_alloc: row.per_alloc(),
            named: named(answers.of(row.tag)),
        })
        .collect();
    serde_json::to_writer(&mut *out, &items).map_err(io::Error::from)?;
    writeln!(out)
}

/// The JSON name of a pool.
fn pool_key(pool: Pool) -> &'static str {
    match pool {
        Pool::Paged => "paged",
        Pool::NonPaged => "nonpaged",
    }
}

/// `pooltag pool --save FILE`.
fn save(path: &Path) -> Result<bool> {
    let now = live()?;
    let mut text = snapshot::to_json(&now);
    text.push('\n');
    std::fs::write(path, text)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))?;
    eprintln!(
        "pooltag: {} tags saved to {}",
        now.tags.len(),
        path.display()
    );
    Ok(!now.tags.is_empty())
}

/// `pooltag pool --watch`: on a terminal, redrawn in place until q or Ctrl-C; otherwise one
/// table per interval, until the reader goes away.
fn watch(config: &PoolConfig, interval: Duration) -> Result<bool> {
    let start = live()?;
    let mut answers = Answers::open(&config.db)?;
    if io::stdout().is_terminal() {
        return watch_screen(config, &start, &mut answers, interval);
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    loop {
        let now = live()?;
        let mut rows = rows(&now, Some(&start), PoolSort::Bytes);
        rows.truncate(config.top.unwrap_or(usize::MAX));
        answers.look_up(rows.iter().map(|r| r.tag))?;
        table_human(&mut out, &rows, &answers, true)?;
        writeln!(out)?;
        out.flush()?;
        std::thread::sleep(interval);
    }
}

/// The terminal in raw mode on the alternate screen, restored when dropped (after a panic too).
struct Screen;

impl Screen {
    fn enter() -> Result<Screen> {
        crossterm::terminal::enable_raw_mode()?;
        let screen = Screen;
        crossterm::execute!(
            io::stdout(),
            crossterm::terminal::EnterAlternateScreen,
            crossterm::cursor::Hide
        )?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = crossterm::execute!(
            io::stdout(),
            crossterm::cursor::Show,
            crossterm::terminal::LeaveAlternateScreen
        );
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

fn watch_screen(
    config: &PoolConfig,
    start: &Snapshot,
    answers: &mut Answers,
    interval: Duration,
) -> Result<bool> {
    let _screen = Screen::enter()?;
    let mut out = io::stdout();
    let since = print::utc_time(start.time.unwrap_or_default());
    loop {
        let now = live()?;
        let (_, height) = crossterm::terminal::size().unwrap_or((80, 25));
        // The title, the header and a last line left empty.
        let fit = usize::from(height).saturating_sub(3);
        let mut rows = rows(&now, Some(start), PoolSort::Bytes);
        rows.truncate(config.top.unwrap_or(usize::MAX).min(fit));
        answers.look_up(rows.iter().map(|r| r.tag))?;
        let mut text = format!(
            "pooltag pool: growth since {since}, every {} s; q quits\n",
            interval.as_secs_f64()
        )
        .into_bytes();
        table_human(&mut text, &rows, answers, true)?;
        // Raw mode: a line feed does not return the carriage.
        let text = String::from_utf8_lossy(&text).replace('\n', "\r\n");
        crossterm::queue!(
            out,
            crossterm::cursor::MoveTo(0, 0),
            crossterm::terminal::Clear(crossterm::terminal::ClearType::All)
        )?;
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if quit_asked(interval)? {
            return Ok(true);
        }
    }
}

/// Waits up to `interval` for a key; true for q, Esc or Ctrl-C (a key in raw mode, not a
/// signal).
fn quit_asked(interval: Duration) -> Result<bool> {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    let deadline = Instant::now() + interval;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !event::poll(left)? {
            return Ok(false);
        }
        if let Event::Key(key) = event::read()?
            && key.kind == KeyEventKind::Press
            && (matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc)
                || (key.code == KeyCode::Char('c')
                    && key.modifiers.contains(KeyModifiers::CONTROL)))
        {
            return Ok(true);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// --diff.

/// `pooltag pool --diff BEFORE AFTER`.
fn diff(config: &PoolConfig, before: &Path, after: &Path) -> Result<bool> {
    let read = |path: &Path| -> Result<Snapshot> {
        let (snapshot, warnings) = snapshot::load(path)?;
        for warning in warnings {
            eprintln!("pooltag: {warning}");
        }
        Ok(snapshot)
    };
    let (before, after) = (read(before)?, read(after)?);
    let mut changes = snapshot::diff(&before, &after);
    changes.truncate(config.top.unwrap_or(usize::MAX));
    let mut answers = Answers::open(&config.db)?;
    answers.look_up(changes.iter().map(|c| c.tag))?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if config.json {
        diff_json(&mut out, &changes, &answers)?;
    } else {
        diff_human(&mut out, &changes, &answers)?;
    }
    out.flush()?;
    Ok(!changes.is_empty())
}

/// `+34`, `-2`, `0`.
fn signed_count(n: i64) -> String {
    if n == 0 {
        "0".to_owned()
    } else {
        format!("{n:+}")
    }
}

/// `+5.3 KiB`, `-272 B`, `0 B`.
fn signed_bytes(n: i64) -> String {
    match n {
        0 => "0 B".to_owned(),
        n if n > 0 => format!("+{}", human_bytes(n.unsigned_abs())),
        n => format!("-{}", human_bytes(n.unsigned_abs())),
    }
}

/// One line per tag: the growth, the size after, the best driver and Pooltag.txt's entry.
fn diff_human(out: &mut impl Write, changes: &[Change], answers: &Answers) -> io::Result<()> {
    writeln!(
        out,
        "Tag   Bytes growth  Outstanding   Bytes after  Driver; Pooltag.txt"
    )?;
    for change in changes {
        let answer = answers.of(change.tag);
        let note: Vec<String> = [answer.driver(), answer.description()]
            .into_iter()
            .flatten()
            .collect();
        let note = if note.is_empty() {
            "unknown".to_owned()
        } else {
            note.join("; ")
        };
        let after = u64::try_from(change.after.bytes()).unwrap_or_default();
        writeln!(
            out,
            "{}  {:>12}  {:>11}  {:>12}  {note}",
            change.tag,
            signed_bytes(change.bytes_delta()),
            signed_count(change.outstanding_delta()),
            human_bytes(after),
        )?;
    }
    Ok(())
}

/// The figures of one pool in two snapshots.
#[derive(Serialize)]
struct PoolChange {
    allocs_before: u64,
    allocs_after: u64,
    frees_before: u64,
    frees_after: u64,
    bytes_before: u64,
    bytes_after: u64,
    bytes_delta: i64,
    outstanding_before: i64,
    outstanding_after: i64,
    outstanding_delta: i64,
}

impl PoolChange {
    fn of(before: Counters, after: Counters) -> PoolChange {
        PoolChange {
            allocs_before: before.allocs,
            allocs_after: after.allocs,
            frees_before: before.frees,
            frees_after: after.frees,
            bytes_before: before.bytes,
            bytes_after: after.bytes,
            bytes_delta: signed(after.bytes).saturating_sub(signed(before.bytes)),
            outstanding_before: before.outstanding(),
            outstanding_after: after.outstanding(),
            outstanding_delta: after.outstanding().saturating_sub(before.outstanding()),
        }
    }
}

/// `pooltag pool --diff --json`: one element per tag (the JSON contract in the README).
fn diff_json(out: &mut impl Write, changes: &[Change], answers: &Answers) -> io::Result<()> {
    #[derive(Serialize)]
    struct Item<N> {
        tag: String,
        bytes_before: i64,
        bytes_after: i64,
        bytes_delta: i64,
        outstanding_before: i64,
        outstanding_after: i64,
        outstanding_delta: i64,
        paged: PoolChange,
        nonpaged: PoolChange,
        #[serde(flatten)]
        named: N,
    }
    let items: Vec<_> = changes
        .iter()
        .map(|c| Item {
            tag: c.tag.to_string(),
            bytes_before: c.before.bytes(),
            bytes_after: c.after.bytes(),
            bytes_delta: c.bytes_delta(),
            outstanding_before: c.before.outstanding(),
            outstanding_after: c.after.outstanding(),
            outstanding_delta: c.outstanding_delta(),
            paged: PoolChange::of(c.before.paged, c.after.paged),
            nonpaged: PoolChange::of(c.before.nonpaged, c.after.nonpaged),
            named: named(answers.of(c.tag)),
        })
        .collect();
    serde_json::to_writer(&mut *out, &items).map_err(io::Error::from)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(tags: &[(&[u8; 4], Usage)]) -> Snapshot {
        Snapshot {
            tags: tags.iter().map(|(t, u)| (Tag(**t), *u)).collect(),
            ..Snapshot::default()
        }
    }

    fn usage(paged: (u64, u64, u64), nonpaged: (u64, u64, u64)) -> Usage {
        let c = |(allocs, frees, bytes)| Counters {
            allocs,
            frees,
            bytes,
        };
        Usage {
            paged: c(paged),
            nonpaged: c(nonpaged),
        }
    }

    fn no_answers() -> Answers {
        Answers {
            db: None,
            entries: Vec::new(),
            known: HashMap::new(),
        }
    }

    #[test]
    fn the_live_table_reads_like_poolmon() {
        let now = snapshot(&[
            (b"AfdA", usage((0, 0, 0), (1234, 1200, 5440))),
            (b"Irp ", usage((3, 1, 64), (900, 899, 272))),
        ]);
        let mut out = Vec::new();
        let table = rows(&now, None, PoolSort::Bytes);
        table_human(&mut out, &table, &no_answers(), false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Tag  Type      Allocs      Frees      Diff        Bytes Per Alloc  Driver\n\
             AfdA Nonp        1234       1200        34         5440       160  unknown\n\
             Irp  Nonp         900        899         1          272       272  unknown\n\
             Irp  Paged          3          1         2           64        32  unknown\n"
        );
        let order = |sort| {
            rows(&now, None, sort)
                .iter()
                .map(|r| format!("{}{}", r.tag, r.pool.name()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            order(PoolSort::Allocs),
            ["AfdANonp", "Irp Nonp", "Irp Paged"]
        );
        assert_eq!(
            order(PoolSort::Outstanding),
            ["AfdANonp", "Irp Paged", "Irp Nonp"]
        );
        assert_eq!(order(PoolSort::Tag), ["AfdANonp", "Irp Paged", "Irp Nonp"]);
    }

    #[test]
    fn the_watch_sorts_by_growth_since_the_start() {
        let start = snapshot(&[(b"AfdA", usage((0, 0, 0), (1234, 1200, 5440)))]);
        let now = snapshot(&[
            (b"AfdA", usage((0, 0, 0), (1234, 1200, 5000))),
            (b"Leak", usage((10, 0, 640), (0, 0, 0))),
        ]);
        let mut out = Vec::new();
        let table = rows(&now, Some(&start), PoolSort::Bytes);
        table_human(&mut out, &table, &no_answers(), true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Tag  Type      Allocs      Frees      Diff        Bytes       Growth Per Alloc  Driver\n\
             Leak Paged         10          0        10          640         +640        64  unknown\n\
             AfdA Nonp        1234       1200        34         5000         -440       147  unknown\n"
        );
    }

    #[test]
    fn the_live_table_as_json() {
        let now = snapshot(&[(b"Irp ", usage((3, 1, 64), (0, 0, 0)))]);
        let mut out = Vec::new();
        table_json(&mut out, &rows(&now, None, PoolSort::Bytes), &no_answers()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[{\"tag\":\"Irp \",\"type\":\"paged\",\"allocs\":3,\"frees\":1,\"outstanding\":2,\
             \"bytes\":64,\"per_alloc\":32,\"drivers\":[],\"entries\":[]}]\n"
        );
    }

    #[test]
    fn the_answer_is_the_best_driver_else_pooltag_txt() {
        let file = |path: &str, version: Option<&str>, evidence| FileMatch {
            tag: Tag(*b"Leak"),
            file: crate::store::StoredFile {
                content_id: 1,
                host: "pc".into(),
                path: path.into(),
                sha256: vec![0; 32],
                machine: 0x8664,
                company: None,
                description: None,
                version: version.map(str::to_owned),
            },
            evidence,
            sites: Vec::new(),
        };
        let entry = StoredEntry {
            tag: "Lea?".into(),
            binary: "leaky.sys".into(),
            description: "Leaky buffers".into(),
            host: "pc".into(),
            source: "pooltag.txt".into(),
            line: 3,
        };
        let mut answers = no_answers();
        answers.known.insert(
            Tag(*b"Leak"),
            Answer {
                files: vec![
                    file(r"C:\d\leaky.sys", Some("2.0.1.0"), Evidence::Call),
                    file(r"C:\store\LEAKY.SYS", None, Evidence::Code),
                    file(r"C:\d\other.sys", None, Evidence::Bytes),
                    file(r"C:\d\third.sys", None, Evidence::Bytes),
                ],
                entries: vec![entry.clone()],
            },
        );
        answers.known.insert(
            Tag(*b"Only"),
            Answer {
                files: Vec::new(),
                entries: vec![entry],
            },
        );
        let now = snapshot(&[
            (b"Leak", usage((2, 0, 128), (0, 0, 0))),
            (b"Only", usage((1, 0, 16), (0, 0, 0))),
        ]);
        let mut out = Vec::new();
        table_human(
            &mut out,
            &rows(&now, None, PoolSort::Bytes),
            &answers,
            false,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let notes: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.rsplit("  ").next())
            .collect();
        assert_eq!(
            notes,
            [
                "leaky.sys 2.0.1.0 (call) +2 others",
                "Pooltag.txt: leaky.sys - Leaky buffers"
            ]
        );
    }

    #[test]
    fn strings_from_drivers_and_tag_files_are_escaped() {
        let hostile = Answer {
            files: vec![FileMatch {
                tag: Tag(*b"Evil"),
                file: crate::store::StoredFile {
                    content_id: 1,
                    host: "pc".into(),
                    path: "C:\\d\\evil\x1b]0;x\x07.sys".into(),
                    sha256: vec![0; 32],
                    machine: 0x8664,
                    company: None,
                    description: None,
                    version: Some("1.0\u{9b}2J".into()),
                },
                evidence: Evidence::Call,
                sites: Vec::new(),
            }],
            entries: vec![StoredEntry {
                tag: "Evil".into(),
                binary: "e\rvil.sys".into(),
                description: "\x1b[2J".into(),
                host: "pc".into(),
                source: "pooltag.txt".into(),
                line: 1,
            }],
        };
        assert_eq!(
            hostile.driver().unwrap(),
            "evil\\x1b]0;x\\x07.sys 1.0\\u{9b}2J (call)"
        );
        assert_eq!(
            hostile.description().unwrap(),
            "Pooltag.txt: e\\x0dvil.sys - \\x1b[2J"
        );
    }

    #[test]
    fn growth_reads_in_units() {
        assert_eq!(signed_bytes(5440), "+5.3 KiB");
        assert_eq!(signed_bytes(-272), "-272 B");
        assert_eq!(signed_bytes(0), "0 B");
        assert_eq!(signed_count(-2), "-2");
        assert_eq!(signed_count(0), "0");
    }

    #[test]
    fn unsupported_systems_name_diff() {
        assert_eq!(
            unsupported("only Windows does").to_string(),
            "this system does not report pool usage (only Windows does); read snapshots taken \
             elsewhere with 'pooltag pool --diff BEFORE AFTER'"
        );
    }
}
