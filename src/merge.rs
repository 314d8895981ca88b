//! `pooltag merge`: combine databases built on several machines into one.
//!
//! Every input is a pooltag database of this schema. The output holds, for each host, the files,
//! tag files and runs of the *last* input (in command-line order, the existing output first)
//! that holds that host; a content (by SHA-256) present in several inputs is stored once, and a
//! tag line read on several hosts is one entry with all its sources. Merging a database into
//! itself, or the same inputs twice, gives the same database again. The output is replaced
//! atomically, as `pooltag index` does.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::store::Database;
use crate::store::write::{IndexWriter, PAIR_BUDGET, Purpose};

/// What `pooltag merge` was asked to do.
#[derive(Clone, Debug)]
pub struct MergeConfig {
    /// The output; when it exists it is the first input.
    pub db: PathBuf,
    pub inputs: Vec<PathBuf>,
}

/// What a merge did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeSummary {
    pub inputs: usize,
    pub hosts: Vec<String>,
    pub distinct_tags: u64,
    pub elapsed: Duration,
}

/// Merges the inputs into the output database.
pub fn run(config: &MergeConfig) -> Result<MergeSummary> {
    let started = Instant::now();
    let mut sources: Vec<PathBuf> = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let existing = config.db.exists().then(|| config.db.clone());
    for path in existing.iter().chain(&config.inputs) {
        let key = std::fs::canonicalize(path)
            .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
        if seen.insert(key) {
            sources.push(path.clone());
        }
    }
    // Check every input before writing anything.
    let mut hosts_of = Vec::new();
    for source in &sources {
        hosts_of.push(Database::open(source)?.hosts()?);
    }
    let mut writer = IndexWriter::create(&config.db, PAIR_BUDGET, Purpose::Merge)?;
    let mut taken: HashSet<String> = HashSet::new();
    for (source, hosts) in sources.iter().zip(&hosts_of).rev() {
        let mine: Vec<String> = hosts
            .iter()
            .filter(|h| !taken.contains(*h))
            .cloned()
            .collect();
        writer.absorb(source, &mine)?;
        taken.extend(mine);
    }
    let distinct_tags = writer.finish(None)?.distinct_tags;
    let mut hosts: Vec<String> = taken.into_iter().collect();
    hosts.sort();
    Ok(MergeSummary {
        inputs: sources.len(),
        hosts,
        distinct_tags,
        elapsed: started.elapsed(),
    })
}
