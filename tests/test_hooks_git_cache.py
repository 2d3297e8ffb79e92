"""runfleet-hook's git cache against a real git smart-HTTP server on
127.0.0.1: a cold checkout vs one with the node's warm mirror as
alternates, concurrent pre-jobs on one cache, and damaged caches."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hooks" / "tests"))
from hook_harness import GitServer, Runner, bin_dir, git  # noqa: E402

REPO = "octo/big"
COMMITS = 4
BLOB_BYTES = 1536 * 1024  # incompressible: about 6 MiB in all


@pytest.fixture(autouse=True)
def _need_binaries():
    """A missing binary is a broken build, not a reason to skip."""
    assert (bin_dir() / "runfleet-hook").exists(), f"no runfleet-hook in {bin_dir()}"


def make_upstream(root: Path) -> tuple[Path, str]:
    bare = root / "srv" / REPO
    bare.parent.mkdir(parents=True)
    git("init", "-q", "--bare", str(bare))
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=bare)
    src = root / "src"
    git("init", "-q", "-b", "main", str(src))
    for i in range(COMMITS):
        (src / f"data{i}.bin").write_bytes(os.urandom(BLOB_BYTES))
        (src / "README").write_text(f"revision {i}\n")
        git("add", "-A", cwd=src)
        git("commit", "-q", "-m", f"commit {i}", cwd=src)
    git("push", "-q", str(bare), "main", cwd=src)
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=bare)
    return src, git("rev-parse", "HEAD", cwd=src).strip()


def add_commit(src: Path, root: Path, n: int) -> str:
    (src / f"more{n}.bin").write_bytes(os.urandom(256 * 1024))
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", f"more {n}", cwd=src)
    git("push", "-q", str(root / "srv" / REPO), "main", cwd=src)
    return git("rev-parse", "HEAD", cwd=src).strip()


def checkout(dest: Path, url: str, sha: str, alternates: list[str], depth: bool = True) -> None:
    """What actions/checkout does: init, add origin, fetch the one commit,
    check it out."""
    env = {"GIT_TERMINAL_PROMPT": "0"}
    if alternates:
        env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = alternates[-1]
    git("init", "-q", str(dest), env=env)
    git("remote", "add", "origin", f"{url}/{REPO}", cwd=dest, env=env)
    args = ["-c", "protocol.version=2", "fetch", "--no-tags", "--prune", "--no-recurse-submodules"]
    if depth:
        args.append("--depth=1")
    git(*args, "origin", f"+{sha}:refs/remotes/origin/main", cwd=dest, env=env)
    git("checkout", "-q", "--force", "-B", "main", "refs/remotes/origin/main", cwd=dest, env=env)
    assert (dest / "data0.bin").stat().st_size == BLOB_BYTES


@pytest.fixture
def upstream(tmp_path):
    src, sha = make_upstream(tmp_path)
    server = GitServer(tmp_path / "srv")
    yield server, src, sha
    server.close()


def runner_for(tmp_path: Path, name: str, server: GitServer, cache: Path) -> Runner:
    r = Runner(tmp_path / name, REPO)
    r.env.update({"RUNFLEET_GIT_CACHE": "1", "GITHUB_SERVER_URL": server.url,
                  "RUNFLEET_CACHE_DIR": str(cache)})
    return r


def mirror_of(cache: Path) -> Path:
    mirrors = [p for p in cache.iterdir() if p.name.endswith(".git")]
    assert len(mirrors) == 1, list(cache.iterdir())
    return mirrors[0]


@pytest.mark.parametrize("depth", [True, False], ids=["shallow", "full"])
def test_warm_mirror_cuts_checkout_transfer(tmp_path, upstream, depth):
    server, src, sha = upstream
    cache = tmp_path / "cache"

    server.take_bytes()
    checkout(tmp_path / "cold", server.url, sha, [], depth)
    cold = server.take_bytes()

    r1 = runner_for(tmp_path, "r1", server, cache)
    p = r1.run("pre-job")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "git cache miss" in p.stderr
    mirror_fill = server.take_bytes()
    assert len(r1.alternates()) == 1
    objects = r1.alternates()[0]
    assert objects.startswith(str(cache)) and objects.endswith("/objects")

    sha2 = add_commit(src, tmp_path, 1)
    r2 = runner_for(tmp_path, "r2", server, cache)
    p = r2.run("pre-job")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "git cache hit" in p.stderr
    incremental = server.take_bytes()
    checkout(tmp_path / "warm", server.url, sha2, r2.alternates(), depth)
    warm = server.take_bytes()

    print(f"\ngit cache ({'depth=1' if depth else 'full'} fetch): cold checkout {cold} bytes, "
          f"warm checkout {warm} bytes ({100.0 * warm / cold:.1f}%); mirror fill {mirror_fill} bytes, "
          f"incremental mirror fetch {incremental} bytes")
    assert cold > COMMITS * BLOB_BYTES * (0.9 if not depth else 0.9)
    assert warm < 0.2 * cold
    assert incremental < 0.2 * mirror_fill
    git("fsck", "--no-progress", cwd=mirror_of(cache))


def test_concurrent_pre_jobs_share_one_mirror(tmp_path, upstream):
    server, _src, sha = upstream
    cache = tmp_path / "cache"
    runners = [runner_for(tmp_path, f"c{i}", server, cache) for i in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda r: r.run("pre-job"), runners))
    for r, p in zip(runners, results):
        assert p.returncode == 0, p.stdout + p.stderr
        assert len(r.alternates()) == 1, p.stderr
    outcomes = sorted("miss" if "git cache miss" in p.stderr else "hit" for p in results)
    assert outcomes == ["hit", "hit", "hit", "miss"], [p.stderr for p in results]
    mirror = mirror_of(cache)
    git("fsck", "--no-progress", "--strict", cwd=mirror)
    assert git("rev-parse", "refs/heads/main", cwd=mirror).strip() == sha
    leftovers = [p.name for p in cache.iterdir() if ".tmp." in p.name or ".broken." in p.name]
    assert leftovers == []
    checkout(tmp_path / "job", server.url, sha, runners[0].alternates())


def damage_pack(mirror: Path) -> None:
    packs = sorted((mirror / "objects" / "pack").glob("*.pack"))
    assert packs
    with open(packs[0], "r+b") as f:
        f.truncate(packs[0].stat().st_size // 2)


def damage_head(mirror: Path) -> None:
    (mirror / "HEAD").write_bytes(b"\x00\xffgarbage not a ref\n")


@pytest.mark.parametrize("damage", [damage_pack, damage_head], ids=["truncated-pack", "garbage-head"])
def test_damaged_mirror_falls_back_then_rebuilds(tmp_path, upstream, damage):
    server, _src, sha = upstream
    cache = tmp_path / "cache"
    p = runner_for(tmp_path, "first", server, cache).run("pre-job")
    assert p.returncode == 0, p.stderr
    damage(mirror_of(cache))

    r = runner_for(tmp_path, "broken", server, cache)
    p = r.run("pre-job")
    assert p.returncode == 0, p.stdout + p.stderr
    assert r.alternates() == []
    assert "git cache not used" in p.stderr
    assert "::error" not in p.stdout
    assert [x for x in cache.iterdir() if x.name.endswith(".git")] == []

    r = runner_for(tmp_path, "rebuilt", server, cache)
    p = r.run("pre-job")
    assert p.returncode == 0, p.stderr
    assert "git cache miss" in p.stderr
    assert len(r.alternates()) == 1
    git("fsck", "--no-progress", cwd=mirror_of(cache))
    checkout(tmp_path / "job", server.url, sha, r.alternates())


def test_token_is_sent_and_never_printed(tmp_path):
    _src, sha = make_upstream(tmp_path)
    token = "ghs_SECRETtoken1234567890"
    server = GitServer(tmp_path / "srv", token=token)
    try:
        cache = tmp_path / "cache"
        r = runner_for(tmp_path, "noauth", server, cache)
        p = r.run("pre-job")
        assert p.returncode == 0, p.stderr  # no token: the cache fails, the job does not
        assert r.alternates() == []

        r = runner_for(tmp_path, "auth", server, cache)
        p = r.run("pre-job", {"RUNFLEET_GIT_TOKEN": token})
        assert p.returncode == 0, p.stderr
        assert len(r.alternates()) == 1, p.stderr
        assert token not in p.stdout + p.stderr
        assert any(a.startswith("Basic ") for _m, _p, a in server.requests)
        mirror = mirror_of(cache)
        for f in mirror.rglob("*"):
            if f.is_file() and f.stat().st_size < 1 << 20:
                assert token.encode() not in f.read_bytes(), f
        assert git("rev-parse", "refs/heads/main", cwd=mirror).strip() == sha
    finally:
        server.close()


def test_unreachable_server_does_not_fail_the_job(tmp_path):
    r = Runner(tmp_path / "r", REPO)
    r.env.update({"RUNFLEET_GIT_CACHE": "1", "GITHUB_SERVER_URL": "http://127.0.0.1:1",
                  "RUNFLEET_CACHE_DIR": str(tmp_path / "cache"), "RUNFLEET_PRE_JOB_TIMEOUT": "20"})
    p = r.run("pre-job")
    assert p.returncode == 0, p.stderr
    assert r.alternates() == []
