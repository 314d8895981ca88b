#!/usr/bin/env bash
# bench/run.sh - end-to-end benchmark of pooltag against `grep -rlF`, on real driver binaries.
#
#   usage: bench/run.sh [--quick] [--read-only]
#
#   --quick       fewer hyperfine runs (3 per index/grep, 10 per query instead of 10 and 30)
#   --read-only   only step 5 (the read side on the bench corpus); the other sections of
#                 bench/results.md are kept as they are
#
# What it does, in one run:
#   1. builds pooltag (cargo build --release, in $CARGO_TARGET_DIR when that is set) and copies
#      the binary into the scratch folder, so that a rebuild in the working tree during the run
#      cannot change what is measured;
#   2. takes the driver corpus from $POOLTAG_CORPUS or ~/.cache/pooltag-corpus, fetching it with
#      $POOLTAG_FETCH_SCRIPT (default /work/shared/corpus/fetch-public-drivers.sh) when that
#      folder holds no file, and builds a "20x" copy in the scratch folder ($POOLTAG_BENCH_DIR,
#      default ${TMPDIR:-/tmp}/pooltag-bench): 20 copies of the whole tree, each file with
#      `copy-NN` appended so that no two files are identical (kept and reused once complete);
#   3. for the 1x corpus and the 20x copy, whole-process medians with hyperfine (`-N`, output
#      fed through a pipe: GNU grep stops at its first match when its output is /dev/null),
#      every command first run once untimed to warm the page cache:
#        - `pooltag index --full` from scratch (the database is deleted before every timed run)
#          against one `grep -rlF TAG` pass, with TAG absent (grep reads every byte) and present;
#        - the cost of code analysis: `pooltag index --bytes-only --full` (bytes level only), also
#          from scratch, against the full index;
#        - the re-index of an unchanged tree (`pooltag index`, reusing the database), against the
#          full index (the target is about the 20x copy);
#        - peak RSS of a from-scratch index (/usr/bin/time -v, largest of three runs);
#        - `pooltag query -l TAG` against `grep -rlF TAG`, for present tags and an absent one;
#        - correctness: for every test tag (padded tags with spaces, tags found in one file only,
#          a tag starting with '-', ...) the set of paths printed by `pooltag query -l TAG` must
#          equal `LC_ALL=C grep -rlF -- TAG CORPUS` restricted to the files the index took as
#          driver binaries (the database's `file` table; grep also searches non-drivers such as
#          Wine's x64 ntoskrnl.exe). A difference is printed on stderr and kept in the results;
#        - database size against the bytes of the indexed driver files;
#   4. merge, on the 1x corpus: 10 databases of it, each indexed under its own host name
#      (`index --host host-N`, untimed), merged with `pooltag --db OUT merge D1 ... D10` into a new
#      OUT (deleted before each timed run) and into the OUT that already holds them (restored
#      before each timed run); checks that `info --json` lists 10 runs of hosts host-1..host-10
#      and 10 x the 1x driver count of files, and that merging the same 10 again leaves
#      `export --format csv --evidence code` unchanged;
#      every pooltag index run is bounded by $POOLTAG_BENCH_TIMEOUT seconds (default 300): a
#      hung index is reported as a failure instead of hanging the benchmark;
#   5. the read side on the bench corpus ($POOLTAG_BENCH_CORPUS or ~/.cache/pooltag-bench-corpus:
#      thousands of distinct PE files, fetched with $POOLTAG_BENCH_FETCH_SCRIPT, default
#      /work/shared/corpus/fetch-bench-corpus.sh, when that folder holds no file; the time the
#      fetch took is noted), indexed once into the scratch folder (reused while the corpus is
#      unchanged): hyperfine medians of `query -l`, `query --json` and `query` for an absent
#      tag, a tag in at most 100 files and the tag in the most files, and of `tags FILE` for the
#      file with the most tags; how long `query --json --all '*' | head -c 4096` takes to end
#      (the first bytes, then pooltag's exit on the closed pipe); wall time and peak RSS of the
#      whole answers (`query --json --all '*'`, `query --all '*'`, `export --format json|csv
#      --evidence bytes`, to /dev/null), each under a 4 GB address-space limit and
#      $POOLTAG_BENCH_TIMEOUT seconds, so that a pooltag holding its answer in memory fails
#      instead of exhausting the machine. With $POOLTAG_BEFORE naming another pooltag binary
#      (say, a build of the main branch), every measurement is also made with it, side by side;
#   6. prints Markdown tables on stdout and writes them, with the machine and the date, to
#      bench/results.md (overwritten; with --read-only, only its read-side section);
#   7. unless --read-only, runs bench/write.sh (3 runs, 1 with --quick) for the write side on the
#      bench corpus, which adds its own section to bench/results.md. Progress
#      goes to stderr. Targets marked "at 20x" are judged on the 20x copy only (the 1x figure is
#      for information).
#
# Exit status: 0 when pooltag indexed both trees, agreed with grep on every tag and merged
# correctly (missed performance targets only show as "no" in the table); 1 when pooltag failed,
# hung, disagreed with grep or merged wrongly; 2 on any other error. Needs cargo, python3, GNU
# grep and coreutils, hyperfine and GNU time (both installed with apt-get when missing), and
# about 0.5 GB under the scratch folder. Writes nothing into the repository but bench/results.md.
set -euo pipefail
export LC_ALL=C

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
log() { printf '%s\n' "bench: $*" >&2; }
die() { printf '%s\n' "bench: error: $*" >&2; exit 2; }

quick=0
read_only=0
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    --read-only) read_only=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$arg'" ;;
  esac
done
if ((quick)); then slow_runs=3 fast_runs=10; else slow_runs=10 fast_runs=30; fi
warmups=3
copies=20
index_timeout=${POOLTAG_BENCH_TIMEOUT:-300}

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$bench_dir")
scratch=${POOLTAG_BENCH_DIR:-${TMPDIR:-/tmp}/pooltag-bench}
corpus=${POOLTAG_CORPUS:-$HOME/.cache/pooltag-corpus}
fetch_script=${POOLTAG_FETCH_SCRIPT:-/work/shared/corpus/fetch-public-drivers.sh}
bench_corpus=${POOLTAG_BENCH_CORPUS:-$HOME/.cache/pooltag-bench-corpus}
bench_fetch_script=${POOLTAG_BENCH_FETCH_SCRIPT:-/work/shared/corpus/fetch-bench-corpus.sh}
before_pt=${POOLTAG_BEFORE:-}
results_md=$bench_dir/results.md

mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd -P)
case $scratch/ in "$repo"/*) die "the scratch folder $scratch is inside the repository; set POOLTAG_BENCH_DIR" ;; esac

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
apt_install() {
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  log "installing package $1"
  "${sudo[@]}" apt-get install -y "$1" >&2 ||
    { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y "$1" >&2; } ||
    die "could not install $1"
}
for tool in cargo python3 timeout md5sum du stat comm; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
command -v hyperfine >/dev/null || apt_install hyperfine
[[ -x /usr/bin/time ]] || apt_install time
grep --version 2>/dev/null | head -n1 | grep -q 'GNU grep' || die "GNU grep is needed"

# ---------------------------------------------------------------------------------------------
# 1. Build
# ---------------------------------------------------------------------------------------------
log "building pooltag (release)"
(cd "$repo" && cargo build --release >&2)
target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p "$scratch/bin"
cp "$target_dir/release/pooltag" "$scratch/bin/pooltag.new"
mv -f "$scratch/bin/pooltag.new" "$scratch/bin/pooltag"
pt=$scratch/bin/pooltag
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)

# ---------------------------------------------------------------------------------------------
# 2. Corpus and its 20x copy
# ---------------------------------------------------------------------------------------------
if ((!read_only)); then
if [[ -z $(find "$corpus" -type f -print -quit 2>/dev/null) ]]; then
  [[ -f $fetch_script ]] || die "no corpus in $corpus and no fetch script at $fetch_script"
  log "no corpus in $corpus: fetching it with $fetch_script"
  bash "$fetch_script" "$corpus" >&2
fi
corpus=$(cd "$corpus" && pwd -P)
case $corpus/ in "$repo"/*) die "the corpus $corpus is inside the repository; move it out" ;; esac
corpus_files=$(find "$corpus" -type f | wc -l)
((corpus_files > 0)) || die "the corpus $corpus is still empty after fetching"

c20=$scratch/corpus-20x
stamp=$scratch/corpus-20x.complete
fingerprint="$( (cd "$corpus" && find . -type f -printf '%P\t%s\n' | sort) | md5sum | cut -d' ' -f1) copies=$copies"
if [[ -d $c20 && -f $stamp && $(cat "$stamp") == "$fingerprint" &&
      $(find "$c20" -type f | wc -l) -eq $((corpus_files * copies)) ]]; then
  log "reusing the ${copies}x copy in $c20"
else
  log "building the ${copies}x copy in $c20"
  rm -rf "$c20" "$c20.partial" "$stamp"
  mkdir -p "$c20.partial"
  for ((k = 1; k <= copies; k++)); do
    dir=$c20.partial/$(printf 'copy-%02d' "$k")
    cp -R "$corpus/." "$dir"
    while IFS= read -r -d '' f; do
      printf 'copy-%02d' "$k" >>"$f"
    done < <(find "$dir" -type f -print0)
  done
  dups=$(find "$c20.partial" -type f -exec md5sum {} + | cut -c1-32 | sort | uniq -d | wc -l)
  ((dups == 0)) || log "warning: $dups contents occur more than once in the ${copies}x copy (the corpus has identical files)"
  mv "$c20.partial" "$c20"
  printf '%s\n' "$fingerprint" >"$stamp"
fi
fi

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
declare -A R=()   # raw results (seconds, bytes, ratios), keyed "label:metric"; unset = not measured
notes=()          # lines for the Notes section of results.md
failures=0        # pooltag failures and disagreements with grep

# Quotes words for hyperfine -N, which splits its command line like a POSIX shell.
shq() {
  local out='' a
  for a in "$@"; do out+=" '${a//\'/\'\\\'\'}'"; done
  printf '%s' "${out# }"
}

# hf JSON RUNS [hyperfine options...] -- COMMAND WORDS...: prints the median in seconds.
# Exit codes 0 and 1 are accepted (grep and pooltag query -l exit 1 when nothing matches).
hf() {
  local json=$1 runs=$2; shift 2
  local opts=()
  while [[ $1 != -- ]]; do opts+=("$1"); shift; done
  shift
  timeout $((index_timeout * (runs + warmups))) \
    hyperfine -N --output=pipe --style none --ignore-failure --warmup "$warmups" --runs "$runs" \
    --export-json "$json" "${opts[@]+"${opts[@]}"}" "$(shq "$@")" >/dev/null 2>"$json.log" ||
    { cat "$json.log" >&2; die "hyperfine failed or timed out on: $*"; }
  python3 - "$json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
bad = sorted({c for c in r.get("exit_codes", []) if c not in (0, 1)})
if bad:
    sys.exit(f"bench: error: exit codes {bad} from {r['command']}")
print(f"{r['median']:.9f}")
PY
}

# grep_l TAG TREE: grep's answer, sorted; dies on a grep error (status 2), not on no match.
grep_l() {
  local rc=0
  grep -rlF -- "$1" "$2" | sort || rc=$?
  ((rc == 0 || rc == 1)) || die "grep -rlF '$1' $2 failed ($rc)"
}

# query_l DB TAG: pooltag's answer; like grep, `query -l` exits 1 when no file matches.
query_l() {
  local rc=0
  "$pt" --db "$1" query -l -- "$2" || rc=$?
  ((rc == 0 || rc == 1)) || die "pooltag query -l '$2' failed ($rc)"
}

# rm_db DB: deletes a database and whatever SQLite or a killed pooltag left beside it.
rm_db() { rm -f "$1" "$1-wal" "$1-shm" "$1-journal" "$1".*.tmp; }

# fresh_index DB TREE LOG [INDEX OPTIONS...]: a from-scratch index (`index --full`, the database
# deleted first), bounded in time; returns pooltag's status.
fresh_index() {
  local db=$1 tree=$2 log=$3; shift 3
  rm_db "$db"
  timeout "$index_timeout" "$pt" --db "$db" index --full "$@" "$tree" 2>"$log"
}

# db_bytes DB: the size of a database, with its -wal, -shm and -journal files if any.
db_bytes() {
  local n=0 f
  for f in "$1" "$1-wal" "$1-shm" "$1-journal"; do
    [[ -f $f ]] && n=$((n + $(stat -c %s "$f")))
  done
  echo "$n"
}

# The paths of the files the index took as driver binaries, sorted.
indexed_files() {
  python3 - "$1" <<'PY'
import sqlite3, sys
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
for (p,) in con.execute("SELECT path FROM file"):
    print(p)
PY
}

ms() { awk -v s="$1" 'BEGIN { m = s * 1000; if (m < 10) printf "%.2f ms", m; else if (m < 1000) printf "%.1f ms", m; else printf "%.2f s", s }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
x() { awk -v r="$1" 'BEGIN { if (r < 100) printf "%.1fx", r; else printf "%.0fx", r }'; }
pct() { awk -v r="$1" 'BEGIN { printf "%.1f%%", r * 100 }'; }
# ratio KEY A_KEY B_KEY: R[KEY] = R[A_KEY] / R[B_KEY] when both were measured.
ratio() {
  [[ -v R[$2] && -v R[$3] ]] || return 0
  R[$1]=$(awk -v a="${R[$2]}" -v b="${R[$3]}" 'BEGIN { printf "%.9f", a / b }')
}

# ---------------------------------------------------------------------------------------------
# Test tags
# ---------------------------------------------------------------------------------------------
absent_tag='Zq9!'
present_tag='WinD'

# The Wine tag: the first candidate that `pooltag query -l` finds in Wine's drivers only.
pick_wine_tag() {
  local db=$1 t paths
  for t in Wine wine WINE; do
    paths=$(query_l "$db" "$t")
    if [[ -n $paths ]] && ! grep -qv '/wine-[^/]*/' <<<"$paths"; then
      printf '%s' "$t"
      return
    fi
  done
  die "no Wine tag found with pooltag query -l"
}

# Tags read straight from the corpus bytes (not from pooltag), one per line: four printable
# ASCII bytes without the pattern wildcards ? and *, found in the smallest indexed files first:
# one occurring in a single file of the whole corpus and holding a space, one in a single file
# without a space, one starting with '-', one with a backslash, one ending in two spaces.
discover_tags() {
  python3 - "$1" "$2" <<'PY'
import os, sys
root, indexed_list = sys.argv[1], sys.argv[2]
paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
data = {p: open(p, "rb").read() for p in paths}
indexed = [l.rstrip("\n") for l in open(indexed_list) if l.strip()]
ok = lambda t: all(0x20 <= b <= 0x7E for b in t) and b"?" not in t and b"*" not in t
count = lambda t: sum(t in d for d in data.values())
# (what, test on the tag, must occur in one file only)
want = [
    ("occurs in one file only and has a space", lambda t: b" " in t, True),
    ("occurs in one file only and has no space", lambda t: b" " not in t, True),
    ("starts with '-'", lambda t: t[:1] == b"-", False),
    ("has a backslash", lambda t: b"\\" in t, False),
    ("ends in two spaces", lambda t: t.endswith(b"  ") and t[:1] != b" ", False),
]
found = {}
for p in sorted(indexed, key=lambda p: (len(data.get(p, b"")), p)):
    d = data.get(p)
    if d is None:
        continue
    seen = set()
    for i in range(len(d) - 3):
        if len(found) == len(want):
            break
        t = d[i:i + 4]
        if t in seen or not ok(t):
            continue
        seen.add(t)
        for name, test, unique in want:
            if name in found or not test(t):
                continue
            if unique and count(t) != 1:
                continue
            found[name] = t
            break
    if len(found) == len(want):
        break
for name, _, _ in want:
    if name in found:
        print(found[name].decode("ascii"))
    else:
        print(f"bench: warning: no tag found that {name}", file=sys.stderr)
PY
}

# ---------------------------------------------------------------------------------------------
# Correctness: pooltag query -l TAG against grep -rlF TAG, over the indexed files
# ---------------------------------------------------------------------------------------------
# list_note WHAT LINES: "WHAT: N files (first three...)".
list_note() {
  local n
  n=$(grep -c . <<<"$2" || true)
  if ((n == 0)); then printf '%s: none' "$1"; else printf '%s: %s files (%s)' "$1" "$n" "$(head -n 3 <<<"$2" | paste -sd' ' -)"; fi
}

check_tags() {
  local label=$1 corp=$2 db=$3 indexed=$4 tag extra only_pt only_grep
  local n=0 ok=0 out=$scratch/check-$label
  mkdir -p "$out"
  for tag in "${check_tags_list[@]}"; do
    n=$((n + 1))
    query_l "$db" "$tag" >"$out/pooltag.txt"
    grep_l "$tag" "$corp" >"$out/grep-all.txt"
    sort -u "$out/pooltag.txt" >"$out/got.txt"
    comm -12 "$out/grep-all.txt" "$indexed" >"$out/want.txt"
    extra=$(comm -23 "$out/grep-all.txt" "$indexed" | wc -l)
    if [[ $(wc -l <"$out/pooltag.txt") -ne $(wc -l <"$out/got.txt") ]]; then
      notes+=("$label: \`pooltag query -l '$tag'\` prints some path more than once")
      log "warning: $label: pooltag query -l '$tag' prints some path more than once"
    fi
    if cmp -s "$out/got.txt" "$out/want.txt"; then
      ok=$((ok + 1))
      log "ok  $label '$tag': $(wc -l <"$out/got.txt") files agree (grep also matches $extra non-indexed files)"
    else
      failures=$((failures + 1))
      only_pt=$(comm -23 "$out/got.txt" "$out/want.txt")
      only_grep=$(comm -13 "$out/got.txt" "$out/want.txt")
      {
        printf 'bench: MISMATCH %s tag %s: pooltag query -l and grep -rlF differ\n' "$label" "'$tag'"
        [[ -z $only_pt ]] || sed 's/^/  only pooltag: /' <<<"$only_pt"
        [[ -z $only_grep ]] || sed 's/^/  only grep:    /' <<<"$only_grep"
      } | tee -a "$scratch/mismatches.txt" >&2
      notes+=("**MISMATCH** $label, tag \`'$tag'\`: $(list_note "only pooltag" "$only_pt"); $(list_note "only grep" "$only_grep") (full lists in $scratch/mismatches.txt)")
    fi
  done
  R[$label:check]="$ok/$n"
  ((ok == n)) && R[$label:check_ok]=1
  return 0
}

# ---------------------------------------------------------------------------------------------
# 3. Measurements for one tree
# ---------------------------------------------------------------------------------------------
measure() {
  local label=$1 corp=$2
  local db=$scratch/db-$label.sqlite j=$scratch/hf-$label t rc=0
  rm -rf "$j"
  mkdir -p "$j"
  log "== $label: $corp"
  R[$label:files]=$(find "$corp" -type f | wc -l)
  R[$label:bytes]=$(du -sb "$corp" | cut -f1)

  # --- grep passes (also warm the page cache)
  for t in "$absent_tag" "$present_tag" "$wine_tag"; do
    grep_l "$t" "$corp" >/dev/null
    R[$label:grep:$t]=$(hf "$j/grep-$t.json" "$slow_runs" -- grep -rlF -- "$t" "$corp")
    log "grep -rlF '$t' median $(ms "${R[$label:grep:$t]}")"
  done

  # --- index: untimed first run, bounded in time
  fresh_index "$db" "$corp" "$j/index.log" || rc=$?
  R[$label:summary]=$(tail -n 1 "$j/index.log")
  if ((rc != 0)); then
    failures=$((failures + 1))
    local why="exit status $rc"
    ((rc == 124)) && why="no answer within ${index_timeout} s (killed)"
    log "FAILED: $label: pooltag index $corp: $why"
    [[ -s $j/index.log ]] && tail -n 5 "$j/index.log" >&2
    notes+=("**FAILURE** $label: \`pooltag index\` of $corp: $why; nothing else was measured on this tree")
    R[$label:check]="n/a"
    return 0
  fi
  log "index: ${R[$label:summary]}"
  R[$label:index]=$(hf "$j/index.json" "$slow_runs" --prepare "$(shq rm -f "$db" "$db-wal" "$db-shm" "$db-journal")" \
    -- "$pt" --db "$db" index --full "$corp")
  log "index (from scratch) median $(ms "${R[$label:index]}")"
  ratio "$label:ratio:$absent_tag" "$label:index" "$label:grep:$absent_tag"
  ratio "$label:ratio:$present_tag" "$label:index" "$label:grep:$present_tag"
  # the database exists now: the same command without --full re-indexes an unchanged tree
  R[$label:reindex]=$(hf "$j/reindex.json" "$slow_runs" -- "$pt" --db "$db" index "$corp")
  log "re-index (unchanged tree) median $(ms "${R[$label:reindex]}")"
  ratio "$label:reindex_ratio" "$label:reindex" "$label:index"

  # --- the cost of code analysis: the bytes level alone, from scratch, in a database of its own
  local bdb=$scratch/db-$label-bytes.sqlite
  rc=0
  fresh_index "$bdb" "$corp" "$j/index-bytes.log" --bytes-only || rc=$?
  if ((rc != 0)); then
    failures=$((failures + 1))
    local why="exit status $rc"
    ((rc == 124)) && why="no answer within ${index_timeout} s (killed)"
    log "FAILED: $label: pooltag index --bytes-only $corp: $why"
    [[ -s $j/index-bytes.log ]] && tail -n 5 "$j/index-bytes.log" >&2
    notes+=("**FAILURE** $label: \`pooltag index --bytes-only --full\` of $corp: $why")
  else
    R[$label:bytes_summary]=$(tail -n 1 "$j/index-bytes.log")
    R[$label:index_bytes]=$(hf "$j/index-bytes.json" "$slow_runs" --prepare "$(shq rm -f "$bdb" "$bdb-wal" "$bdb-shm" "$bdb-journal")" \
      -- "$pt" --db "$bdb" index --bytes-only --full "$corp")
    ratio "$label:analysis_ratio" "$label:index" "$label:index_bytes"
    log "index --bytes-only (from scratch) median $(ms "${R[$label:index_bytes]}"); with code analysis $(x "${R[$label:analysis_ratio]}") that"
  fi

  # --- peak memory of a from-scratch index (the largest of three runs)
  local i kb max=0
  for i in 1 2 3; do
    rm -f "$db" "$db-wal" "$db-shm" "$db-journal"
    timeout "$index_timeout" /usr/bin/time -v -o "$j/time.txt" "$pt" --db "$db" index --full "$corp" 2>/dev/null ||
      die "pooltag index failed or timed out under /usr/bin/time"
    kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$j/time.txt")
    ((kb > max)) && max=$kb
  done
  R[$label:rss]=$((max * 1024))
  log "index peak RSS $(mb "${R[$label:rss]}")"

  # --- the files the index took as driver binaries
  local indexed=$scratch/indexed-$label.txt summary_count
  if ! indexed_files "$db" | sort >"$indexed"; then
    log "warning: cannot read the database's file table; taking the indexed files from pooltag query -l '*'"
    notes+=("$label: indexed files taken from \`pooltag query -l '*'\` (the database's file table could not be read)")
    query_l "$db" '*' | sort -u >"$indexed"
  fi
  R[$label:indexed]=$(wc -l <"$indexed")
  R[$label:indexed_bytes]=$( (tr '\n' '\0' <"$indexed" | xargs -0 -r stat -c %s; echo 0) | awk '{ s += $1 } END { print s }')
  summary_count=$(grep -oE '[0-9]+ driver binaries indexed' <<<"${R[$label:summary]}" | cut -d' ' -f1 || true)
  if [[ -n $summary_count && $summary_count != "${R[$label:indexed]}" ]]; then
    notes+=("$label: the index summary says $summary_count driver binaries, the database lists ${R[$label:indexed]}")
  fi
  R[$label:not_indexed]=$(comm -23 <(find "$corp" -type f | sort) "$indexed" | sed "s|^$corp/||" |
    head -n 8 | paste -sd, - | sed 's/,/, /g')

  # --- queries
  for t in "$present_tag" "$wine_tag" "$absent_tag"; do
    query_l "$db" "$t" >/dev/null
    R[$label:query:$t]=$(hf "$j/query-$t.json" "$fast_runs" -- "$pt" --db "$db" query -l -- "$t")
    ratio "$label:speedup:$t" "$label:grep:$t" "$label:query:$t"
    log "query -l '$t' median $(ms "${R[$label:query:$t]}") ($(x "${R[$label:speedup:$t]}") faster than grep)"
  done

  # --- correctness
  check_tags "$label" "$corp" "$db" "$indexed"

  # --- size
  R[$label:db]=$(db_bytes "$db")
  ratio "$label:db_ratio" "$label:db" "$label:indexed_bytes"
  ratio "$label:db_ratio_all" "$label:db" "$label:bytes"
}

# ---------------------------------------------------------------------------------------------
# 4. Merge: 10 databases of the 1x corpus, each under its own host name
# ---------------------------------------------------------------------------------------------
merge_hosts=10

# merge_fail WHAT: counts a pooltag failure of the merge and notes it.
merge_fail() {
  failures=$((failures + 1))
  log "FAILED: merge: $1"
  notes+=("**FAILURE** merge: $1")
}

# check_merged OUT WHEN: `info --json` of OUT must list one run for each of host-1..host-N and
# N x the 1x driver count of files. The first check sets R[1x:merge_info] and, when right,
# R[1x:merge_info_ok]; a wrong later one unsets it.
check_merged() {
  local out=$1 when=$2 json=$scratch/hf-merge/info-$2.json got runs files hosts_ok
  local want_files=$((merge_hosts * ${R[1x:indexed]}))
  if ! timeout "$index_timeout" "$pt" --db "$out" info --json >"$json" ||
     ! got=$(python3 - "$json" "$merge_hosts" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
runs = j.get("runs", [])
hosts = sorted(str(r.get("host")) for r in runs)
print(len(runs), j.get("files"), int(hosts == sorted(f"host-{i}" for i in range(1, n + 1))))
PY
     ); then
    merge_fail "\`pooltag info --json\` of the merged database failed or printed no JSON ($when merge)"
    [[ $when == first ]] && R[1x:merge_info]="n/a"
    unset 'R[1x:merge_info_ok]'
    return 0
  fi
  read -r runs files hosts_ok <<<"$got"
  [[ $when == first ]] && R[1x:merge_info]="$runs runs, $files files"
  if [[ $runs == "$merge_hosts" && $hosts_ok == 1 && $files == "$want_files" ]]; then
    [[ $when == first ]] && R[1x:merge_info_ok]=1
    log "ok  merged database ($when merge): $runs runs of host-1..host-$merge_hosts, $files files"
  else
    unset 'R[1x:merge_info_ok]'
    merge_fail "\`info --json\` after the $when merge: $runs runs (one for each of host-1..host-$merge_hosts: $( ((hosts_ok)) && echo yes || echo no)), $files files; expected $merge_hosts runs and $want_files files ($merge_hosts x ${R[1x:indexed]})"
  fi
}

measure_merge() {
  local dir=$scratch/merge j=$scratch/hf-merge i rc=0
  local out=$dir/out.sqlite base=$dir/out-base.sqlite ins=()
  if [[ ! -v R[1x:indexed] ]]; then
    notes+=("merge: not measured (the 1x index failed)")
    return 0
  fi
  log "== merge: $merge_hosts databases of $corpus"
  rm -rf "$dir" "$j"
  mkdir -p "$dir" "$j"
  for ((i = 1; i <= merge_hosts; i++)); do
    ins+=("$dir/d-$i.sqlite")
    rc=0
    fresh_index "$dir/d-$i.sqlite" "$corpus" "$j/index-$i.log" --host "host-$i" || rc=$?
    if ((rc != 0)); then
      merge_fail "\`pooltag index --host host-$i\` of $corpus: exit status $rc; merge not measured"
      return 0
    fi
  done

  # untimed first merge into a new database, bounded in time
  rm_db "$out"
  rc=0
  timeout "$index_timeout" "$pt" --db "$out" merge "${ins[@]}" 2>"$j/merge.log" || rc=$?
  if ((rc != 0)); then
    [[ -s $j/merge.log ]] && tail -n 5 "$j/merge.log" >&2
    merge_fail "\`pooltag merge\` of $merge_hosts databases into a new one: exit status $rc$( ((rc == 124)) && echo " (killed after ${index_timeout} s)")"
    return 0
  fi
  R[merge_summary]=$(tail -n 1 "$j/merge.log")
  R[1x:merge_db]=$(db_bytes "$out")
  check_merged "$out" first
  rm_db "$base"
  cp "$out" "$base"

  # merging the same 10 again changes nothing
  timeout "$index_timeout" "$pt" --db "$out" export --format csv --evidence code >"$j/export-before.csv" ||
    { merge_fail "\`pooltag export --format csv --evidence code\` of the merged database failed"; return 0; }
  rc=0
  timeout "$index_timeout" "$pt" --db "$out" merge "${ins[@]}" 2>"$j/merge-again.log" || rc=$?
  if ((rc != 0)); then
    [[ -s $j/merge-again.log ]] && tail -n 5 "$j/merge-again.log" >&2
    merge_fail "\`pooltag merge\` of the same $merge_hosts databases into the merged one: exit status $rc"
    return 0
  fi
  timeout "$index_timeout" "$pt" --db "$out" export --format csv --evidence code >"$j/export-after.csv" ||
    { merge_fail "\`pooltag export --format csv --evidence code\` after the second merge failed"; return 0; }
  R[1x:merge_rows]=$(($(wc -l <"$j/export-before.csv") - 1))
  if cmp -s "$j/export-before.csv" "$j/export-after.csv"; then
    R[1x:merge_idem]="identical (${R[1x:merge_rows]} rows)"
    R[1x:merge_idem_ok]=1
    log "ok  a second merge of the same $merge_hosts leaves the code-level export unchanged (${R[1x:merge_rows]} rows)"
  else
    R[1x:merge_idem]="differs"
    diff "$j/export-before.csv" "$j/export-after.csv" >"$scratch/merge-export.diff" || true
    merge_fail "a second merge of the same $merge_hosts databases changed \`export --format csv --evidence code\` ($(grep -c '^[<>]' "$scratch/merge-export.diff") lines differ; $scratch/merge-export.diff)"
  fi
  check_merged "$out" second
  R[1x:merge_again_db]=$(db_bytes "$out")

  # timed: into a new database (deleted before each run), then into the one holding the 10
  # already (restored from the first merge's copy before each run)
  R[1x:merge]=$(hf "$j/merge.json" "$slow_runs" --prepare "$(shq rm -f "$out" "$out-wal" "$out-shm" "$out-journal")" \
    -- "$pt" --db "$out" merge "${ins[@]}")
  log "merge of $merge_hosts into a new database, median $(ms "${R[1x:merge]}")"
  rm -f "$out-wal" "$out-shm" "$out-journal"
  R[1x:merge_again]=$(hf "$j/merge-again.json" "$slow_runs" --prepare "$(shq cp -f "$base" "$out")" \
    -- "$pt" --db "$out" merge "${ins[@]}")
  log "merge of the same $merge_hosts into the existing database, median $(ms "${R[1x:merge_again]}")"
}

# ---------------------------------------------------------------------------------------------
# 5. The read side on the bench corpus
# ---------------------------------------------------------------------------------------------
# RR: read-side results keyed "which:metric", which = after (this build) or before
# ($POOLTAG_BEFORE); unset = not measured.
declare -A RR=()
read_notes=()

# capped PT ARGS...: runs `pooltag ARGS`, its output counted by `wc -c`, under a 4 GB
# address-space limit and the time bound; prints "seconds peak_kb status bytes".
capped() {
  local bin=$1; shift
  local t=$scratch/read/time.txt rc=0
  (
    ulimit -v 4000000
    set -o pipefail
    timeout "$index_timeout" /usr/bin/time -f '%e %M' -o "$t" "$bin" "$@" 2>"$scratch/read/capped.log" |
      wc -c >"$scratch/read/bytes.txt"
  ) || rc=$?
  printf '%s %s %s\n' "$(tail -n 1 "$t" 2>/dev/null || echo '- -')" "$rc" "$(cat "$scratch/read/bytes.txt")"
}

# first_bytes PT WHICH: median time for `query --json --all '*' | head -c 4096` to end, under
# the same 4 GB limit as `capped` (a pooltag that builds the answer first fails instead).
first_bytes() {
  local j=$scratch/read/first-$2.json
  timeout $((index_timeout * 3)) hyperfine --shell=bash --output=pipe --style none --ignore-failure \
    --warmup 1 --runs 5 --export-json "$j" \
    "ulimit -v 4000000; $(shq "$1" --db "$bench_db" query --json --all '*') | head -c 4096 >/dev/null" >/dev/null 2>&1 ||
    { read_notes+=("$2: \`query --json --all '*' | head -c 4096\` did not end within $((index_timeout * 3)) s"); return 0; }
  python3 -c "import json,sys; print('%.9f' % json.load(open(sys.argv[1]))['results'][0]['median'])" "$j"
}

measure_read() {
  local start end rc=0 which bin t n key
  local dir=$scratch/read
  mkdir -p "$dir"
  if [[ -z $(find "$bench_corpus" -type f -print -quit 2>/dev/null) ]]; then
    [[ -f $bench_fetch_script ]] || { read_notes+=("no bench corpus in $bench_corpus and no fetch script at $bench_fetch_script: read side not measured"); return 0; }
    log "no bench corpus in $bench_corpus: fetching it with $bench_fetch_script"
    start=$(date +%s)
    bash "$bench_fetch_script" "$bench_corpus" >&2 || die "$bench_fetch_script failed"
    end=$(date +%s)
    read_notes+=("the bench corpus was fetched by this run in $((end - start)) s")
  fi
  bench_corpus=$(cd "$bench_corpus" && pwd -P)
  bench_db=$scratch/db-bench.sqlite
  local stamp=$scratch/db-bench.complete
  local fingerprint
  fingerprint="$( (cd "$bench_corpus" && find . -type f -printf '%P\t%s\t%T@\n' | sort) | md5sum | cut -d' ' -f1) $(md5sum <"$pt" | cut -d' ' -f1)"
  if [[ -f $bench_db && -f $stamp && $(cat "$stamp") == "$fingerprint" ]]; then
    log "reusing the index of the bench corpus in $bench_db"
  else
    log "indexing the bench corpus $bench_corpus (once; reused while it and pooltag are unchanged)"
    rm -f "$stamp"
    fresh_index "$bench_db" "$bench_corpus" "$dir/index.log" || die "pooltag index of $bench_corpus failed"
    printf '%s\n' "$fingerprint" >"$stamp"
  fi
  RR[summary]=$(tail -n 1 "$dir/index.log" 2>/dev/null || echo '(reused)')
  RR[db]=$(db_bytes "$bench_db")

  # The tags: absent; the first printable tag held by 50 to 100 files; the tag in the most files.
  read_absent='Zq9!'
  read -r read_most read_few < <(python3 - "$bench_db" <<'PY'
import sqlite3, sys
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
def count(blob):
    return sum(1 for b in blob if b < 0x80)
def name(key):
    return key.to_bytes(4, "big").decode("ascii")
ok = lambda key: all(0x21 <= b <= 0x7e and b not in b"?*" for b in key.to_bytes(4, "big"))
most = max(((count(b), k) for k, b in con.execute("SELECT tag, content_ids FROM bytes_posting") if ok(k)))
few = next(k for k, b in con.execute(
    "SELECT tag, content_ids FROM bytes_posting WHERE length(content_ids) BETWEEN 50 AND 200 ORDER BY tag")
    if ok(k) and 50 <= count(b) <= 100)
print(name(most[1]), name(few))
PY
)
  read_file=$(python3 - "$bench_db" <<'PY'
import sqlite3, sys
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(con.execute("SELECT path FROM file f JOIN content c ON c.id = f.content_id ORDER BY c.size DESC, path LIMIT 1").fetchone()[0])
PY
)
  for t in "$read_absent" "$read_few" "$read_most"; do
    RR[files:$t]=$(query_l "$bench_db" "$t" | wc -l)
  done
  log "read side: tags '$read_absent' (${RR[files:$read_absent]} files), '$read_few' (${RR[files:$read_few]}), '$read_most' (${RR[files:$read_most]}); tags FILE: $read_file"

  local whiches=(after)
  [[ -n $before_pt ]] && whiches+=(before)
  for which in "${whiches[@]}"; do
    bin=$pt
    [[ $which == before ]] && bin=$before_pt
    RR[$which:startup]=$(hf "$dir/$which-version.json" "$fast_runs" -- "$bin" --version)
    for t in "$read_absent" "$read_few" "$read_most"; do
      RR[$which:l:$t]=$(hf "$dir/$which-l.json" "$fast_runs" -- "$bin" --db "$bench_db" query -l -- "$t")
      RR[$which:json:$t]=$(hf "$dir/$which-json.json" "$fast_runs" -- "$bin" --db "$bench_db" query --json -- "$t")
      RR[$which:human:$t]=$(hf "$dir/$which-human.json" "$fast_runs" -- "$bin" --db "$bench_db" query -- "$t")
    done
    RR[$which:tags]=$(hf "$dir/$which-tags.json" "$slow_runs" -- "$bin" --db "$bench_db" tags "$read_file")
    log "$which: query -l ${RR[$which:l:$read_absent]} / ${RR[$which:l:$read_few]} / ${RR[$which:l:$read_most]} s; tags ${RR[$which:tags]} s"
    RR[$which:first]=$(first_bytes "$bin" "$which")
    for key in json_all human_all export_json export_csv; do
      case $key in
        json_all) set -- query --json --all '*' ;;
        human_all) set -- query --all '*' ;;
        export_json) set -- export --format json --evidence bytes ;;
        export_csv) set -- export --format csv --evidence bytes ;;
      esac
      log "$which: pooltag $* > /dev/null (the whole answer; minutes)"
      read -r RR[$which:$key:s] RR[$which:$key:kb] RR[$which:$key:rc] RR[$which:$key:bytes] \
        < <(capped "$bin" --db "$bench_db" "$@")
    done
  done
}

# A cell of the read-side table: the formatted value of RR[KEY], or n/a.
rcell() { if [[ -v RR[$2] && -n ${RR[$2]} ]]; then "$1" "${RR[$2]}"; else printf 'n/a'; fi; }
kb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k * 1024 / 1e6 }'; }
# whole WHICH KEY: "S s, RSS MB" of a whole-answer run, or why it failed.
whole() {
  local s=${RR[$1:$2:s]-} k=${RR[$1:$2:kb]-} rc=${RR[$1:$2:rc]-}
  [[ -n $rc ]] || { printf 'n/a'; return; }
  if [[ $rc == 0 ]]; then
    printf '%s s, peak RSS %s (%s out)' "$s" "$(kb "$k")" "$(mb "${RR[$1:$2:bytes]}")"
  elif [[ $rc == 124 ]]; then
    printf 'killed after %s s (peak RSS %s)' "$index_timeout" "$(kb "$k")"
  else
    printf 'failed (exit %s) after %s s under the 4 GB limit (peak RSS %s)' "$rc" "$s" "$(kb "$k")"
  fi
}
# rrow METRIC FORMAT KEY LIMIT TARGET: before and after cells, the target and whether it is met.
rrow() {
  local metric=$1 fmt=$2 key=$3 limit=${4-} target=${5-} m=''
  if [[ -n $limit ]]; then
    m=no
    [[ -v RR[after:$key] ]] && awk -v v="${RR[after:$key]}" -v l="$limit" 'BEGIN { exit !(v <= l) }' && m=yes
  fi
  printf '| %s | %s | %s | %s | %s |\n' "$metric" "$(rcell "$fmt" "before:$key")" "$(rcell "$fmt" "after:$key")" "$target" "$m"
}
# wrow METRIC KEY: a whole-answer row; met when it ran to the end under 300 MB.
wrow() {
  local m=no
  [[ ${RR[after:$2:rc]-} == 0 ]] && awk -v k="${RR[after:$2:kb]}" 'BEGIN { exit !(k * 1024 <= 300e6) }' && m=yes
  printf '| %s | %s | %s | %s | %s |\n' "$1" "$(whole before "$2")" "$(whole after "$2")" "<= 300 MB" "$m"
}

read_table() {
  local t
  echo "| metric | before | after | target | met |"
  echo "|---|---:|---:|---|---|"
  rrow "\`pooltag --version\` (process start), median" ms startup
  for t in "$read_absent" "$read_few" "$read_most"; do
    local limit=0.0025 target="<= 2.5 ms"
    [[ $t == "$read_few" ]] && limit=0.003 target="<= 3 ms"
    [[ $t == "$read_most" ]] && limit=0.010 target="<= 10 ms"
    rrow "\`query -l '$t'\` (${RR[files:$t]} files), median" ms "l:$t" "$limit" "$target"
    rrow "\`query --json '$t'\`, median" ms "json:$t" "$limit" "$target"
    rrow "\`query '$t'\`, median" ms "human:$t" "$limit" "$target"
  done
  rrow "\`tags $(basename "$read_file")\` (the largest file, default level), median" ms tags
  rrow "\`query --json --all '*' \\| head -c 4096\` ends, median" ms first 0.1 "<= 100 ms"
  wrow "\`query --json --all '*' > /dev/null\`" json_all
  wrow "\`query --all '*' > /dev/null\`" human_all
  wrow "\`export --format json --evidence bytes > /dev/null\`" export_json
  wrow "\`export --format csv --evidence bytes > /dev/null\`" export_csv
}

# The read-side section of results.md.
read_section() {
  echo "## Read side on the bench corpus"
  echo
  echo "- corpus: $bench_corpus ($(find "$bench_corpus" -type f | wc -l) files, $(mb "$(du -sb "$bench_corpus" | cut -f1)")); database $(mb "${RR[db]}")"
  echo "- index summary: \`${RR[summary]}\`"
  echo "- after: this build (commit $commit); before: ${before_pt:-not measured (set POOLTAG_BEFORE to a pooltag binary)}"
  echo "- method: \`hyperfine -N --warmup $warmups\`, $fast_runs runs per query, $slow_runs for \`tags\`; first bytes with \`hyperfine --shell=bash\`, 5 runs; whole answers once each with \`/usr/bin/time\`, output counted by \`wc -c\`, under \`ulimit -v 4000000\` and ${index_timeout} s; load average before: $load_read, after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- tags: '$read_absent' absent, '$read_few' in ${RR[files:$read_few]} files, '$read_most' in ${RR[files:$read_most]} (every file of the corpus: it holds no tag in 5,000 files)"
  [[ ${RR[after:json_all:rc]-} == 0 ]] && echo "- \`query --json --all '*'\` prints $(mb "${RR[after:json_all:bytes]}") on one line (the JSON contract has no line breaks inside the array), so \`| head -1\` ends only when the whole answer is written; \`head -c\` ends at once"
  echo
  read_table
  for n in "${read_notes[@]+"${read_notes[@]}"}"; do echo; echo "- $n"; done
}

if ((!read_only)); then
# The test tags come from the 1x corpus: an index of it names the Wine tag, its bytes the rest.
rm -f "$scratch/mismatches.txt"
fresh_index "$scratch/db-1x.sqlite" "$corpus" /dev/null || die "pooltag index of $corpus failed"
wine_tag=$(pick_wine_tag "$scratch/db-1x.sqlite")
indexed_files "$scratch/db-1x.sqlite" | sort >"$scratch/indexed-discover.txt"
mapfile -t found_tags < <(discover_tags "$corpus" "$scratch/indexed-discover.txt")
check_tags_list=("$present_tag" "$wine_tag" "$absent_tag" 'Irp ' 'Ndis' ' DOS' 'ine ' '%p, ' 'opy-' "${found_tags[@]}")
log "Wine tag: '$wine_tag'; correctness tags: $(printf "'%s' " "${check_tags_list[@]}")"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
measure 1x "$corpus"
measure 20x "$c20"
measure_merge

# The floor under any whole-process time on this machine: starting pooltag and exiting.
if "$pt" --version >/dev/null 2>&1; then
  R[startup]=$(hf "$scratch/hf-1x/version.json" "$fast_runs" -- "$pt" --version)
fi
fi

load_read=$(cut -d' ' -f1-3 /proc/loadavg)
measure_read

# ---------------------------------------------------------------------------------------------
# 4. Report
# ---------------------------------------------------------------------------------------------
# cell FORMAT KEY: the formatted result, or n/a when it was not measured.
cell() { if [[ -v R[$2] ]]; then "$1" "${R[$2]}"; else printf 'n/a'; fi; }
# pass OP LIMIT KEY: 1 when R[KEY] was measured and meets the target.
pass() {
  [[ -v R[$3] ]] || { echo 0; return; }
  awk -v v="${R[$3]}" -v l="$2" -v op="$1" \
    'BEGIN { r = (op == "<=") ? v <= l : (op == "<") ? v < l : v >= l; print r ? 1 : 0 }'
}
# met OK_1X OK_20X
met() {
  case $1$2 in
    11) echo yes ;;
    10) echo "no (20x)" ;;
    01) echo "no (1x)" ;;
    *) echo no ;;
  esac
}
# row METRIC FORMAT KEY [OP LIMIT TARGET_TEXT]
row() {
  local metric=$1 fmt=$2 key=$3 op=${4-} limit=${5-} target=${6-} m=''
  [[ -n $op ]] && m=$(met "$(pass "$op" "$limit" "1x:$key")" "$(pass "$op" "$limit" "20x:$key")")
  printf '| %s | %s | %s | %s | %s |\n' "$metric" "$(cell "$fmt" "1x:$key")" "$(cell "$fmt" "20x:$key")" "$target" "$m"
}
# row20 METRIC FORMAT KEY OP LIMIT TARGET_TEXT: a target about the 20x copy only; the 1x figure
# is shown for information and does not count in the met column.
row20() {
  local metric=$1 fmt=$2 key=$3 op=$4 limit=$5 target=$6 m=no
  (($(pass "$op" "$limit" "20x:$key"))) && m=yes
  [[ -v R[20x:$key] ]] || m="no (not measured)"
  printf '| %s | %s | %s | %s | %s |\n' "$metric" "$(cell "$fmt" "1x:$key")" "$(cell "$fmt" "20x:$key")" \
    "$target at 20x (1x: no target)" "$m"
}
# row1 METRIC FORMAT KEY [TARGET_TEXT OK_KEY]: a measurement made on the 1x corpus only.
row1() {
  local metric=$1 fmt=$2 key=$3 target=${4-} ok=${5-} m=''
  [[ -n $ok ]] && { if [[ -v R[1x:$ok] ]]; then m=yes; else m=no; fi; }
  printf '| %s | %s | %s | %s | %s |\n' "$metric" "$(cell "$fmt" "1x:$key")" "-" "$target" "$m"
}
plain() { printf '%s' "$1"; }

table() {
  local t
  echo "| metric | 1x | 20x | target | met |"
  echo "|---|---:|---:|---|---|"
  row "corpus files" plain files
  row "files indexed as driver binaries" plain indexed
  row "corpus bytes (\`du -sb\`)" mb bytes
  row "indexed driver bytes" mb indexed_bytes
  row "\`index --full\` from scratch (with code analysis), median" ms index
  row "\`index --bytes-only --full\` from scratch (bytes level only), median" ms index_bytes
  row "index with code analysis / bytes-only index" x analysis_ratio "<=" 1.5 "<= 1.5x"
  row "re-\`index\` of the unchanged tree, median" ms reindex
  row20 "re-index unchanged / full index" pct reindex_ratio "<=" 0.10 "<= 10%"
  row "\`grep -rlF '$absent_tag'\` (absent), median" ms "grep:$absent_tag"
  row "\`grep -rlF '$present_tag'\` (present), median" ms "grep:$present_tag"
  row "\`grep -rlF '$wine_tag'\` (present), median" ms "grep:$wine_tag"
  for t in "$absent_tag" "$present_tag"; do
    row "index time / \`grep -rlF '$t'\` time" x "ratio:$t" "<=" 10 "<= 10x"
  done
  row "\`index\` peak RSS" mb rss "<" 300e6 "< 300 MB"
  for t in "$present_tag" "$wine_tag" "$absent_tag"; do
    row "\`query -l '$t'\`, median" ms "query:$t" "<=" 0.010 "<= 10 ms"
  done
  for t in "$present_tag" "$wine_tag" "$absent_tag"; do
    row20 "\`grep -rlF '$t'\` time / \`query -l '$t'\` time" x "speedup:$t" ">=" 50 ">= 50x"
  done
  printf '| %s | %s | %s | %s | %s |\n' "\`query -l TAG\` = \`grep -rlF TAG\` (tags that agree)" \
    "${R[1x:check]-n/a}" "${R[20x:check]-n/a}" "all" "$(met "${R[1x:check_ok]-0}" "${R[20x:check_ok]-0}")"
  row "database size" mb db
  row "database / indexed driver bytes" pct db_ratio "<=" 0.15 "<= 15%"
  row "database / all corpus bytes" pct db_ratio_all
  row1 "\`merge\` of $merge_hosts databases of the 1x corpus (one host each) into a new database, median" ms merge
  row1 "\`merge\` of the same $merge_hosts into the database already holding them, median" ms merge_again
  row1 "merged database size" mb merge_db
  row1 "merged database, \`info --json\`" plain merge_info \
    "$merge_hosts runs (host-1..host-$merge_hosts), $((merge_hosts * ${R[1x:indexed]-0})) files ($merge_hosts x ${R[1x:indexed]-n/a})" merge_info_ok
  row1 "\`export --format csv --evidence code\` after merging the same $merge_hosts again" plain merge_idem "unchanged" merge_idem_ok
}

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[[ -n $cpu ]] || cpu=$(awk -F': ' '/^(Hardware|cpu model|Model)/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.1f GB", $2 * 1024 / 1e9 }' /proc/meminfo)
read_md=$(read_section)
if ((read_only)); then
  # Keep the rest of results.md; replace (or add) its read-side section.
  printf '%s\n' "$read_md" | python3 "$(dirname "${BASH_SOURCE[0]}")/section.py" "$results_md"
  echo "$read_md"
  log "wrote the read-side section of $results_md"
  exit 0
fi
tbl=$(table)
{
  echo "# pooltag benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) CPUs ($cpu), $mem RAM, Linux $(uname -r); load average before the measurements: $load_before (other work on the machine makes the times noisy)"
  echo "- pooltag: release build of the working tree at commit $commit (uncommitted changes included, if any)"
  echo "- tools: $(hyperfine --version), $(grep --version | head -n1), LC_ALL=C"
  echo "- method: whole-process medians, \`hyperfine -N --output=pipe --warmup $warmups\`, $slow_runs runs per index/grep/merge command, $fast_runs per query$( ((quick)) && echo ' (--quick)'); every command run once untimed first (warm page cache); \`index --full\` and \`index --bytes-only --full\` timed from scratch (database deleted before each run); \`merge\` into a new database deleted before each run, into an existing one restored before each run"
  echo "- targets \"at 20x\" are judged on the 20x copy only; merge rows are measured on the 1x corpus only (20x column: -)"
  echo "- 1x: $corpus; 20x: $c20 ($copies copies of the tree, each file with \`copy-NN\` appended)"
  echo "- correctness tags: $(printf "\`'%s'\` " "${check_tags_list[@]}" | sed 's/|/\\|/g')"
  echo
  echo "$tbl"
  echo
  echo "## Notes"
  echo
  echo "- index summary, 1x: \`${R[1x:summary]:-(none)}\`"
  echo "- index summary, 20x: \`${R[20x:summary]:-(none)}\`"
  echo "- bytes-only index summary, 1x: \`${R[1x:bytes_summary]:-(none)}\`"
  echo "- bytes-only index summary, 20x: \`${R[20x:bytes_summary]:-(none)}\`"
  echo "- merge summary (first merge, into a new database): \`${R[merge_summary]:-(none)}\`"
  [[ -v R[1x:merge_again_db] ]] && echo "- merged database size after merging the same $merge_hosts again: $(mb "${R[1x:merge_again_db]}") (first merge: $(mb "${R[1x:merge_db]}"))"
  [[ -v R[startup] ]] && echo "- process start floor: \`pooltag --version\` takes $(ms "${R[startup]}") (median) here, so a whole-process \`query\` cannot beat grep by more than grep's time / $(ms "${R[startup]}")"
  echo "- files of the 1x corpus not indexed as driver binaries (grep still searches them; the comparison leaves them out): ${R[1x:not_indexed]:-none}"
  for n in "${notes[@]+"${notes[@]}"}"; do echo "- $n"; done
  echo
  echo "$read_md"
} >"$results_md"

echo "$tbl"
log "wrote $results_md"
# The write side on the bench corpus, into its own section, so that one run measures it all.
log "the write side on the bench corpus: bench/write.sh"
bash "$(dirname "${BASH_SOURCE[0]}")/write.sh" "$( ((quick)) && echo 1 || echo 3)" || failures=$((failures + 1))
if ((failures > 0)); then
  log "FAILED: $failures pooltag failure(s) or disagreement(s) with grep -rlF (see the notes in $results_md)"
  exit 1
fi
