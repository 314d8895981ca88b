//! Replacing a database atomically: the new file is built as `<target>.<pid>.tmp` beside the
//! target and renamed over it only when complete.
//!
//! Crash safety: until the rename, the target is untouched, so an interrupted run (Ctrl-C,
//! kill -9, disk full, any error) leaves the previous database whole. A run removes the temporary
//! files earlier runs left behind, but never one that a running index still holds (on Unix it
//! holds a lock on it; on Windows the writer's open handle prevents its deletion).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file being written that will replace `target`. Dropped without [`AtomicFile::commit`], it
/// deletes itself and leaves the target as it was.
pub struct AtomicFile {
    temp: PathBuf,
    target: PathBuf,
    /// Held until the end so that no other run takes the temporary file for a stale one.
    _lock: Option<File>,
    committed: bool,
}

impl AtomicFile {
    /// Creates the empty temporary file for `target` (its folder made as needed), after
    /// removing the temporary files of runs that ended without cleaning up.
    pub fn create(target: &Path) -> Result<AtomicFile> {
        if target.is_dir() {
            return Err(Error::new(format!(
                "{}: is a directory, not a pooltag database",
                target.display()
            )));
        }
        let dir = folder_of(target);
        fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
        remove_stale_temporaries(target);
        let temp = temporary_path(target);
        File::create(&temp).map_err(|e| Error::new(format!("{}: {e}", temp.display())))?;
        Ok(AtomicFile {
            _lock: lock(&temp),
            temp,
            target: target.to_owned(),
            committed: false,
        })
    }

    /// The temporary file to write.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// The file it will replace.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// A second temporary file beside the first (`<target>.<pid>.tmp.patch`), for a writer that
    /// builds the result there; [`AtomicFile::take_from`] makes it this file's content. A run
    /// that dies leaves it to the next run's cleanup, like SQLite's side files.
    pub fn side_path(&self) -> PathBuf {
        let mut name = self.temp.file_name().unwrap_or_default().to_owned();
        name.push(".patch");
        self.temp.with_file_name(name)
    }

    /// Makes `side` (written and closed) the file to commit, in place of what was written to
    /// [`AtomicFile::path`].
    pub fn take_from(&mut self, side: &Path) -> Result<()> {
        fs::rename(side, &self.temp)
            .map_err(|e| Error::new(format!("{}: {e}", self.temp.display())))?;
        // The lock was on the file the rename replaced.
        self._lock = lock(&self.temp);
        Ok(())
    }

    /// Makes the finished file durable, then renames it over the target (and removes the
    /// target's log of unchanged runs, which was about the file replaced). Whoever wrote it must
    /// have closed it.
    pub fn commit(mut self) -> Result<()> {
        // Windows flushes only a handle opened for writing.
        let sync = fs::OpenOptions::new()
            .write(true)
            .open(&self.temp)
            .and_then(|f| f.sync_all());
        sync.map_err(|e| Error::new(format!("{}: {e}", self.temp.display())))?;
        // On Windows a reader holding the old database open makes the rename fail for a moment.
        let mut attempt = 0;
        loop {
            match fs::rename(&self.temp, &self.target) {
                Ok(()) => break,
                Err(_) if cfg!(windows) && attempt < 20 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(Error::new(format!(
                        "cannot replace {}: {e}",
                        self.target.display()
                    )));
                }
            }
        }
        self.committed = true;
        super::unchanged::remove(&self.target);
        #[cfg(unix)]
        let _ = File::open(folder_of(&self.target)).and_then(|d| d.sync_all());
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// The folder holding `path` (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn temporary_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    target.with_file_name(name)
}

/// Removes `<target>.<digits>.tmp` files (and SQLite's side files of them) that no running index
/// holds.
fn remove_stale_temporaries(target: &Path) {
    let dir = folder_of(target);
    let Some(base) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&base).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once(".tmp") else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A running index holds a lock on its temporary file: that file and its side files stay.
        let main_file = dir.join(format!("{base}.{pid}.tmp"));
        if cfg!(unix) && main_file.exists() && lock(&main_file).is_none() {
            continue;
        }
        let _ = fs::remove_file(entry.path());
    }
}

/// An exclusive advisory lock on `path`, or `None` when another process holds it. On Windows
/// (where a lock would also block SQLite's own reads) there is none: an open SQLite file cannot
/// be deleted there anyway.
fn lock(path: &Path) -> Option<File> {
    #[cfg(unix)]
    {
        let file = File::open(path).ok()?;
        file.try_lock().ok()?;
        Some(file)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}
