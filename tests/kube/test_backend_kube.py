"""runfleetd with backend kubernetes against a real kube-apiserver.

There is no scheduler and no kubelet here: a Node is created through the API
(as a kubelet registers one), so runfleetd has capacity, and its runner pods
stay Pending and unbound. That is enough to check the pod and Secret
runfleetd creates, that it deletes both, and that a pod that never starts is
replaced after the pool's pending_timeout.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
from pathlib import Path

import pytest

from tests.runfleetd import Daemon, timeout_scale
from tests.test_runfleetd import app_key_files, sim  # noqa: F401  (fixtures)

FLEET = "rf-kube-test"


REPO = Path(__file__).resolve().parent.parent.parent


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
            f"  kubernetes: {{namespace: {ns}, lease_name: {FLEET}, "
            f"kubeconfig: {kube.kubeconfig}}}\n"
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
