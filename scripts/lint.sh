#!/usr/bin/env bash
# Fails when a C file is not clang-formatted, or when a shell script has
# findings of the shell linter.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
mapfile -t c_files < <(git ls-files '*.c' '*.h')
if [ ${#c_files[@]} -gt 0 ]; then
  clang-format --dry-run --Werror "${c_files[@]}" || status=1
fi
mapfile -t sh_files < <(git ls-files '*.sh' '.ci/run')
if [ ${#sh_files[@]} -gt 0 ]; then
  shellcheck "${sh_files[@]}" || status=1
fi
[ $status -eq 0 ] && echo "lint: ${#c_files[@]} C files, ${#sh_files[@]} shell scripts clean"
exit $status
