//! `cargo bench --bench extract [DIR]`: the code and data analysis alone, on one core, over the
//! driver binaries under DIR ($POOLTAG_BENCH_CORPUS, else ~/.cache/pooltag-bench-corpus).
//!
//! Prints, per architecture, the bytes of executable sections, the CPU time of
//! `extract::analyse` and the rate in MB of executable sections per second (issue 10's target is
//! 100 MB/s per core). Files are read first, so that only the analysis is timed; each
//! architecture's files are analysed in one batch, timed as a whole, three times (best kept).
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pooltag::extract::{self, image::Arch, image::Image};

fn main() {
    let dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("POOLTAG_BENCH_CORPUS").map(PathBuf::from))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pooltag-bench-corpus"))
        })
        .expect("a corpus folder");
    let mut by_arch: Vec<(&str, Vec<Vec<u8>>, usize)> = vec![
        ("x86", Vec::new(), 0),
        ("x64", Vec::new(), 0),
        ("arm64", Vec::new(), 0),
    ];
    for entry in walkdir::WalkDir::new(&dir)
        .into_iter()
        .filter_map(Result::ok)
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(data) = std::fs::read(entry.path()) else {
            continue;
        };
        let Some(image) = Image::parse(&data) else {
            continue;
        };
        let slot = match image.arch {
            Arch::X86 => 0,
            Arch::X64 => 1,
            Arch::Arm64 => 2,
            Arch::Other => continue,
        };
        by_arch[slot].2 += image.code_size();
        by_arch[slot].1.push(data);
    }
    println!(
        "{}: executable MB, analysis CPU s (best of 3), MB/s",
        dir.display()
    );
    for (arch, files, code) in &by_arch {
        if files.is_empty() {
            continue;
        }
        let mut best = Duration::MAX;
        let mut sites = 0;
        for _ in 0..3 {
            let started = Instant::now();
            sites = files
                .iter()
                .map(|data| extract::analyse(data).sites.len())
                .sum::<usize>();
            best = best.min(started.elapsed());
        }
        let mb = *code as f64 / 1e6;
        println!(
            "{arch:6} {:5} files {mb:8.1} MB {:7.3} s {:7.1} MB/s ({sites} sites)",
            files.len(),
            best.as_secs_f64(),
            mb / best.as_secs_f64()
        );
    }
}
