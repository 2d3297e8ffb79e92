#!/usr/bin/env bash
# Runs a representative set of system tests (a burst with hook reports and
# bad input, a restart after a crash, reloads) with runfleetd under
# valgrind's memcheck, on a release build with symbols and no sanitizers
# (build/valgrind). Any memcheck error or definite leak makes runfleetd
# exit 99, which fails the test that stopped it.
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1

vg_dir=build/valgrind
cmake -S . -B "$vg_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  "-DCMAKE_C_FLAGS_RELEASE=-O1 -g" -DRUNFLEET_TESTS=ON >/dev/null
cmake --build "$vg_dir"

export RUNFLEET_BIN_DIR="$PWD/$vg_dir/bin"
# Runners are started through fork and exec: only runfleetd is checked.
export RUNFLEET_WRAPPER="valgrind --tool=memcheck --error-exitcode=99 \
--leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
--child-silent-after-fork=yes --trace-children=no --num-callers=30"
export RUNFLEET_TIMEOUT_SCALE="${RUNFLEET_TIMEOUT_SCALE:-4}"

start=$(date +%s)
python -m pytest -p no:cacheprovider -q \
  tests/test_secrets.py \
  "tests/test_runfleetd.py::test_bad_signatures_get_401_and_change_nothing" \
  "tests/test_runfleetd.py::test_malformed_json_400_and_huge_body_413" \
  "tests/test_runfleetd.py::test_ping_and_duplicate_delivery" \
  "tests/test_runfleetd.py::test_sighup_with_broken_config_keeps_old_one" \
  "tests/test_runfleetd.py::test_restart_after_crash_reaps_runners_and_registrations" \
  "tests/test_runfleetd.py::test_lost_jit_response_leaks_nothing_and_the_job_runs_once" \
  "tests/test_hooks_e2e.py::test_hooks_report_and_metrics_move" \
  "$@"
echo "valgrind tests took $(($(date +%s) - start))s"
