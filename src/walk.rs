//! Walking the roots: every regular file below them, without following symbolic links.

use std::path::{Component, Path, PathBuf};

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

/// `path` with its `.` components dropped and each `..` taking away the component before it,
/// without asking the file system: the root `a/b/../b` is `a/b`, and its files are stored under
/// `a/b`. (The same folder reached through a symbolic link stays another path.)
pub fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // Above the root is the root.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(component),
            },
            other => out.push(other),
        }
    }
    out
}

/// The roots to walk: each normalised root once, and none that lies inside another (walking the
/// outer one finds its files). Of equal roots the first given is kept; order is kept.
pub fn outermost<T>(roots: Vec<(T, PathBuf)>) -> Vec<(T, PathBuf)> {
    let paths: Vec<PathBuf> = roots.iter().map(|(_, p)| p.clone()).collect();
    roots
        .into_iter()
        .enumerate()
        .filter(|(i, (_, root))| {
            !paths
                .iter()
                .enumerate()
                .any(|(j, other)| j != *i && root.starts_with(other) && (root != other || j < *i))
        })
        .map(|(_, root)| root)
        .collect()
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn roots_are_normalised_without_the_file_system() {
        assert_eq!(normalise(Path::new("/a/b/../b")), PathBuf::from("/a/b"));
        assert_eq!(normalise(Path::new("/a/./b/")), PathBuf::from("/a/b"));
        assert_eq!(normalise(Path::new("/a/../../b")), PathBuf::from("/b"));
        assert_eq!(normalise(Path::new("../x")), PathBuf::from("../x"));
    }

    #[test]
    fn a_root_inside_another_or_given_twice_is_walked_once() {
        fn roots(given: &[&'static str]) -> Vec<&'static str> {
            let kept = outermost(given.iter().map(|g| (*g, PathBuf::from(g))).collect());
            kept.into_iter().map(|(g, _)| g).collect()
        }
        assert_eq!(roots(&["/a/b", "/a", "/c", "/a"]), vec!["/a", "/c"]);
        assert_eq!(roots(&["/a", "/ab"]), vec!["/a", "/ab"]);
        assert_eq!(roots(&["/a/x.sys", "/a/x.sys"]), vec!["/a/x.sys"]);
    }
}
