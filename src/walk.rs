//! Walking the roots: every regular file below them, without following symbolic links.

use std::path::{Path, PathBuf};

use walkdir::WalkDir;

/// One thing the walk found.
pub enum WalkItem {
    /// A regular file, with the size and modification time the walk saw.
    File {
        path: PathBuf,
        size: u64,
        mtime_ns: Option<i64>,
    },
    /// An entry that could not be read (permission denied, vanished, a loop): its path (when
    /// known) and why.
    Error {
        path: Option<PathBuf>,
        message: String,
    },
}

/// Every regular file under `roots`, in a deterministic order (sorted by file name within each
/// directory). Symbolic links below a root are not followed and not reported; a root that is
/// itself a link is followed, because the user named it. Other file types (FIFOs, sockets,
/// devices) are passed over: opening them could block.
pub fn walk(roots: &[PathBuf]) -> impl Iterator<Item = WalkItem> + '_ {
    roots.iter().flat_map(|root| {
        WalkDir::new(root)
            .follow_links(false)
            .follow_root_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_map(|entry| match entry {
                Ok(entry) if entry.file_type().is_file() => Some(file_item(entry.path())),
                Ok(_) => None,
                Err(e) => Some(WalkItem::Error {
                    path: e.path().map(Path::to_owned),
                    message: walk_error_message(&e),
                }),
            })
    })
}

fn file_item(path: &Path) -> WalkItem {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) => WalkItem::File {
            path: path.to_owned(),
            size: metadata.len(),
            mtime_ns: metadata.modified().ok().and_then(|t| {
                let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
                i64::try_from(since.as_nanos()).ok()
            }),
        },
        Err(e) => WalkItem::Error {
            path: Some(path.to_owned()),
            message: e.to_string(),
        },
    }
}

/// walkdir's message repeats the path; keep only the cause.
fn walk_error_message(e: &walkdir::Error) -> String {
    if let Some(ancestor) = e.loop_ancestor() {
        return format!("file system loop (back to {})", ancestor.display());
    }
    match e.io_error() {
        Some(io) => io.to_string(),
        None => e.to_string(),
    }
}
