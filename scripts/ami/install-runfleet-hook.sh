#!/usr/bin/env bash
# Packer provisioner: builds runfleet-hook from the uploaded sources
# (/tmp/runfleet-src.tar.gz) and installs it with the runner hook shims in
# /opt/runfleet/hooks, the same layout as the runner images, for runner pods
# that mount it from the host.
set -euo pipefail

src=/tmp/runfleet-src.tar.gz
build_deps=(gcc make cmake ninja-build pkgconf-pkg-config libuv-devel libcurl-devel
  jansson-devel libgit2-devel libyaml-devel openssl-devel sqlite-devel http-parser-devel)

dnf -y -q install "${build_deps[@]}"
work=$(mktemp -d)
tar -xzf "$src" -C "$work"
cmake -S "$work" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$work/build" --target runfleet-hook
install -D -m 0755 "$work/build/bin/runfleet-hook" /usr/local/bin/runfleet-hook

install -d -m 0755 /opt/runfleet/hooks
for h in pre-job post-job; do
  shim=$(find "$work/hooks" -name "$h.sh" -type f | head -n 1)
  if [ -n "$shim" ]; then
    install -m 0755 "$shim" "/opt/runfleet/hooks/$h.sh"
  else
    printf '#!/bin/sh\nexec /usr/local/bin/runfleet-hook %s "$@"\n' "$h" >"/opt/runfleet/hooks/$h.sh"
    chmod 0755 "/opt/runfleet/hooks/$h.sh"
  fi
done

# Keep the runtime libraries, drop the compilers and headers.
dnf -y -q mark install libuv libcurl jansson libgit2 libyaml openssl-libs sqlite-libs http-parser
dnf -y -q remove cmake ninja-build libuv-devel jansson-devel libgit2-devel libyaml-devel \
  sqlite-devel http-parser-devel
rm -rf "$work" "$src"
if ldd /usr/local/bin/runfleet-hook | grep -q 'not found'; then
  ldd /usr/local/bin/runfleet-hook
  exit 1
fi
