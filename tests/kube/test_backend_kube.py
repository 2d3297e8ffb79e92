"""runfleetd with backend kubernetes against a real kube-apiserver.

There is no scheduler and no kubelet here: a Node is created through the API
(as a kubelet registers one), so runfleetd has capacity, and its runner pods
stay Pending and unbound. That is enough to check the pod and Secret
runfleetd creates, that it deletes both, that a pod that never starts is
replaced after the pool's pending_timeout, and that /metrics has the
runfleet_kube_* families docs/METRICS.md lists, and no others.

The cluster is this module's own (bare_cluster), not the session's: once a
test of the session has asked for kwok_cluster, kube-scheduler runs on the
shared cluster to its end and binds these runner pods to the Node made
here, and a pod bound to a Node no kubelet serves never starts and, once
deleted, is never removed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.error
from pathlib import Path

import pytest

import kubeharness
from tests.runfleetd import Daemon, timeout_scale
from tests.test_runfleetd import app_key_files, sim  # noqa: F401  (fixtures)

FLEET = "rf-kube-test"


REPO = Path(__file__).resolve().parent.parent.parent
METRICS_DOC = REPO / "docs" / "METRICS.md"


def _ns(kube) -> str:
    """A runner namespace with what the shipped manifests put there and the
    cluster-wide priority classes runner pods name (admission checks both)."""
    name = "rf-runners-" + os.urandom(3).hex()
    kube.api("POST", "/api/v1/namespaces",
             {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kube.api("POST", f"/api/v1/namespaces/{name}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "runfleet-runner"}, "automountServiceAccountToken": False})
    kube.kubectl("apply", "--server-side", "--field-manager=runfleet-tests", "-f",
                 str(REPO / "kubernetes" / "base" / "priorityclasses.yaml"))
    return name


def _node(kube, name: str, group: str = "cpu") -> None:
    """A Ready node, as a kubelet would register it."""
    kube.api("POST", "/api/v1/nodes", {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "runfleet.dev/node-group": group}},
        "status": {
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    })


def _delete_node(kube, name: str) -> None:
    try:
        kube.api("DELETE", f"/api/v1/nodes/{name}")
    except urllib.error.HTTPError:
        pass


def _items(kube, ns: str, kind: str) -> list[dict]:
    sel = f"labelSelector=runfleet.dev%2Ffleet%3D{FLEET}"
    return kube.api("GET", f"/api/v1/namespaces/{ns}/{kind}?{sel}")["items"]


def _wait(pred, timeout: float, what: str, daemon: Daemon):
    deadline = time.monotonic() + timeout * timeout_scale()
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; log tail:\n{daemon.log()[-4000:]}")


class KubeDaemon(Daemon):
    """A Daemon whose backend is the test cluster."""

    def __init__(self, tmp, sim, kube, ns: str, pending_timeout: str = "10m"):
        super().__init__(tmp, sim, pools=[])
        local = self.config_text.index("backend:\n")
        self.config_text = (
            self.config_text[:local]
            + "backend:\n"
            "  type: kubernetes\n"
            # One replica that cleans up at stop: with leader election a
            # stop leaves the runners to the next leader (tests/kube/
            # test_kube_failover.py).
            f"  kubernetes: {{namespace: {ns}, lease_name: {FLEET}, "
            f"leader_election: false, kubeconfig: {kube.kubeconfig}}}\n"
            "pools:\n"
            "  - name: cpu\n"
            "    labels: [linux, cpu]\n"
            "    max_runners: 1\n"
            "    min_idle: 1\n"
            "    resources: {cpus: 2, memory: 1Gi}\n"
            "    runner: {image: reg.example/runfleet/runner:test}\n"
            "    node_selector: {runfleet.dev/node-group: cpu}\n"
            f"    kubernetes: {{shm_size: 256Mi, pending_timeout: {pending_timeout}}}\n"
        )
        self.config_path.write_text(self.config_text)


@pytest.fixture(scope="module")
def bare_cluster():
    """etcd + kube-apiserver and nothing else, for this module alone."""
    cluster = kubeharness.KubeCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kube(bare_cluster):
    return bare_cluster


@pytest.fixture
def cluster_ns(kube):
    ns = _ns(kube)
    node = "kb-node-" + os.urandom(3).hex()
    _node(kube, node)
    try:
        yield ns, node
    finally:
        _delete_node(kube, node)
        kube.api("DELETE", f"/api/v1/namespaces/{ns}")


def test_runner_pod_and_secret_are_made_then_deleted(kube, sim, cluster_ns, tmp_path):
    ns, node = cluster_ns
    d = KubeDaemon(tmp_path, sim, kube, ns).start()
    try:
        pods = _wait(lambda: _items(kube, ns, "pods"), 30, "a runner pod", d)
        assert len(pods) == 1
        pod = pods[0]
        name = pod["metadata"]["name"]
        secrets = _wait(lambda: _items(kube, ns, "secrets"), 30, "its secret", d)
        assert [s["metadata"]["name"] for s in secrets] == [name + "-jit"]
        secret = secrets[0]
    finally:
        rc = d.stop()
    assert rc == 0, d.log()[-3000:]
    assert d.sanitizer_report() is None, d.sanitizer_report()

    spec = pod["spec"]
    labels = pod["metadata"]["labels"]
    assert labels["runfleet.dev/pool"] == "cpu"
    assert labels["runfleet.dev/fleet"] == FLEET
    assert labels["runfleet.dev/runner"] == pod["metadata"]["annotations"]["runfleet.dev/runner-name"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "runfleet-runner"
    assert spec["priorityClassName"] == "runfleet-runner"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert "nodeName" not in spec  # the scheduler binds it
    term = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"][0] == {
        "key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
    assert spec["nodeSelector"] == {"runfleet.dev/node-group": "cpu"}
    runner = spec["containers"][0]
    assert runner["resources"]["requests"] == {"cpu": "2", "memory": "1073741824"}
    assert runner["resources"]["limits"] == {"cpu": "2", "memory": "1073741824"}
    shm = next(v for v in spec["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "256Mi"} or \
        shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "268435456"}
    cache = next(v for v in spec["volumes"] if v["name"] == "cache")
    assert cache["hostPath"]["path"] == "/var/cache/runfleet"
    env = {e["name"]: e for e in runner["env"]}
    assert env["ACTIONS_RUNNER_INPUT_JITCONFIG"]["valueFrom"]["secretKeyRef"] == {
        "name": name + "-jit", "key": "jitconfig"}
    assert env["RUNFLEET_RUNNER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == name + "-jit"
    assert env["RUNFLEET_URL"]["value"] == d.url

    # The secret is owned by the pod and holds what the pod must not show.
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Pod", name, pod["metadata"]["uid"])
    jit = base64.b64decode(secret["data"]["jitconfig"]).decode()
    token = base64.b64decode(secret["data"]["runner-token"]).decode()
    assert jit and token
    text = json.dumps(pod)
    assert jit not in text and token not in text
    assert jit not in d.log() and token not in d.log()

    # Stopped with STOP: both objects are gone (nothing else deletes them:
    # there is no garbage collector here).
    assert _items(kube, ns, "pods") == []
    assert _items(kube, ns, "secrets") == []


def test_a_pod_pending_past_its_timeout_is_replaced(kube, sim, cluster_ns, tmp_path):
    ns, _node_name = cluster_ns
    d = KubeDaemon(tmp_path, sim, kube, ns, pending_timeout="10s").start()
    try:
        first = _wait(lambda: _items(kube, ns, "pods"), 30, "a runner pod", d)[0]
        first_name = first["metadata"]["name"]

        def replaced():
            names = [p["metadata"]["name"] for p in _items(kube, ns, "pods")]
            return names and first_name not in names and names
        names = _wait(replaced, 90, "the pod's replacement", d)
        assert len(names) == 1
        secrets = [s["metadata"]["name"] for s in _items(kube, ns, "secrets")]
        assert first_name + "-jit" not in secrets
        assert d.metric("runfleet_pods_pending_seconds_count", pool="cpu", outcome="timeout") >= 1
        assert "runner pod did not start in time; replacing it" in d.log()
    finally:
        rc = d.stop()
    assert rc == 0, d.log()[-3000:]
    assert _items(kube, ns, "pods") == []
    assert _items(kube, ns, "secrets") == []


def documented_metrics() -> dict[str, tuple[str, set[str], str]]:
    """{name: (type, labels, meaning)} of every row of docs/METRICS.md."""
    rows = {}
    for line in METRICS_DOC.read_text().splitlines():
        m = re.match(r"\| `([a-z_]+)` \| (\w+) \| ([^|]*) \| (.*) \|$", line)
        if m:
            labels = {x.strip() for x in m.group(3).split(",") if x.strip()}
            rows[m.group(1)] = (m.group(2), labels, m.group(4))
    return rows


def kube_rows(rows: dict) -> dict:
    """The rows of the Kubernetes client and backend: runfleet_kube_*, and
    those whose meaning begins "kubernetes backend"."""
    return {n: r for n, r in rows.items()
            if n.startswith("runfleet_kube_") or r[2].startswith("kubernetes backend")}


def scrape(d: Daemon) -> tuple[dict[str, str], dict[str, set[str]]]:
    """{family: type} from the # TYPE lines, {family: label names} of its samples."""
    types: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    for line in d.get("/metrics").text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            types[family] = kind
        elif line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            family = base if types.get(base) == "histogram" else name
            rest = line[len(name):].rpartition("}")[0]
            labels.setdefault(family, set()).update(set(re.findall(r'(\w+)="', rest)) - {"le"})
    return types, labels


def check_kube_metrics(d: Daemon, rows: dict) -> None:
    types, labels = scrape(d)
    documented = kube_rows(rows)
    exported = {f for f in types if f.startswith("runfleet_kube_")}
    missing = sorted(n for n in documented if n not in types)
    assert not missing, f"docs/METRICS.md lists {missing}, which runfleetd does not export"
    undocumented = sorted(exported - set(documented))
    assert not undocumented, f"runfleetd exports {undocumented}, which docs/METRICS.md does not list"
    for name, (kind, want, _meaning) in documented.items():
        assert types[name] == kind, (name, types[name], kind)
        if name in labels:  # a family with samples
            assert labels[name] == want, (name, sorted(labels[name]), sorted(want))


def test_metrics_doc_lists_the_kube_families_runfleetd_exports(kube, sim, cluster_ns, tmp_path):
    ns, _node = cluster_ns
    rows = documented_metrics()
    assert len(kube_rows(rows)) >= 7, sorted(kube_rows(rows))
    d = KubeDaemon(tmp_path, sim, kube, ns).start()
    try:
        _wait(lambda: _items(kube, ns, "secrets"), 30, "a runner pod and its secret", d)
        # The client's counters have samples by now: the lists, the watches'
        # events, the pod and secret created.
        for name in ("runfleet_kube_requests_total", "runfleet_kube_watch_events_total"):
            assert d.metric(name) > 0, name
        assert d.metric("runfleet_kube_requests_total", verb="POST", code="201") >= 2
        check_kube_metrics(d, rows)
        # The check is not vacuous: a row renamed in the doc, or one dropped
        # from it, fails it.
        renamed = dict(rows)
        renamed["runfleet_kube_watch_relist_total"] = renamed.pop("runfleet_kube_watch_relists_total")
        with pytest.raises(AssertionError, match="runfleet_kube_watch_relist_total"):
            check_kube_metrics(d, renamed)
        dropped = dict(rows)
        del dropped["runfleet_kube_retries_total"]
        with pytest.raises(AssertionError, match="runfleet_kube_retries_total"):
            check_kube_metrics(d, dropped)
    finally:
        rc = d.stop()
    assert rc == 0, d.log()[-3000:]
    assert d.sanitizer_report() is None, d.sanitizer_report()
