"""How fast runfleetd takes webhooks: signed workflow_job deliveries
(queued, then completed, so the queue does not grow without bound) over
one keep-alive connection, against GET /healthz on the same connection as
the reference measured in the same run. Prints a table of requests per
second and the ratio to the reference."""

from __future__ import annotations

import http.client
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.runfleetd import Daemon  # noqa: E402
from tests.sim.github import Simulator  # noqa: E402
from tests.sim.github.testing import AppKey  # noqa: E402
from tests.sim.github.webhooks import signature_256  # noqa: E402

N = int(os.environ.get("BENCH_N", "3000"))


def main() -> int:
    os.environ.setdefault("RUNFLEET_BIN_DIR", str(ROOT / "build" / "bin"))
    with tempfile.TemporaryDirectory(prefix="runfleet-bench-") as tmpdir:
        tmp = Path(tmpdir)
        key = AppKey(str(tmp))
        sim = Simulator(app_id=1, app_public_key_pem=key.public_pem, installation_id=1, org="acme")
        sim.app_key_file = key.private_path
        sim.start()
        d = Daemon(tmp, sim, pools=[dict(name="cpu", labels=["linux", "cpu"], max_runners=1)],
                   max_body_bytes=1 << 20)
        d.config_path.write_text(d.config_path.read_text().replace("level: debug", "level: warn"))
        d.start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", d.port)
            template = json.loads((ROOT / "node_modules/@octokit/webhooks-examples/api.github.com/index.json")
                                  .read_text())
            ex = next(e for e in next(x for x in template if x["name"] == "workflow_job")["examples"]
                      if e["action"] == "queued")
            # Half the jobs match the pool and are cancelled by the next
            # delivery (the queue stays small), half match no pool.
            bodies = []
            for i in range(N):
                ex["workflow_job"]["id"] = 1000 + i
                ex["workflow_job"]["labels"] = ["self-hosted", "cpu"] if i % 2 else ["ubuntu-latest"]
                ex["action"] = "queued"
                q = json.dumps(ex).encode()
                ex["action"] = "completed"
                ex["workflow_job"]["conclusion"] = "cancelled"
                c = json.dumps(ex).encode()
                bodies.append(q)
                bodies.append(c)

            def run_health(n):
                t0 = time.perf_counter()
                for _ in range(n):
                    conn.request("GET", "/healthz")
                    r = conn.getresponse()
                    r.read()
                    assert r.status == 200
                return n / (time.perf_counter() - t0)

            def run_webhooks():
                t0 = time.perf_counter()
                for body in bodies:
                    conn.request("POST", "/webhook", body=body, headers={
                        "Content-Type": "application/json",
                        "X-GitHub-Event": "workflow_job",
                        "X-GitHub-Delivery": str(uuid.uuid4()),
                        "X-Hub-Signature-256": signature_256(d.secret, body),
                    })
                    r = conn.getresponse()
                    r.read()
                    assert r.status == 200, r.status
                return len(bodies) / (time.perf_counter() - t0)

            run_health(200)  # warm up
            ref = run_health(len(bodies))
            hooks = run_webhooks()
            size = sum(map(len, bodies)) / len(bodies)
            print(f"{'request':<34} {'req/s':>10} {'vs /healthz':>12}")
            print(f"{'GET /healthz (reference)':<34} {ref:>10.0f} {1.0:>11.2f}x")
            print(f"{'POST /webhook workflow_job':<34} {hooks:>10.0f} {hooks / ref:>11.2f}x")
            print(f"({len(bodies)} deliveries of {size / 1024:.1f} KiB, signed, over one keep-alive connection; "
                  "the client is Python, so both rows include its cost)")
        finally:
            rc = d.stop()
            sim.stop()
        return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
