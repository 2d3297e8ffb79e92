"""runfleet-hook on both sides of real jobs: runfleetd (local backend)
starts the fake runner with the hook shims configured; the hooks check the
runner's GPUs through the stand-in NVML library and report to runfleetd,
whose metrics move. A failing GPU health check fails the job without
running it and takes that GPU out of capacity."""

from __future__ import annotations

import pytest

from tests.runfleetd import ROOT, Daemon, bin_dir
from tests.test_runfleetd import app_key_files, sim  # noqa: F401  (fixtures)

NVML = bin_dir().parent / "lib" / "libnvml_fake.so"

POOLS = [
    dict(name="cpu", labels=["linux", "cpu"], max_runners=2),
    dict(name="gpu-1", labels=["linux", "gpu", "gpu-1"], max_runners=4, gpus=1),
    dict(name="gpu-2", labels=["linux", "gpu", "gpu-2"], max_runners=2, gpus=2),
]


def hooked_daemon(tmp_path, sim, **nvml) -> Daemon:
    env = {
        "RUNFLEET_NVML_LIB": str(NVML),
        "FAKE_NVML_COUNT": "4",
        "FAKE_NVML_UTIL": "0:50/70,1:60,2:80,3:90",
        "FAKE_NVML_MEM": "0:1073741824/2147483648,1:1073741824,2:1073741824,3:1073741824",
        "RUNFLEET_SAMPLE_INTERVAL_MS": "50",
        "RUNFLEET_GIT_CACHE": "0",
    }
    env.update(nvml)
    hooks = (str(bin_dir() / "pre-job.sh"), str(bin_dir() / "post-job.sh"))
    return Daemon(tmp_path, sim, pools=POOLS, hooks=hooks, env=env)


@pytest.fixture(autouse=True)
def _need_stand_in():
    assert NVML.exists(), f"{NVML} is built with the tests (RUNFLEET_TESTS=ON)"


def test_hooks_report_and_metrics_move(tmp_path, sim):
    d = hooked_daemon(tmp_path, sim).start()
    try:
        ids = [sim.add_job(labels=["self-hosted", "gpu-1"], duration=0.5) for _ in range(2)]
        ids.append(sim.add_job(labels=["self-hosted", "gpu-2"], duration=0.5))
        ids.append(sim.add_job(labels=["self-hosted", "cpu"], duration=0.3))
        sim.wait_for(lambda: all(sim.job(i)["status"] == "completed" for i in ids), timeout=90)
        for i in ids:
            job = sim.job(i)
            assert job["conclusion"] == "success", job
            assert job["report"]["hooks"]["started"]["exit_code"] == 0, job["report"]
            assert job["report"]["hooks"]["completed"]["exit_code"] == 0, job["report"]
        d.wait_for(lambda: d.metric("runfleet_hook_reports_total", hook="completed", result="ok") == 4,
                   what="four completed reports")
        assert d.metric("runfleet_hook_reports_total", hook="started", result="ok") == 4
        assert d.metric("runfleet_hook_reports_total", result="unauthorized") == 0
        assert d.metric("runfleet_job_duration_seconds_count", pool="gpu-1") == 2
        assert d.metric("runfleet_job_duration_seconds_count", pool="cpu") == 1
        assert d.metric("runfleet_gpu_utilization_ratio_count", pool="gpu-1") == 2
        assert d.metric("runfleet_gpu_utilization_ratio_count", pool="gpu-2") == 1
        assert d.metric("runfleet_gpu_memory_peak_bytes_count", pool="gpu-2") == 1
        # A CPU runner reports no GPU samples.
        assert d.metric("runfleet_gpu_utilization_ratio_count", pool="cpu") == 0
        assert d.metric("runfleet_gpu_health_failures_total") == 0
        assert d.pools_state()["gpu-1"]["capacity"]["gpus_unhealthy"] == 0
    finally:
        assert d.stop() == 0
    assert d.sanitizer_report() is None


def test_failed_gpu_health_check_fails_job_and_gpu_leaves_capacity(tmp_path, sim):
    # GPU 2 has uncorrectable ECC errors. Three one-GPU jobs take GPUs 0, 1
    # and 2; the runner on GPU 2 fails its job before running it.
    d = hooked_daemon(tmp_path, sim, FAKE_NVML_ECC="2:3").start()
    try:
        ids = [sim.add_job(labels=["self-hosted", "gpu-1"], duration=2.0) for _ in range(3)]
        sim.wait_for(lambda: all(sim.job(i)["status"] == "completed" for i in ids), timeout=90)
        jobs = [sim.job(i) for i in ids]
        failed = [j for j in jobs if j["conclusion"] == "failure"]
        assert len(failed) == 1, jobs
        rep = failed[0]["report"]
        assert rep["env"]["CUDA_VISIBLE_DEVICES"] == "2"
        # The job's steps never ran: the failing started hook stopped it.
        assert rep["steps_ran"] is False
        assert rep["hooks"]["started"]["exit_code"] != 0, rep["hooks"]
        for j in jobs:
            if j is not failed[0]:
                assert j["report"]["steps_ran"] is True
                assert j["report"]["hooks"]["started"]["exit_code"] == 0
        d.wait_for(lambda: d.metric("runfleet_gpu_health_failures_total", pool="gpu-1") == 1,
                   what="health failure counted")
        assert d.metric("runfleet_hook_failures_total", hook="pre-job", reason="ecc") == 1
        d.wait_for(lambda: d.pools_state()["gpu-1"]["capacity"]["gpus_unhealthy"] == 1,
                   what="GPU 2 out of capacity")
        assert "GPU taken out of capacity" in d.log() and "gpu=2" in d.log()
        # Later work never lands on GPU 2: four jobs, three healthy GPUs.
        more = [sim.add_job(labels=["self-hosted", "gpu-1"], duration=0.3) for _ in range(4)]
        sim.wait_for(lambda: all(sim.job(i)["status"] == "completed" for i in more), timeout=90)
        for i in more:
            job = sim.job(i)
            assert job["conclusion"] == "success", job
            assert job["report"]["env"]["CUDA_VISIBLE_DEVICES"] in ("0", "1", "3"), job["report"]
    finally:
        assert d.stop() == 0
    assert d.sanitizer_report() is None
