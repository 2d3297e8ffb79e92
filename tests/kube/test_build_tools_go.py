"""Which go tests/kube/build-tools.sh builds with: the one on PATH when it is
GO_VERSION or newer, else the toolchain cached under RUNFLEET_CACHE (fetched
there by the older go on first use), and a clear failure without any go.
Stand-in `go` scripts answer `go env GOVERSION`; nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kubeharness

GO_VERSION = kubeharness.versions()["GO_VERSION"]


def fake_go(bin_dir: Path, version: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    go = bin_dir / "go"
    go.write_text(
        "#!/bin/sh\n"
        f'if [ "$1 $2" = "env GOVERSION" ]; then echo {version}; exit 0; fi\n'
        'echo "fake go: unexpected: $*" >&2; exit 3\n'
    )
    go.chmod(0o755)
    return go


def print_go(tmp_path: Path, path_dirs: list[Path]) -> subprocess.CompletedProcess:
    # bash, sort, head and friends stay reachable; no real go does.
    tools = tmp_path / "sys"
    tools.mkdir(exist_ok=True)
    for name in ("bash", "sort", "head", "printf", "dirname", "mkdir", "cat", "date", "nproc", "flock"):
        for d in ("/usr/bin", "/bin"):
            if os.path.exists(f"{d}/{name}") and not (tools / name).exists():
                (tools / name).symlink_to(f"{d}/{name}")
    env = {
        "PATH": os.pathsep.join(str(p) for p in [*path_dirs, tools]),
        "HOME": str(tmp_path),
        "RUNFLEET_CACHE": str(tmp_path / "cache"),
    }
    return subprocess.run(
        ["bash", str(kubeharness.BUILD_TOOLS), "--print-go"],
        env=env, capture_output=True, text=True, timeout=30,
    )


def newer(version: str) -> str:
    major, minor, _patch = version.removeprefix("go").split(".")
    return f"go{major}.{int(minor) + 1}.0"


def test_pinned_go_is_new_enough_for_the_tools():
    # BuildKit's go.mod asks for 1.26.8; an older pin would fail its build.
    major, minor, patch = (int(x) for x in GO_VERSION.removeprefix("go").split("."))
    assert (major, minor, patch) >= (1, 26, 8)


def test_a_recent_go_on_path_is_used_as_it_is(tmp_path):
    go = fake_go(tmp_path / "new", newer(GO_VERSION))
    p = print_go(tmp_path, [go.parent])
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(go)
    exact = fake_go(tmp_path / "exact", GO_VERSION)
    p = print_go(tmp_path, [exact.parent])
    assert p.stdout.strip() == str(exact)


def test_an_older_go_gives_way_to_the_cached_toolchain(tmp_path):
    old = fake_go(tmp_path / "old", "go1.19.8")
    cached = fake_go(tmp_path / "cache" / GO_VERSION / "bin", GO_VERSION)
    p = print_go(tmp_path, [old.parent])
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(cached)
    # 1.26.10 is newer than 1.26.8 (versions compare by number, not text).
    assert print_go(tmp_path, [fake_go(tmp_path / "ten", "go1.26.10").parent]).stdout.strip() \
        == str(tmp_path / "ten" / "go")


def test_a_cached_toolchain_of_the_wrong_version_is_refused(tmp_path):
    old = fake_go(tmp_path / "old", "go1.19.8")
    fake_go(tmp_path / "cache" / GO_VERSION / "bin", "go1.20.0")
    p = print_go(tmp_path, [old.parent])
    assert p.returncode != 0
    assert f"is not Go {GO_VERSION}" in p.stderr


def test_no_go_at_all_says_what_to_install(tmp_path):
    p = print_go(tmp_path, [])
    assert p.returncode == 1
    assert f"Go {GO_VERSION} or newer is required" in p.stderr
    assert "golang-go" in p.stderr
