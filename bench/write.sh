#!/usr/bin/env bash
# bench/write.sh - the write side of pooltag on the bench corpus: what an index costs.
#
#   usage: bench/write.sh [RUNS]      (RUNS: timed runs per measurement, default 3; medians)
#
# On the bench corpus ($POOLTAG_BENCH_CORPUS or ~/.cache/pooltag-bench-corpus, fetched with
# $POOLTAG_BENCH_FETCH_SCRIPT, default /work/shared/corpus/fetch-bench-corpus.sh, when it holds
# no file; the fetch time is noted), with a release build copied into the scratch folder
# ($POOLTAG_BENCH_DIR, default ${TMPDIR:-/tmp}/pooltag-bench-write), warm page cache:
#   - one `grep -rlF` pass for an absent tag (grep reads every byte): the unit of index time;
#   - `index --full` from scratch with code analysis and with `--bytes-only`: wall and CPU time
#     (CPU / wall says how busy both cores are), peak RSS, and the database size;
#   - the bytes of executable sections in the corpus (every PE section with CNT_CODE or
#     MEM_EXECUTE), and the code analysis rate: those bytes per CPU-second that code analysis
#     (and the writer storing its evidence) adds over `--bytes-only`, and the rate of the
#     analysis alone on one core (`cargo bench --bench extract`, files read beforehand);
#   - re-index costs against the full index: nothing changed; one new driver; one changed
#     driver; one removed driver (each from a copy of the full database, on a tree of hard links
#     to the corpus in the scratch folder, so that the corpus itself is never touched).
# Writes its table to stdout and replaces the "Write side on the bench corpus" section of
# bench/results.md (the other sections stay). Needs python3, GNU time and grep.
set -euo pipefail
export LC_ALL=C
runs=${1:-3}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
results_md=$here/results.md
corpus=${POOLTAG_BENCH_CORPUS:-$HOME/.cache/pooltag-bench-corpus}
scratch=${POOLTAG_BENCH_DIR:-${TMPDIR:-/tmp}/pooltag-bench-write}
log() { printf '%s\n' "bench: $*" >&2; }
mkdir -p "$scratch"

if [[ -z $(find "$corpus" -type f -print -quit 2>/dev/null) ]]; then
  fetch=${POOLTAG_BENCH_FETCH_SCRIPT:-/work/shared/corpus/fetch-bench-corpus.sh}
  log "fetching the bench corpus into $corpus with $fetch (about 2.5 minutes)"
  started=$(date +%s)
  bash "$fetch" "$corpus" >&2
  log "fetched in $(($(date +%s) - started)) s"
fi
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

(cd "$repo" && cargo build --release -q)
bin=$scratch/pooltag
cp "${CARGO_TARGET_DIR:-$repo/target}/release/pooltag" "$bin"
commit=$(git -C "$repo" rev-parse --short HEAD)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Median of "$runs" runs of a command: prints "wall user sys maxrss_kb" of the median-wall run.
measure() {
  local out=() i
  for ((i = 0; i < runs; i++)); do
    [[ -n ${PREPARE:-} ]] && eval "$PREPARE"
    # grep exits 1 when it finds nothing: the status is not the measurement.
    out+=("$({ /usr/bin/time -f '%e %U %S %M' "$@" 2>&1 >/dev/null || true; } | tail -n1)")
  done
  printf '%s\n' "${out[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p"
}

# The corpus as a tree of hard links (free to make on the same file system, else a copy), so
# that one file of it can be added, changed or removed.
tree=$scratch/tree
if [[ ! -d $tree ]]; then
  cp -al "$corpus" "$tree" 2>/dev/null || cp -a "$corpus" "$tree"
fi
db=$scratch/full.db
log "grep -rlF pass (absent tag), $runs runs"
grep -rlF 'Zq9!' "$tree" >/dev/null || true
read -r grep_wall _ < <(measure grep -rlF 'Zq9!' "$tree")
log "index --full with code analysis, $runs runs"
read -r full_wall full_user full_sys full_rss < <(PREPARE="rm -f '$db'" measure "$bin" --db "$db" index --full "$tree")
log "index --full --bytes-only, $runs runs"
read -r bytes_wall bytes_user bytes_sys bytes_rss < <(PREPARE="rm -f '$scratch/bytes.db'" measure "$bin" --db "$scratch/bytes.db" index --full --bytes-only "$tree")
rm -f "$db"
"$bin" --db "$db" index "$tree" 2>"$scratch/summary.txt"
db_size=$(stat -c %s "$db")
corpus_bytes=$(du -sb "$corpus" | cut -f1)
code_bytes=$(python3 - "$corpus" <<'PY'
import os, struct, sys
total = 0
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        try:
            data = open(os.path.join(root, name), "rb").read(4096)
            pe = struct.unpack_from("<I", data, 0x3c)[0]
            if data[:2] != b"MZ" or data[pe:pe + 4] != b"PE\0\0":
                continue
            count = struct.unpack_from("<H", data, pe + 6)[0]
            table = pe + 24 + struct.unpack_from("<H", data, pe + 20)[0]
            for i in range(count):
                raw = struct.unpack_from("<I", data, table + 40 * i + 16)[0]
                if struct.unpack_from("<I", data, table + 40 * i + 36)[0] & 0x20000020:
                    total += raw
        except (struct.error, OSError):
            pass
print(total)
PY
)
victim=$(find "$tree" -type f | sort | sed -n 1p)
log "re-index: unchanged, one new, one changed, one removed driver ($runs runs each)"
again() { PREPARE="cp '$db' '$scratch/re.db'" measure "$bin" --db "$scratch/re.db" index "$tree"; }
read -r same_wall _ < <(again)
cp "$repo/tests/fixtures/bin/x64-O2/basic.sys" "$tree/new-driver.sys"
read -r new_wall _ < <(again)
rm "$tree/new-driver.sys"
cp "$victim" "$scratch/victim" && rm "$victim" && cp "$scratch/victim" "$victim" && printf 'x' >>"$victim"
read -r changed_wall _ < <(again)
rm "$victim"
read -r removed_wall _ < <(again)
cp "$scratch/victim" "$victim"
log "the code analysis alone, on one core: cargo bench --bench extract"
extract_lines=$(cd "$repo" && cargo bench -q --bench extract -- "$corpus" 2>/dev/null | tail -n +2)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

section=$(python3 - <<PY
import sys, os
r = lambda a, b: float(a) / float(b)
grep, full, bytes_only = float("$grep_wall"), float("$full_wall"), float("$bytes_wall")
full_cpu, bytes_cpu = float("$full_user") + float("$full_sys"), float("$bytes_user") + float("$bytes_sys")
code = int("$code_bytes")
rate = code / max(full_cpu - bytes_cpu, 1e-9) / 1e6
def analysis_row():
    # "x64   1443 files   107.5 MB   1.259 s   85.4 MB/s (315 sites)", one line per architecture.
    parts = [line.split() for line in '''$extract_lines'''.splitlines() if line.strip()]
    mb, seconds = sum(float(p[3]) for p in parts), sum(float(p[5]) for p in parts)
    each = ", ".join(f"{p[0]} {p[7]}" for p in parts)
    total = mb / max(seconds, 1e-9)
    return ("code analysis alone, one core (\`cargo bench --bench extract\`, best of 3): executable MB/s", f"{total:.0f} MB/s ({each})", ">= 100 MB/s per core", "yes" if total >= 100 else "no")
rows = [
    ("corpus", f"{int('$corpus_bytes') / 1e9:.2f} GB, $(find "$corpus" -type f | wc -l) files; executable sections {code / 1e6:.0f} MB", "", ""),
    ("one \`grep -rlF\` pass (absent tag)", f"{grep:.2f} s", "", ""),
    ("\`index --full\`, wall / CPU", f"{full:.2f} s / {full_cpu:.2f} s", "", ""),
    ("\`index --full\` / grep passes", f"{r(full, grep):.1f}", "<= 4", "yes" if r(full, grep) <= 4 else "no"),
    ("CPU time / wall time during the index", f"{r(full_cpu, full):.2f}", ">= 1.8", "yes" if r(full_cpu, full) >= 1.8 else "no"),
    ("\`index --full --bytes-only\`, wall / CPU", f"{bytes_only:.2f} s / {bytes_cpu:.2f} s ({r(bytes_only, grep):.1f} grep passes)", "", ""),
    ("code analysis and storing its evidence: executable bytes per CPU-second added to \`--bytes-only\`", f"{rate:.0f} MB/s", ">= 100 MB/s per core", "yes" if rate >= 100 else "no"),
    analysis_row(),
    ("\`index\` peak RSS (with code / bytes-only)", f"{int('$full_rss') / 1e3:.0f} MB / {int('$bytes_rss') / 1e3:.0f} MB", "<= 300 MB", "yes" if int("$full_rss") <= 300e3 else "no"),
    ("database / corpus bytes", f"{int('$db_size') / 1e6:.1f} MB, {100 * int('$db_size') / int('$corpus_bytes'):.1f}%", "<= 10%", "yes" if int("$db_size") <= 0.1 * int("$corpus_bytes") else "no"),
    ("re-index, nothing changed", f"{float('$same_wall'):.2f} s, {100 * r('$same_wall', full):.1f}% of a full index", "<= 2%", "yes" if r("$same_wall", full) <= 0.02 else "no"),
    ("re-index, one new driver", f"{float('$new_wall'):.2f} s, {100 * r('$new_wall', full):.1f}%", "<= 5%", "yes" if r("$new_wall", full) <= 0.05 else "no"),
    ("re-index, one changed driver", f"{float('$changed_wall'):.2f} s, {100 * r('$changed_wall', full):.1f}%", "<= 5%", "yes" if r("$changed_wall", full) <= 0.05 else "no"),
    ("re-index, one removed driver", f"{float('$removed_wall'):.2f} s, {100 * r('$removed_wall', full):.1f}%", "<= 5%", "yes" if r("$removed_wall", full) <= 0.05 else "no"),
]
section = "## Write side on the bench corpus\n\n"
section += f"- pooltag: release build of commit $commit; \`bench/write.sh $runs\` (medians of $runs runs, \`/usr/bin/time\`); load average before $load_before, after $load_after\n"
section += "- summary of the full index: \`" + open("$scratch/summary.txt").read().strip() + "\`\n\n"
section += "| metric | value | target | met |\n|---|---:|---|---|\n"
section += "".join(f"| {a} | {b} | {c} | {d} |\n" for a, b, c, d in rows)
print(section)
PY
)
echo "$section"
printf '%s\n' "$section" | python3 "$here/section.py" "$results_md"
