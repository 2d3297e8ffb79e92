"""Tests of the fake runner (tests/sim/fake-runner) against the simulator."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.sim.github import Simulator
from tests.sim.github.testing import SIM_DEFAULTS, GitHubClient, WebhookReceiver

HOOK_ENV_KEYS = [
    "GITHUB_ACTIONS", "GITHUB_REPOSITORY", "GITHUB_REPOSITORY_OWNER", "GITHUB_RUN_ID", "GITHUB_RUN_NUMBER",
    "GITHUB_RUN_ATTEMPT", "GITHUB_JOB", "GITHUB_WORKFLOW", "GITHUB_WORKSPACE", "GITHUB_ENV", "GITHUB_PATH",
    "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_EVENT_NAME", "GITHUB_EVENT_PATH", "GITHUB_SERVER_URL",
    "GITHUB_API_URL", "GITHUB_SHA", "GITHUB_REF", "GITHUB_ACTOR", "RUNNER_NAME", "RUNNER_OS", "RUNNER_ARCH",
    "RUNNER_TEMP", "RUNNER_TOOL_CACHE", "RUNNER_WORKSPACE", "RUNNER_ENVIRONMENT", "CI",
]


@pytest.fixture
def gh(github_sim, app_key):
    c = GitHubClient(github_sim, app_key.private_pem)
    c.installation_token()
    return c


def start(cmd, jit, cwd, **env):
    e = dict(os.environ)
    for k in ("ACTIONS_RUNNER_HOOK_JOB_STARTED", "ACTIONS_RUNNER_HOOK_JOB_COMPLETED", "CUDA_VISIBLE_DEVICES",
              "NVIDIA_VISIBLE_DEVICES"):
        e.pop(k, None)
    e.update(env)
    os.makedirs(cwd, exist_ok=True)
    return subprocess.Popen([cmd, "--jitconfig", jit], cwd=cwd, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def hook(path, body):
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return str(path)


def test_runs_hooks_with_the_runner_environment(gh, github_sim, fake_runner_cmd, tmp_path):
    receiver = WebhookReceiver()
    github_sim.set_webhook_url(receiver.url)
    out = tmp_path / "out"
    out.mkdir()
    started = hook(tmp_path / "started.sh", f'env > {out}/started.env\necho FROM_HOOK=yes >> "$GITHUB_ENV"\n')
    completed = hook(tmp_path / "completed.sh", f"env > {out}/completed.env\n")
    jit = gh.jitconfig("gpu-r1", ["linux", "gpu"])["encoded_jit_config"]
    job = github_sim.add_job(["self-hosted", "gpu"], repo="acme/gadgets", duration=0.3, workflow="Train",
                             name="train", command=f'pwd > {out}/pwd; echo "$FROM_HOOK" > {out}/from_hook')
    cwd = tmp_path / "work-r1"
    p = start(fake_runner_cmd, jit, cwd, ACTIONS_RUNNER_HOOK_JOB_STARTED=started,
              ACTIONS_RUNNER_HOOK_JOB_COMPLETED=completed, CUDA_VISIBLE_DEVICES="2", NVIDIA_VISIBLE_DEVICES="2")
    assert p.wait(20) == 0, p.stdout.read()
    j = github_sim.job(job)
    assert j["status"] == "completed" and j["conclusion"] == "success" and j["runner_name"] == "gpu-r1"
    rep = j["report"]
    assert rep["pid"] == p.pid and rep["runner_name"] == "gpu-r1" and rep["work_dir"] == str(cwd)
    assert rep["env"] == {"CUDA_VISIBLE_DEVICES": "2", "NVIDIA_VISIBLE_DEVICES": "2"}
    assert rep["hooks"]["started"]["exit_code"] == 0 and rep["hooks"]["completed"]["exit_code"] == 0
    assert rep["steps_ran"] and rep["finished_at"] - rep["started_at"] >= 0.3
    env = dict(line.split("=", 1) for line in (out / "started.env").read_text().splitlines() if "=" in line)
    missing = [k for k in HOOK_ENV_KEYS if k not in env]
    assert not missing, missing
    assert env["GITHUB_REPOSITORY"] == "acme/gadgets" and env["GITHUB_JOB"] == "train"
    assert env["GITHUB_WORKFLOW"] == "Train" and env["GITHUB_ACTIONS"] == "true"
    assert env["GITHUB_RUN_ID"] == str(j["run_id"]) and env["RUNNER_NAME"] == "gpu-r1"
    assert env["GITHUB_SERVER_URL"] == github_sim.url
    assert env["GITHUB_WORKSPACE"] == str(cwd / "_work" / "gadgets" / "gadgets")
    assert env["RUNNER_WORKSPACE"] == str(cwd / "_work" / "gadgets")
    assert env["RUNNER_TEMP"] == str(cwd / "_work" / "_temp")
    assert env["RUNNER_OS"] == "Linux" and env["RUNNER_ARCH"] in ("X64", "ARM64")
    assert env["CUDA_VISIBLE_DEVICES"] == "2"
    assert (out / "pwd").read_text().strip() == env["GITHUB_WORKSPACE"]
    assert (out / "from_hook").read_text().strip() == "yes"  # GITHUB_ENV from the hook reaches later steps
    assert (out / "completed.env").exists()
    # the JIT runner is gone after its one job, and its config cannot be reused
    assert [r["name"] for r in gh.get("/orgs/acme/actions/runners").json()["runners"]] == []
    p2 = start(fake_runner_cmd, jit, cwd)
    assert p2.wait(20) == 1
    receiver.wait(lambda r: r.actions(job) == ["queued", "in_progress", "completed"])
    receiver.close()


def test_failing_started_hook_fails_the_job_without_running_it(gh, github_sim, fake_runner_cmd, tmp_path):
    marker = tmp_path / "completed-ran"
    started = hook(tmp_path / "started.sh", "exit 3\n")
    completed = hook(tmp_path / "completed.sh", f"touch {marker}\n")
    jit = gh.jitconfig("r-fail", ["cpu"])["encoded_jit_config"]
    job = github_sim.add_job(["cpu"], duration=5, command=f"touch {tmp_path}/step-ran")
    p = start(fake_runner_cmd, jit, tmp_path / "w", ACTIONS_RUNNER_HOOK_JOB_STARTED=started,
              ACTIONS_RUNNER_HOOK_JOB_COMPLETED=completed)
    assert p.wait(20) == 0
    j = github_sim.job(job)
    assert j["conclusion"] == "failure" and j["report"]["steps_ran"] is False
    assert j["report"]["hooks"]["started"]["exit_code"] == 3
    assert not (tmp_path / "step-ran").exists()
    assert marker.exists()  # the completed hook still runs


def test_hook_must_be_a_script(gh, github_sim, fake_runner_cmd, tmp_path):
    jit = gh.jitconfig("r-ext", ["cpu"])["encoded_jit_config"]
    job = github_sim.add_job(["cpu"], duration=0.1)
    bad = tmp_path / "started"
    bad.write_text("#!/bin/sh\nexit 0\n")
    bad.chmod(0o755)
    p = start(fake_runner_cmd, jit, tmp_path / "w", ACTIONS_RUNNER_HOOK_JOB_STARTED=str(bad))
    assert p.wait(20) == 0
    j = github_sim.job(job)
    assert j["conclusion"] == "failure" and "'.sh' or '.ps1'" in j["report"]["hooks"]["started"]["error"]


def test_invalid_config_and_deleted_runner_exit_nonzero(gh, github_sim, fake_runner_cmd, tmp_path):
    assert start(fake_runner_cmd, "bm90IGEgY29uZmln", tmp_path).wait(10) == 1
    p = subprocess.run([fake_runner_cmd], cwd=tmp_path, capture_output=True)
    assert p.returncode == 1
    out = gh.jitconfig("r-del", ["cpu"])
    assert gh.delete(f"/orgs/acme/actions/runners/{out['runner']['id']}").status_code == 204
    p = start(fake_runner_cmd, out["encoded_jit_config"], tmp_path)
    assert p.wait(10) == 1
    assert "deleted" in p.stdout.read()


def test_deleting_a_waiting_runner_stops_it(gh, github_sim, fake_runner_cmd, tmp_path):
    out = gh.jitconfig("r-wait", ["cpu"])
    p = start(fake_runner_cmd, out["encoded_jit_config"], tmp_path)
    github_sim.wait_for(lambda: [r for r in github_sim.runners() if r["status"] == "online"], 10)
    assert gh.get(f"/orgs/acme/actions/runners/{out['runner']['id']}").json()["status"] == "online"
    assert gh.delete(f"/orgs/acme/actions/runners/{out['runner']['id']}").status_code == 204
    assert p.wait(10) == 1


def test_sigterm_exits_promptly_idle_and_busy(gh, github_sim, fake_runner_cmd, tmp_path):
    idle = start(fake_runner_cmd, gh.jitconfig("r-idle", ["cpu"])["encoded_jit_config"], tmp_path / "a")
    github_sim.wait_for(lambda: any(r["status"] == "online" for r in github_sim.runners()), 10)
    idle.send_signal(signal.SIGTERM)
    # A generous bound against a hang, not a speed check.
    assert idle.wait(20) == 0
    job = github_sim.add_job(["gpu"], duration=300)
    busy = start(fake_runner_cmd, gh.jitconfig("r-busy", ["gpu"])["encoded_jit_config"], tmp_path / "b")
    github_sim.wait_for(lambda: github_sim.job(job)["status"] == "in_progress", 10)
    busy.send_signal(signal.SIGTERM)
    busy.wait(20)
    # It gave up the 300 s job instead of finishing it.
    github_sim.wait_for(lambda: github_sim.job(job)["status"] == "completed", 10)
    assert github_sim.job(job)["conclusion"] == "failure"


def test_cancel_running_job(gh, github_sim, fake_runner_cmd, tmp_path):
    job = github_sim.add_job(["gpu"], duration=30)
    p = start(fake_runner_cmd, gh.jitconfig("r-c", ["gpu"])["encoded_jit_config"], tmp_path)
    github_sim.wait_for(lambda: github_sim.job(job)["status"] == "in_progress", 10)
    github_sim.cancel_job(job)
    assert p.wait(10) == 0
    assert github_sim.job(job)["conclusion"] == "cancelled"


def test_lost_runner_fails_its_job(app_key, fake_runner_cmd, tmp_path):
    sim = Simulator(app_public_key_pem=app_key.public_pem, runner_lost_timeout=1.0, **SIM_DEFAULTS).start()
    try:
        c = GitHubClient(sim, app_key.private_pem)
        c.installation_token()
        job = sim.add_job(["gpu"], duration=30)
        p = start(fake_runner_cmd, c.jitconfig("r-lost", ["gpu"])["encoded_jit_config"], tmp_path)
        sim.wait_for(lambda: sim.job(job)["status"] == "in_progress", 10)
        p.kill()
        p.wait()
        sim.wait_for(lambda: sim.job(job)["status"] == "completed", 5)
        assert sim.job(job)["conclusion"] == "failure" and sim.job(job)["lost"]
        assert sim.runners() == []
    finally:
        sim.stop()


def test_runner_killed_while_waiting_gets_no_job(gh, github_sim, fake_runner_cmd, tmp_path):
    p = start(fake_runner_cmd, gh.jitconfig("r-k", ["gpu"])["encoded_jit_config"], tmp_path)
    github_sim.wait_for(lambda: any(r["status"] == "online" for r in github_sim.runners()), 10)
    p.kill()
    p.wait()
    time.sleep(0.1)
    job = github_sim.add_job(["gpu"], duration=1)
    time.sleep(0.5)  # the waiting poll wakes on the new job and sees the closed connection
    assert github_sim.job(job)["status"] == "queued"
