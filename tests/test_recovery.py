"""System tests of recovery against the GitHub simulator: webhooks missed
while runfleetd was down are redelivered through the App deliveries API,
queued jobs no webhook announced are found by the scan, and under 5xx
faults and an exhausted secondary limit every job is still served, retries
stay bounded, Retry-After is obeyed and recovery never holds back a JIT
config request (all read from the simulator's request log)."""

from __future__ import annotations

import subprocess

import pytest
from tests.runfleetd import Daemon, bin_dir
from tests.sim.github import Simulator
from tests.sim.github.testing import AppKey, assert_clean

CPU = ["self-hosted", "cpu"]
POOLS = [dict(name="cpu", labels=["linux", "x64", "cpu"], max_runners=6)]
# The calls of recovery's class, by operationId.
RECOVERY_OPS = {
    "apps/list-webhook-deliveries",
    "apps/redeliver-webhook-delivery",
    "actions/list-workflow-runs-for-repo",
    "actions/list-jobs-for-workflow-run",
}
JIT_OP = "actions/generate-runner-jitconfig-for-org"
MAX_ATTEMPTS = 5  # GH_MAX_ATTEMPTS in github.c
# The simulator's retry_after_grace: a request already on its way when
# the refusal was sent is not one that ignored it.
GRACE = 1.0


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
        secondary_points_per_minute=100000,
        content_creating_per_minute=100000,
        delivery_timeout=5.0,
    )
    s.app_key_file = str(priv)
    s.start()
    yield s
    s.stop()
    assert_clean(s)


def recovery_yaml(interval: str = "1h", **extra) -> str:
    extra.setdefault("cursor_settle", "0s")
    lines = [f"  interval: {interval}"] + [f"  {k}: {v}" for k, v in extra.items()]
    return "recovery:\n" + "\n".join(lines) + "\n"


def stop_clean(d: Daemon) -> None:
    assert d.stop() == 0, d.log()[-3000:]
    report = d.sanitizer_report()
    assert report is None, report


def completed(sim: Simulator, ids: list[int]) -> bool:
    return all(sim.job(i)["status"] == "completed" for i in ids)


def deliveries_of(sim: Simulator, job_id: int) -> list[dict]:
    return [x for x in sim.deliveries() if x["job_id"] == job_id]


def test_webhooks_missed_while_down_are_redelivered_and_run(tmp_path, sim):
    d = Daemon(tmp_path, sim, pools=POOLS, extra=recovery_yaml()).start()
    try:
        seen = sim.add_job(labels=CPU, duration=0.1)
        sim.wait_for(lambda: completed(sim, [seen]), timeout=60)
        assert sim.wait_deliveries(10)
    finally:
        stop_clean(d)

    # runfleetd is down: GitHub's deliveries to it fail and are recorded.
    missed = [sim.add_job(labels=CPU, duration=0.1) for _ in range(3)]
    assert sim.wait_deliveries(20)
    for jid in missed:
        ds = deliveries_of(sim, jid)
        assert len(ds) == 1 and ds[0]["status_code"] == 0 and ds[0]["action"] == "queued", ds
    assert all(x["status_code"] == 200 for x in deliveries_of(sim, seen))

    d2 = Daemon(tmp_path, sim, pools=POOLS, extra=recovery_yaml())
    # GitHub's hook URL does not change across a restart: redeliveries the
    # first run asks for, before start() returns, go to the new daemon.
    sim.set_webhook_url(d2.public_url + "/webhook")
    d2.start()
    try:
        sim.wait_for(lambda: completed(sim, missed), timeout=90, message="redelivered jobs ran")
        assert all(sim.job(i)["conclusion"] == "success" for i in missed)
        # Runners are fungible: a job may have run before its own queued
        # redelivery was attempted.
        assert sim.wait_deliveries(10)
        # Each missed queued delivery was redelivered once, with its guid;
        # nothing of the job whose deliveries succeeded was.
        redelivered = [x for x in sim.deliveries() if x["redelivery"]]
        assert sorted(x["job_id"] for x in redelivered) == sorted(missed)
        guids = {x["guid"] for j in missed for x in deliveries_of(sim, j) if not x["redelivery"]
                 and x["action"] == "queued"}
        assert {x["guid"] for x in redelivered} == guids
        assert all(x["status_code"] == 200 for x in redelivered)
        assert sim.call_count("apps/redeliver-webhook-delivery") == len(missed)
        last = d2.wait_for(lambda: (d2.get("/api/v1/recovery").json()["recovery"]["last_run"]),
                           what="a finished recovery run")
        assert last["trigger"] == "start" and last["redelivered"] == len(missed)
        assert last["deliveries_failed"] == len(missed) and last["errors"] == 0
        assert last["cursor"] > 0
        assert d2.metric("runfleet_recovery_redelivered_total") == len(missed)
        assert d2.metric("runfleet_recovery_runs_total", trigger="start") == 1
        budget = d2.get("/api/v1/recovery").json()["recovery"]["budget"]
        assert budget["remaining"] > 0 and budget["reserve"] == 500
        assert d2.metric("runfleet_github_ratelimit_remaining") == budget["remaining"]
        assert d2.metric("runfleet_github_ratelimit_limit") == sim.rate_limit
        out = subprocess.run([str(bin_dir() / "runfleet"), "status", "--url", d2.url],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        line = next(x for x in out.stdout.splitlines() if x.startswith("recovery:"))
        assert "(start)" in line and f"{len(missed)} redelivered" in line
        assert any(x.startswith("github api:") for x in out.stdout.splitlines())
        assert 'id="recovery"' in d2.get("/").text
    finally:
        stop_clean(d2)

    # The cursor outlived the restart: a third start redelivers nothing.
    before = sim.call_count("apps/redeliver-webhook-delivery")
    d3 = Daemon(tmp_path, sim, pools=POOLS, extra=recovery_yaml()).start()
    try:
        last = d3.wait_for(lambda: d3.get("/api/v1/recovery").json()["recovery"]["last_run"],
                           what="a finished recovery run")
        assert last["redelivered"] == 0 and last["deliveries_failed"] == 0
    finally:
        stop_clean(d3)
    assert sim.call_count("apps/redeliver-webhook-delivery") == before


def test_queued_job_without_any_webhook_is_found_by_the_scan(tmp_path, sim):
    extra = recovery_yaml("500ms", repositories="[acme/gadgets]", wait_threshold="1s")
    d = Daemon(tmp_path, sim, pools=POOLS, extra=extra).start()
    try:
        # A job of acme/widgets makes it a repository seen recently (the
        # journal keeps it across the restart below).
        seen = sim.add_job(labels=CPU, repo="acme/widgets", duration=0.1)
        sim.wait_for(lambda: completed(sim, [seen]), timeout=60)
        assert sim.wait_deliveries(10)
    finally:
        stop_clean(d)

    # GitHub queues two jobs and never sends their webhooks; it also holds
    # them back from runners for a while.
    silent = [sim.add_job(labels=CPU, repo="acme/widgets", duration=0.1, webhook=False, hold=True),
              sim.add_job(labels=CPU, repo="acme/gadgets", duration=0.1, webhook=False, hold=True)]
    d = Daemon(tmp_path, sim, pools=POOLS, extra=extra)
    sim.set_webhook_url(d.public_url + "/webhook")
    d.start()
    try:
        d.wait_for(lambda: {j["id"] for j in d.api("jobs")} >= set(silent), what="the scan found both")
        first = d.wait_for(lambda: d.get("/api/v1/recovery").json()["recovery"]["last_run"], what="a run")
        assert first["trigger"] == "start" and first["scanned"] and first["jobs_found"] == len(silent)
        assert first["repositories_scanned"] == 2
        # Their runners idle while GitHub holds the jobs: that starts a scan
        # of its own, which finds them known and adds nothing.
        d.wait_for(lambda: d.metric("runfleet_recovery_runs_total", trigger="wait") >= 1, what="a wait run")
        assert d.metric("runfleet_recovery_jobs_found_total") == len(silent)
        for jid in silent:
            sim.release_job(jid)
        sim.wait_for(lambda: completed(sim, silent), timeout=90, message="silent jobs ran")
        for jid in silent:
            assert sim.job(jid)["conclusion"] == "success"
            # No queued delivery ever went out; later events did, and the
            # scheduler took them for the job the scan had found.
            assert sim.wait_deliveries(10)
            assert [x["action"] for x in deliveries_of(sim, jid)] == ["in_progress", "completed"]
        d.wait_for(lambda: {j["id"]: j["status"] for j in d.api("jobs") if j["id"] in silent}
                   == {silent[0]: "completed", silent[1]: "completed"}, what="jobs completed in the API")
        assert d.metric("runfleet_recovery_jobs_found_total") == len(silent)
        assert d.metric("runfleet_webhooks_total", event="recovery", result="accepted") == len(silent)
        # The periodic runs read deliveries only: no scan between them.
        scans = sim.call_count("actions/list-workflow-runs-for-repo")
        runs = d.metric("runfleet_recovery_runs_total", trigger="interval")
        d.wait_for(lambda: d.metric("runfleet_recovery_runs_total", trigger="interval") >= runs + 2,
                   what="two periodic runs")
        assert sim.call_count("actions/list-workflow-runs-for-repo") == scans
        last = d.get("/api/v1/recovery").json()["recovery"]["last_run"]
        assert last["trigger"] == "interval" and not last["scanned"]
    finally:
        stop_clean(d)


def error_chains(log: list[dict]) -> dict[str, int]:
    """The longest run of consecutive failed answers (5xx, 403, 429, none)
    to the same request path, by path: the attempts of one call."""
    longest: dict[str, int] = {}
    current: dict[str, int] = {}
    for r in log:
        failed = r["status"] == 0 or r["status"] >= 500 or r["status"] in (403, 429)
        current[r["path"]] = current.get(r["path"], 0) + 1 if failed else 0
        longest[r["path"]] = max(longest.get(r["path"], 0), current[r["path"]])
    return longest


def test_faults_and_secondary_limit_every_job_served_jit_first(tmp_path, sim):
    extra = recovery_yaml("300ms", call_budget=40, repositories="[acme/widgets, acme/gadgets, acme/models]")
    # One job GitHub never announced, there before runfleetd starts.
    silent = sim.add_job(labels=CPU, repo="acme/models", duration=0.1, webhook=False)
    d = Daemon(tmp_path, sim, pools=POOLS, extra=extra).start()
    try:
        d.wait_for(lambda: d.get("/api/v1/recovery").json()["recovery"]["runs"] >= 1, what="a first run")
        # The next two requests fail for certain (a 10% chance alone can
        # miss a run this short), then one in ten until the end.
        sim.faults(error_ratio=1.0, error_status=502, count=2)
        sim.exhaust_secondary(4)
        ids = [sim.add_job(labels=CPU, repo=r, duration=0.1)
               for r in ("acme/widgets", "acme/gadgets", "acme/models") for _ in range(4)]
        ids.append(silent)
        sim.wait_for(lambda: sum(r["status"] == 502 for r in sim.requests()) >= 2, timeout=30,
                     message="the first two requests failed")
        sim.faults(error_ratio=0.1, error_status=502)
        sim.wait_for(lambda: completed(sim, ids), timeout=180, message="every job served")
        sim.faults()
        assert all(sim.job(i)["conclusion"] == "success" for i in ids)
        d.wait_for(lambda: [r for r in d.runners() if r["state"] != "idle"] == [], what="runners settle")
    finally:
        stop_clean(d)

    log = sim.requests()
    jit_refused = [r for r in log if r["operation"] == JIT_OP and r["retry_after"] is not None]
    assert jit_refused, "the exhausted secondary limit refused no JIT request"
    assert any(r["status"] == 502 for r in log), "no 5xx fault was injected"
    assert any(r["operation"] in RECOVERY_OPS for r in log)
    # Retry-After obeyed: nothing content-creating of the same principal
    # (JWT or token) between a refusal and the end of its Retry-After.
    for ref in [r for r in log if r["retry_after"] is not None]:
        until = ref["time"] + int(ref["retry_after"])
        early = [r for r in log if r["method"] == "POST" and r["auth"] == ref["auth"]
                 and ref["time"] + GRACE < r["time"] < until - 0.05]
        assert early == [], (ref, early)
    # Recovery waits while a refused JIT request waits for its retry.
    for ref in jit_refused:
        until = ref["time"] + int(ref["retry_after"])
        rec = [r for r in log if r["operation"] in RECOVERY_OPS and ref["time"] + GRACE < r["time"] < until - 0.05]
        assert rec == [], (ref, rec)
    # Bounded retries: no path failed more than MAX_ATTEMPTS times in a row
    # (a JIT request is never retried after a 5xx, and each path of the
    # other calls belongs to one call at a time).
    chains = {p: n for p, n in error_chains(log).items() if n > MAX_ATTEMPTS and "generate-jitconfig" not in p}
    assert chains == {}, chains
    assert sim.retry_after_ignored() == []


def test_recovery_never_goes_while_a_jit_request_waits(tmp_path, sim):
    """JIT requests paced at 30 a minute (a burst of 10, then one every
    2 s) for 14 jobs at once: while the last four wait in the pace, the
    recovery that would run every 200 ms sends nothing."""
    pools = [dict(name="cpu", labels=["linux", "x64", "cpu"], max_runners=20)]
    extra = recovery_yaml("200ms", repositories="[acme/widgets, acme/gadgets, acme/models]")
    d = Daemon(tmp_path, sim, pools=pools, cpu_slots=20, mutations_per_minute=30, extra=extra).start()
    try:
        d.wait_for(lambda: d.get("/api/v1/recovery").json()["recovery"]["runs"] >= 2, what="recovery runs")
        start = len(sim.requests())
        ids = [sim.add_job(labels=CPU, repo="acme/widgets", duration=0.1) for _ in range(14)]
        sim.wait_for(lambda: completed(sim, ids), timeout=120, message="every job served")
    finally:
        stop_clean(d)
    log = sim.requests()[start:]
    jits = [r for r in log if r["operation"] == JIT_OP]
    assert len(jits) == 14 and all(r["status"] == 201 for r in jits)
    # From the last queued webhook's answer on, the JIT requests not sent
    # yet all wait in the pace (the 10 of the burst went at once).
    queued = [x for x in sim.deliveries() if x["job_id"] in ids and x["action"] == "queued"]
    last_answer = max(x["delivered_at"] + x["duration"] for x in queued)
    paced_from, paced_to = max(jits[9]["time"], last_answer), jits[13]["time"]
    assert paced_to - paced_from > 3, "the pace let the burst through"
    rec = [r for r in log if r["operation"] in RECOVERY_OPS and paced_from + 0.5 < r["time"] < paced_to - 0.05]
    assert rec == [], rec
    # Recovery was busy around the burst: it only yielded.
    assert [r for r in log if r["operation"] in RECOVERY_OPS and r["time"] > paced_to]


def test_a_job_waiting_with_an_idle_runner_starts_a_run(tmp_path, sim):
    """GitHub holds a queued job back from every runner: runfleetd's
    runner for it sits idle past recovery.wait_threshold, and that starts
    a recovery run of its own (trigger "wait")."""
    extra = recovery_yaml("1h", wait_threshold="1s")
    d = Daemon(tmp_path, sim, pools=POOLS, extra=extra).start()
    try:
        d.wait_for(lambda: d.get("/api/v1/recovery").json()["recovery"]["runs"] >= 1, what="the start run")
        assert d.metric("runfleet_recovery_runs_total", trigger="wait") == 0
        jid = sim.add_job(labels=CPU, duration=0.1, hold=True)
        d.wait_for(lambda: [r for r in d.runners() if r["state"] == "idle"], what="an idle runner")
        d.wait_for(lambda: d.metric("runfleet_recovery_runs_total", trigger="wait") >= 1, what="a wait run")
        assert "a queued job waits with capacity free" in d.log()
        sim.release_job(jid)
        sim.wait_for(lambda: completed(sim, [jid]), timeout=60)
        # The job ran; the runs it started stay at most one a threshold.
        runs = d.metric("runfleet_recovery_runs_total", trigger="wait")
        last = d.get("/api/v1/recovery").json()["recovery"]["last_run"]
        assert last["jobs_found"] == 0 and runs >= 1
    finally:
        stop_clean(d)


def test_pat_mode_scans_without_the_deliveries_api(tmp_path, app_key_files):
    """With a PAT there is no deliveries API: recovery never calls it,
    says so, and the scan still finds a job that no webhook announced."""
    priv, pub = app_key_files
    pat = "ghp_recoveryTestPersonalAccessToken01"
    s = Simulator(app_id=4242, app_public_key_pem=pub, webhook_secret=b"runfleet-test-secret",
                  installation_id=77, org="acme", repos=["acme/widgets"], pat=pat,
                  secondary_points_per_minute=100000, content_creating_per_minute=100000)
    s.app_key_file = str(priv)
    s.start()
    try:
        pat_file = tmp_path / "pat"
        pat_file.write_text(pat + "\n")
        pat_file.chmod(0o600)
        d = Daemon(tmp_path, s, pools=POOLS, extra=recovery_yaml("300ms", repositories="[acme/widgets]"))
        app_line = next(x for x in d.config_text.splitlines() if x.startswith("  app: "))
        d.config_text = d.config_text.replace(app_line, f"  pat_file: {pat_file}")
        d.config_path.write_text(d.config_text)
        silent = s.add_job(labels=CPU, duration=0.1, webhook=False)
        d.start()
        try:
            s.wait_for(lambda: completed(s, [silent]), timeout=60, message="the silent job ran")
            rec = d.get("/api/v1/recovery").json()["recovery"]
            assert rec["last_run"]["deliveries_api"] is False
            assert rec["budget"]["app_remaining"] is None
            out = subprocess.run([str(bin_dir() / "runfleet"), "status", "--url", d.url],
                                 capture_output=True, text=True)
            assert "PAT mode: no deliveries API" in out.stdout, out.stdout
        finally:
            stop_clean(d)
        assert s.call_count("apps/list-webhook-deliveries") == 0
        assert s.call_count("apps/redeliver-webhook-delivery") == 0
        assert all(r["auth"] == "token" for r in s.requests())
    finally:
        s.stop()
    assert_clean(s)
