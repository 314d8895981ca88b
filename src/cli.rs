//! The command line: clap's definitions, turned into a typed [`Command`] before any work starts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};
use crate::export::ExportFormat;
use crate::extract::Evidence;
use crate::index::IndexConfig;
use crate::merge::MergeConfig;
use crate::pool::{PoolConfig, PoolMode, PoolSort};
use crate::query::{QueryConfig, QueryOutput, TagsConfig};
use crate::store::write::PAIR_BUDGET;
use crate::tag::TagPattern;

/// Find which Windows driver uses a pool tag, from an index of driver binaries and Pooltag.txt.
#[derive(Parser, Debug)]
#[command(name = "pooltag", version, about, max_term_width = 100)]
pub struct Args {
    /// The database [default: $POOLTAG_DB, else the per-user data folder]
    #[arg(long, global = true, value_name = "FILE")]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: CommandArgs,
}

#[derive(Subcommand, Debug)]
enum CommandArgs {
    /// Index the driver binaries and Pooltag.txt/localtag.txt files under ROOTs
    #[command(after_help = "Example:\n  pooltag index C:\\Windows\\System32\\drivers")]
    Index {
        /// A tag file to read besides those found under the roots (any name)
        #[arg(long = "pooltag-txt", value_name = "FILE")]
        pooltag_txt: Vec<PathBuf>,
        /// Record only the bytes level (what findstr finds): skip the analysis of code and data
        #[arg(long)]
        bytes_only: bool,
        /// Rebuild from scratch: read every file again instead of reusing the previous database
        #[arg(long)]
        full: bool,
        /// Keep only what this run finds: drop this host's files outside the ROOTs and the tag
        /// files not read again (by default a run replaces only what lies under its ROOTs)
        #[arg(long)]
        prune: bool,
        /// Also list the lines of tag files that are not tag lines
        #[arg(short, long)]
        verbose: bool,
        /// Record the files under this host name instead of this machine's (for a disk image or
        /// a share of another machine)
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
        /// Directories or single files to index [default on Windows: the driver folders
        /// System32\drivers and System32\DriverStore\FileRepository, and the Debugging Tools'
        /// triage\pooltag.txt]
        #[arg(value_name = "ROOT")]
        roots: Vec<PathBuf>,
    },
    /// Which drivers use a tag, and what Pooltag.txt says of it
    #[command(
        after_help = "Patterns: 1-4 characters padded with spaces (Irp = 'Irp '), \
        ? for any one character, * for any rest (Afd?, Ul*), 0x41646641 for a tag value.\n\n\
        Example:\n  pooltag query AfdA"
    )]
    Query {
        /// Print one JSON array (see the README for the contract)
        #[arg(long, conflicts_with = "list")]
        json: bool,
        /// Print only the paths of matching driver files, like findstr /m
        #[arg(short = 'l', long = "files-with-matches")]
        list: bool,
        /// Match letters in any case
        #[arg(short = 'i', long)]
        ignore_case: bool,
        /// Keep only drivers tied to the tag at this level or stronger: call, arg, code, data,
        /// bytes [default: bytes; with -l, the files holding the four bytes, as findstr]
        #[arg(long, value_name = "LEVEL", value_parser = parse_evidence)]
        evidence: Option<Evidence>,
        /// Allow a pattern that matches every tag (`*`, `????`)
        #[arg(long)]
        all: bool,
        /// Tags or tag patterns
        #[arg(required = true, value_name = "PATTERN")]
        patterns: Vec<String>,
    },
    /// The tags found in indexed files
    #[command(after_help = "Example:\n  pooltag tags afd.sys")]
    Tags {
        /// Print one JSON array of {"path", "tag", "evidence", "sites"}
        #[arg(long)]
        json: bool,
        /// Keep only tags at this level or stronger: call, arg, code, data, bytes
        #[arg(long, value_name = "LEVEL", value_parser = parse_evidence)]
        evidence: Option<Evidence>,
        /// For each tag at call or arg level, the other drivers and Pooltag.txt entries using it
        #[arg(long, conflicts_with = "evidence")]
        collisions: bool,
        /// Indexed files, by path or by file name
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
    /// Print PoolMon or !poolused output, CSV with a Tag column, or a list of tags, with the
    /// answer beside each tag
    #[command(
        after_help = "Example (a PoolMon snapshot saved with poolmon /n):\n  pooltag annotate poolmon.txt"
    )]
    Annotate {
        /// Print one JSON array of the tagged lines and their answers
        #[arg(long)]
        json: bool,
        /// Files to read, `-` for standard input [default: standard input]
        #[arg(value_name = "INPUT")]
        inputs: Vec<PathBuf>,
    },
    /// The live pool tag table with the driver behind each tag (Windows), or what grew between
    /// two snapshots (any system)
    #[command(
        after_help = "Examples (the leak hunt):\n  pooltag pool --save before.json\n  \
        pooltag pool --save after.json\n  pooltag pool --diff before.json after.json\n\n\
        --diff also reads PoolMon captures (poolmon /n) and WinDbg !poolused output."
    )]
    Pool {
        /// Print one JSON array (see the README for the contract)
        #[arg(long, conflicts_with_all = ["watch", "save"])]
        json: bool,
        /// Order of the table: bytes, outstanding, allocs or tag [default: bytes]
        #[arg(long, value_name = "KEY", value_parser = parse_sort,
            conflicts_with_all = ["watch", "save", "diff"])]
        sort: Option<PoolSort>,
        /// Print at most N rows
        #[arg(long, value_name = "N", conflicts_with = "save")]
        top: Option<usize>,
        /// Redraw every SECONDS [default: 2] with the growth since the start, sorted by it, like
        /// PoolMon; q or Ctrl-C quits
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2",
            value_parser = parse_seconds, conflicts_with_all = ["save", "diff"])]
        watch: Option<Duration>,
        /// Write the snapshot (host, time, Windows version, counters) as JSON to FILE
        #[arg(long, value_name = "FILE", conflicts_with = "diff")]
        save: Option<PathBuf>,
        /// Compare two snapshots, each saved with --save, a PoolMon capture or !poolused output
        #[arg(long, num_args = 2, value_names = ["BEFORE", "AFTER"])]
        diff: Option<Vec<PathBuf>>,
    },
    /// Check drivers that are not in the index: their tags, and the indexed drivers and
    /// Pooltag.txt entries already using them (exit 1 when there is a collision)
    #[command(after_help = "Example:\n  pooltag check build\\x64\\Release\\mydriver.sys")]
    Check {
        /// Print one JSON array
        #[arg(long)]
        json: bool,
        /// Driver binaries to check (nothing is written)
        #[arg(required = true, value_name = "DRIVER")]
        drivers: Vec<PathBuf>,
    },
    /// Print a shell completion script: bash, zsh, fish, powershell or elvish
    #[command(after_help = "Example:\n  pooltag completions bash > /etc/bash_completion.d/pooltag")]
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff)
    #[command(after_help = "Example:\n  pooltag man > pooltag.1 && man ./pooltag.1")]
    Man,
    /// What the database holds: hosts, runs, counts, size, integrity
    #[command(after_help = "Example:\n  pooltag info --db \\\\share\\pooltag.db")]
    Info {
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Combine databases built on several machines into the one named by --db
    #[command(after_help = "Example:\n  pooltag merge --db all.db laptop.db server.db")]
    Merge {
        /// Databases to merge into --db (which, when it exists, is merged too)
        #[arg(required = true, value_name = "IN")]
        inputs: Vec<PathBuf>,
    },
    /// Write the index as a localtag.txt for WinDbg and PoolMon, as CSV, or as JSON
    #[command(after_help = "Example:\n  pooltag export --format localtag -o localtag.txt")]
    Export {
        /// localtag, csv or json
        #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
        format: ExportFormat,
        /// Keep pairs at this level or stronger: call, arg, code, data, bytes [default: call]
        #[arg(long, value_name = "LEVEL", value_parser = parse_evidence)]
        evidence: Option<Evidence>,
        /// Write to FILE instead of standard output
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// One mode of pooltag, with everything it needs.
#[derive(Debug)]
pub enum Command {
    Index(IndexConfig),
    Query(QueryConfig),
    Tags(TagsConfig),
    Info {
        db: PathBuf,
        json: bool,
    },
    Annotate {
        db: PathBuf,
        json: bool,
        inputs: Vec<PathBuf>,
    },
    Check {
        db: PathBuf,
        json: bool,
        drivers: Vec<PathBuf>,
    },
    Merge(MergeConfig),
    Export(ExportConfig),
    Pool(PoolConfig),
    Completions(clap_complete::Shell),
    Man,
}

/// What `pooltag export` was asked to do.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    pub db: PathBuf,
    pub format: ExportFormat,
    pub evidence: Evidence,
    /// The file to write; standard output when `None`.
    pub output: Option<PathBuf>,
}

impl Args {
    /// The whole command-line interface, for completions and the manual page.
    pub fn command() -> clap::Command {
        <Args as clap::CommandFactory>::command()
    }

    /// Checks the arguments and resolves defaults (the database path, absolute roots).
    pub fn into_command(self) -> Result<Command> {
        let db = match self.db {
            Some(db) => db,
            None => default_database(|name| std::env::var_os(name))?,
        };
        Ok(match self.command {
            CommandArgs::Index {
                pooltag_txt,
                bytes_only,
                full,
                prune,
                verbose,
                host,
                roots,
            } => {
                let (roots, mut tag_files) = if roots.is_empty() {
                    windows_defaults(|name| std::env::var_os(name))?
                } else {
                    (roots, Vec::new())
                };
                tag_files.extend(pooltag_txt);
                let roots = roots
                    .into_iter()
                    .map(|r| Ok((r.display().to_string(), absolute(&r)?)))
                    .collect::<Result<_>>()?;
                Command::Index(IndexConfig {
                    db,
                    roots: crate::walk::outermost(roots),
                    tag_files: tag_files
                        .iter()
                        .map(|p| absolute(p))
                        .collect::<Result<_>>()?,
                    progress: true,
                    analyse_code: !bytes_only,
                    pair_budget: PAIR_BUDGET,
                    full,
                    prune,
                    verbose,
                    host: host.unwrap_or_else(crate::index::host_name),
                })
            }
            CommandArgs::Query {
                json,
                list,
                ignore_case,
                evidence,
                all,
                patterns,
            } => Command::Query(QueryConfig {
                db,
                patterns: patterns
                    .iter()
                    .map(|p| {
                        let pattern =
                            TagPattern::parse(p).map_err(|e| Error::new(e.to_string()))?;
                        if pattern.matches_everything() && !all {
                            return Err(Error::new(format!(
                                "the pattern '{p}' matches every tag; add --all to list them all"
                            )));
                        }
                        Ok(pattern)
                    })
                    .collect::<Result<_>>()?,
                ignore_case,
                evidence,
                output: if list {
                    QueryOutput::List
                } else if json {
                    QueryOutput::Json
                } else {
                    QueryOutput::Human
                },
            }),
            CommandArgs::Tags {
                json,
                evidence,
                collisions,
                files,
            } => Command::Tags(TagsConfig {
                db,
                files,
                json,
                evidence,
                collisions,
            }),
            CommandArgs::Info { json } => Command::Info { db, json },
            CommandArgs::Completions { shell } => Command::Completions(shell),
            CommandArgs::Man => Command::Man,
            CommandArgs::Check { json, drivers } => Command::Check { db, json, drivers },
            CommandArgs::Annotate { json, inputs } => Command::Annotate { db, json, inputs },
            CommandArgs::Pool {
                json,
                sort,
                top,
                watch,
                save,
                diff,
            } => Command::Pool(PoolConfig {
                db,
                mode: match (diff, save, watch) {
                    (Some(files), _, _) => {
                        let [before, after] = <[PathBuf; 2]>::try_from(files)
                            .map_err(|_| Error::new("--diff takes two files: BEFORE AFTER"))?;
                        PoolMode::Diff { before, after }
                    }
                    (None, Some(path), _) => PoolMode::Save(path),
                    (None, None, Some(interval)) => PoolMode::Watch(interval),
                    (None, None, None) => PoolMode::Table(sort.unwrap_or(PoolSort::Bytes)),
                },
                top,
                json,
            }),
            CommandArgs::Merge { inputs } => Command::Merge(MergeConfig { db, inputs }),
            CommandArgs::Export {
                format,
                evidence,
                output,
            } => Command::Export(ExportConfig {
                db,
                format,
                evidence: evidence.unwrap_or(Evidence::Call),
                output,
            }),
        })
    }
}

/// An export format named on the command line.
fn parse_format(name: &str) -> std::result::Result<ExportFormat, String> {
    match name {
        "localtag" => Ok(ExportFormat::Localtag),
        "csv" => Ok(ExportFormat::Csv),
        "json" => Ok(ExportFormat::Json),
        _ => Err(format!(
            "unknown format '{name}' (use localtag, csv or json)"
        )),
    }
}

/// `pooltag pool --sort KEY`.
fn parse_sort(name: &str) -> std::result::Result<PoolSort, String> {
    PoolSort::from_name(name)
        .ok_or_else(|| format!("unknown sort key '{name}' (use bytes, outstanding, allocs or tag)"))
}

/// `pooltag pool --watch SECONDS`: a positive number, at most a day.
fn parse_seconds(text: &str) -> std::result::Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 86_400.0 => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(format!(
            "invalid interval '{text}' (use seconds, more than 0 and at most 86400)"
        )),
    }
}

/// An evidence level named on the command line.
fn parse_evidence(name: &str) -> std::result::Result<Evidence, String> {
    Evidence::from_name(name).ok_or_else(|| {
        format!("unknown evidence level '{name}' (use call, arg, code, data or bytes)")
    })
}

/// `path` made absolute and normalised (`a/../b` is `b`), as pooltag stores paths.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map(|p| crate::walk::normalise(&p))
        .map_err(|e| Error::new(format!("{}: {e}", path.display())))
}

/// What `pooltag index` reads when no ROOT is given: on Windows, the driver folders and every
/// Debugging Tools `triage\pooltag.txt` present (x64, x86 and arm64, under both Program Files
/// folders); elsewhere nothing, and a usage error says what to pass.
pub fn windows_defaults(
    var: impl Fn(&str) -> Option<OsString>,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    if !cfg!(windows) {
        return Err(Error::new(
            "index: give the folders to index (ROOT...), for example a mounted Windows disk's \
             Windows/System32/drivers; only on Windows does pooltag know where drivers live",
        ));
    }
    let system_root = var("SystemRoot")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\Windows"));
    let system32 = system_root.join("System32");
    // A folder that is not there (no DriverStore before Vista, or in Wine) is not an error.
    let roots: Vec<PathBuf> = [
        system32.join("drivers"),
        system32.join("DriverStore").join("FileRepository"),
    ]
    .into_iter()
    .filter(|folder| folder.is_dir())
    .collect();
    let mut tag_files = Vec::new();
    for program_files in ["ProgramFiles(x86)", "ProgramFiles"] {
        let Some(base) = var(program_files).filter(|v| !v.is_empty()) else {
            continue;
        };
        for arch in ["x64", "x86", "arm64"] {
            let file = PathBuf::from(&base)
                .join(r"Windows Kits\10\Debuggers")
                .join(arch)
                .join("triage")
                .join("pooltag.txt");
            if file.is_file() && !tag_files.contains(&file) {
                tag_files.push(file);
            }
        }
    }
    Ok((roots, tag_files))
}

/// The database when `--db` is not given: `POOLTAG_DB`, else `pooltag/pooltag.db` in the
/// per-user data folder (`%LOCALAPPDATA%` on Windows, `$XDG_DATA_HOME` or `~/.local/share` on
/// Linux and other Unixes, `~/Library/Application Support` on macOS).
pub fn default_database(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    if let Some(db) = var("POOLTAG_DB").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(db));
    }
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let folder = if cfg!(windows) {
        set("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        set("HOME").map(|h| h.join("Library").join("Application Support"))
    } else {
        set("XDG_DATA_HOME").or_else(|| set("HOME").map(|h| h.join(".local").join("share")))
    };
    folder
        .map(|f| f.join("pooltag").join("pooltag.db"))
        .ok_or_else(|| {
            Error::new("no per-user data folder (HOME or LOCALAPPDATA is not set); give --db FILE")
        })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn database_location_follows_pooltag_db_then_xdg_then_home() {
        let db = |vars| default_database(env(vars)).unwrap();
        assert_eq!(
            db(&[("POOLTAG_DB", "/x/p.db"), ("HOME", "/home/u")]),
            PathBuf::from("/x/p.db")
        );
        assert_eq!(
            db(&[("XDG_DATA_HOME", "/data"), ("HOME", "/home/u")]),
            PathBuf::from("/data/pooltag/pooltag.db")
        );
        assert_eq!(
            db(&[("HOME", "/home/u")]),
            PathBuf::from("/home/u/.local/share/pooltag/pooltag.db")
        );
        assert!(default_database(env(&[])).is_err());
    }
}
