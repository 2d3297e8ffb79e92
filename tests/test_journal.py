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


def restart(d: Daemon, **kw) -> Daemon:
    """A new runfleetd on the same state_dir, ports and config."""
    d2 = Daemon(d.tmp, d.sim, pools=d.pools, **kw)
    d2.port, d2.url, d2.admin_port, d2.public_url = d.port, d.url, d.admin_port, d.public_url
    d2.config_text = d.config_text
    d2.config_path.write_text(d.config_text)
    return d2.start()


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
