"""What the journal costs: ingest with it on and off, ack latency at half
the sustained rate, its size per 1,000 jobs, and replay of 100,000 jobs.

runfleetd (release build, logging at warn) runs against the GitHub
simulator with one pool of one runner, so the jobs it is told of stay
queued. wrk drives pre-signed workflow_job deliveries (GitHub's example
payloads, a job queued and then completed, each delivery with its own id)
over 8 keep-alive connections.

- Ingest: the same deliveries with journal.enabled false (the same-run
  reference), with sync: full (the default) and with sync: normal. Then
  each again paced at half the rate the journal-off run sustained, for
  the ack latency at that rate.
- Size: the journal file after 1,000 jobs (queued + completed each),
  checkpointed by a clean stop, per 1,000 jobs.
- Replay: 100,000 queued jobs journaled through the daemon, then a
  restart; the time its replay took (from its log line), against the
  same-run reference of reading the same rows with SQLite alone.

Prints one table. Rates are the best of a few runs (other load only slows
a run down); BENCH_SECONDS sets the length of each run.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_webhook import (  # noqa: E402
    measured_requests,
    preload,
    preload_requests,
    wrk,
    wrk_cmd,
    write_requests,
)
from tests.runfleetd import Daemon  # noqa: E402
from tests.sim.github import Simulator  # noqa: E402
from tests.sim.github.testing import AppKey  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
RUNS = 2
REPLAY_JOBS = int(os.environ.get("BENCH_REPLAY_JOBS", "100000"))


def daemon(tmp: Path, sim: Simulator, journal: str) -> Daemon:
    tmp.mkdir(parents=True, exist_ok=True)
    extra = {"off": "journal: {enabled: false}\n", "full": "journal: {sync: full}\n",
             "normal": "journal: {sync: normal}\n"}[journal]
    d = Daemon(tmp, sim, pools=[dict(name="held", labels=["linux", "held"], max_runners=1)],
               max_body_bytes=1 << 20, extra=extra)
    d.config_text = d.config_text.replace("level: debug", "level: warn")
    d.config_path.write_text(d.config_text)
    return d.start()


def rate(r: dict) -> float:
    return r["requests"] / (r["duration_us"] / 1e6)


def paced(url: str, requests_file: Path, per_second: float, seconds: float) -> dict:
    """wrk with each of its 8 connections sending one request per delay."""
    delay_ms = max(1, round(8 * 1000 / per_second))
    cmd = wrk_cmd(url, requests_file, seconds) + [str(delay_ms)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("result "))
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}


def ingest(tmp: Path, sim: Simulator, journal: str) -> dict:
    d = daemon(tmp / f"ingest-{journal}", sim, journal)
    try:
        req = d.tmp / "measured.req"
        write_requests(req, measured_requests(d.port, d.secret))
        wrk(d.public_url, req, 2)  # warm up
        best = max((wrk(d.public_url, req, SECONDS) for _ in range(RUNS)), key=rate)
        return {"daemon": d, "req": req, "sat": best}
    except Exception:
        d.stop()
        raise


def journal_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def size_per_1000(tmp: Path, sim: Simulator) -> int:
    d = daemon(tmp / "size", sim, "full")
    try:
        req = d.tmp / "size.req"
        # measured_requests: queued then completed for each job, in turn.
        write_requests(req, measured_requests(d.port, d.secret)[:2000])
        p = subprocess.Popen(wrk_cmd(d.public_url, req, 600), stdout=subprocess.DEVNULL)
        try:
            d.wait_for(lambda: d.metric("runfleet_journal_events_total") >= 2000, timeout=120,
                       what="2,000 events journaled")
        finally:
            p.terminate()
            p.wait(30)
    finally:
        d.stop()
    return journal_bytes(d.tmp / "journal.db")


def replay(tmp: Path, sim: Simulator) -> tuple[float, float, int]:
    d = daemon(tmp / "replay", sim, "normal")
    try:
        pre = d.tmp / "preload.req"
        write_requests(pre, preload_requests(d.port, d.secret, 0, REPLAY_JOBS))
        preload(d, pre, REPLAY_JOBS)
    finally:
        d.stop()
    db_path = d.tmp / "journal.db"
    size = journal_bytes(db_path)
    # The same-run reference: SQLite alone reading every row replay reads.
    t0 = time.monotonic()
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT type, job_id, at_ms, delivery, action, run_id, repo, name, labels, "
                      "runner, conclusion FROM job_events ORDER BY seq").fetchall()
    db.close()
    raw = time.monotonic() - t0
    assert len(rows) >= REPLAY_JOBS, len(rows)
    d2 = d.successor()
    d2.config_path.write_text(d.config_text.replace("level: warn", "level: info"))
    d2.start(timeout=120)
    try:
        m = re.search(r'msg="journal replayed" events=(\d+) runners=\d+ seconds=([0-9.e-]+)', d2.log())
        assert m, d2.log()[-2000:]
        assert int(m.group(1)) >= REPLAY_JOBS
        return float(m.group(2)), raw, size
    finally:
        d2.stop()


def main() -> int:
    if shutil.which("wrk") is None:
        print("bench_journal: wrk is not installed (scripts/dev.sh installs it)", file=sys.stderr)
        return 2
    os.environ.setdefault("RUNFLEET_BIN_DIR", str(ROOT / "build" / "bin"))
    with tempfile.TemporaryDirectory(prefix="runfleet-bench-journal-") as tmpdir:
        tmp = Path(tmpdir)
        key = AppKey(str(tmp))
        sim = Simulator(app_id=1, app_public_key_pem=key.public_pem, installation_id=1, org="acme")
        sim.app_key_file = key.private_path
        sim.start()
        try:
            runs = {}
            for journal in ("off", "full", "normal"):
                runs[journal] = ingest(tmp, sim, journal)
            half = rate(runs["off"]["sat"]) / 2
            try:
                for journal, r in runs.items():
                    r["half"] = min((paced(r["daemon"].public_url, r["req"], half, SECONDS)
                                     for _ in range(RUNS)), key=lambda x: x["p99_us"])
            finally:
                for r in runs.values():
                    r["daemon"].stop()
            size = size_per_1000(tmp, sim)
            replay_s, raw_s, replay_bytes = replay(tmp, sim)
        finally:
            sim.stop()
    off = rate(runs["off"]["sat"])
    print(f"{'journal':>8} {'webhooks/s':>11} {'vs off':>7} {'p99 ms':>7} "
          f"{'at ' + format(half, '.0f') + '/s: p50 ms':>17} {'p99 ms':>7} {'errors':>7}")
    for journal, r in runs.items():
        s, h = r["sat"], r["half"]
        errors = s["status_errors"] + s["socket_errors"] + h["status_errors"] + h["socket_errors"]
        print(f"{journal:>8} {rate(s):>11.0f} {rate(s) / off:>6.2f}x {s['p99_us'] / 1e3:>7.2f} "
              f"{h['p50_us'] / 1e3:>17.2f} {h['p99_us'] / 1e3:>7.2f} {errors:>7.0f}")
    print(f"journal size: {size / 1024:.0f} KiB per 1,000 jobs (queued + completed each, after a clean stop)")
    print(f"replay of {REPLAY_JOBS:,} queued jobs: {replay_s:.3f} s; SQLite alone reading the same rows: "
          f"{raw_s:.3f} s ({replay_s / raw_s:.2f}x); journal {replay_bytes / 1e6:.1f} MB")
    print(f"wrk -t1 -c8, best of {RUNS} runs of {SECONDS:.0f} s per row; sync full = fsync per commit, "
          "normal = fsync at checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
