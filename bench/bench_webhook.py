"""How fast runfleetd takes signed webhooks as its queue grows.

runfleetd (release build, logging at warn) runs against the GitHub
simulator with one pool of one runner, so every job it is told of stays
queued. wrk drives pre-signed workflow_job deliveries (GitHub's example
payloads, each with its own X-GitHub-Delivery) over 8 keep-alive
connections: a job queued, then the same job completed, for more jobs than
the daemon keeps and more deliveries than it remembers, so every request
is parsed and applied and the queue does not grow. That is measured with
0, 10,000 and 100,000 jobs queued beforehand (small deliveries sent by wrk
until that many are queued). The reference is the floor measured in the same run:
bench_floor checks the signature of and parses the same bodies on one core,
which every delivery costs before runfleetd does anything of its own.
Prints one table. Each row and the floor is the best of a few runs (other
load only slows a run down); BENCH_SECONDS sets the length of each run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.runfleetd import Daemon  # noqa: E402
from tests.sim.github import Simulator  # noqa: E402
from tests.sim.github.testing import AppKey  # noqa: E402
from tests.sim.github.webhooks import signature_256  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
# Each number is the best of RUNS: on a shared machine the other load only
# ever slows a run down.
RUNS = 2
QUEUED = (0, 10_000, 100_000)
# Deliveries per cycle: past the 8,192 delivery ids the daemon remembers,
# and jobs past the 1,000 completed ones it keeps, so none is a repeat.
MEASURED = 8_400
REPOS = 500
LABELS = ["self-hosted", "linux", "held"]


def raw_request(port: int, body: bytes, secret: bytes) -> bytes:
    head = (
        "POST /webhook HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        "X-GitHub-Event: workflow_job\r\n"
        f"X-GitHub-Delivery: {uuid.uuid4()}\r\n"
        f"X-Hub-Signature-256: {signature_256(secret, body)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def write_requests(path: Path, requests: list[bytes]) -> None:
    with open(path, "wb") as f:
        for r in requests:
            f.write(b"%d\n" % len(r))
            f.write(r)


def examples() -> dict[str, dict]:
    index = json.loads((ROOT / "node_modules/@octokit/webhooks-examples/api.github.com/index.json").read_text())
    found = next(x for x in index if x["name"] == "workflow_job")["examples"]
    return {a: next(e for e in found if e["action"] == a) for a in ("queued", "completed")}


def measured_requests(port: int, secret: bytes) -> list[bytes]:
    ex = examples()
    out = []
    for i in range(MEASURED // 2):
        for action in ("queued", "completed"):
            e = json.loads(json.dumps(ex[action]))
            e["workflow_job"]["id"] = 50_000_000 + i
            e["workflow_job"]["labels"] = LABELS
            e["workflow_job"]["runner_name"] = None
            e["repository"]["full_name"] = f"acme/repo-{i % REPOS}"
            if action == "completed":
                e["workflow_job"]["conclusion"] = "cancelled"
            out.append(raw_request(port, json.dumps(e).encode(), secret))
    return out


def preload_requests(port: int, secret: bytes, first: int, count: int) -> list[bytes]:
    out = []
    for i in range(first, first + count):
        body = json.dumps({
            "action": "queued",
            "workflow_job": {"id": 1_000_000 + i, "run_id": 1_000_000 + i // 4, "name": f"build {i % 7}",
                             "labels": LABELS, "runner_name": None, "conclusion": None},
            "repository": {"full_name": f"acme/repo-{i % REPOS}"},
        }).encode()
        out.append(raw_request(port, body, secret))
    return out


def wrk_cmd(url: str, requests_file: Path, seconds: float) -> list[str]:
    return ["wrk", "-t1", "-c8", f"-d{seconds:.0f}s", "--timeout", "10s", "-s",
            str(ROOT / "bench" / "webhook.lua"), url, "--", str(requests_file)]


def wrk(url: str, requests_file: Path, seconds: float) -> dict[str, float]:
    out = subprocess.run(wrk_cmd(url, requests_file, seconds), capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("result "))
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}


def preload(d: Daemon, requests_file: Path, target: int) -> None:
    """Sends the requests (wrk cycles through them; repeats are dropped as
    duplicates) until the daemon has target jobs queued."""
    p = subprocess.Popen(wrk_cmd(d.public_url, requests_file, 600), stdout=subprocess.DEVNULL)
    try:
        d.wait_for(lambda: queued(d) >= target, timeout=300, what=f"{target} jobs queued")
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(30)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def queued(d: Daemon) -> int:
    return int(sum(p["demand"] for p in d.api("pools")))


def main() -> int:
    if shutil.which("wrk") is None:
        print("bench_webhook: wrk is not installed (scripts/dev.sh installs it)", file=sys.stderr)
        return 2
    bin_dir = Path(os.environ.setdefault("RUNFLEET_BIN_DIR", str(ROOT / "build" / "bin")))
    with tempfile.TemporaryDirectory(prefix="runfleet-bench-") as tmpdir:
        tmp = Path(tmpdir)
        key = AppKey(str(tmp))
        sim = Simulator(app_id=1, app_public_key_pem=key.public_pem, installation_id=1, org="acme")
        sim.app_key_file = key.private_path
        sim.start()
        d = Daemon(tmp, sim, pools=[dict(name="held", labels=["linux", "held"], max_runners=1)],
                   max_body_bytes=1 << 20)
        d.config_path.write_text(d.config_path.read_text().replace("level: debug", "level: warn"))
        d.start()
        rows = []
        try:
            measured = tmp / "measured.req"
            write_requests(measured, measured_requests(d.port, d.secret))
            size = measured.stat().st_size / MEASURED / 1024
            floor = max(float(subprocess.run(
                [str(bin_dir / "bench_floor"), str(measured), str(d.secret_file), "1.5"],
                capture_output=True, text=True, check=True).stdout.split()[1]) for _ in range(2 * RUNS))
            have = 0
            for target in QUEUED:
                if target > have:
                    pre = tmp / "preload.req"
                    write_requests(pre, preload_requests(d.port, d.secret, have, target - have))
                    preload(d, pre, target)
                    have = target
                wrk(d.public_url, measured, 2)  # warm up: the daemon keeps its completed jobs from here on
                r = max((wrk(d.public_url, measured, SECONDS) for _ in range(RUNS)),
                        key=lambda x: x["requests"] / x["duration_us"])
                rows.append((target, queued(d), r, rss_kb(d.proc.pid)))
        finally:
            rc = d.stop()
            sim.stop()
        base = rows[0]
        print(f"{'queued':>8} {'webhooks/s':>11} {'p99 ms':>7} {'vs 0 queued':>12} {'vs floor':>9} "
              f"{'RSS MB':>7} {'bytes/job':>10}")
        for target, _, r, rss in rows:
            rate = r["requests"] / (r["duration_us"] / 1e6)
            base_rate = base[2]["requests"] / (base[2]["duration_us"] / 1e6)
            per_job = f"{(rss - base[3]) * 1024 / target:.0f}" if target else "-"
            bad = "" if r["status_errors"] == 0 and r["socket_errors"] == 0 else \
                f"  ({r['status_errors']:.0f} non-2xx, {r['socket_errors']:.0f} socket errors)"
            print(f"{target:>8} {rate:>11.0f} {r['p99_us'] / 1e3:>7.2f} {rate / base_rate:>11.2f}x "
                  f"{rate / floor:>8.2f}x {rss / 1024:>7.1f} {per_job:>10}{bad}")
        print(f"floor (signature + JSON parse, one core): {floor:.0f} bodies/s; wrk -t1 -c8, "
              f"best of {RUNS} runs of {SECONDS:.0f} s per row, {MEASURED} deliveries of ~{size:.1f} KiB in turn")
        return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
