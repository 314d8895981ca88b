#!/usr/bin/env bash
# Run the Windows build of pooltag under Wine and check what it prints.
#
# pooltag's users live on Windows, so this cross-builds pooltag.exe
# (x86_64-pc-windows-gnu, release) and runs it in a fresh, throw-away Wine prefix: it indexes C:\
# with the default database (%LOCALAPPDATA%\pooltag\pooltag.db), queries a tag found in one of
# Wine's own drivers (human, --json, -l), checks the exit codes (0 found, 1 not found, 2 bad
# pattern / missing database) and their messages, uses --db with a Windows path before and after
# the subcommand, runs `info`, and checks `pool` (one line and exit 2: Wine does not report pool
# usage) and `pool --diff` of two captures by Windows paths. Every check looks at the output, not only the exit status.
#
# Meant for `.ci/run` on a fresh Debian 12 machine (root, CI=true, no X server); it also works on
# a developer machine that has (or lets it install) wine64, mingw-w64 and the rustup target.
#   bash scripts/windows-under-wine.sh
# Environment: CARGO_TARGET_DIR as for cargo (default: the project's target dir);
# KEEP_WINE_TMP=1 keeps the temporary folder (prefix, HOME, logs) for a post-mortem.
#
# What Debian 12's Wine (8.0) needs, and what this script does about it:
# - Rust's standard library imports ProcessPrng from bcryptprimitives.dll, which Wine has only
#   since 8.13: the program does not even start (exit 53). A stand-in bcryptprimitives.dll whose
#   ProcessPrng calls advapi32's SystemFunction036 (RtlGenRandom) is built here with mingw and
#   put beside a copy of pooltag.exe in the temporary folder (not in the cargo target dir, so it
#   is never shipped by accident).
# - The wine64 package puts its launcher at /usr/lib/wine/wine64, not on PATH.
# - Wine links the prefix's user folders (Desktop, Documents, ...) to $HOME, so walking C:\ would
#   wander into the Linux home: Wine runs with HOME set to an empty temporary folder.
# - A prefix takes ~5-15 s and ~700 MB: it is made fresh (headless: DISPLAY empty,
#   WINEDEBUG=-all) in a temporary folder that a trap removes, after stopping that prefix's
#   wineserver.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
started=$(date +%s)

say() { printf '== %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}
passed=()
pass() {
  passed+=("$*")
  printf 'ok: %s\n' "$*"
}

# ---------------------------------------------------------------------------------------------
# 1. Tools
# ---------------------------------------------------------------------------------------------
find_wine() {
  local candidate
  for candidate in "$(command -v wine64 || true)" /usr/lib/wine/wine64 /usr/lib64/wine/wine64 \
    "$(command -v wine || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

export DEBIAN_FRONTEND=noninteractive
need_apt=()
find_wine >/dev/null || need_apt+=(wine64)
command -v x86_64-w64-mingw32-gcc >/dev/null || need_apt+=(gcc-mingw-w64-x86-64)
command -v python3 >/dev/null || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || fail "missing ${need_apt[*]} and no apt-get to install them"
  say "installing ${need_apt[*]} (apt)"
  apt-get update -qq
  # wine64 alone (no recommends: fonts, gecko, mono...) is enough for console programs.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
wine=$(find_wine) || fail "no Wine launcher found (looked for wine64 on PATH, /usr/lib/wine/wine64, wine)"
command -v rustup >/dev/null || fail "rustup is needed to add the x86_64-pc-windows-gnu target"
if ! rustup target list --installed | grep -qx x86_64-pc-windows-gnu; then
  say "rustup target add x86_64-pc-windows-gnu"
  rustup target add x86_64-pc-windows-gnu >/dev/null
fi
say "wine: $wine ($("$wine" --version 2>/dev/null || echo 'version unknown'))"

# ---------------------------------------------------------------------------------------------
# 2. Build pooltag.exe and the ProcessPrng stand-in
# ---------------------------------------------------------------------------------------------
say "cargo build --release --target x86_64-pc-windows-gnu"
cargo build --release --target x86_64-pc-windows-gnu
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
exe="$target_dir/x86_64-pc-windows-gnu/release/pooltag.exe"
[ -f "$exe" ] || fail "the build did not produce $exe"

work=$(mktemp -d "${TMPDIR:-/tmp}/pooltag-wine.XXXXXX")
export WINEPREFIX="$work/prefix"
cleanup() {
  local status=$?
  # Stop this prefix's wineserver (and only it) before removing the prefix.
  if [ -d "$WINEPREFIX" ]; then
    WINEPREFIX="$WINEPREFIX" "$wineserver" -k >/dev/null 2>&1 || true
    WINEPREFIX="$WINEPREFIX" "$wineserver" -w >/dev/null 2>&1 || true
  fi
  if [ "${KEEP_WINE_TMP:-0}" = 1 ]; then
    echo "kept $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
wineserver=$(dirname "$wine")/wineserver
[ -x "$wineserver" ] || wineserver=$(command -v wineserver || echo /usr/lib/wine/wineserver)
trap cleanup EXIT
trap 'exit 130' INT TERM

bin="$work/bin"
mkdir -p "$bin" "$work/home" "$work/out"
cp "$exe" "$bin/pooltag.exe"
cat >"$work/bcryptprimitives.c" <<'EOF'
/* Stand-in for bcryptprimitives.dll, which Wine < 8.13 lacks: Rust's std imports ProcessPrng. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* advapi32: RtlGenRandom */

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
EOF
x86_64-w64-mingw32-gcc -O2 -shared -s -o "$bin/bcryptprimitives.dll" \
  "$work/bcryptprimitives.c" -ladvapi32 ||
  fail "could not build the bcryptprimitives.dll stand-in"

# ---------------------------------------------------------------------------------------------
# 3. A fresh prefix
# ---------------------------------------------------------------------------------------------
export HOME="$work/home" WINEDEBUG=-all DISPLAY= WINEDLLOVERRIDES="bcryptprimitives=n,b;mscoree=;mshtml="
unset WAYLAND_DISPLAY || true
say "creating a Wine prefix in $WINEPREFIX"
t0=$(date +%s)
"$wine" wineboot -i >"$work/out/wineboot.log" 2>&1 ||
  fail "wineboot -i failed: $(cat "$work/out/wineboot.log")"
"$wineserver" -w
drivers_dir="$WINEPREFIX/drive_c/windows/system32/drivers"
[ -d "$drivers_dir" ] || fail "the new prefix has no $drivers_dir"
n_sys=$(find "$drivers_dir" -maxdepth 1 -iname '*.sys' | wc -l)
say "prefix ready in $(($(date +%s) - t0)) s, $n_sys .sys files in C:\\windows\\system32\\drivers"

# Runs pooltag.exe under Wine with the given arguments; stdout, stderr and the exit status go to
# $work/out/$name.{out,err,rc}; stdout/stderr lose their carriage returns.
run() {
  local name=$1
  shift
  local rc=0
  "$wine" "$bin/pooltag.exe" "$@" >"$work/out/$name.out.raw" 2>"$work/out/$name.err.raw" || rc=$?
  tr -d '\r' <"$work/out/$name.out.raw" >"$work/out/$name.out"
  tr -d '\r' <"$work/out/$name.err.raw" >"$work/out/$name.err"
  echo "$rc" >"$work/out/$name.rc"
  last_rc=$rc
  last_out="$work/out/$name.out"
  last_err="$work/out/$name.err"
}
show() { # the last run, for a failure message
  printf '\n  exit status: %s\n  stdout:\n%s\n  stderr:\n%s' "$last_rc" \
    "$(head -c 3000 "$last_out" | sed 's/^/    /')" "$(head -c 3000 "$last_err" | sed 's/^/    /')"
}
expect_rc() { # expected status, what was run
  [ "$last_rc" = "$1" ] || fail "$2: expected exit status $1, got $last_rc$(show)"
}

# ---------------------------------------------------------------------------------------------
# 4. Checks
# ---------------------------------------------------------------------------------------------
run version --version
[ "$last_rc" != 53 ] || fail "pooltag.exe does not start under Wine (exit 53: a DLL or import is missing)$(show)"
expect_rc 0 "pooltag.exe --version"
grep -q '^pooltag ' "$last_out" || fail "pooltag.exe --version does not print 'pooltag VERSION'$(show)"
pass "pooltag.exe starts under Wine: $(head -n1 "$last_out")"

localappdata=$("$wine" cmd /c echo %LOCALAPPDATA% 2>/dev/null | tr -d '\r' | tail -n1)
case "$localappdata" in
  [A-Za-z]:\\*) ;;
  *) fail "cannot read %LOCALAPPDATA% in the prefix (got '$localappdata')" ;;
esac
default_db_win="$localappdata\\pooltag\\pooltag.db"
# C:\users\root\AppData\Local -> $WINEPREFIX/drive_c/users/root/AppData/Local
[[ "$localappdata" == [Cc]:\\* ]] || fail "%LOCALAPPDATA% is not on C: ($localappdata)"
rest=${localappdata:3}
default_db_unix="$WINEPREFIX/drive_c/${rest//\\//}/pooltag/pooltag.db"

say 'pooltag.exe index C:\'
t0=$(date +%s)
run index_c index 'C:\'
index_secs=$(($(date +%s) - t0))
expect_rc 0 'pooltag.exe index C:\'
summary=$(grep '^pooltag: .* files seen, .* driver binaries indexed' "$last_err" | tail -n1 || true)
[ -n "$summary" ] || fail 'index C:\ printed no summary line on stderr'"$(show)"
indexed=$(sed -E 's/.* ([0-9]+) driver binaries indexed.*/\1/' <<<"$summary")
[ "$indexed" -ge 10 ] ||
  fail "index C:\\ indexed $indexed driver binaries, expected at least 10 (the prefix has $n_sys .sys files)$(show)"
case "$summary" in
  *"; database $default_db_win") ;;
  *) fail "index C:\\ summary does not end with '; database $default_db_win': $summary" ;;
esac
[ -f "$default_db_unix" ] || fail "index C:\\ did not write the default database $default_db_win ($default_db_unix)"
# The user folders must not lead out of the prefix (HOME is an empty folder).
if grep -q 'file system loop\|Z:\\' "$last_err"; then
  fail "index C:\\ left the prefix or met a loop$(show)"
fi
pass "index C:\\: exit 0 in ${index_secs} s, $indexed driver binaries indexed (>= 10), default database $default_db_win exists"
echo "   $summary"

# A tag to ask about: the strongest-evidence, alphanumeric tag of one of Wine's drivers.
say 'pooltag.exe tags --json C:\windows\system32\drivers\*.sys (looking for a tag)'
tag=''
tag_driver=''
for sys in ndis.sys http.sys netio.sys fltmgr.sys ksecdd.sys mountmgr.sys $(cd "$drivers_dir" && ls -- *.sys); do
  [ -f "$drivers_dir/$sys" ] || continue
  run tags "tags" --json "C:\\windows\\system32\\drivers\\$sys"
  [ "$last_rc" = 0 ] || fail "tags --json C:\\windows\\system32\\drivers\\$sys$(show)"
  tag=$(python3 - "$last_out" <<'EOF'
import json, re, sys
rows = json.load(open(sys.argv[1], encoding="utf-8"))
order = ["call", "arg", "code", "data", "bytes"]
good = [r for r in rows if re.fullmatch(r"[A-Za-z][A-Za-z0-9]{3}", r["tag"])]
good.sort(key=lambda r: (order.index(r["evidence"]), r["tag"]))
if good:
    print(good[0]["tag"], good[0]["evidence"])
EOF
  )
  if [ -n "$tag" ]; then
    tag_driver="C:\\windows\\system32\\drivers\\$sys"
    break
  fi
done
[ -n "$tag" ] || fail "no driver in C:\\windows\\system32\\drivers has an alphanumeric tag"
tag_evidence=${tag#* }
tag=${tag%% *}
pass "tags --json $tag_driver: valid JSON, picked tag '$tag' ($tag_evidence evidence)"

# Human output summarises the bytes level: ask for the picked tag's level, which lists it.
run tags_short tags "$sys" --evidence "$tag_evidence"
expect_rc 0 "tags $sys (by file name)"
grep -qF "$tag" "$last_out" || fail "tags $sys (by file name) does not list '$tag'$(show)"
pass "tags $sys (file name only) resolves to $tag_driver and lists '$tag'"

# At the tag's level or stronger, so that a bytes-level driver is listed, not counted.
run query_human query "$tag" --evidence "$tag_evidence"
expect_rc 0 "query $tag"
grep -qF "$tag_driver" "$last_out" ||
  fail "query $tag does not name $tag_driver (paths should print the Windows way)$(show)"
grep -q '^Drivers:' "$last_out" || fail "query $tag has no 'Drivers:' section$(show)"
pass "query $tag: exit 0, names $tag_driver"

run query_json query --json "$tag"
expect_rc 0 "query --json $tag"
python3 - "$last_out" "$tag" "$tag_driver" <<'EOF' || fail "query --json $tag: unexpected JSON$(show)"
import json, sys
path, tag, driver = sys.argv[1:]
rows = json.load(open(path, encoding="utf-8"))
assert isinstance(rows, list), "not an array"
files = [r for r in rows if r.get("kind") == "file"]
assert files, "no element of kind 'file'"
for r in files:
    assert r["tag"] == tag, r
    assert r["evidence"] in ("call", "arg", "code", "data", "bytes"), r
    assert isinstance(r["sites"], list), r
    assert r["path"].startswith("C:\\"), "path not a Windows path: %r" % r["path"]
assert any(r["path"] == driver for r in files), "%s not among %r" % (driver, [r["path"] for r in files])
EOF
pass "query --json $tag: a JSON array with kind 'file' elements, $tag_driver among them"

run query_list query -l "$tag"
expect_rc 0 "query -l $tag"
grep -qxF "$tag_driver" "$last_out" || fail "query -l $tag does not list $tag_driver$(show)"
if grep -qv '^[A-Za-z]:\\' "$last_out"; then
  fail "query -l $tag prints a line that is not a Windows path$(show)"
fi
LC_ALL=C sort -c -u "$last_out" 2>/dev/null || fail "query -l $tag: the paths are not sorted and unique$(show)"
pass "query -l $tag: $(wc -l <"$last_out") path(s), $tag_driver among them"

run query_none query Zqx9
expect_rc 1 "query Zqx9 (a tag nowhere)"
grep -qF "No Pooltag.txt entry and no indexed driver for 'Zqx9'" "$last_out" ||
  fail "query Zqx9 does not say nothing matched$(show)"
pass "query Zqx9: exit 1, 'No Pooltag.txt entry and no indexed driver for 'Zqx9'.'"

run query_bad query TOOLONG
expect_rc 2 "query TOOLONG (a bad pattern)"
grep -qF "invalid tag pattern 'TOOLONG'" "$last_err" || fail "query TOOLONG: no 'invalid tag pattern' message$(show)"
pass "query TOOLONG: exit 2, $(head -n1 "$last_err")"

run query_nodb query --db 'C:\nonexistent\x.db' "$tag"
expect_rc 2 'query --db C:\nonexistent\x.db (a missing database)'
grep -qF "no database at C:\\nonexistent\\x.db" "$last_err" ||
  fail "query --db C:\\nonexistent\\x.db: no 'no database at C:\\nonexistent\\x.db' message$(show)"
pass "query --db C:\\nonexistent\\x.db: exit 2, $(head -n1 "$last_err")"

run index_db --db 'C:\pt\test.db' index 'C:\windows\system32\drivers'
expect_rc 0 'pooltag.exe --db C:\pt\test.db index C:\windows\system32\drivers'
summary2=$(grep 'driver binaries indexed' "$last_err" | tail -n1 || true)
case "$summary2" in
  *"; database C:\\pt\\test.db") ;;
  *) fail "index --db C:\\pt\\test.db: summary does not end with '; database C:\\pt\\test.db'$(show)" ;;
esac
[ -f "$WINEPREFIX/drive_c/pt/test.db" ] || fail "--db C:\\pt\\test.db index: no file at drive_c/pt/test.db"
pass "--db C:\\pt\\test.db index C:\\windows\\system32\\drivers: exit 0, drive_c/pt/test.db exists"
echo "   $summary2"

# The same tree again: nothing changed, so the database is left as it was and the run logged.
db_before=$(md5sum <"$WINEPREFIX/drive_c/pt/test.db")
run index_again --db 'C:\pt\test.db' index 'C:\windows\system32\drivers'
expect_rc 0 'pooltag.exe --db C:\pt\test.db index C:\windows\system32\drivers, again'
summary_again=$(grep 'driver binaries indexed' "$last_err" | tail -n1 || true)
case "$summary_again" in
  *"; database C:\\pt\\test.db left as it was (nothing changed; the run is recorded in C:\\pt\\test.db.unchanged-runs)") ;;
  *) fail "index again: the summary does not say the database was left as it was$(show)" ;;
esac
[ "$(md5sum <"$WINEPREFIX/drive_c/pt/test.db")" = "$db_before" ] || fail "index again: the database changed"
run info_again --db 'C:\pt\test.db' info --json
expect_rc 0 'pooltag.exe --db C:\pt\test.db info --json'
grep -qF '"unchanged_run_count":1' "$last_out" || fail "info --json does not count the unchanged run$(show)"
pass "index again, nothing changed: database left byte for byte, info --json counts 1 unchanged run"

# No ROOT on Windows: the driver folders (DriverStore is absent in a Wine prefix, and skipped).
run index_default --db 'C:\pt\default.db' index
expect_rc 0 'pooltag.exe --db C:\pt\default.db index (no ROOT)'
summary3=$(grep 'driver binaries indexed' "$last_err" | tail -n1 || true)
indexed3=$(sed -E 's/.* ([0-9]+) driver binaries indexed.*/\1/' <<<"$summary3")
[ "$indexed3" = "$n_sys" ] ||
  fail "index without ROOT indexed '$indexed3' driver binaries, expected the $n_sys of C:\\windows\\system32\\drivers$(show)"
pass "index without ROOT: the $n_sys drivers of C:\\windows\\system32\\drivers"

run query_db query --db 'C:\pt\test.db' "$tag"
expect_rc 0 "query --db C:\\pt\\test.db $tag"
grep -qF "$tag_driver" "$last_out" || fail "query --db C:\\pt\\test.db $tag does not name $tag_driver$(show)"
pass "query --db C:\\pt\\test.db $tag (--db after the subcommand): exit 0, names $tag_driver"

# The live pool table: Wine has no SystemPoolTagInformation, so one line names --diff, exit 2.
run pool_live pool
expect_rc 2 "pool (Wine does not report pool usage)"
expected_line="pooltag: this system does not report pool usage (NtQuerySystemInformation answers STATUS_INVALID_INFO_CLASS); read snapshots taken elsewhere with 'pooltag pool --diff BEFORE AFTER'"
[ "$(cat "$last_err")" = "$expected_line" ] || fail "pool: not the one line '$expected_line'$(show)"
[ ! -s "$last_out" ] || fail "pool printed on stdout$(show)"
pass "pool: exit 2, $(cat "$last_err")"

# --diff of a PoolMon capture and !poolused output (CRLF, as Windows writes them), by Windows
# paths: $tag grew by 4800 bytes, Zqx9 (no driver) shrank.
printf ' Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc\r\n\r\n %s Nonp       100 (   0)        90 (   0)     10     1600 (   0)     160\r\n Zqx9 Paged       10 (   0)         5 (   0)      5      500 (   0)     100\r\n' \
  "$tag" >"$WINEPREFIX/drive_c/pt/before.txt"
printf '               NonPaged                  Paged\r\n Tag     Allocs         Used     Allocs         Used\r\n\r\n %s        40         6400          0            0\r\n Zqx9         0            0          4          400\r\n' \
  "$tag" >"$WINEPREFIX/drive_c/pt/after.txt"
run pool_diff --db 'C:\pt\test.db' pool --diff 'C:\pt\before.txt' 'C:\pt\after.txt'
expect_rc 0 'pool --diff C:\pt\before.txt C:\pt\after.txt'
[ ! -s "$last_err" ] || fail "pool --diff wrote on stderr$(show)"
sed -n 2p "$last_out" | grep -q "^$tag      +4.7 KiB          +30       6.2 KiB  [^ ]*\.sys" ||
  fail "pool --diff: the second line is not '$tag +4.7 KiB +30 6.2 KiB DRIVER.sys ...'$(show)"
[ "$(sed -n 3p "$last_out")" = "Zqx9        -100 B           -1         400 B  unknown" ] ||
  fail "pool --diff: the third line is not Zqx9's shrink$(show)"
pass "pool --diff C:\\pt\\before.txt C:\\pt\\after.txt: exit 0, $(sed -n 2p "$last_out" | cut -c1-100)"

run pool_diff_json --db 'C:\pt\test.db' pool --diff 'C:\pt\before.txt' 'C:\pt\after.txt' --json
expect_rc 0 'pool --diff --json'
python3 - "$last_out" "$tag" "$tag_driver" <<'EOF' || fail "pool --diff --json: unexpected JSON$(show)"
import json, sys
path, tag, driver = sys.argv[1:]
rows = json.load(open(path, encoding="utf-8"))
assert [r["tag"] for r in rows] == [tag, "Zqx9"], rows
assert rows[0]["bytes_delta"] == 4800 and rows[0]["nonpaged"]["outstanding_after"] == 40, rows[0]
assert driver in [d["path"] for d in rows[0]["drivers"]], rows[0]["drivers"]
assert rows[1]["drivers"] == [] and rows[1]["entries"] == [], rows[1]
EOF
pass "pool --diff --json: $tag grew by 4800 bytes, $tag_driver among its drivers"

run info info
expect_rc 0 "info"
grep -q '^pooltag database' "$last_out" || fail "info: no line starting 'pooltag database'$(show)"
pass "info: $(grep '^pooltag database' "$last_out" | head -n1)"

run info_db --db 'C:\pt\test.db' info
expect_rc 0 'info --db C:\pt\test.db'
grep -q '^pooltag database' "$last_out" || fail "info --db C:\\pt\\test.db: no line starting 'pooltag database'$(show)"
pass "--db C:\\pt\\test.db info: $(grep '^pooltag database' "$last_out" | head -n1)"

echo
say "Windows build under Wine: ${#passed[@]} checks passed in $(($(date +%s) - started)) s"
for p in "${passed[@]}"; do
  echo "  - $p"
done
