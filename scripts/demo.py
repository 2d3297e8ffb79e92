"""The runfleet demo: the GitHub simulator, runfleetd on the local backend
with the fake runner and four pretend GPUs, and a burst of jobs over a CPU
pool and two GPU pools. Shows progress while it runs and ends with a
table: jobs served, wait p50/p95 per pool, GPU utilisation, GitHub API
calls per job.

Run it with `scripts/dev.sh demo` (or `just demo`). Options:
  --jobs N        total jobs in the burst (default 120)
  --linger S      keep everything running S seconds after the burst so the
                  status page, /metrics and `runfleet status` can be looked at
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.runfleetd import Daemon  # noqa: E402
from tests.sim.github import Simulator  # noqa: E402
from tests.sim.github.testing import AppKey  # noqa: E402

GPUS = 4
POOLS = [
    dict(name="cpu", labels=["linux", "x64", "cpu"], max_runners=6, min_idle=1, idle_timeout="10s", priority=0),
    dict(name="gpu-1", labels=["linux", "x64", "gpu", "gpu-1"], max_runners=4, gpus=1, priority=10),
    dict(name="gpu-2", labels=["linux", "x64", "gpu", "gpu-2"], max_runners=2, gpus=2, priority=5),
]
REPOS = ["acme/widgets", "acme/gadgets", "acme/models"]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=120)
    ap.add_argument("--linger", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    # Progress lines should show up as they happen, also through a pipe.
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("RUNFLEET_BIN_DIR", str(ROOT / "build" / "bin"))

    with tempfile.TemporaryDirectory(prefix="runfleet-demo-") as tmpdir:
        tmp = Path(tmpdir)
        key = AppKey(str(tmp))
        sim = Simulator(
            app_id=4242,
            app_public_key_pem=key.public_pem,
            webhook_secret=b"demo-secret",
            installation_id=77,
            org="acme",
            repos=REPOS,
        )
        sim.app_key_file = key.private_path
        sim.start()
        # The simulator has GitHub's secondary limits and runfleetd its
        # default pace (75 mutations a minute, under the 80 content-creating
        # requests GitHub allows): every JIT config is one of those.
        daemon = Daemon(tmp, sim, pools=POOLS, gpus=list(range(GPUS)), webhook_secret=b"demo-secret",
                        mutations_per_minute=None)
        try:
            daemon.start()
            print(f"GitHub simulator   {sim.url}")
            print(f"runfleetd webhooks {daemon.public_url}/webhook   (public listener)")
            print(f"runfleetd admin    {daemon.url}   (status page: {daemon.url}/)")
            print(f"  metrics          {daemon.url}/metrics")
            print(f"  status API       {daemon.url}/api/v1/pools  /jobs  /runners")
            print(f"  CLI              build/bin/runfleet status --url {daemon.url}")
            print(f"  log              {daemon.log_path}")
            print()
            n_cpu = args.jobs // 2
            n_gpu1 = args.jobs // 3
            n_gpu2 = args.jobs - n_cpu - n_gpu1
            burst = (
                [("cpu", ["self-hosted", "linux", "cpu"], 0.2, 1.0)] * n_cpu
                + [("gpu-1", ["self-hosted", "gpu-1"], 0.5, 2.0)] * n_gpu1
                + [("gpu-2", ["self-hosted", "gpu-2"], 1.0, 3.0)] * n_gpu2
            )
            rng.shuffle(burst)
            ids: dict[int, str] = {}
            t0 = time.time()
            for pool, labels, lo, hi in burst:
                jid = sim.add_job(labels=labels, repo=rng.choice(REPOS), duration=round(rng.uniform(lo, hi), 2))
                ids[jid] = pool
            print(f"queued {len(ids)} jobs: {n_cpu} cpu, {n_gpu1} gpu-1 (1 GPU), {n_gpu2} gpu-2 (2 GPUs) on {GPUS} GPUs")
            while True:
                jobs = {j["id"]: j for j in sim.jobs() if j["id"] in ids}
                done = sum(1 for j in jobs.values() if j["status"] == "completed")
                pools = daemon.pools_state()
                parts = []
                for name in ("cpu", "gpu-1", "gpu-2"):
                    p = pools[name]
                    parts.append(f"{name}: queued {p['demand']:3d} busy {p['runners']['busy']}")
                gpus_used = pools["gpu-1"]["capacity"]["gpus_used"]
                print(f"  t={time.time() - t0:5.1f}s  done {done:4d}/{len(ids)}  " + "  ".join(parts)
                      + f"  GPUs in use {gpus_used}/{GPUS}", flush=True)
                if done == len(ids):
                    break
                time.sleep(1.0)
            elapsed = time.time() - t0
            jobs = {j["id"]: j for j in sim.jobs() if j["id"] in ids}
            gpu_seconds = 0.0
            rows = []
            for name, per in (("cpu", 0), ("gpu-1", 1), ("gpu-2", 2)):
                mine = [j for j in jobs.values() if ids[j["id"]] == name]
                waits = [j["started_at"] - j["created_at"] for j in mine if j["started_at"]]
                ok = sum(1 for j in mine if j["conclusion"] == "success")
                busy = sum(j["completed_at"] - j["started_at"] for j in mine if j["started_at"])
                gpu_seconds += busy * per
                rows.append((name, len(mine), ok, percentile(waits, 0.5), percentile(waits, 0.95)))
            calls = sim.calls()
            total_calls = calls["total"]
            print()
            print(f"{'pool':<8} {'jobs':>5} {'served':>7} {'wait p50':>9} {'wait p95':>9}")
            for name, n, ok, p50, p95 in rows:
                print(f"{name:<8} {n:>5} {ok:>7} {p50:>8.2f}s {p95:>8.2f}s")
            print()
            print(f"burst took {elapsed:.1f}s; GPU utilisation {gpu_seconds / (GPUS * elapsed) * 100:.0f}% "
                  f"({gpu_seconds:.0f} GPU-seconds of {GPUS * elapsed:.0f})")
            print(f"GitHub API calls {total_calls} for {len(ids)} jobs = {total_calls / len(ids):.2f} per job; "
                  f"requests rejected by OpenAPI validation: {len(sim.invalid_requests())}")
            for op, n in sorted(calls["by_operation"].items()):
                print(f"  {op:<55} {n:>5}")
            cli = ROOT / "build" / "bin" / "runfleet"
            if cli.exists():
                print(flush=True)
                subprocess.run([str(cli), "status", "--url", daemon.url], check=False)
            if args.linger > 0:
                print(f"\nstill running for {args.linger:.0f}s: {daemon.url}/")
                time.sleep(args.linger)
        finally:
            rc = daemon.stop()
            sim.stop()
        print(f"\nrunfleetd stopped (exit {rc}); runners left: "
              f"{len(daemon.leftovers())}")
        return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
