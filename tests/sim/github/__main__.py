"""Command-line entry: run the GitHub simulator as a process.

    python -m tests.sim.github --port 0 --app-id 1 --app-key-file pub.pem \
        --installation-id 42 --org acme --repos acme/widgets,acme/gadgets \
        --webhook-url http://127.0.0.1:8080/webhook --webhook-secret-file secret \
        --pat-file pat

Prints one JSON line on stdout, {"url": "http://127.0.0.1:PORT"}, once it
listens, then serves until SIGTERM or SIGINT. The control API is under
/_sim/ (see docs/SIMULATOR.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

if __package__ in (None, ""):
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))

from tests.sim.github.simulator import Simulator  # noqa: E402


def _read(path: str | None, binary: bool = False):
    if path is None:
        return None
    with open(path, "rb") as f:
        data = f.read()
    return data if binary else data.decode().strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.sim.github", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--app-id", type=int, default=1)
    p.add_argument("--app-key-file", help="the App's public key (or private key) PEM")
    p.add_argument("--installation-id", type=int, default=1)
    p.add_argument("--org", default="acme")
    p.add_argument("--repos", default=None, help="comma-separated owner/name list (default ORG/widgets)")
    p.add_argument("--webhook-url", default=None)
    p.add_argument("--webhook-secret-file", default=None)
    p.add_argument("--pat-file", default=None)
    p.add_argument("--rate-limit", type=int, default=5000)
    p.add_argument("--secondary-points-per-minute", type=int, default=900)
    p.add_argument("--secondary-status", type=int, default=403, choices=(403, 429))
    p.add_argument("--token-ttl", type=float, default=3600)
    p.add_argument("--delivery-timeout", type=float, default=10.0)
    p.add_argument("--runner-lost-timeout", type=float, default=600.0)
    p.add_argument("--runner-group", action="append", default=[], metavar="ID=NAME",
                   help="extra runner group (group 1 'Default' always exists)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--log-level", default="WARNING")
    a = p.parse_args(argv)

    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s github-sim %(levelname)s %(message)s")
    groups = {1: "Default"}
    for g in a.runner_group:
        gid, _, name = g.partition("=")
        groups[int(gid)] = name or f"group-{gid}"
    sim = Simulator(
        app_id=a.app_id,
        app_public_key_pem=_read(a.app_key_file, binary=True),
        webhook_url=a.webhook_url,
        webhook_secret=_read(a.webhook_secret_file, binary=True) or b"",
        pat=_read(a.pat_file),
        installation_id=a.installation_id,
        org=a.org,
        repos=a.repos.split(",") if a.repos else None,
        rate_limit=a.rate_limit,
        secondary_points_per_minute=a.secondary_points_per_minute,
        token_ttl=a.token_ttl,
        delivery_timeout=a.delivery_timeout,
        secondary_status=a.secondary_status,
        runner_groups=groups,
        runner_lost_timeout=a.runner_lost_timeout,
        seed=a.seed,
        host=a.host,
        port=a.port,
    )
    if sim.webhook_secret.endswith(b"\n"):
        sim.webhook_secret = sim.webhook_secret.rstrip(b"\r\n")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    sim.start()
    print(json.dumps({"url": sim.url}), flush=True)
    while not done.wait(0.5):
        pass
    sim.stop()
    bad = sim.invalid_responses()
    if bad:
        print(f"github-sim: {len(bad)} invalid responses (simulator bugs): {bad}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
