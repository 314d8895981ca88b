#!/usr/bin/env bash
# A long run of the mutation fuzzers in tests/fuzz.rs, in release mode with overflow checks and
# debug assertions on (as in a debug build, at release speed).
#
#   scripts/fuzz.sh                  # 200,000 cases per target
#   PROPTEST_CASES=2000000 scripts/fuzz.sh fuzz_analyse
#
# Each target prints "fuzz <target>: N executions (M past the first checks) in S s". A failing
# input is saved under <target dir>/tmp/fuzz-failures/<target>/: copy it into
# tests/regressions/<target>/ (see tests/regressions/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${PROPTEST_CASES:-200000}"
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
exec cargo test --release --test fuzz "${1:-fuzz_}" -- --nocapture --test-threads "${THREADS:-2}"
