"""Nothing accepted is lost: runfleetd's journal (SQLite, WAL) against
kill -9, a damaged journal file and a full disk, with the real daemon on
the local backend and the GitHub simulator."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
import requests
from tests.runfleetd import Daemon
from tests.sim.github import Simulator
from tests.sim.github.testing import AppKey, assert_clean
from tests.sim.github.webhooks import signature_256


@pytest.fixture(scope="module")
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
        repos=["acme/widgets", "acme/gadgets"],
        secondary_points_per_minute=100000,
        content_creating_per_minute=100000,
        delivery_timeout=5.0,
    )
    s.app_key_file = str(priv)
    s.start()
    yield s
    s.stop()
    assert_clean(s)


CPU = [dict(name="cpu", labels=["linux", "cpu"], max_runners=2)]


def restart(d: Daemon) -> Daemon:
    """A new runfleetd on the same state_dir, ports and config."""
    return d.successor().start()


def kill9(d: Daemon) -> None:
    d.signal(signal.SIGKILL)
    d.proc.wait(10)
    d._log_fh.close()


def finish(d: Daemon) -> None:
    rc = d.stop()
    assert rc == 0, d.log()[-3000:]
    report = d.sanitizer_report()
    assert report is None, report


def post(d: Daemon, body: dict, delivery: str | None = None) -> requests.Response:
    raw = json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "workflow_job",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature_256(d.secret, raw),
        "User-Agent": "GitHub-Hookshot/test",
    }
    return requests.post(d.public_url + "/webhook", data=raw, headers=headers, timeout=10)


def queued_body(job_id: int, labels=("self-hosted", "linux", "cpu")) -> dict:
    return {
        "action": "queued",
        "workflow_job": {
            "id": job_id,
            "run_id": job_id + 100000,
            "name": "build",
            "labels": list(labels),
            "status": "queued",
        },
        "repository": {"full_name": "acme/widgets"},
    }


def known_jobs(d: Daemon) -> dict[int, dict]:
    return {j["id"]: j for j in d.api("jobs")}


def test_queued_jobs_survive_kill_9(tmp_path, sim):
    """The measured failure: 6 jobs queued, kill -9, restart. The restarted
    daemon knows all 6, with their queue times, and each runs once."""
    d = Daemon(tmp_path, sim, pools=CPU).start()
    ids = [sim.add_job(labels=["self-hosted", "cpu"], duration=0.1, hold=True) for _ in range(6)]
    d.wait_for(lambda: all(i in known_jobs(d) for i in ids), what="6 jobs known")
    before = known_jobs(d)
    kill9(d)
    d2 = restart(d)
    try:
        after = known_jobs(d2)
        for i in ids:
            assert after[i]["status"] == "queued", after[i]
            assert after[i]["queued_at"] == before[i]["queued_at"]
        assert "journal replayed" in d2.log()
        for i in ids:
            sim.release_job(i)
        sim.wait_for(lambda: all(sim.job(i)["status"] == "completed" for i in ids), timeout=60)
        for i in ids:
            job = sim.job(i)
            assert job["conclusion"] == "success", job
            assert len(job.get("runs", [job])) == 1
        d2.wait_for(lambda: all(known_jobs(d2)[i]["status"] == "completed" for i in ids),
                    what="completions applied")
        assert d2.metric("runfleet_jobs_queued") == 0
    finally:
        finish(d2)


def test_acknowledged_delivery_survives_a_crash_right_after(tmp_path, sim):
    """A 200 means written: kill -9 the moment the answer came back, and
    the job is there after the restart; the same delivery sent again is a
    duplicate, even to the new process."""
    d = Daemon(tmp_path, sim, pools=[dict(name="cpu", labels=["linux", "cpu"], max_runners=1)]).start()
    delivery = str(uuid.uuid4())
    r = post(d, queued_body(987654), delivery)
    assert r.status_code == 200, r.text
    kill9(d)
    d2 = restart(d)
    try:
        assert known_jobs(d2)[987654]["status"] == "queued"
        again = post(d2, queued_body(987654), delivery)
        assert again.status_code == 200
        assert "duplicate" in again.text
        assert d2.metric("runfleet_webhooks_total", result="duplicate") == 1
    finally:
        finish(d2)


def test_damaged_journal_is_kept_aside_and_a_new_one_started(tmp_path, sim):
    d = Daemon(tmp_path, sim, pools=CPU)
    journal = tmp_path / "journal.db"
    journal.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    d.start()
    try:
        log = d.log()
        assert "journal is damaged" in log, log[-2000:]
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("journal.db.damaged-")]
        assert len(aside) == 1, list(tmp_path.iterdir())
        assert aside[0].read_bytes()[:16] == b"SQLite format 3\x00"
        assert d.metric("runfleet_journal_damaged_total") == 1
        # The new journal takes deliveries as usual.
        jid = sim.add_job(labels=["self-hosted", "cpu"], duration=0.1)
        sim.wait_for(lambda: sim.job(jid)["status"] == "completed", timeout=30)
    finally:
        finish(d)
    db = sqlite3.connect(journal)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM job_events WHERE job_id = ?", (jid,)).fetchone()[0] >= 1
    finally:
        db.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a disk that can really fill up."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; CI runs as root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_answers_503_and_never_200_for_what_was_not_written(tmp_path, sim, small_disk):
    journal = small_disk / "journal.db"
    d = Daemon(tmp_path, sim, pools=[dict(name="cpu", labels=["linux", "cpu"], max_runners=1)],
               extra=f"journal: {{path: {journal}}}\n").start()
    filler = small_disk / "filler"
    try:
        # Fill the disk to the last few KiB.
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        answers = {}
        for n in range(300):
            delivery = str(uuid.uuid4())
            answers[delivery] = (5000 + n, post(d, queued_body(5000 + n), delivery))
        codes = [r.status_code for _, r in answers.values()]
        assert set(codes) <= {200, 503}, codes
        refused = [dl for dl, (_, r) in answers.items() if r.status_code == 503]
        assert refused, "the disk never filled"
        for dl in refused:
            assert "journal full" in answers[dl][1].text
        # Room again: GitHub's redelivery of a refused one is new, not a
        # duplicate, and gets its 200.
        filler.unlink()
        job_id, _ = answers[refused[0]]
        again = post(d, queued_body(job_id), refused[0])
        assert again.status_code == 200 and "accepted" in again.text, again.text
        assert d.metric("runfleet_webhooks_total", result="failed") == len(refused)
    finally:
        finish(d)
    # Every 200 is in the journal; nothing answered 503 is, but for the
    # one redelivered after the disk had room.
    db = sqlite3.connect(journal)
    try:
        kept = {row[0] for row in db.execute("SELECT delivery FROM job_events")}
    finally:
        db.close()
    for dl, (_, r) in answers.items():
        if r.status_code == 200:
            assert dl in kept
        elif dl != refused[0]:
            assert dl not in kept
    assert refused[0] in kept


KILLS = 5
BURST = 500


def test_kill_9_at_random_moments_during_a_burst(tmp_path, app_key_files):
    """500 jobs over two pools; runfleetd is killed with SIGKILL 5 times at
    random moments and restarted on the same state_dir each time. Every
    job is served by exactly one runner; afterwards no runner process,
    work directory, pid file or registration of this fleet is left.
    Deliveries that failed while it was down come back through the
    deliveries API; what it had answered comes back from the journal."""
    import random
    import threading
    import time

    priv, pub = app_key_files
    sim = Simulator(
        app_id=4242, app_public_key_pem=pub, webhook_secret=b"runfleet-test-secret",
        installation_id=77, org="acme", repos=["acme/widgets", "acme/gadgets", "acme/models"],
        secondary_points_per_minute=100000, content_creating_per_minute=100000,
        delivery_timeout=3.0,
        # A runner that stops heartbeating fails its job after a while (10
        # minutes at GitHub). Runners are adopted, not killed, so this only
        # ends a job whose runner really died; long enough that a runner
        # starved of CPU on a busy machine is not taken for dead.
        runner_lost_timeout=30.0,
    )
    sim.app_key_file = str(priv)
    sim.start()
    rng = random.Random(20261202)
    pools = [dict(name="cpu", labels=["linux", "cpu"], max_runners=6),
             dict(name="gpu-1", labels=["linux", "gpu-1"], max_runners=4, gpus=1)]
    # kill -9 loses nothing of the page cache: sync normal is what this
    # needs (full adds an fsync to every delivery the simulator sends,
    # one at a time, as GitHub sends one job's events).
    extra = "recovery: {interval: 2s, window: 1h}\njournal: {sync: normal}\n"
    d = Daemon(tmp_path, sim, pools=pools, extra=extra, log_level="info").start()
    ids: list[int] = []
    recover_s: list[float] = []
    stop_adding = threading.Event()

    def add_jobs():
        for n in range(BURST):
            if stop_adding.is_set():
                return
            labels = ["self-hosted", "cpu"] if n % 3 else ["self-hosted", "gpu-1"]
            ids.append(sim.add_job(labels=labels, repo=f"acme/{['widgets', 'gadgets', 'models'][n % 3]}",
                                   duration=rng.uniform(0.05, 0.3)))
            time.sleep(0.1)

    adder = threading.Thread(target=add_jobs, daemon=True)
    adder.start()
    try:
        for k in range(KILLS):
            time.sleep(rng.uniform(2.0, 6.0))
            kill9(d)
            down = rng.uniform(0.0, 1.5)
            time.sleep(down)
            t0 = time.monotonic()
            d = restart(d)

            # Recovered: every job GitHub still has queued is known to the
            # daemon again (journal replay plus redelivered deliveries).
            missing: list = []

            def recovered():
                queued = {j["id"] for j in sim.jobs() if j["status"] == "queued"}
                known = set(known_jobs(d))
                missing[:] = sorted(queued - known)
                return not missing

            try:
                d.wait_for(recovered, timeout=150, what=f"recovery after kill {k + 1}")
            except AssertionError:
                lost = [x for x in sim.deliveries() if x["job_id"] in missing[:5]]
                raise AssertionError(f"not known after kill {k + 1}: {missing[:20]}; "
                                     f"their deliveries: {[(x['id'], x['status_code'], x['redelivery']) for x in lost]}")
            recover_s.append(time.monotonic() - t0)
        adder.join(120)
        assert len(ids) == BURST

        def all_done():
            jobs = {j["id"]: j for j in sim.jobs()}
            return all(jobs[i]["status"] == "completed" for i in ids)

        sim.wait_for(all_done, timeout=420)
        jobs = {j["id"]: j for j in sim.jobs()}
        failed = [i for i in ids if jobs[i]["conclusion"] != "success"]
        for i in ids:
            j = jobs[i]
            # One runner took it, once.
            assert j["events"].count("in_progress") == 1, j
            assert j["events"].count("completed") == 1, j
        # Runners outlive the kills and are adopted (each is journaled
        # before it starts, and its pid file is written before the fork and
        # again after it), so every job runs to the end.
        for i in failed:
            print(f"\nfailed job after the kills: {jobs[i]}")
        assert failed == [], [jobs[i] for i in failed]
        assert all(r["jobs_taken"] <= 1 for r in sim.runners(include_removed=True)), "a runner took two jobs"
        # Settled: no runner of this fleet left registered.
        tag = (tmp_path / "fleet-id").read_text().strip()
        d.wait_for(lambda: d.runners() == [], timeout=60, what="no runners left")
        sim.wait_for(lambda: not [r for r in sim.runners() if f"-{tag}-" in r["name"]], timeout=60)
        redelivered = len([x for x in sim.deliveries() if x.get("redelivery")])
        print(f"\nkill test: {BURST} jobs, {KILLS} kills, {len(failed)} jobs failed, "
              f"{redelivered} deliveries redelivered, time to recover: worst {max(recover_s):.1f} s, "
              f"all {', '.join(f'{s:.1f}' for s in recover_s)} s")
        assert sim.invalid_requests() == []
    finally:
        stop_adding.set()
        rc = d.stop()
        sim.stop()
    assert rc == 0, d.log()[-3000:]
    assert d.sanitizer_report() is None, d.sanitizer_report()
    assert d.leftovers() == [], d.leftovers()
    out = subprocess.run(["pgrep", "-f", str(d.work_root)], capture_output=True, text=True)
    assert out.stdout.strip() == "", out.stdout
    assert_clean(sim)
