#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into OUT/<target>/: the
public webhook example payloads (node_modules/@octokit/webhooks-examples),
the example configs (manager/examples, docs/examples), the GitHub
simulator's JIT config and runner list responses, hook reports, and HTTP
requests built from those payloads; then the hand-written seeds of
fuzz/seeds/<target>/. Generated, not committed: the examples alone are
megabytes. Usage: make-seeds.py OUT"""

import json
import pathlib
import shutil
import sys
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The first byte of a webhook seed: bit 0 signs the body, bits 1-3 pick
# X-GitHub-Event (fuzz/fuzz_webhook.c's table).
WEBHOOK_EVENTS = ["workflow_job", "ping", "workflow_run", "check_run", "push",
                  "installation"]


def write(out: pathlib.Path, target: str, name: str, data: bytes) -> None:
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def webhook_payloads() -> list[tuple[str, bytes]]:
    index = ROOT / "node_modules/@octokit/webhooks-examples/api.github.com/index.json"
    if not index.exists():
        print(f"make-seeds: {index} missing (npm ci); no example payloads",
              file=sys.stderr)
        return []
    found = []
    for ev in json.loads(index.read_text()):
        for i, ex in enumerate(ev.get("examples", [])):
            found.append((ev["name"], json.dumps(ex).encode()))
    return found


def webhook_seeds(out: pathlib.Path, payloads) -> None:
    for n, (event, body) in enumerate(payloads):
        idx = WEBHOOK_EVENTS.index(event) if event in WEBHOOK_EVENTS else 4
        # Signed, except one in eight, which keeps the refusal path covered.
        mode = (idx << 1) | (0 if n % 8 == 7 else 1)
        write(out, "fuzz_webhook", f"{event}-{n}", bytes([mode]) + body)


def http_seeds(out: pathlib.Path, payloads) -> None:
    jobs = [b for e, b in payloads if e == "workflow_job"][:4] or [b"{}"]
    for n, body in enumerate(jobs):
        head = (b"POST /webhook HTTP/1.1\r\nHost: runfleet\r\n"
                b"Content-Type: application/json\r\nX-GitHub-Event: workflow_job\r\n"
                b"X-GitHub-Delivery: 72d3162e\r\nX-Hub-Signature-256: sha256=00\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        write(out, "fuzz_http_request", f"webhook-{n}", bytes([n & 7]) + head + body)
    chunked = (b"POST /api/v1/hooks/started HTTP/1.1\r\nHost: a\r\n"
               b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
               b"5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")
    write(out, "fuzz_http_request", "chunked", b"\x03" + chunked)
    pipelined = (b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                 b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    write(out, "fuzz_http_request", "pipelined", b"\x00" + pipelined)
    write(out, "fuzz_http_request", "http10", b"\x01GET / HTTP/1.0\r\n\r\n")


def config_seeds(out: pathlib.Path) -> None:
    for d in (ROOT / "manager/examples", ROOT / "docs/examples"):
        for p in sorted(d.rglob("*.yaml")) if d.exists() else []:
            write(out, "fuzz_config", p.name, p.read_bytes())


def github_seeds(out: pathlib.Path) -> None:
    try:
        from tests.sim.github.simulator import Runner, Simulator, encode_jit_config
    except ImportError as e:  # the simulator needs the test venv
        print(f"make-seeds: no simulator ({e}); hand-written seeds only",
              file=sys.stderr)
        return
    sim = Simulator()
    runners = []
    for i, (name, labels) in enumerate([("runfleet-gpu-2-1", ["self-hosted", "gpu"]),
                                        ("runfleet-cpu-2", ["self-hosted", "linux"])]):
        r = Runner(id=i + 1, name=name, labels=labels, group_id=1, group_name="Default",
                   scope="org", work_folder="_work", client_id=str(uuid.uuid4()),
                   modulus="AQAB", created_at=time.time())
        runners.append(r)
        jit = {"runner": sim.runner_object(r), "encoded_jit_config": encode_jit_config(sim, r)}
        write(out, "fuzz_github", f"jit-{i}", b"\x01" + json.dumps(jit).encode())
    page = {"total_count": 2, "runners": [sim.runner_object(r) for r in runners]}
    write(out, "fuzz_github", "runners", b"\x00" + json.dumps(page).encode())
    write(out, "fuzz_github", "runners-2nd-page", b"\x02" + json.dumps(page).encode())
    recovery_seeds(out)


def recovery_seeds(out: pathlib.Path) -> None:
    """Deliveries, queued runs and a run's jobs as GitHub's OpenAPI
    description gives them (its examples), first bytes 0x04, 0x08, 0x0c;
    and a Link header of a deliveries page."""
    spec = ROOT / "node_modules/@octokit/openapi/generated/api.github.com.json"
    if not spec.exists():
        print(f"make-seeds: {spec} missing (npm ci); no recovery seeds", file=sys.stderr)
        return
    examples = json.loads(spec.read_text())["components"]["examples"]
    for pick, name in [(0x04, "hook-delivery-items"), (0x08, "workflow-run-paginated"),
                       (0x0C, "job-paginated")]:
        body = json.dumps(examples[name]["value"]).encode()
        write(out, "fuzz_github", name, bytes([pick]) + body)
    link = (b'<https://api.github.com/app/hook/deliveries?per_page=100&cursor=v1_12077215967>; '
            b'rel="next", <https://api.github.com/app/hook/deliveries?per_page=100>; rel="first"')
    write(out, "fuzz_github", "deliveries-link", b"\x04" + link)


def kube_seeds(out: pathlib.Path) -> None:
    """A Node and Pod watch stream built from the backend's unit-test
    fixtures (EKS-like CPU and GPU nodes, cordoned, tainted, not ready;
    other pods; runner pods in each status), so the decoders behind the
    parser start from objects they know."""
    fx = ROOT / "manager/tests/fixtures/kube"
    lines = []
    for f in sorted(fx.glob("node-*.json")) + sorted(fx.glob("pod-other-*.json")):
        lines.append({"type": "ADDED", "object": json.loads(f.read_text())})
    pod = json.loads((fx / "pod-cpu.expected.json").read_text())
    for f in sorted(fx.glob("status-*.json")):
        p = json.loads(json.dumps(pod))
        p["status"] = json.loads(f.read_text())
        p.setdefault("spec", {})["nodeName"] = "ip-10-0-1-5.ec2.internal"
        lines.append({"type": "MODIFIED", "object": p})
    lines.append({"type": "DELETED", "object": lines[0]["object"]})
    body = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    write(out, "fuzz_kube_watch", "nodes-and-pods", b"\x0a\x07" + body)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = pathlib.Path(sys.argv[1])
    payloads = webhook_payloads()
    webhook_seeds(out, payloads)
    http_seeds(out, payloads)
    config_seeds(out)
    github_seeds(out)
    kube_seeds(out)
    seeds = ROOT / "fuzz/seeds"
    for d in sorted(seeds.iterdir()) if seeds.exists() else []:
        for p in sorted(d.iterdir()):
            write(out, d.name, "seed-" + p.name, p.read_bytes())
    for d in sorted(out.iterdir()):
        print(f"make-seeds: {d.name}: {sum(1 for _ in d.iterdir())} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
