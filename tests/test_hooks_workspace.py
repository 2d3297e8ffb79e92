"""Workspace hygiene in runfleet-hook pre-job/post-job: what an earlier job
left on a reused work volume goes (read-only files included), symbolic
links are not followed, the runner's own files stay, and too little disk
space fails the job with an ::error:: line."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hooks" / "tests"))
from hook_harness import Runner, bin_dir  # noqa: E402


@pytest.fixture(autouse=True)
def _need_binaries():
    """A missing binary is a broken build, not a reason to skip."""
    assert (bin_dir() / "runfleet-hook").exists(), f"no runfleet-hook in {bin_dir()}"


def leave_mess(r: Runner, outside: Path) -> None:
    ws = r.workspace
    (ws / "build" / "deep").mkdir(parents=True)
    (ws / "build" / "deep" / "artifact.o").write_bytes(b"x" * 4096)
    (ws / "build" / "deep" / "artifact.o").chmod(0o444)
    (ws / "build" / "deep").chmod(0o555)
    (ws / "build").chmod(0o500)
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("[core]\n")
    (ws / "to-outside").symlink_to(outside)
    (ws / "file-outside").symlink_to(outside / "precious.txt")
    (r.temp / "stale-from-last-job").mkdir()
    (r.temp / "stale-from-last-job" / "f").write_text("old")


def test_pre_job_removes_the_last_jobs_workspace(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    outside.chmod(0o555)
    r = Runner(tmp_path / "r")
    leave_mess(r, outside)
    p = r.run("pre-job")
    assert p.returncode == 0, p.stdout + p.stderr
    assert list(r.workspace.iterdir()) == []
    assert r.workspace.is_dir()
    assert not (r.temp / "stale-from-last-job").exists()
    # The runner's own files for this hook stay.
    assert r.github_env.exists()
    # Nothing outside was touched, not even its mode.
    assert (outside / "precious.txt").read_text() == "keep"
    assert stat.S_IMODE(outside.stat().st_mode) == 0o555
    outside.chmod(0o755)


def test_post_job_removes_the_workspace(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    r = Runner(tmp_path / "r")
    assert r.run("pre-job").returncode == 0
    leave_mess(r, outside)
    p = r.run("post-job")
    assert p.returncode == 0, p.stdout + p.stderr
    assert list(r.workspace.iterdir()) == []
    assert (outside / "precious.txt").read_text() == "keep"


def test_too_little_disk_fails_the_job(tmp_path):
    r = Runner(tmp_path / "r")
    p = r.run("pre-job", {"RUNFLEET_MIN_FREE_DISK": "1000Pi"})
    assert p.returncode != 0
    assert "::error title=Not enough disk space::" in p.stdout
    assert "RUNFLEET_MIN_FREE_DISK" in p.stdout
    assert "node-a" in p.stdout


def test_enough_disk_passes(tmp_path):
    r = Runner(tmp_path / "r")
    p = r.run("pre-job", {"RUNFLEET_MIN_FREE_DISK": "1Mi", "RUNFLEET_WORK_DIR": str(r.work)})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "::error" not in p.stdout


def test_bad_size_is_a_warning_not_a_failure(tmp_path):
    r = Runner(tmp_path / "r")
    p = r.run("pre-job", {"RUNFLEET_MIN_FREE_DISK": "lots"})
    assert p.returncode == 0
    assert "::warning::RUNFLEET_MIN_FREE_DISK=lots is not a size" in p.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_read_only_tree_as_unprivileged_user():
    """Root ignores file modes; the runner usually is not root."""
    base = Path(tempfile.mkdtemp(prefix="hook-ws-", dir="/tmp"))
    try:
        base.chmod(0o755)
        # The build tree may sit where other users cannot reach (a 0700
        # home): the hook and its shim run from a copy the runner can read.
        hook_dir = base / "bin"
        hook_dir.mkdir(mode=0o755)
        for name in ("runfleet-hook", "pre-job.sh"):
            shutil.copy2(bin_dir() / name, hook_dir / name)
            (hook_dir / name).chmod(0o755)
        shim = hook_dir / "pre-job.sh"
        r = Runner(base / "r")
        outside = base / "outside"
        outside.mkdir()
        (outside / "precious.txt").write_text("keep")
        leave_mess(r, outside)
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), 65534, 65534)
        os.chown(base, 65534, 65534)
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "bash", "-e", str(shim)], env=r.env, cwd=str(r.workspace),
                           capture_output=True, text=True, timeout=120, start_new_session=True)
        assert p.returncode == 0, p.stdout + p.stderr
        assert list(r.workspace.iterdir()) == []
        assert (outside / "precious.txt").read_text() == "keep"
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)
