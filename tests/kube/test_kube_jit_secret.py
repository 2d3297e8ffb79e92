"""The JIT config is only in the runner's Secret: after a burst on the
Kubernetes backend, every pod spec the watch saw (env, annotations, all of
it), runfleetd's whole log, /metrics, every /api/v1 answer, the status page
and the Events in the runner namespace are searched for every JIT config
the simulator issued, plain, base64-encoded and decoded (the JSON inside
and each credentials file in it); none may appear. The search itself can
fail: the Secrets the runners read carried those same configs."""

from __future__ import annotations

import base64
import json

from kube_e2e import (BURST_POOLS, SELECTOR, KubeDaemon, RunnerPlayer, assert_cleaned_up, burst,
                      finish, jobs_done, runner_ns, sim, unfinished, wait)  # noqa: F401  (fixtures)
from tests.test_runfleetd import app_key_files  # noqa: F401  (fixture)
from tests.test_secrets import find_leaks

API = ("pools", "jobs", "runners", "nodes", "devservers")


def leaves(obj) -> list[str]:
    """Every string in a JSON value, unescaped."""
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in leaves(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in leaves(v)]
    return [obj] if isinstance(obj, str) else []


def decoded_forms(jit: str) -> list[str]:
    """What is inside an encoded JIT config: its JSON, each file's base64,
    the decoded credentials files and each long value in them (the key
    parts, the client id). The .runner file names the runner and its URLs,
    which are not secret."""
    inner = base64.b64decode(jit).decode()
    files = json.loads(inner)
    out = [inner] + list(files.values())
    for name in (".credentials", ".credentials_rsaparams"):
        text = base64.b64decode(files[name]).decode("utf-8-sig")
        out.append(text)
        out += [v for v in leaves(json.loads(text)) if len(v) >= 16]
    return out


def test_jit_config_is_only_in_the_secret(kwok_cluster, eks_nodes, runner_ns, sim, tmp_path):
    kube, ns = kwok_cluster, runner_ns
    d = KubeDaemon(tmp_path, sim, kube, ns, BURST_POOLS).start()
    served: dict[str, str] = {}
    try:
        with kube.record_pods(ns, SELECTOR) as rec, RunnerPlayer(kube, ns, tmp_path / "pods") as player:
            wait(lambda: "runner pods listed" in d.log(), 30, "the first pod list", d)
            ids = burst(sim, 12)
            wait(lambda: jobs_done(sim, ids), 100, "the burst", d, lambda: unfinished(sim, ids))
            for what in API:
                r = d.get(f"/api/v1/{what}")
                served[f"GET /api/v1/{what} ({r.status_code})"] = r.text
            for path in ("/metrics", "/", "/readyz"):
                r = d.get(path)
                served[f"GET {path} ({r.status_code})"] = r.text
            assert_cleaned_up(kube, ns, d)
        assert player.errors == []
        events = kube.api("GET", f"/api/v1/namespaces/{ns}/events")["items"]
        served["runner namespace Events"] = json.dumps(events)
    finally:
        finish(d, kube, ns, sim)

    issued = sim.issued_jit_configs()
    assert len(issued) >= 12
    # The Secrets carried them: what is searched for was really there.
    assert player.jit_configs and set(player.jit_configs.values()) <= set(issued)
    pods = [e.pod for e in rec.events]
    assert len({p["metadata"]["name"] for p in pods}) >= 12
    texts = {}
    for i, p in enumerate(pods):
        # As JSON, and each string unescaped (an env value, an annotation).
        texts[f"pod {p['metadata']['name']} ({i})"] = json.dumps(p) + "\n" + "\n".join(leaves(p))
    texts.update(served)
    texts["runfleetd log"] = d.log()
    named = {"JIT config": issued,
             "JIT config decoded": [form for jit in issued for form in decoded_forms(jit)]}
    leaks = find_leaks(texts, named)
    assert leaks == [], leaks[:10]
    # The pods take it from the Secret by reference, never by value.
    for p in pods:
        for c in p["spec"]["containers"]:
            for e in c.get("env") or []:
                if e["name"] == "ACTIONS_RUNNER_INPUT_JITCONFIG":
                    ref = e["valueFrom"]["secretKeyRef"]
                    assert "value" not in e and ref["name"] == f"{p['metadata']['name']}-jit"
