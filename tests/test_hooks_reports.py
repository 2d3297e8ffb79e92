"""runfleet-hook's reports to runfleetd (a stand-in server on 127.0.0.1),
GPU health verdicts through the fake NVML, the GPU sampler across a job,
and post-job's cleanup of processes the job left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hooks" / "tests"))
from hook_harness import FakeRunfleetd, Runner, bin_dir, fake_nvml  # noqa: E402

TOKEN = "rf-runner-token-123"


@pytest.fixture(autouse=True)
def _need_binaries():
    """A missing binary is a broken build, not a reason to skip."""
    assert (bin_dir() / "runfleet-hook").exists(), f"no runfleet-hook in {bin_dir()}"
    assert fake_nvml().exists(), f"no fake NVML library at {fake_nvml()}"


@pytest.fixture
def runfleetd():
    server = FakeRunfleetd(TOKEN)
    yield server
    server.close()


def gpu_runner(tmp_path: Path, server: FakeRunfleetd) -> Runner:
    r = Runner(tmp_path / "r")
    r.env.update({
        "RUNFLEET_URL": server.url,
        "RUNFLEET_RUNNER_TOKEN": TOKEN,
        "RUNFLEET_RUNNER_NAME": "gpu-2-abc",
        "RUNFLEET_POOL": "gpu-2",
        "RUNFLEET_GPUS": "0,1",
        "RUNFLEET_EXPECTED_GPUS": "2",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "RUNFLEET_NVML_LIB": str(fake_nvml()),
        "RUNFLEET_SAMPLE_INTERVAL_MS": "50",
        "FAKE_NVML_COUNT": "2",
        "FAKE_NVML_UTIL": "0:100,1:50",
        "FAKE_NVML_MEM": "0:1000/5000/3000,1:2000",
    })
    return r


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_dead(pid: int, timeout: float = 5) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_gpu_job_reports_and_cleanup(tmp_path, runfleetd):
    r = gpu_runner(tmp_path, runfleetd)
    p = r.run("pre-job")
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(runfleetd.reports) == 1
    path, headers, body = runfleetd.reports[0]
    assert path == "/api/v1/hooks/started"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    assert body == {
        "runner": "gpu-2-abc", "pool": "gpu-2", "node": "node-a", "repository": "octo/big",
        "run_id": 4242, "job": "build",
        "gpu_health": {"checked": True, "ok": True, "reason": None, "message": "", "failed_gpus": []},
        "git_cache": {"result": "disabled", "bytes_fetched": 0, "bytes_saved": 0,
                      "seconds": body["git_cache"]["seconds"]},
        "disk_free_bytes": body["disk_free_bytes"], "ok": True,
    }
    assert body["disk_free_bytes"] > 0
    state = r.temp / "runfleet" / "sampler.json"
    import json
    sampler_pid = json.loads(state.read_text())["pid"]
    assert sampler_pid > 0 and alive(sampler_pid)

    # The "job": a daemon in the hook's session, and one in a session of
    # its own that still carries the runner's tracking id.
    pidfile = tmp_path / "session-child.pid"
    env = dict(r.env)
    other = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    # The sampler writes its state file after each sample: wait for three.
    end = time.time() + 10
    while json.loads(state.read_text())["samples"] < 3:
        assert time.time() < end, "the sampler took fewer than 3 samples in 10 s"
        time.sleep(0.05)
    while time.time() - json.loads(state.read_text())["started_at"] <= 0.5:
        time.sleep(0.05)
    p = r.run("post-job", shell_prefix=f"sleep 300 & echo $! > {pidfile}")
    assert p.returncode == 0, p.stdout + p.stderr
    session_child = int(pidfile.read_text())
    try:
        assert wait_dead(session_child), "leftover in the session survived"
        assert other.wait(timeout=5) == -signal.SIGTERM
        assert wait_dead(sampler_pid), "sampler survived post-job"
    finally:
        for pid in (session_child, other.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not state.exists()
    assert list(r.workspace.iterdir()) == []

    assert len(runfleetd.reports) == 2
    path, headers, body = runfleetd.reports[1]
    assert path == "/api/v1/hooks/completed"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert set(body) == {"runner", "pool", "node", "repository", "run_id", "job", "duration_seconds",
                         "gpu", "disk_used_bytes", "processes_killed", "status"}
    assert body["runner"] == "gpu-2-abc" and body["pool"] == "gpu-2" and body["run_id"] == 4242
    assert 0.5 < body["duration_seconds"] < 60
    assert body["gpu"]["samples"] >= 3
    assert body["gpu"]["peak_memory_bytes"] == 5000
    assert abs(body["gpu"]["mean_utilization"] - 0.75) < 1e-6
    assert body["processes_killed"] == 2
    assert body["status"] == "unknown"
    print(f"\ncompleted report: {body}")


def test_gpu_health_failure_fails_fast_and_reports(tmp_path, runfleetd):
    r = gpu_runner(tmp_path, runfleetd)
    p = r.run("pre-job", {"FAKE_NVML_ECC": "1:3"})
    assert p.returncode != 0
    assert ("::error title=GPU health check failed::GPU 1 (GPU-fake-0001-0000-0000-000000000000) "
            "has 3 uncorrectable ECC errors") in p.stdout
    (_path, _h, body) = runfleetd.reports[0]
    assert body["ok"] is False
    assert body["node"] == "node-a"
    assert body["gpu_health"] == {
        "checked": True, "ok": False, "reason": "ecc",
        "message": "GPU 1 (GPU-fake-0001-0000-0000-000000000000) has 3 uncorrectable ECC errors",
        "failed_gpus": [{"index": 1, "uuid": "GPU-fake-0001-0000-0000-000000000000", "reason": "ecc"}],
    }
    assert body["git_cache"]["result"] == "skipped"
    assert not (r.temp / "runfleet" / "sampler.json").exists() or \
        '"pid":0' in (r.temp / "runfleet" / "sampler.json").read_text()


@pytest.mark.parametrize("extra,reason", [
    ({"FAKE_NVML_COUNT": "1"}, "missing_gpu"),
    ({"FAKE_NVML_PROCS": "0:1"}, "foreign_process"),
    ({"FAKE_NVML_TEMP": "0:97"}, "temperature"),
    ({"FAKE_NVML_THROTTLE": "1:0x40"}, "clocks"),
    ({"RUNFLEET_NVML_LIB": "/nonexistent/libnvidia-ml.so.1"}, "nvml_unavailable"),
])
def test_gpu_health_reasons(tmp_path, runfleetd, extra, reason):
    r = gpu_runner(tmp_path, runfleetd)
    p = r.run("pre-job", extra)
    assert p.returncode != 0
    assert "::error title=GPU health check failed::" in p.stdout
    assert runfleetd.reports[0][2]["gpu_health"]["reason"] == reason


def test_gpu_process_of_another_session_is_foreign(tmp_path, runfleetd):
    """A process outside the runner's session holding a GPU fails the check,
    whatever session the test itself runs in (pid 1's included)."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        r = gpu_runner(tmp_path, runfleetd)
        p = r.run("pre-job", {"FAKE_NVML_PROCS": f"1:{other.pid}"})
    finally:
        other.kill()
        other.wait()
    assert p.returncode != 0
    assert f"is in use by process {other.pid}, which is not this runner's" in p.stdout
    failed = runfleetd.reports[0][2]["gpu_health"]["failed_gpus"]
    assert failed == [{"index": 1, "uuid": "GPU-fake-0001-0000-0000-000000000000",
                       "reason": "foreign_process"}]


def test_gpu_process_of_the_runner_itself_is_fine(tmp_path, runfleetd):
    """A GPU process that descends from the runner's session leader (left by
    a step of this runner) is not foreign."""
    r = gpu_runner(tmp_path, runfleetd)
    pidfile = tmp_path / "step.pid"
    p = r.run("pre-job", shell_prefix=(
        # Its output goes nowhere: an inherited capture pipe would keep
        # run() waiting until the sleep ends.
        f"sleep 30 </dev/null >/dev/null 2>&1 & echo $! > {pidfile}; export FAKE_NVML_PROCS=0:$!"))
    step = int(pidfile.read_text())
    try:
        assert p.returncode == 0, p.stdout + p.stderr
        assert runfleetd.reports[0][2]["gpu_health"]["ok"] is True
        assert r.run("post-job").returncode == 0
    finally:
        try:
            os.kill(step, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_cpu_runner_without_nvml_is_fine(tmp_path, runfleetd):
    r = Runner(tmp_path / "r")
    r.env.update({"RUNFLEET_URL": runfleetd.url, "RUNFLEET_RUNNER_TOKEN": TOKEN, "RUNFLEET_GPUS": ""})
    p = r.run("pre-job")
    assert p.returncode == 0, p.stdout + p.stderr
    body = runfleetd.reports[0][2]
    assert body["ok"] is True
    assert body["gpu_health"]["checked"] is False
    p = r.run("post-job", {"RUNFLEET_JOB_STATUS": "success"})
    assert p.returncode == 0
    body = runfleetd.reports[1][2]
    assert body["status"] == "success"
    assert body["gpu"] == {"samples": 0, "peak_memory_bytes": 0, "mean_utilization": 0.0}


def test_rejected_token_is_a_warning_not_a_failure(tmp_path, runfleetd):
    r = Runner(tmp_path / "r")
    r.env.update({"RUNFLEET_URL": runfleetd.url, "RUNFLEET_RUNNER_TOKEN": "wrong-token-xyz"})
    p = r.run("pre-job")
    assert p.returncode == 0
    assert "::warning::runfleetd answered 401 to /api/v1/hooks/started" in p.stdout
    assert "wrong-token-xyz" not in p.stdout + p.stderr
    assert len(runfleetd.reports) == 1  # a 401 is not retried
    p = r.run("post-job")
    assert p.returncode == 0


def test_runfleetd_down_is_bounded(tmp_path):
    r = Runner(tmp_path / "r")
    r.env.update({"RUNFLEET_URL": "http://127.0.0.1:1", "RUNFLEET_RUNNER_TOKEN": TOKEN})
    t = time.time()
    p = r.run("pre-job")
    assert p.returncode == 0
    assert "::warning::cannot report /api/v1/hooks/started" in p.stdout
    assert time.time() - t < 20
