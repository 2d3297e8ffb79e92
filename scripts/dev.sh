#!/usr/bin/env bash
# The one entry point for a fresh machine: installs what runfleet needs
# (Debian packages, npm packages including `just`, Python test packages),
# then runs a `just` recipe. `scripts/dev.sh test`, `scripts/dev.sh demo`.
# Each install step is skipped when its inputs have not changed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

DEB_PACKAGES=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev clang-format shellcheck git
  libuv1-dev libcurl4-openssl-dev libjansson-dev libgit2-dev libyaml-dev
  libssl-dev libcmocka-dev libsqlite3-dev libhttp-parser-dev
  python3 python3-venv nodejs npm procps util-linux golang-go wrk valgrind
  chromium chromium-driver
  openssh-server openssh-client
)

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_debian() {
  local missing=() p
  for p in "${DEB_PACKAGES[@]}"; do
    # A tool found on PATH (node, npm, python3) need not come from Debian.
    case "$p" in
      nodejs) command -v node >/dev/null && continue ;;
      npm | python3) command -v "$p" >/dev/null && continue ;;
      # Any go will do: tests/kube/build-tools.sh fetches the Go it needs.
      golang-go) command -v go >/dev/null && continue ;;
      python3-venv) python3 -c 'import venv, ensurepip' 2>/dev/null && continue ;;
    esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
}

# Re-run an install only when the files it depends on have changed.
stamp_ok() {
  local stamp=$1
  shift
  [ -f "$stamp" ] && [ "$(cat "$@" | sha256sum)" = "$(cat "$stamp")" ]
}

stamp_write() {
  local stamp=$1
  shift
  cat "$@" | sha256sum >"$stamp"
}

install_npm() {
  if stamp_ok node_modules/.runfleet-stamp package.json package-lock.json; then
    return 0
  fi
  log "installing npm packages (just, GitHub OpenAPI and webhook examples)"
  # npm ci rejects this lock file for the optional per-platform packages of
  # rust-just (an npm limitation); npm install honours the same lock.
  npm install --no-audit --no-fund --loglevel=error >/dev/null
  stamp_write node_modules/.runfleet-stamp package.json package-lock.json
}

install_python() {
  # tests/deploy/requirements.txt: the deployment tests' YAML and HCL parsers.
  local reqs=(tests/requirements.txt tests/deploy/requirements.txt)
  if stamp_ok .venv/.runfleet-stamp "${reqs[@]}"; then
    return 0
  fi
  log "installing Python test packages into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "${reqs[@]/#/--requirement=}"
  stamp_write .venv/.runfleet-stamp "${reqs[@]}"
}

# rust-just ships the native `just` in a per-platform package; its Node
# wrapper needs a newer Node than Debian bookworm's, so run the binary itself.
just_bin() {
  local b
  for b in "$root"/node_modules/rust-just-linux-*/bin/just; do
    if [ -x "$b" ] && "$b" --version >/dev/null 2>&1; then
      echo "$b"
      return 0
    fi
  done
  echo "$root/node_modules/.bin/just"
}

# Dev servers run as devservers.run_as (default runfleet) when runfleetd
# runs as root, and sshd logs that user in with its shell: the system tests
# need the account, with a login shell.
install_devserver_user() {
  [ "$(id -u)" -eq 0 ] || return 0
  getent passwd runfleet >/dev/null && return 0
  log "adding the runfleet system user (devservers.run_as)"
  useradd --system --shell /bin/bash --create-home --home-dir /home/runfleet runfleet
}

install_debian
install_npm
install_python
install_devserver_user

export PATH="$root/node_modules/.bin:$root/.venv/bin:$PATH"
JUST=$(just_bin)
exec "$JUST" "$@"
