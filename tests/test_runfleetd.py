"""System tests of runfleetd on the local backend against the GitHub
simulator: the real daemon (ASan+UBSan build) on 127.0.0.1, the fake
runner as runner command, four pretend GPUs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from tests.runfleetd import ROOT, Daemon, bin_dir
from tests.sim.github import Simulator
from tests.sim.github.testing import AppKey, GitHubClient, assert_clean
from tests.sim.github.webhooks import signature_256

EXAMPLES = ROOT / "node_modules" / "@octokit" / "webhooks-examples" / "api.github.com" / "index.json"


@pytest.fixture(scope="session")
def app_key_files(tmp_path_factory):
    key = AppKey(str(tmp_path_factory.mktemp("app-key")))
    return key.private_path, key.public_pem


@pytest.fixture
def sim(app_key_files):
    priv, pub = app_key_files
    s = Simulator(
        app_id=4242,
        app_public_key_pem=pub,
        webhook_secret=b"runfleet-test-secret",
        installation_id=77,
        org="acme",
        repos=["acme/widgets", "acme/gadgets", "acme/models"],
        # Most tests pace mutations fast to stay short; one burst test runs
        # at GitHub's default limits (make_real_limits_sim).
        secondary_points_per_minute=100000,
        content_creating_per_minute=100000,
        delivery_timeout=10.0,
    )
    s.app_key_file = str(priv)
    s.start()
    yield s
    s.stop()
    assert_clean(s)


def make_daemon(tmp_path, sim, **kw) -> Daemon:
    return Daemon(tmp_path, sim, **kw)


@pytest.fixture
def daemon(tmp_path, sim):
    d = make_daemon(tmp_path, sim).start()
    yield d
    rc = d.stop()
    report = d.sanitizer_report()
    assert report is None, report
    assert rc == 0, d.log()[-3000:]


def post_webhook(d: Daemon, event: str, body: bytes, signature: str | None = "good", delivery=None):
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "User-Agent": "GitHub-Hookshot/test",
    }
    if signature == "good":
        headers["X-Hub-Signature-256"] = signature_256(d.secret, body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return requests.post(d.public_url + "/webhook", data=body, headers=headers, timeout=5)


def workflow_job_examples() -> list[dict]:
    for entry in json.loads(EXAMPLES.read_text()):
        if entry["name"] == "workflow_job":
            return entry["examples"]
    raise AssertionError("no workflow_job examples")


# ---------------------------------------------------------------------------
# webhook input
# ---------------------------------------------------------------------------


def test_every_workflow_job_example_is_accepted(daemon):
    examples = workflow_job_examples()
    assert len(examples) >= 4
    for ex in examples:
        body = json.dumps(ex).encode()
        r = post_webhook(daemon, "workflow_job", body)
        assert r.status_code == 200, (ex["action"], r.text)
    assert daemon.metric("runfleet_webhooks_total", event="workflow_job", result="bad_signature") == 0
    accepted = sum(
        daemon.metric("runfleet_webhooks_total", event="workflow_job", result=res)
        for res in ("accepted", "unmatched", "ignored")
    )
    assert accepted == len(examples)


def test_bad_signatures_get_401_and_change_nothing(daemon):
    ex = next(e for e in workflow_job_examples() if e["action"] == "queued")
    ex = json.loads(json.dumps(ex))
    ex["workflow_job"]["labels"] = ["self-hosted", "cpu"]
    body = json.dumps(ex).encode()
    good = signature_256(daemon.secret, body)
    cases = {
        "missing": None,
        "wrong secret": signature_256(b"not-the-secret", body),
        "truncated": good[:-2],
        "sha1 form": "sha1=" + good[7:47],
        "empty": "",
    }
    for name, sig in cases.items():
        r = post_webhook(daemon, "workflow_job", body, signature=sig)
        assert r.status_code == 401, name
    assert daemon.api("jobs") == []
    assert daemon.metric("runfleet_webhooks_total", result="bad_signature") == len(cases)
    # The same body, signed, is then taken.
    assert post_webhook(daemon, "workflow_job", body).status_code == 200
    assert len(daemon.api("jobs")) == 1


def test_malformed_json_400_and_huge_body_413(daemon):
    r = post_webhook(daemon, "workflow_job", b'{"action": "queued", "workflow_job": ')
    assert r.status_code == 400
    assert "malformed JSON" in r.text
    r = post_webhook(daemon, "workflow_job", b'{"action": "queued", "workflow_job": {"id": "x"}}')
    assert r.status_code == 400
    big = b'{"pad": "' + b"x" * (2 << 20) + b'"}'
    try:
        r = post_webhook(daemon, "workflow_job", big)
        assert r.status_code == 413
    except requests.ConnectionError:
        # The server may close before the client finished sending; that is
        # the documented answer to an oversized body too.
        pass
    assert daemon.api("jobs") == []
    # Still serving afterwards.
    assert daemon.get("/healthz").text == "ok\n"


def test_ping_and_duplicate_delivery(daemon, sim):
    sim.send_ping()
    assert sim.wait_deliveries(10)
    pings = [x for x in sim.deliveries() if x["event"] == "ping"]
    assert len(pings) == 1 and pings[0]["status_code"] == 200, pings
    ex = next(e for e in workflow_job_examples() if e["action"] == "waiting")
    body = json.dumps(ex).encode()
    guid = str(uuid.uuid4())
    assert post_webhook(daemon, "workflow_job", body, delivery=guid).status_code == 200
    assert post_webhook(daemon, "workflow_job", body, delivery=guid).status_code == 200
    assert daemon.metric("runfleet_webhooks_total", event="workflow_job", result="duplicate") == 1


# ---------------------------------------------------------------------------
# the burst
# ---------------------------------------------------------------------------


def intervals_overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def counted_runner(tmp_path: Path, pool: str) -> tuple[str, Path]:
    """The fake runner behind a wrapper that appends "+ <ns>" when the
    runner process starts and "- <ns>" when it ends, to count how many
    runners of a pool were alive at once."""
    from tests.runfleetd import FAKE_RUNNER

    lifetimes = tmp_path / f"{pool}.lifetimes"
    p = tmp_path / f"counted-{pool}.sh"
    p.write_text(f"#!/bin/sh\necho \"+ $(date +%s%N)\" >> {lifetimes}\n"
                 f"{FAKE_RUNNER} \"$@\"\nrc=$?\necho \"- $(date +%s%N)\" >> {lifetimes}\nexit $rc\n")
    p.chmod(0o755)
    return str(p), lifetimes


def peak_alive(lifetimes: Path) -> int:
    """The most runner processes alive at one time (a start and an end at
    the same nanosecond count the end first)."""
    events = []
    for line in lifetimes.read_text().splitlines():
        sign, ns = line.split()
        events.append((int(ns), 0 if sign == "-" else 1))
    alive = peak = 0
    for _, start in sorted(events):
        alive += 1 if start else -1
        peak = max(peak, alive)
    return peak


def test_burst_of_200_jobs(tmp_path, sim):
    cmds = {pool: counted_runner(tmp_path, pool) for pool in ("cpu", "gpu-1", "gpu-2")}
    pools = [
        dict(name="cpu", labels=["linux", "x64", "cpu"], max_runners=6, min_idle=1, idle_timeout="60s",
             command=cmds["cpu"][0]),
        dict(name="gpu-1", labels=["linux", "x64", "gpu", "gpu-1"], max_runners=4, gpus=1, priority=10,
             command=cmds["gpu-1"][0]),
        dict(name="gpu-2", labels=["linux", "x64", "gpu", "gpu-2"], max_runners=2, gpus=2, priority=0,
             command=cmds["gpu-2"][0]),
    ]
    d = make_daemon(tmp_path, sim, pools=pools).start()
    try:
        repos = ["acme/widgets", "acme/gadgets", "acme/models"]
        ids = {"cpu": [], "gpu-1": [], "gpu-2": []}
        # gpu-2 work first, then gpu-1 (higher priority) piles in behind it.
        for i in range(40):
            ids["gpu-2"].append(sim.add_job(labels=["self-hosted", "gpu-2"], repo=repos[i % 3], duration=0.15))
        for i in range(60):
            ids["gpu-1"].append(sim.add_job(labels=["self-hosted", "linux", "gpu-1"], repo=repos[i % 3], duration=0.1))
        for i in range(100):
            ids["cpu"].append(sim.add_job(labels=["self-hosted", "cpu"], repo=repos[i % 3], duration=0.05))
        all_ids = [j for v in ids.values() for j in v]

        def done():
            jobs = {j["id"]: j for j in sim.jobs()}
            return all(jobs[i]["status"] == "completed" for i in all_ids)

        sim.wait_for(done, timeout=240)
        jobs = {j["id"]: j for j in sim.jobs()}
        # Each job ran exactly once, successfully, by a runner of its pool.
        for pool, pool_ids in ids.items():
            for i in pool_ids:
                j = jobs[i]
                assert j["conclusion"] == "success", j
                assert len(j.get("runs", [j])) == 1
                assert j["runner_name"].startswith(f"rf-{pool}-"), j
        # GPU exclusivity: runs that overlapped in time never shared a GPU,
        # and at no time were more GPUs in use than exist.
        gpu_runs = []
        for i in ids["gpu-1"] + ids["gpu-2"]:
            rep = jobs[i]["report"]
            gpus = [int(g) for g in rep["env"]["CUDA_VISIBLE_DEVICES"].split(",")]
            assert rep["env"]["NVIDIA_VISIBLE_DEVICES"] == rep["env"]["CUDA_VISIBLE_DEVICES"]
            assert all(0 <= g < 4 for g in gpus)
            assert len(gpus) == (2 if i in ids["gpu-2"] else 1)
            gpu_runs.append(((rep["started_at"], rep["finished_at"]), set(gpus)))
        for a in range(len(gpu_runs)):
            for b in range(a + 1, len(gpu_runs)):
                if intervals_overlap(gpu_runs[a][0], gpu_runs[b][0]):
                    assert not (gpu_runs[a][1] & gpu_runs[b][1]), (gpu_runs[a], gpu_runs[b])
        for i in ids["cpu"]:
            rep = jobs[i]["report"]
            assert rep["env"]["CUDA_VISIBLE_DEVICES"] == ""
        # Priority under short capacity: once gpu-1 jobs were queued, they
        # waited less than the earlier-queued gpu-2 jobs.
        def waits(pool):
            return sorted(jobs[i]["started_at_ts"] - jobs[i]["queued_at_ts"] for i in ids[pool])

        w1, w2 = waits("gpu-1"), waits("gpu-2")
        assert w1[len(w1) // 2] < w2[len(w2) // 2], (w1, w2)
        # Zero requests rejected by OpenAPI validation; GitHub calls per job.
        assert sim.invalid_requests() == []
        assert sim.invalid_responses() == []
        total_calls = sim.calls()["total"]
        per_job = total_calls / len(all_ids)
        print(f"\nGitHub API calls: {total_calls} for {len(all_ids)} jobs = {per_job:.3f} per job")
        assert per_job <= 1.1, sim.calls()
        # Afterwards only min_idle runners remain (cpu: 1), nothing else.
        d.wait_for(lambda: sorted(r["pool"] for r in d.runners() if r["state"] in ("idle", "starting")) == ["cpu"]
                   and len(d.runners()) == 1, timeout=30, what="only min_idle runners left")
        p = d.pools_state()
        assert p["gpu-1"]["capacity"]["gpus_used"] == 0
        # At no time were more runner processes of a pool alive than its
        # max_runners.
        peaks = {pool: peak_alive(lifetimes) for pool, (_, lifetimes) in cmds.items()}
        print(f"peak runners alive per pool: {peaks}")
        limits = {p["name"]: p["max_runners"] for p in pools}
        assert all(1 <= peaks[pool] <= limits[pool] for pool in peaks), (peaks, limits)
        assert d.metric("runfleet_job_wait_seconds_count", pool="gpu-1") == 60
        assert d.metric("runfleet_jobs_queued") == 0
    finally:
        rc = d.stop()
    assert rc == 0, d.log()[-3000:]
    assert d.sanitizer_report() is None, d.sanitizer_report()
    # No stray processes or work directories after the stop.
    left = d.leftovers()
    assert left == [], left
    out = subprocess.run(["pgrep", "-f", str(d.work_root)], capture_output=True, text=True)
    assert out.stdout.strip() == "", out.stdout


def test_burst_at_githubs_default_rate_limits(tmp_path, app_key_files):
    """The simulator at GitHub's default secondary limits (900 points a
    minute per endpoint, 80 content-creating requests a minute) and a pace
    set above them (150 mutations a minute): the limit is hit, every
    Retry-After is obeyed (the simulator records any request sent before it
    passed; the teardown check fails on one), and every job is served once."""
    priv, pub = app_key_files
    s = Simulator(app_id=4242, app_public_key_pem=pub, webhook_secret=b"runfleet-test-secret",
                  installation_id=77, org="acme", repos=["acme/widgets", "acme/gadgets"])
    assert (s.secondary_points_per_minute, s.content_creating_per_minute) == (900, 80)
    s.app_key_file = str(priv)
    s.start()
    pools = [dict(name="cpu", labels=["linux", "cpu"], max_runners=10)]
    d = make_daemon(tmp_path, s, pools=pools, cpu_slots=10, mutations_per_minute=150).start()
    try:
        ids = [s.add_job(labels=["self-hosted", "cpu"], repo=["acme/widgets", "acme/gadgets"][i % 2],
                         duration=0.05) for i in range(100)]
        s.wait_for(lambda: all(s.job(i)["status"] == "completed" for i in ids), timeout=240)
        assert all(s.job(i)["conclusion"] == "success" for i in ids)
        assert len({s.job(i)["runner_name"] for i in ids}) == 100
        limited = s.secondary_limited()
        print(f"\nsecondary-limit refusals: {len(limited)}, Retry-After {[x['retry_after'] for x in limited]}")
        assert limited and {x["limit"] for x in limited} == {"content"}
        assert d.metric("runfleet_github_requests_total", code="403") == len(limited)
    finally:
        rc = d.stop()
        s.stop()
    assert rc == 0, d.log()[-3000:]
    assert d.sanitizer_report() is None
    assert_clean(s)


# ---------------------------------------------------------------------------
# cancellation, idle timeout, min_idle
# ---------------------------------------------------------------------------


def slow_runner(tmp_path: Path, delay: float) -> str:
    """A runner command that takes `delay` seconds to boot before it
    connects, like a real runner pulling its image: long enough for jobs
    to be cancelled while their runners are up but not yet connected."""
    from tests.runfleetd import FAKE_RUNNER

    p = tmp_path / "slow-runner.sh"
    p.write_text(f"#!/bin/sh\nsleep {delay}\nexec {FAKE_RUNNER} \"$@\"\n")
    p.chmod(0o755)
    return str(p)


def test_cancelled_queued_jobs_remove_surplus_runners(tmp_path, sim):
    pools = [dict(name="cpu", labels=["linux", "cpu"], max_runners=4, command=slow_runner(tmp_path, 30))]
    d = make_daemon(tmp_path, sim, pools=pools).start()
    try:
        ids = [sim.add_job(labels=["self-hosted", "cpu"], duration=60) for _ in range(3)]
        d.wait_for(lambda: len([r for r in d.runners() if r["state"] == "idle"]) == 3, what="3 idle runners")
        assert len([r for r in sim.runners() if r["name"].startswith("rf-cpu-")]) == 3
        # Two of three are cancelled while queued: two runners go.
        for i in ids[:2]:
            sim.cancel_job(i)
        d.wait_for(lambda: len(d.runners()) == 1, what="surplus runners gone")
        assert len([r for r in sim.runners() if r["name"].startswith("rf-cpu-")]) == 1
        assert d.pools_state()["cpu"]["demand"] == 1
        sim.cancel_job(ids[2])
        d.wait_for(lambda: d.runners() == [], what="last surplus runner gone")
        assert [r for r in sim.runners() if r["name"].startswith("rf-")] == []
        assert sim.invalid_requests() == []
        assert d.metric("runfleet_runner_failures_total") == 0
    finally:
        assert d.stop() == 0
    assert d.sanitizer_report() is None
    assert d.leftovers() == []


def test_runners_that_fail_before_a_job_leave_no_registration(tmp_path, sim):
    """A runner command that exits 1 at once, and one that cannot be started
    at all (after its JIT config came): neither leaves an offline
    registration of ours at GitHub."""
    exits = tmp_path / "exits-1.sh"
    exits.write_text("#!/bin/sh\nexit 1\n")
    exits.chmod(0o755)
    pools = [dict(name="exits", labels=["linux", "exits"], max_runners=2, command=str(exits)),
             dict(name="nostart", labels=["linux", "nostart"], max_runners=2,
                  command=str(tmp_path / "no-such-runner"))]
    d = make_daemon(tmp_path, sim, pools=pools).start()
    try:
        ids = [sim.add_job(labels=["self-hosted", pool], duration=0.1) for pool in ("exits", "nostart")]

        def jit_per_pool() -> dict:
            seen = {"exits": 0, "nostart": 0}
            for r in sim.runners(include_removed=True):
                for pool in seen:
                    seen[pool] += r["name"].startswith(f"rf-{pool}-")
            return seen

        # Each pool got JIT configs and its runners failed more than once.
        d.wait_for(lambda: min(jit_per_pool().values()) >= 2, timeout=60, what="two failed starts per pool")
        d.wait_for(lambda: "backend start failed" in d.log(), what="the start failure logged")
        # A JIT config GitHub has issued may belong to a runner whose
        # failure is not counted yet: wait for the failures themselves.
        d.wait_for(lambda: d.metric("runfleet_runner_failures_total") >= 4, timeout=60,
                   what="four failures counted")
        for i in ids:
            sim.cancel_job(i)
        d.wait_for(lambda: d.pools_state()["exits"]["demand"] == 0 and d.pools_state()["nostart"]["demand"] == 0,
                   what="demand gone")
        d.wait_for(lambda: d.runners() == [], what="no runners")
        sim.wait_for(lambda: [r["name"] for r in sim.runners() if r["name"].startswith("rf-")] == [], timeout=20)
        assert d.metric("runfleet_runner_failures_total") >= 4
    finally:
        assert d.stop() == 0
    assert d.sanitizer_report() is None
    assert d.leftovers() == []


def test_idle_timeout_and_min_idle(tmp_path, sim):
    pools = [dict(name="cpu", labels=["linux", "cpu"], max_runners=4, min_idle=1, idle_timeout="1s")]
    d = make_daemon(tmp_path, sim, pools=pools).start()
    try:
        d.wait_for(lambda: [r["state"] for r in d.runners()] == ["idle"], what="min_idle runner")
        first = d.runners()[0]["name"]
        # The min_idle runner is kept past idle_timeout.
        time.sleep(2.0)
        assert [r["name"] for r in d.runners()] == [first]
        # A job: the idle runner takes it, and a new one refills min_idle.
        jid = sim.add_job(labels=["self-hosted", "cpu"], duration=0.2)
        sim.wait_for(lambda: sim.job(jid)["status"] == "completed", timeout=20)
        d.wait_for(lambda: len(d.runners()) == 1 and d.runners()[0]["name"] != first
                   and d.runners()[0]["state"] == "idle", what="min_idle refilled")
        # With min_idle 0 after a reload, the idle runner times out and is
        # deleted at GitHub.
        d.config_path.write_text(d.config_path.read_text().replace("min_idle: 1", "min_idle: 0"))
        d.signal(signal.SIGHUP)
        d.wait_for(lambda: d.runners() == [], timeout=20, what="idle runner timed out")
        sim.wait_for(lambda: [r for r in sim.runners() if r["name"].startswith("rf-")] == [], timeout=10)
        assert sim.invalid_requests() == []
    finally:
        assert d.stop() == 0
    assert d.sanitizer_report() is None


def test_idle_runner_that_never_takes_a_job_is_replaced(tmp_path, sim):
    # The runner boots forever (never connects), so the queued job waits:
    # past idle_timeout the runner is deregistered, stopped and replaced.
    pools = [dict(name="cpu", labels=["linux", "cpu"], max_runners=1, idle_timeout="1s",
                  command=slow_runner(tmp_path, 60))]
    d = make_daemon(tmp_path, sim, pools=pools).start()
    try:
        jid = sim.add_job(labels=["self-hosted", "cpu"], duration=1)
        d.wait_for(lambda: [r["state"] for r in d.runners()] == ["idle"], what="idle runner")
        first = d.runners()[0]["name"]
        d.wait_for(lambda: d.runners() and d.runners()[0]["name"] != first, timeout=20,
                   what="replacement runner")
        assert first not in {r["name"] for r in sim.runners()}
        assert sim.call_count("actions/delete-self-hosted-runner-from-org") >= 1
        assert "reason=idle_timeout" in d.log()
        sim.cancel_job(jid)
        d.wait_for(lambda: d.runners() == [], what="runner gone after cancel")
    finally:
        assert d.stop() == 0
    assert d.sanitizer_report() is None


# ---------------------------------------------------------------------------
# config: --check-config, SIGHUP, SIGTERM
# ---------------------------------------------------------------------------

BAD_CONFIG = """\
listen: 127.0.0.1:99999
github:
  api_url: ftp://example
  org: acme
  repo: acme/widgets
  webhook_secret_file: /nonexistent/secret
backend:
  type: local
pools:
  - name: Bad_Name
    labels: [gpu]
    max_runners: 0
    min_idle: 3
    idle_timeout: soon
    resources: {gpus: -1}
    runner: {command: /bin/true}
  - name: two
    labels: [cpu]
    max_runners: 2
    colour: blue
"""


@pytest.mark.parametrize("why", ["port_taken", "no_cluster"])
def test_failed_start_exits_cleanly(tmp_path, sim, why):
    """A start that fails part way (the listen address is taken; the
    kubernetes backend finds no cluster) closes what it made through the normal
    shutdown: exit 1, the reason in the log, no handle left open, no
    sanitizer report, and nothing asked of GitHub."""
    d = Daemon(tmp_path, sim)
    blocker = None
    if why == "port_taken":
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", d.port))
        blocker.listen(1)
        expect = "cannot listen"
    else:
        text = d.config_path.read_text().replace("  type: local\n", "  type: kubernetes\n", 1)
        text = re.sub(r"runner: \{command: [^}]*\}", "runner: {image: runner:latest}", text)
        d.config_path.write_text(text)
        # Not in a cluster and no kubeconfig: the backend cannot start.
        d.env["KUBERNETES_SERVICE_HOST"] = ""
        expect = "cannot find the Kubernetes API server"
    try:
        with pytest.raises(RuntimeError, match="exited 1"):
            d.start(timeout=20)
    finally:
        if blocker is not None:
            blocker.close()
    log = d.log()
    assert expect in log, log
    assert "handles left open" not in log, log
    assert d.sanitizer_report() is None
    assert sim.call_count("actions/generate-runner-jitconfig-for-org") == 0


def test_check_config_reports_every_error_with_lines(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(BAD_CONFIG)
    r = subprocess.run([str(bin_dir() / "runfleetd"), "--check-config", str(p)], capture_output=True, text=True)
    assert r.returncode == 1
    lines = [l for l in r.stdout.splitlines() if l.startswith(str(p) + ":")]
    numbered = {int(l.split(":")[1]) for l in lines if l.split(":")[1].isdigit()}
    # listen (1), api_url (3), org+repo (4/5), secret (6), app/pat missing,
    # name (10), max_runners (12), min_idle (13), idle_timeout (14), gpus (15),
    # runner command missing for pool two, unknown key colour (20).
    for line in (1, 2, 3, 5, 6, 10, 12, 14, 15, 17, 20):
        assert line in numbered, (line, r.stdout)
    assert len(lines) >= 10, r.stdout
    good = ROOT / "manager" / "examples" / "local.yaml"
    r = subprocess.run([str(bin_dir() / "runfleetd"), "--check-config", str(good)], capture_output=True, text=True)
    # The example names files that do not exist on a test machine; every
    # complaint must be about those files, nothing else.
    for l in r.stdout.splitlines():
        if "problem" in l or ": ok" in l:
            continue
        assert "No such file" in l, l


def test_sighup_with_broken_config_keeps_old_one(tmp_path, sim):
    d = make_daemon(tmp_path, sim).start()
    try:
        before = d.pools_state()
        good_text = d.config_path.read_text()
        d.config_path.write_text(good_text.replace("max_runners: 6", "max_runners: lots"))
        d.signal(signal.SIGHUP)
        d.wait_for(lambda: "reload rejected" in d.log(), what="reload rejection logged")
        assert "max_runners" in d.log()
        assert d.pools_state() == before
        assert d.get("/healthz").status_code == 200
        # A good change is applied.
        d.config_path.write_text(good_text.replace("max_runners: 6", "max_runners: 5"))
        d.signal(signal.SIGHUP)
        d.wait_for(lambda: d.pools_state()["cpu"]["max_runners"] == 5, what="reload applied")
        # GitHub calls after the reload still work (the client's settings
        # moved into the new config).
        jid = sim.add_job(labels=["self-hosted", "cpu"], duration=0.2)
        sim.wait_for(lambda: sim.job(jid)["status"] == "completed", timeout=30)
        assert sim.job(jid)["conclusion"] == "success"
    finally:
        rc = d.stop()
    assert rc == 0
    assert "stopped" in d.log()
    assert d.sanitizer_report() is None


def test_job_processes_that_left_the_session_die_with_the_runner(tmp_path, sim):
    """A step that daemonises (its own session, outside the runner's process
    group) is killed when its runner exits, with no post-job hook to help."""
    pids = tmp_path / "daemon.pids"
    d = make_daemon(tmp_path, sim).start()
    try:
        job = sim.add_job(labels=["self-hosted", "cpu"], duration=0.05, command=(
            f"setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! >> {pids}; "
            f"setsid env -i sleep 301 </dev/null >/dev/null 2>&1 & echo $! >> {pids}"))
        sim.wait_for(lambda: sim.job(job)["status"] == "completed", timeout=60)
        assert sim.job(job)["conclusion"] == "success"
        left = [int(p) for p in pids.read_text().split()]
        assert len(left) == 2

        def gone(pid: int) -> bool:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except FileNotFoundError:
                return True
            return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")

        d.wait_for(lambda: all(gone(p) for p in left), timeout=30, what="daemonised steps killed")
        # The removal callback writes this line after the kill: wait for it.
        d.wait_for(lambda: "killed processes the runner left outside its group" in d.log(),
                   timeout=30, what="the sweep's log line")
    finally:
        rc = d.stop()
        for p in [int(x) for x in pids.read_text().split()] if pids.exists() else []:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert rc == 0, d.log()[-3000:]
    assert d.sanitizer_report() is None, d.sanitizer_report()


def test_sigterm_with_busy_runners_stops_cleanly(tmp_path, sim):
    d = make_daemon(tmp_path, sim).start()
    for _ in range(3):
        sim.add_job(labels=["self-hosted", "gpu-1"], duration=30)
    d.wait_for(lambda: len([r for r in d.runners() if r["state"] == "busy"]) == 3, what="3 busy runners")
    rc = d.stop()
    assert rc == 0, d.log()[-3000:]
    assert d.sanitizer_report() is None
    assert d.leftovers() == []


# ---------------------------------------------------------------------------
# slow clients, GitHub errors
# ---------------------------------------------------------------------------


def test_slow_client_is_closed_and_others_are_served(daemon):
    import socket

    s = socket.create_connection(("127.0.0.1", daemon.port))
    s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":")
    # Meanwhile the daemon answers others: /healthz comes back while the
    # slow request is still open (nothing has been sent to it yet).
    assert daemon.get("/healthz").status_code == 200
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.recv(1)
    s.setblocking(True)
    # The slow request gets 408 after read_timeout (2 s) and is closed.
    s.settimeout(10)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 408"), data
    assert daemon.api("jobs") == []


def test_github_errors_are_retried_and_no_job_is_lost(tmp_path, sim):
    d = make_daemon(tmp_path, sim).start()
    try:
        # A third of JIT config requests fail with 502 or are dropped.
        sim.faults(error_ratio=0.3, drop_ratio=0.1, endpoints=["actions/generate-runner-jitconfig-for-org"])
        ids = [sim.add_job(labels=["self-hosted", "cpu"], duration=0.1) for _ in range(20)]
        sim.wait_for(lambda: all(sim.job(i)["status"] == "completed" for i in ids), timeout=120)
        assert all(sim.job(i)["conclusion"] == "success" for i in ids)
        assert sim.invalid_requests() == []
        assert d.metric("runfleet_github_requests_total", endpoint="jitconfig", code="502") >= 1
        sim.faults()
        d.wait_for(lambda: [r for r in d.runners() if r["state"] != "idle"] == [], what="runners settle")
    finally:
        assert d.stop() == 0
    assert d.sanitizer_report() is None
    assert [r for r in sim.runners() if r["name"].startswith("rf-") and r["status"] == "offline"
            and not r["busy"]] == []


@pytest.mark.parametrize("fault", [dict(drop_ratio=1.0), dict(error_ratio=1.0, error_status=502)],
                         ids=["dropped", "502"])
def test_lost_jit_response_leaks_nothing_and_the_job_runs_once(tmp_path, sim, fault):
    """GitHub registers the runner, then the answer is lost (or is a 502):
    runfleetd does not send the same JIT request again (it would collide on
    the name), looks the runner up, deletes that registration, and starts
    another runner without counting a failure."""
    pools = [dict(name="cpu", labels=["linux", "cpu"], max_runners=2)]
    d = make_daemon(tmp_path, sim, pools=pools).start()
    try:
        sim.faults(after=True, count=1, endpoints=["actions/generate-runner-jitconfig-for-org"], **fault)
        jid = sim.add_job(labels=["self-hosted", "cpu"], duration=0.1)
        sim.wait_for(lambda: sim.job(jid)["status"] == "completed", timeout=60)
        job = sim.job(jid)
        assert job["conclusion"] == "success" and job["events"].count("in_progress") == 1
        first = sorted(sim.runners(include_removed=True), key=lambda r: r["id"])[0]
        assert first["name"] != job["runner_name"]
        sim.wait_for(lambda: [r["name"] for r in sim.runners() if r["name"].startswith("rf-")] == [], timeout=20)
        d.wait_for(lambda: "looked up a runner whose JIT result was unknown" in d.log(), what="the lookup")
        assert d.metric("runfleet_runner_failures_total") == 0
        assert "runner ended before taking a job" not in d.log()
    finally:
        assert d.stop() == 0
    assert d.sanitizer_report() is None


def test_round_robin_across_repositories_when_gpus_are_short(tmp_path, sim):
    # Two GPU pools of equal priority share two GPUs. acme/widgets queues
    # eight jobs before acme/gadgets queues four: FIFO would run every
    # widgets job first; round-robin lets gadgets in at once.
    pools = [
        dict(name="gpu-x", labels=["linux", "gpu", "x"], max_runners=2, gpus=1),
        dict(name="gpu-y", labels=["linux", "gpu", "y"], max_runners=2, gpus=1),
    ]
    d = make_daemon(tmp_path, sim, pools=pools, gpus=[0, 1]).start()
    try:
        a = [sim.add_job(labels=["self-hosted", "x"], repo="acme/widgets", duration=0.5) for _ in range(8)]
        # widgets' jobs are queued at runfleetd before gadgets' come.
        d.wait_for(lambda: d.metric("runfleet_webhooks_total", event="workflow_job", result="accepted") >= 8,
                   what="widgets' 8 jobs queued")
        b = [sim.add_job(labels=["self-hosted", "y"], repo="acme/gadgets", duration=0.5) for _ in range(4)]
        sim.wait_for(lambda: all(sim.job(i)["status"] == "completed" for i in a + b), timeout=120)
        starts_a = sorted(sim.job(i)["started_at"] for i in a)
        starts_b = sorted(sim.job(i)["started_at"] for i in b)
        # FIFO would start every gadgets job after the eighth widgets job;
        # taking turns starts them all before the seventh.
        assert starts_b[-1] < starts_a[6], (starts_b, starts_a)
        assert sim.invalid_requests() == []
    finally:
        assert d.stop() == 0
    assert d.sanitizer_report() is None


def test_restart_after_crash_reaps_runners_and_registrations(tmp_path, sim):
    """Without a journal, runners of a crashed runfleetd are unknown to the
    next one: stopped, and their registrations deleted."""
    pools = [dict(name="cpu", labels=["linux", "cpu"], max_runners=4, command=slow_runner(tmp_path, 60)),
             dict(name="gpu-1", labels=["linux", "gpu-1"], max_runners=4, gpus=1)]
    d = make_daemon(tmp_path, sim, pools=pools, extra="journal: {enabled: false}\n").start()
    for _ in range(2):
        sim.add_job(labels=["self-hosted", "cpu"], duration=1, hold=True)
    d.wait_for(lambda: len([r for r in d.runners() if r["state"] == "idle"]) == 2, what="2 idle runners")
    old = {r["name"] for r in d.runners()}
    # Another fleet shares the organisation: its offline registrations look
    # like ours but for the fleet tag (one even has our tag inside its pool
    # name). They must survive our start-up sweep.
    tag = (tmp_path / "fleet-id").read_text().strip()
    other = "0123abcd" if tag != "0123abcd" else "4567cdef"
    foreign = [f"rf-cpu-{other}-1a2b-1", f"rf-x-{tag}-y-{other}-1a2b-2", f"rf-cpu-{other}-{tag}-3"]
    gh = GitHubClient(sim, Path(sim.app_key_file).read_bytes())
    gh.installation_token()
    for name in foreign:
        gh.jitconfig(name, ["self-hosted", "linux", "cpu"])
    # runfleetd dies without any clean-up.
    d.signal(signal.SIGKILL)
    d.proc.wait(10)
    d._log_fh.close()
    leftover = subprocess.run(["pgrep", "-f", "slow-runner.sh"], capture_output=True, text=True).stdout.split()
    assert len(leftover) == 2
    assert old <= {r["name"] for r in sim.runners()}
    # The next start on the same state_dir kills them and deletes their
    # registrations; the held jobs are then served by new runners.
    d2 = d.successor().start()
    try:
        sim.wait_for(lambda: not (old & {r["name"] for r in sim.runners()}), timeout=20)
        assert set(foreign) <= {r["name"] for r in sim.runners()}
        for pid in leftover:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        assert "stopping a runner this run does not know" in d2.log()
        assert not (old & {r["name"] for r in d2.runners()})
        jid = sim.add_job(labels=["self-hosted", "gpu-1"], duration=0.2)
        sim.wait_for(lambda: sim.job(jid)["status"] == "completed", timeout=30)
        assert sim.job(jid)["conclusion"] == "success"
    finally:
        assert d2.stop() == 0
    assert d2.sanitizer_report() is None
    assert set(foreign) <= {r["name"] for r in sim.runners()}


def test_restart_after_crash_adopts_its_runners(tmp_path, sim):
    """With the journal, the runners a crashed runfleetd started go on: a
    busy one finishes its job (GitHub sees no runner lost), an idle one
    covers a queued job, nothing is started twice, and afterwards nothing
    is left."""
    pools = [dict(name="cpu", labels=["linux", "cpu"], max_runners=2)]
    d = make_daemon(tmp_path, sim, pools=pools).start()
    busy = sim.add_job(labels=["self-hosted", "cpu"], duration=4)
    sim.wait_for(lambda: sim.job(busy)["status"] == "in_progress", timeout=30)
    held = sim.add_job(labels=["self-hosted", "cpu"], duration=0.2, hold=True)
    d.wait_for(lambda: sorted(r["state"] for r in d.runners()) == ["busy", "idle"],
               what="a busy and an idle runner")
    before = {r["name"] for r in d.runners()}
    assert len(before) == 2
    d.signal(signal.SIGKILL)
    d.proc.wait(10)
    d._log_fh.close()
    d2 = d.successor().start()
    try:
        assert {r["name"] for r in d2.runners()} == before
        assert d2.log().count("runner adopted") == 2
        sim.wait_for(lambda: sim.job(busy)["status"] == "completed", timeout=30)
        assert sim.job(busy)["conclusion"] == "success"
        assert not sim.job(busy)["lost"]
        sim.release_job(held)
        sim.wait_for(lambda: sim.job(held)["status"] == "completed", timeout=30)
        assert sim.job(held)["conclusion"] == "success"
        assert sim.job(held)["runner_name"] in before
        assert len({r["name"] for r in sim.runners(include_removed=True)}) == 2
        d2.wait_for(lambda: d2.runners() == [], what="no runners left")
    finally:
        assert d2.stop() == 0
    assert d2.sanitizer_report() is None, d2.sanitizer_report()
    assert d2.leftovers() == [], d2.leftovers()


def test_startup_failure_exits_cleanly_with_a_reason(tmp_path, sim):
    d = make_daemon(tmp_path, sim)
    d.config_path.write_text(d.config_text.replace(f"work_root: {d.work_root}", "work_root: /proc/none/runners"))
    with pytest.raises(RuntimeError, match="exited 1"):
        d.start(timeout=20)
    assert "cannot create work_root" in d.log()
    assert d.sanitizer_report() is None


def test_untrusted_labels_do_not_grow_metrics(daemon):
    for i in range(50):
        post_webhook(daemon, f"made-up-{i}", b"{}", signature="sha256=" + "0" * 64)
    series = [k for k in daemon.metrics() if k.startswith("runfleet_webhooks_total{")]
    assert series == ['runfleet_webhooks_total{event="other",result="bad_signature"}'], series
    assert daemon.metric("runfleet_webhooks_total", event="other") == 50


def test_long_utf8_names_survive_in_the_api(daemon):
    ex = next(e for e in workflow_job_examples() if e["action"] == "queued")
    ex = json.loads(json.dumps(ex))
    ex["workflow_job"]["labels"] = ["self-hosted", "cpu"]
    ex["workflow_job"]["name"] = "a" * 94 + "\u00e9" * 10
    ex["repository"]["full_name"] = "acme/" + "\u00fc" * 150
    assert post_webhook(daemon, "workflow_job", json.dumps(ex).encode()).status_code == 200
    jobs = daemon.api("jobs")
    assert len(jobs) == 1
    assert jobs[0]["name"].startswith("a" * 94)
    assert jobs[0]["repository"].startswith("acme/\u00fc")


def test_status_page_and_cli(daemon):
    page = daemon.get("/")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    for pool in ("cpu", "gpu-1", "gpu-2"):
        assert f"<td>{pool}</td>" in page.text
    cli = str(bin_dir() / "runfleet")
    out = subprocess.run([cli, "status", "--url", daemon.url], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].split()[0] == "POOL"
    assert any(line.startswith("TOTAL") for line in out.stdout.splitlines())
    out = subprocess.run([cli, "pools", "--json", "--url", daemon.url], capture_output=True, text=True)
    assert [p["name"] for p in json.loads(out.stdout)["pools"]] == ["cpu", "gpu-1", "gpu-2"]
    # A daemon that is not there: a clear message and exit 1.
    out = subprocess.run([cli, "status", "--url", "http://127.0.0.1:9"], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.strip()
