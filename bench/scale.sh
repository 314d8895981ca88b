#!/usr/bin/env bash
# bench/scale.sh - pooltag index on a synthetic tree of many files.
#
#   usage: bench/scale.sh [FILES]     (default 200000)
#
# Builds, under ${POOLTAG_BENCH_DIR:-/tmp/pooltag-bench}/scale-N, a tree of N files: mostly small
# non-driver files (text, and PE-looking files that are not drivers: 'MZ' followed by junk), 1,000
# to a folder, plus every fixture driver and every driver of the public corpus
# (~/.cache/pooltag-corpus), each copy made distinct by an appended suffix. Then indexes it from
# scratch twice, at N/4 and at N files, with /usr/bin/time, and prints wall time, files per second,
# peak memory and database size for both: memory must not grow with the number of non-driver
# files. Prints a Markdown table; nothing is written into the repository.
set -euo pipefail
export LC_ALL=C
files=${1:-200000}
repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=${POOLTAG_BENCH_DIR:-${TMPDIR:-/tmp}/pooltag-bench}
corpus=${POOLTAG_CORPUS:-$HOME/.cache/pooltag-corpus}
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null

(cd "$repo" && cargo build --release -q)
target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$scratch/pooltag-scale"
mkdir -p "$scratch"
cp "$target/release/pooltag" "$bin"

# make_tree DIR N: N files, drivers first, then filler.
make_tree() {
  local dir=$1 n=$2
  if [ -f "$dir/.complete" ]; then return; fi
  rm -rf "$dir"
  mkdir -p "$dir/drivers"
  local k=0
  while IFS= read -r -d '' f; do
    k=$((k + 1))
    cp "$f" "$dir/drivers/$k-$(basename "$f")"
    printf 'scale-%06d' "$k" >>"$dir/drivers/$k-$(basename "$f")"
  done < <(find "$repo/tests/fixtures/bin" "$corpus" -type f \( -name '*.sys' -o -name '*.dll' \) -print0 2>/dev/null)
  python3 - "$dir" "$n" "$k" <<'PY'
import os, sys
root, total, drivers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(max(0, total - drivers)):
    folder = os.path.join(root, "f%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(folder, exist_ok=True)
    name = os.path.join(folder, "file%07d" % i)
    if i % 10 == 0:
        # Looks like a PE image to a first glance, but is not one.
        data = b"MZ" + bytes((i * 7 + j) % 256 for j in range(126))
        name += ".dll"
    else:
        data = ("line %d of a text file that is no driver\n" % i).encode() * 2
        name += ".txt"
    with open(name, "wb") as f:
        f.write(data)
PY
  touch "$dir/.complete"
}

measure() { # DIR -> "wall_s rss_kb db_bytes files drivers"
  local dir=$1 db="$scratch/scale.db"
  rm -f "$db"
  local out
  out=$(/usr/bin/time -f 'TIME %e %M' "$bin" --db "$db" index --full "$dir" 2>&1)
  local wall rss summary
  wall=$(grep '^TIME' <<<"$out" | awk '{print $2}')
  rss=$(grep '^TIME' <<<"$out" | awk '{print $3}')
  summary=$(grep 'files seen' <<<"$out" | tail -n1)
  local seen drivers
  seen=$(sed -E 's/^pooltag: ([0-9]+) files seen.*/\1/' <<<"$summary")
  drivers=$(sed -E 's/.* ([0-9]+) driver binaries indexed.*/\1/' <<<"$summary")
  echo "$wall $rss $(stat -c %s "$db") $seen $drivers"
}

quarter=$((files / 4))
make_tree "$scratch/scale-$quarter" "$quarter"
make_tree "$scratch/scale-$files" "$files"
read -r w1 m1 d1 s1 r1 < <(measure "$scratch/scale-$quarter")
read -r w2 m2 d2 s2 r2 < <(measure "$scratch/scale-$files")
rate() { python3 -c "print(f'{$1/$2:,.0f}')"; }
mb() { python3 -c "print(f'{$1/1048576:.1f} MB')"; }
echo "| tree | files seen | driver binaries | wall time | files/s | peak memory | database |"
echo "|---|---:|---:|---:|---:|---:|---:|"
echo "| $quarter files | $s1 | $r1 | ${w1} s | $(rate "$s1" "$w1") | $(mb $((m1 * 1024))) | $(mb "$d1") |"
echo "| $files files | $s2 | $r2 | ${w2} s | $(rate "$s2" "$w2") | $(mb $((m2 * 1024))) | $(mb "$d2") |"
echo
echo "machine: $(nproc) CPUs, $(date -u '+%Y-%m-%d %H:%M UTC'), $("$bin" --version)"
