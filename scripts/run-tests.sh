#!/usr/bin/env bash
# Runs the cmocka unit tests through ctest and the pytest system tests
# against the ASan+UBSan build, then each fuzz target for a bounded time
# (FUZZ_SECONDS, default 12; 0 skips them), then a representative set of
# system tests with runfleetd under valgrind (scripts/test-valgrind.sh,
# about a minute), prints the summaries, and fails if any phase fails or
# runs nothing.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

asan_dir=build/asan
export RUNFLEET_BIN_DIR="$PWD/$asan_dir/bin"
# Leaks fail the run; UBSan findings abort (the build also says so).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"

ctest_log=$(mktemp)
pytest_log=$(mktemp)
fuzz_log=$(mktemp)
valgrind_log=$(mktemp)
trap 'rm -f "$ctest_log" "$pytest_log" "$fuzz_log" "$valgrind_log"' EXIT

echo "=== unit tests (ctest + cmocka) ==="
ctest --test-dir "$asan_dir" --output-on-failure 2>&1 | tee "$ctest_log"
ctest_rc=${PIPESTATUS[0]}
if grep -q "No tests were found" "$ctest_log"; then
  echo "ctest ran no test" >&2
  ctest_rc=1
fi

echo "=== system tests (pytest) ==="
python -m pytest tests 2>&1 | tee "$pytest_log"
pytest_rc=${PIPESTATUS[0]}

fuzz_rc=0
fuzz_seconds=${FUZZ_SECONDS:-12}
if [ "$fuzz_seconds" != 0 ]; then
  echo "=== fuzz targets (libFuzzer, ${fuzz_seconds}s each) ==="
  # The fuzz build has its own sanitizer options; ours do not apply.
  env -u ASAN_OPTIONS -u UBSAN_OPTIONS FUZZ_SECONDS="$fuzz_seconds" \
    scripts/fuzz.sh 2>&1 | tee "$fuzz_log"
  fuzz_rc=${PIPESTATUS[0]}
fi

echo "=== system tests under valgrind ==="
scripts/test-valgrind.sh 2>&1 | tee "$valgrind_log"
valgrind_rc=${PIPESTATUS[0]}

echo "=== summary ==="
grep -E "tests passed|tests failed" "$ctest_log" | tail -1
tail -1 "$pytest_log"
sed -n '/^=== fuzz summary/,$p' "$fuzz_log"
grep -E "passed|failed" "$valgrind_log" | tail -1
if [ "$ctest_rc" -ne 0 ] || [ "$pytest_rc" -ne 0 ] || [ "$fuzz_rc" -ne 0 ] ||
  [ "$valgrind_rc" -ne 0 ]; then
  echo "FAILED: ctest exit $ctest_rc, pytest exit $pytest_rc," \
    "fuzz exit $fuzz_rc, valgrind phase exit $valgrind_rc" >&2
  exit 1
fi
