#!/usr/bin/env bash
# Runs the cmocka unit tests through ctest and the pytest system tests
# against the ASan+UBSan build, then a representative set of system tests
# with runfleetd under valgrind (scripts/test-valgrind.sh, about a minute),
# prints the summaries, and fails if any phase fails or runs nothing.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

asan_dir=build/asan
export RUNFLEET_BIN_DIR="$PWD/$asan_dir/bin"
# Leaks fail the run; UBSan findings abort (the build also says so).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"

ctest_log=$(mktemp)
pytest_log=$(mktemp)
valgrind_log=$(mktemp)
trap 'rm -f "$ctest_log" "$pytest_log" "$valgrind_log"' EXIT

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

echo "=== system tests under valgrind ==="
scripts/test-valgrind.sh 2>&1 | tee "$valgrind_log"
valgrind_rc=${PIPESTATUS[0]}

echo "=== summary ==="
grep -E "tests passed|tests failed" "$ctest_log" | tail -1
tail -1 "$pytest_log"
grep -E "passed|failed" "$valgrind_log" | tail -1
if [ "$ctest_rc" -ne 0 ] || [ "$pytest_rc" -ne 0 ] || [ "$valgrind_rc" -ne 0 ]; then
  echo "FAILED: ctest exit $ctest_rc, pytest exit $pytest_rc," \
    "valgrind phase exit $valgrind_rc" >&2
  exit 1
fi
