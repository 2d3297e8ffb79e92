# runfleet: every operation is a recipe. `just --list` explains each.
# On a fresh machine, run recipes through scripts/dev.sh, which installs
# what they need first (e.g. `scripts/dev.sh test`).

set shell := ["bash", "-euo", "pipefail", "-c"]

build_dir := "build"
asan_dir := "build/asan"

# List the recipes.
default:
    @just --list

# Build runfleetd, runfleet and runfleet-hook (release) into build/bin/.
build:
    cmake -S . -B {{build_dir}} -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build {{build_dir}}

# Build the test configuration: ASan+UBSan binaries and cmocka tests in build/asan/.
build-asan:
    cmake -S . -B {{asan_dir}} -G Ninja -DCMAKE_BUILD_TYPE=Debug -DRUNFLEET_SANITIZE=ON -DRUNFLEET_TESTS=ON >/dev/null
    cmake --build {{asan_dir}}

# Run every test: lint, cmocka unit tests (ctest) and pytest system tests, under ASan+UBSan.
test: lint build-asan
    scripts/run-tests.sh

# Run only the cmocka unit tests (ctest); ARGS go to ctest, e.g. `-R webhook`.
test-unit *ARGS: build-asan
    ctest --test-dir {{asan_dir}} --output-on-failure {{ARGS}}

# Run only the pytest system tests; ARGS go to pytest, e.g. `-k signature`.
test-system *ARGS: build-asan
    RUNFLEET_BIN_DIR={{asan_dir}}/bin python -m pytest tests {{ARGS}}

# Check formatting (clang-format) and shell scripts (shellcheck).
lint:
    scripts/lint.sh

# Rewrite C sources in place with clang-format.
fmt:
    git ls-files '*.c' '*.h' | xargs clang-format -i

# Run the demo: GitHub simulator, runfleetd on the local backend, a burst of jobs.
demo *ARGS: build
    python scripts/demo.py {{ARGS}}

# Run the benchmarks; each prints a table with ratios against a reference.
bench: build
    build/bin/bench_scheduler
    python bench/bench_webhook.py
