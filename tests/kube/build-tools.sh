#!/usr/bin/env bash
# Builds, once, the pinned tools that the deployment and Kubernetes tests
# run for real: etcd, kube-apiserver, kubectl and kube-scheduler (and any
# other command of the k8s.io/kubernetes module named in KUBE_COMMANDS), kwok
# (the fake kubelet for the scheduler's nodes), kustomize, helm, OpenTofu, actionlint, Packer with its Amazon plugin, and a
# small Dockerfile checker on BuildKit's own parser and linter.
#
# Everything comes from the Go module proxy and is compiled here: no
# prebuilt binaries. Each tool lands in
#   ${RUNFLEET_CACHE:-$HOME/.cache/runfleet}/tools/<name>-<version>/bin/
# outside the repository, so later runs (and CI on the same machine) reuse
# it; a tool whose directory is complete is skipped. Versions are pinned in
# tests/kube/versions.env.
#
#   tests/kube/build-tools.sh              build every tool that is missing
#   tests/kube/build-tools.sh kube etcd    build only these
#   tests/kube/build-tools.sh --print-dir  print the tool cache directory
#   tests/kube/build-tools.sh --print-go   print the go it builds with (an
#                                          older go on PATH fetches GO_VERSION)
#   KUBE_COMMANDS="kube-apiserver kubectl kube-scheduler kube-controller-manager" \
#     tests/kube/build-tools.sh kube
#
# Builds run at low priority with `go build -p ${RUNFLEET_GO_JOBS:-2}`; each
# tool's build time is appended to <cache>/build-times.log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"

cache_root=${RUNFLEET_CACHE:-$HOME/.cache/runfleet}
tools_dir=$cache_root/tools
jobs=${RUNFLEET_GO_JOBS:-2}
KUBE_COMMANDS=${KUBE_COMMANDS:-kube-apiserver kubectl kube-scheduler}

export CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false"
export GOTOOLCHAIN=local

log() { printf '==> build-tools: %s\n' "$*" >&2; }

# Whether the go on PATH is GO_VERSION (versions.env) or newer.
go_recent() {
  local have want=${GO_VERSION#go}
  have=$(go env GOVERSION 2>/dev/null) || return 1
  have=${have#go}
  [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n 1)" = "$want" ]
}

# Fetches Go GO_VERSION into dir as the module golang.org/toolchain, the one
# the go command's own toolchain switch downloads, using whatever older go
# is on PATH (Debian's golang-go): it takes the module from the configured
# proxy and checks it against the checksum database. Module zips keep no
# file modes, so the executables get theirs back, as the switch does.
fetch_go() {
  local dir=$1 arch mod src tmp
  case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *)
    echo "build-tools: no Go toolchain module for $(uname -m)" >&2
    exit 1
    ;;
  esac
  mod=golang.org/toolchain@v0.0.1-$GO_VERSION.linux-$arch
  log "fetching Go $GO_VERSION ($mod) with $(go env GOVERSION)"
  tmp=$(mktemp -d)
  (cd "$tmp" && GOFLAGS='' go mod download "$mod")
  src="$(go env GOMODCACHE)/$mod"
  rm -rf "$dir.partial" "$tmp"
  cp -R "$src" "$dir.partial"
  chmod -R u+w "$dir.partial"
  chmod +x "$dir.partial"/bin/* "$dir.partial"/pkg/tool/*/*
  mv "$dir.partial" "$dir"
}

# Puts a go of GO_VERSION or newer first on PATH: the one there, else the
# cached toolchain, fetched on first use.
need_go() {
  local dir=$cache_root/$GO_VERSION
  [ -n "${go_ready:-}" ] && return 0
  if ! go_recent; then
    if [ ! -x "$dir/bin/go" ]; then
      command -v go >/dev/null || {
        echo "build-tools: Go $GO_VERSION or newer is required; with an older go on PATH" \
          "(Debian: golang-go) it is fetched by itself" >&2
        exit 1
      }
      fetch_go "$dir"
    fi
    export PATH="$dir/bin:$PATH"
    go_recent || {
      echo "build-tools: $dir/bin/go is not Go $GO_VERSION" >&2
      exit 1
    }
  fi
  go_ready=1
}

record_time() {
  mkdir -p "$tools_dir"
  printf '%s\t%s\t%s\t%ss\t%s cores\n' "$(date -u +%FT%TZ)" "$1" "$2" "$3" "$(nproc)" \
    >>"$tools_dir/build-times.log"
}

# Time one compile step and record it ("compile"); main records each tool's
# total, module downloads included ("total").
built=()
timed() {
  local name=$1 start end
  shift
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  record_time "$name" compile "$((end - start))"
  built+=("$name")
  log "$name compiled in $((end - start))s"
}

# gobuild DIR OUT [go build args...]: build in module DIR, then move into OUT.
gobuild() {
  local dir=$1 out=$2
  shift 2
  (cd "$dir" && nice -n 10 go build -p "$jobs" -o "$out.tmp" "$@")
  mv "$out.tmp" "$out"
}

# Writes a throw-away module in $1 that requires $2@$3 and copies the
# upstream module's replace directives that point at published modules
# (local-path replaces are the caller's business).
throwaway_module() {
  local dir=$1 mod=$2 ver=$3 gomod
  rm -rf "$dir"
  mkdir -p "$dir"
  gomod=$(cd "$dir" && go mod download -json "$mod@$ver" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  {
    echo "module runfleet.invalid/tools"
    echo
    echo "go $(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod")"
    echo
    echo "require $mod $ver"
    echo
    # single-line and block replace directives whose target has a version
    awk '
      /^replace[[:space:]]*\(/ { inblock = 1; next }
      inblock && /^\)/ { inblock = 0; next }
      inblock { line = $0 }
      /^replace[[:space:]]+[^(]/ { line = $0; sub(/^replace[[:space:]]+/, "", line) }
      line != "" {
        sub(/\/\/.*/, "", line)
        n = split(line, f, /[[:space:]]+/)
        # "old [ver] => new ver": keep only replacements by a published module
        for (i = 1; i <= n; i++) if (f[i] == "=>") arrow = i
        if (arrow && f[arrow + 1] !~ /^\.\.?\// && f[arrow + 2] != "")
          print "replace " line
        line = ""; arrow = 0
      }
    ' "$gomod"
  } >"$dir/go.mod"
  printf '%s\n' "$gomod"
}

# tools.go imports each command so `go mod tidy` records what it needs.
write_tools_go() {
  local dir=$1 pkg
  shift
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    for pkg in "$@"; do echo "	_ \"$pkg\""; done
    echo ")"
  } >"$dir/tools.go"
}

tidy() {
  (cd "$1" && nice -n 10 go mod tidy -e >/dev/null)
}

# ---------------------------------------------------------------- kubernetes
# kube-apiserver, kubectl, ... from k8s.io/kubernetes. Its go.mod replaces
# every k8s.io/<staging> module with ./staging/src/k8s.io/<staging>; the
# throw-away module replaces each with the published k8s.io/<staging>
# v0.<minor>.<patch> instead, generated from that release's go.mod.
build_kube() {
  local ver=$KUBERNETES_VERSION out=$tools_dir/kubernetes-$KUBERNETES_VERSION
  local cmds=() c
  for c in $KUBE_COMMANDS; do
    [ -x "$out/bin/$c" ] || cmds+=("$c")
  done
  [ ${#cmds[@]} -eq 0 ] && return 0
  need_go
  local src=$out/src gomod staging minor patch
  gomod=$(throwaway_module "$src" k8s.io/kubernetes "$ver")
  minor=$(echo "$ver" | cut -d. -f2)
  patch=$(echo "$ver" | cut -d. -f3)
  staging="v0.$minor.$patch"
  sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$gomod" |
    while read -r m; do echo "replace $m => $m $staging"; done >>"$src/go.mod"
  local pkgs=()
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  write_tools_go "$src" "${pkgs[@]}"
  tidy "$src"
  local vpkg=k8s.io/component-base/version commit date ldflags
  commit=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$ver" |
    sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]*\)".*/\1/p' | head -1)
  date=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$ver" |
    sed -n 's/^[[:space:]]*"Time": "\(.*\)",/\1/p' | head -1)
  ldflags="-s -w -X $vpkg.gitVersion=$ver -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
  ldflags+=" -X $vpkg.gitCommit=${commit:-unknown} -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=${date:-1970-01-01T00:00:00Z}"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$ver -X k8s.io/client-go/pkg/version.gitMajor=1"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  mkdir -p "$out/bin"
  for c in "${cmds[@]}"; do
    timed "$c-$ver" gobuild "$src" "$out/bin/$c" -ldflags "$ldflags" "k8s.io/kubernetes/cmd/$c"
  done
}

# --------------------------------------------------------------------- etcd
build_etcd() {
  local ver=$ETCD_VERSION out=$tools_dir/etcd-$ETCD_VERSION
  [ -x "$out/bin/etcd" ] && return 0
  need_go
  local src=$out/src
  throwaway_module "$src" go.etcd.io/etcd/server/v3 "$ver" >/dev/null
  write_tools_go "$src" go.etcd.io/etcd/server/v3
  tidy "$src"
  mkdir -p "$out/bin"
  timed "etcd-$ver" gobuild "$src" "$out/bin/etcd" \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ver" go.etcd.io/etcd/server/v3
}

# A single-command tool: name version module package binary [ldflags]
build_simple() {
  local name=$1 ver=$2 mod=$3 pkg=$4 bin=$5 ldflags=${6:-}
  local out=$tools_dir/$name-$ver
  [ -x "$out/bin/$bin" ] && return 0
  need_go
  local src=$out/src
  throwaway_module "$src" "$mod" "$ver" >/dev/null
  write_tools_go "$src" "$pkg"
  tidy "$src"
  mkdir -p "$out/bin"
  timed "$name-$ver" gobuild "$src" "$out/bin/$bin" -ldflags "-s -w $ldflags" "$pkg"
}

# kwok: fake kubelets for the test cluster's Nodes, driven by the Stages in
# tests/kube/kwok-stages.yaml (what `go install sigs.k8s.io/kwok/cmd/kwok@...`
# builds; its version is a constant in its source, no ldflags needed).
build_kwok() {
  build_simple kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok kwok
}

build_kustomize() {
  build_simple kustomize "$KUSTOMIZE_VERSION" sigs.k8s.io/kustomize/kustomize/v5 \
    sigs.k8s.io/kustomize/kustomize/v5 kustomize \
    "-X sigs.k8s.io/kustomize/api/provenance.version=kustomize/$KUSTOMIZE_VERSION"
}

# Helm's default Kubernetes version (for `helm template`/`lint` capabilities)
# comes from the client-go it links, as upstream's Makefile sets it.
build_helm() {
  local ver=$HELM_VERSION out=$tools_dir/helm-$HELM_VERSION
  [ -x "$out/bin/helm" ] && return 0
  need_go
  local src=$out/src kv major minor ldflags
  throwaway_module "$src" helm.sh/helm/v3 "$ver" >/dev/null
  write_tools_go "$src" helm.sh/helm/v3/cmd/helm
  tidy "$src"
  kv=$(cd "$src" && go list -m -f '{{.Version}}' k8s.io/client-go)
  major=$(($(echo "${kv#v}" | cut -d. -f1) + 1))
  minor=$(echo "$kv" | cut -d. -f2)
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$ver -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $p.k8sVersionMajor=$major -X $p.k8sVersionMinor=$minor"
  done
  mkdir -p "$out/bin"
  timed "helm-$ver" gobuild "$src" "$out/bin/helm" -ldflags "$ldflags" helm.sh/helm/v3/cmd/helm
}

build_tofu() {
  build_simple opentofu "$OPENTOFU_VERSION" github.com/opentofu/opentofu \
    github.com/opentofu/opentofu/cmd/tofu tofu \
    "-X github.com/opentofu/opentofu/version.dev=no"
}

build_actionlint() {
  build_simple actionlint "$ACTIONLINT_VERSION" github.com/rhysd/actionlint \
    github.com/rhysd/actionlint/cmd/actionlint actionlint \
    "-X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION"
}

build_packer() {
  build_simple packer "$PACKER_VERSION" github.com/hashicorp/packer \
    github.com/hashicorp/packer packer \
    "-X github.com/hashicorp/packer/version.Version=${PACKER_VERSION#v} -X github.com/hashicorp/packer/version.VersionPrerelease="
}

# The Amazon plugin, named the way Packer finds an installed plugin
# (packer-plugin-amazon_v<ver>_x5.0_linux_amd64 under github.com/hashicorp/amazon),
# so `packer validate` checks every amazon-ebs field offline.
build_packer_plugin_amazon() {
  local ver=$PACKER_PLUGIN_AMAZON_VERSION
  local name=packer-plugin-amazon
  local out=$tools_dir/$name-$ver
  local goos goarch
  goos=$(go env GOOS 2>/dev/null || echo linux)
  goarch=$(go env GOARCH 2>/dev/null || echo amd64)
  local bin=plugins/github.com/hashicorp/amazon/${name}_${ver}_x5.0_${goos}_${goarch}
  if [ -x "$out/$bin" ]; then return 0; fi
  need_go
  local src=$out/src
  throwaway_module "$src" github.com/hashicorp/packer-plugin-amazon "$ver" >/dev/null
  write_tools_go "$src" github.com/hashicorp/packer-plugin-amazon
  tidy "$src"
  mkdir -p "$(dirname "$out/$bin")"
  timed "$name-$ver" gobuild "$src" "$out/$bin" \
    -ldflags "-s -w -X github.com/hashicorp/packer-plugin-amazon/version.Version=${ver#v} -X github.com/hashicorp/packer-plugin-amazon/version.VersionPrerelease=" \
    github.com/hashicorp/packer-plugin-amazon
  # Packer checks an installed plugin against its SHA256SUM file.
  (cd "$(dirname "$out/$bin")" && sha256sum "$(basename "$bin")" | cut -d' ' -f1 >"$(basename "$bin")_SHA256SUM")
}

# dockerfile-check: tests/deploy/dockerfile-check/main.go on BuildKit's parser
# and linter (the checks `docker build --check` runs), keyed by its source.
build_dockerfile_check() {
  local main=$here/../deploy/dockerfile-check/main.go sum out
  sum=$(sha256sum "$main" | cut -c1-12)
  out=$tools_dir/dockerfile-check-$BUILDKIT_VERSION-$sum
  [ -x "$out/bin/dockerfile-check" ] && return 0
  need_go
  local src=$out/src
  throwaway_module "$src" github.com/moby/buildkit "$BUILDKIT_VERSION" >/dev/null
  cp "$main" "$src/main.go"
  sed -i 's#^module .*#module runfleet.invalid/dockerfile-check#' "$src/go.mod"
  tidy "$src"
  mkdir -p "$out/bin"
  timed "dockerfile-check-$BUILDKIT_VERSION" gobuild "$src" "$out/bin/dockerfile-check" -ldflags "-s -w" .
}

all_tools=(etcd kube kwok kustomize helm tofu actionlint dockerfile_check packer packer_plugin_amazon)

main() {
  if [ "${1:-}" = "--print-dir" ]; then
    echo "$tools_dir"
    return 0
  fi
  if [ "${1:-}" = "--print-go" ]; then
    need_go
    command -v go
    return 0
  fi
  local tools=("$@") t
  [ ${#tools[@]} -eq 0 ] && tools=("${all_tools[@]}")
  mkdir -p "$tools_dir"
  local start
  for t in "${tools[@]}"; do
    t=${t//-/_}
    declare -F "build_$t" >/dev/null || {
      echo "build-tools: unknown tool '$t' (one of: ${all_tools[*]})" >&2
      exit 2
    }
    # One builder per tool at a time: a concurrent run waits, then finds it built.
    exec 9>"$tools_dir/.lock-$t"
    flock 9
    built=()
    start=$(date +%s)
    "build_$t"
    if [ ${#built[@]} -gt 0 ]; then
      record_time "$t" total "$(($(date +%s) - start))"
    fi
    exec 9>&-
  done
}

main "$@"
