#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang, ASan+UBSan) into build/fuzz,
# writes their seed corpora there (fuzz/make-seeds.py) and runs each for
# FUZZ_SECONDS (default 300) on that corpus, which grows from run to run.
# Prints executions per second of each target; fails if one crashes, and
# keeps the crashing input in build/fuzz/artifacts/<target>/.
# Usage: scripts/fuzz.sh [TARGET...]   (default: every target)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

dir=${FUZZ_BUILD_DIR:-build/fuzz}
seconds=${FUZZ_SECONDS:-300}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(fuzz_webhook fuzz_http_request fuzz_config fuzz_hook_report
    fuzz_github fuzz_kube_watch)
fi

cc=${FUZZ_CC:-}
if [ -z "$cc" ]; then
  for c in clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
    if command -v "$c" >/dev/null; then
      cc=$c
      break
    fi
  done
fi
if [ -z "$cc" ]; then
  echo "fuzz: no clang found (scripts/dev.sh installs it)" >&2
  exit 1
fi

python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python

if ! CC=$cc cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRUNFLEET_FUZZ=ON >/dev/null; then
  echo "fuzz: cmake configure failed" >&2
  exit 1
fi
if ! cmake --build "$dir" --target fuzz_all -j "${FUZZ_JOBS:-2}"; then
  echo "fuzz: build failed" >&2
  exit 1
fi
"$python" fuzz/make-seeds.py "$dir/seeds" || exit 1

# Leaks are findings too; UBSan stops at its first report.
export ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"

status=0
summary=()
for t in "${targets[@]}"; do
  corpus="$dir/corpus/$t"
  artifacts="$dir/artifacts/$t"
  log="$dir/logs/$t.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  echo "=== $t: ${seconds}s ==="
  "$dir/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict[@]}" \
    "$corpus" "$dir/seeds/$t" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
  line=$(printf '%-18s %10s exec/s %12s runs  %s' "$t" "${speed:-?}" \
    "${runs:-?}" "${cov:-}")
  if [ $rc -ne 0 ]; then
    line="$line  CRASH (exit $rc; input in $artifacts/, log $log)"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$log" | head -5
    status=1
  fi
  echo "$line"
  summary+=("$line")
done
echo "=== fuzz summary (${seconds}s each) ==="
printf '%s\n' "${summary[@]}"
exit $status
