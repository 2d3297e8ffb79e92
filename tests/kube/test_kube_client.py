"""runfleetd's Kubernetes client (manager/src/kube*.c) against a real
kube-apiserver, through the kube_probe driver (manager/tests/kube_probe.c):
CRUD with 409, list+watch, relist after 410 Gone caused by compacting
etcd, token, client-certificate and in-cluster authentication with a
rotated token."""

import base64
import datetime
import json
import os
import queue
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import kubeharness

BIN_DIR = Path(os.environ.get("RUNFLEET_BIN_DIR", Path(__file__).resolve().parents[2] / "build" / "bin"))


class Probe:
    """One kube_probe process: commands in, JSON lines out."""

    def __init__(self, *args: str, env: dict | None = None):
        exe = BIN_DIR / "kube_probe"
        if not exe.exists():
            pytest.fail(f"{exe} missing: build with -DRUNFLEET_TESTS=ON")
        self.proc = subprocess.Popen(
            [str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, pred, timeout: float = 30.0, what: str = "") -> dict:
        """The next line matching pred; the lines before it are kept in seen."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; seen {self.seen[-20:]}\n"
                                     + "".join(self.stderr[-30:]))
            try:
                msg = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if msg is None:
                raise AssertionError(f"kube_probe exited ({self.proc.wait()}) waiting for {what}:\n"
                                     + "".join(self.stderr[-30:]))
            self.seen.append(msg)
            if pred(msg):
                return msg

    def call(self, line: str, timeout: float = 30.0) -> dict:
        cmd = line.split(" ", 1)[0]
        self.send(line)
        return self.expect(lambda m: m.get("cmd") == cmd, timeout, line)

    def close(self) -> str:
        """Quits and returns the metrics it printed."""
        if self.proc.poll() is None:
            self.send("quit")
            self.proc.stdin.close()
        m = self.expect(lambda m: "metrics" in m, 30, "metrics")
        assert self.proc.wait(timeout=30) == 0, "".join(self.stderr[-30:])
        return m["metrics"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def probes():
    started: list[Probe] = []

    def start(*args, env=None):
        p = Probe(*args, env=env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def new_namespace(cluster) -> str:
    ns = "kc-" + uuid.uuid4().hex[:8]
    cluster.api("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    return ns


def pod(name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- CRUD, 409, token auth ---------------------------------------------------

def test_pod_and_secret_crud_and_conflict(kube, probes):
    ns = new_namespace(kube)
    p = probes("--kubeconfig", str(kube.kubeconfig))

    r = p.call(f"create pods {ns} {json.dumps(pod('p1'))}")
    assert (r["status"], r["error"], r["attempts"]) == (201, 0, 1), r
    assert r["object"]["metadata"]["name"] == "p1"

    r = p.call(f"create pods {ns} {json.dumps(pod('p1'))}")
    assert r["status"] == 409 and r["reason"] == "AlreadyExists", r
    assert r["attempts"] == 1 and r["error"] != 0

    r = p.call(f"get pods {ns} p1")
    assert r["status"] == 200 and r["object"]["spec"]["containers"][0]["image"] == "busybox"

    r = p.call(f'patch pods {ns} p1 merge {{"metadata":{{"labels":{{"a":"1"}}}}}}')
    assert r["status"] == 200 and r["object"]["metadata"]["labels"] == {"a": "1"}, r
    # A strategic merge of the container list merges by name.
    r = p.call(f'patch pods {ns} p1 strategic {{"metadata":{{"labels":{{"b":"2"}}}},'
               f'"spec":{{"activeDeadlineSeconds":60}}}}')
    assert r["status"] == 200, r
    assert r["object"]["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert r["object"]["spec"]["activeDeadlineSeconds"] == 60
    assert kube.api("GET", f"/api/v1/namespaces/{ns}/pods/p1")["metadata"]["labels"]["b"] == "2"

    r = p.call(f"delete pods {ns} p1")
    assert r["status"] == 200, r
    r = p.call(f"get pods {ns} p1")
    assert r["status"] == 404 and r["reason"] == "NotFound", r

    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"},
              "data": {"token": b64(b"not-a-real-one")}}
    r = p.call(f"create secrets {ns} {json.dumps(secret)}")
    assert r["status"] == 201, r
    r = p.call(f"create secrets {ns} {json.dumps(secret)}")
    assert r["status"] == 409, r
    r = p.call(f'patch secrets {ns} s1 merge {{"metadata":{{"labels":{{"x":"y"}}}}}}')
    assert r["status"] == 200 and r["object"]["metadata"]["labels"] == {"x": "y"}
    r = p.call(f"get secrets {ns} s1")
    assert base64.b64decode(r["object"]["data"]["token"]) == b"not-a-real-one"
    r = p.call(f"delete secrets {ns} s1")
    assert r["status"] == 200
    r = p.call(f"get secrets {ns} s1")
    assert r["status"] == 404

    # Nodes are not namespaced; events are.
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n-{ns}"}}
    assert p.call(f"create nodes - {json.dumps(node)}")["status"] == 201
    assert p.call(f"get nodes - n-{ns}")["status"] == 200
    assert p.call(f"delete nodes - n-{ns}")["status"] == 200
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
             "involvedObject": {"kind": "Pod", "name": "p1", "namespace": ns},
             "reason": "Probe", "message": "hello", "type": "Normal"}
    assert p.call(f"create events {ns} {json.dumps(event)}")["status"] == 201

    metrics = p.close()
    assert 'runfleet_kube_requests_total{code="409",verb="POST"} 2' in metrics
    assert 'runfleet_kube_requests_total{code="201",verb="POST"}' in metrics


def test_bad_token_is_401_not_retried(kube, probes, tmp_path):
    cfg = json.loads(kube.kubeconfig.read_text())
    cfg["users"][0]["user"] = {"token": "wrong"}
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(cfg))
    p = probes("--kubeconfig", str(path))
    r = p.call("get pods default nothing")
    assert r["status"] == 401 and r["attempts"] == 1, r
    p.close()


# -- list + watch --------------------------------------------------------------

def test_list_then_watch_sees_changes(kube, probes):
    ns = new_namespace(kube)
    for name, labels in (("a", {"app": "w"}), ("b", {"app": "w"}), ("other", {})):
        kube.api("POST", f"/api/v1/namespaces/{ns}/pods", pod(name, labels))
    p = probes("--kubeconfig", str(kube.kubeconfig), "--watch-timeout", "5")
    p.send(f"watch pods {ns} app=w")
    synced = p.expect(lambda m: "synced" in m, what="first sync")
    added = sorted(m["name"] for m in p.seen if m.get("event") == "ADDED")
    assert added == ["a", "b"] and synced["cached"] == 2 and synced["synced"] == 1

    kube.api("POST", f"/api/v1/namespaces/{ns}/pods", pod("c", {"app": "w"}))
    p.expect(lambda m: m.get("event") == "ADDED" and m["name"] == "c", what="ADDED c")
    kube._raw("PATCH", f"/api/v1/namespaces/{ns}/pods/a",
              json.dumps({"metadata": {"annotations": {"k": "v"}}}).encode(),
              content_type="application/merge-patch+json")
    p.expect(lambda m: m.get("event") == "MODIFIED" and m["name"] == "a", what="MODIFIED a")
    kube.api("DELETE", f"/api/v1/namespaces/{ns}/pods/b")
    p.expect(lambda m: m.get("event") == "DELETED" and m["name"] == "b", what="DELETED b")
    # The unlabelled pod never shows.
    assert not [m for m in p.seen if m.get("name") == "other"]
    # Past timeoutSeconds the watch resumes from where it was: later
    # changes still arrive, and nothing is delivered twice.
    time.sleep(7)
    kube.api("POST", f"/api/v1/namespaces/{ns}/pods", pod("d", {"app": "w"}))
    p.expect(lambda m: m.get("event") == "ADDED" and m["name"] == "d", what="ADDED d after re-watch")
    adds = [m["name"] for m in p.seen if m.get("event") == "ADDED"]
    assert sorted(adds) == ["a", "b", "c", "d"], p.seen
    metrics = p.close()
    assert 'runfleet_kube_watch_restarts_total{reason="closed",resource="pods"}' in metrics


# -- a private cluster: client certificates, no watch cache ----------------------

def _client_ca(workdir: Path):
    """A CA for client certificates and one admin client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe-client-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "probe-admin")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    ca_file = workdir / "client-ca.crt"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return (ca_file, cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


@pytest.fixture(scope="module")
def private_cluster(tmp_path_factory):
    """A cluster of our own: client certificates signed by our CA are
    accepted, and watches go to etcd itself (no watch cache), so that
    compacting etcd makes an old resourceVersion 410 Gone at once."""
    work = tmp_path_factory.mktemp("kube-private")
    ca_file, cert, key = _client_ca(work)
    cluster = kubeharness.KubeCluster(
        workdir=work / "cluster",
        extra_apiserver_args=[f"--client-ca-file={ca_file}", "--watch-cache=false"])
    cluster.start()
    cluster.client_cert, cluster.client_key = cert, key
    try:
        yield cluster
    finally:
        cluster.stop()


def cert_kubeconfig(cluster, path: Path) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "cert",
        "clusters": [{"name": "c", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": b64(cluster.ca_file.read_bytes())}}],
        "users": [{"name": "u", "user": {
            "client-certificate-data": b64(cluster.client_cert),
            "client-key-data": b64(cluster.client_key)}}],
        "contexts": [{"name": "cert", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


def test_client_certificate_from_kubeconfig_data(private_cluster, probes, tmp_path):
    p = probes("--kubeconfig", str(cert_kubeconfig(private_cluster, tmp_path / "kc")))
    r = p.call("request GET /api/v1/namespaces/default")
    assert r["status"] == 200 and r["object"]["metadata"]["name"] == "default", r
    # Who the server thinks we are.
    r = p.call('request POST /apis/authentication.k8s.io/v1/selfsubjectreviews '
               '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}')
    assert r["status"] == 201, r
    assert r["object"]["status"]["userInfo"]["username"] == "probe-admin"
    p.close()


def test_client_certificate_for_another_ca_is_refused(kube, private_cluster, probes, tmp_path):
    # The shared cluster trusts no client CA: same certificate, 401.
    cfg = cert_kubeconfig(private_cluster, tmp_path / "kc")
    data = json.loads(cfg.read_text())
    data["clusters"][0]["cluster"] = {"server": kube.server,
                                      "certificate-authority": str(kube.ca_file)}
    cfg.write_text(json.dumps(data))
    p = probes("--kubeconfig", str(cfg))
    assert p.call("get pods default x")["status"] == 401
    p.close()


def etcd_call(cluster, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{cluster.etcd_port}{path}",
                                 data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def etcd_compact(cluster) -> int:
    rev = int(etcd_call(cluster, "/v3/kv/range", {"key": b64(b"/")})["header"]["revision"])
    etcd_call(cluster, "/v3/kv/compaction", {"revision": rev, "physical": True})
    return rev


def test_relist_after_410_loses_and_doubles_nothing(private_cluster, probes, tmp_path):
    k = private_cluster
    ns = new_namespace(k)
    for name in ("keep", "change", "gone"):
        k.api("POST", f"/api/v1/namespaces/{ns}/pods", pod(name, {"app": "r"}))
    p = probes("--kubeconfig", str(cert_kubeconfig(k, tmp_path / "kc")), "--watch-timeout", "2")
    p.send(f"watch pods {ns} app=r")
    first = p.expect(lambda m: "synced" in m, what="first sync")
    assert first["cached"] == 3
    uids = {m["name"]: m["uid"] for m in p.seen if m.get("event") == "ADDED"}

    # Frozen, the probe misses the end of its watch and every change below;
    # compaction then removes the history it would resume from.
    os.kill(p.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(4)
        k.api("DELETE", f"/api/v1/namespaces/{ns}/pods/gone")
        k._raw("PATCH", f"/api/v1/namespaces/{ns}/pods/change",
               json.dumps({"metadata": {"labels": {"app": "r", "v": "2"}}}).encode(),
               content_type="application/merge-patch+json")
        k.api("POST", f"/api/v1/namespaces/{ns}/pods", pod("new", {"app": "r"}))
        # Other writes move etcd's revision past the last one the probe saw.
        k.api("POST", f"/api/v1/namespaces/{ns}/secrets",
              {"metadata": {"name": "bump"}, "data": {}})
        etcd_compact(k)
    finally:
        os.kill(p.proc.pid, signal.SIGCONT)

    second = p.expect(lambda m: m.get("synced") == 2, timeout=60, what="relist")
    assert second["cached"] == 3
    after = p.seen[p.seen.index(first) + 1:p.seen.index(second)]
    changes = sorted((m["event"], m["name"]) for m in after if "event" in m)
    assert changes == [("ADDED", "new"), ("DELETED", "gone"), ("MODIFIED", "change")], p.seen
    assert uids["gone"] == next(m["uid"] for m in after if m.get("event") == "DELETED")
    # The watch resumes from the relist: one more change, seen once.
    k.api("DELETE", f"/api/v1/namespaces/{ns}/pods/keep")
    p.expect(lambda m: m.get("event") == "DELETED" and m["name"] == "keep", what="DELETED keep")
    metrics = p.close()
    assert 'runfleet_kube_watch_restarts_total{reason="gone",resource="pods"} 1' in metrics
    events = [(m["event"], m["name"]) for m in p.seen if "event" in m]
    assert len(events) == len(set(events)), events


# -- in-cluster, with a rotated service account token ----------------------------

def test_in_cluster_token_rotation(kube, probes, tmp_path):
    ns = new_namespace(kube)
    kube.api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "rf"}})
    kube.api("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", {
        "metadata": {"name": "pods"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]})
    kube.api("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
        "metadata": {"name": "pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pods"},
        "subjects": [{"kind": "ServiceAccount", "name": "rf", "namespace": ns}]})

    def token(bound_to: str) -> str:
        kube.api("POST", f"/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": bound_to}})
        uid = kube.api("GET", f"/api/v1/namespaces/{ns}/secrets/{bound_to}")["metadata"]["uid"]
        tr = kube.api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/rf/token", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600, "boundObjectRef": {
                "kind": "Secret", "apiVersion": "v1", "name": bound_to, "uid": uid}}})
        return tr["status"]["token"]

    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(token("first"))
    (sa / "ca.crt").write_bytes(kube.ca_file.read_bytes())
    (sa / "namespace").write_text(ns)
    kube.api("POST", f"/api/v1/namespaces/{ns}/pods", pod("x"))
    host, port = kube.server.removeprefix("https://").rsplit(":", 1)
    p = probes("--in-cluster", str(sa),
               env={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port})
    assert p.call(f"get pods {ns} x")["status"] == 200
    # The service account may read pods, not secrets.
    assert p.call(f"get secrets {ns} first")["status"] == 403

    # kubelet's rotation: a new file swapped in, and the old token dies.
    old = (sa / "token").read_text()
    new = sa / "token.new"
    new.write_text(token("second"))
    new.rename(sa / "token")
    kube.api("DELETE", f"/api/v1/namespaces/{ns}/secrets/first")
    # The API server caches token reviews for a few seconds.
    deadline = time.monotonic() + 60
    while True:
        try:
            kube._raw("GET", f"/api/v1/namespaces/{ns}/pods/x", token=old)
        except urllib.error.HTTPError as e:
            assert e.code == 401
            break
        assert time.monotonic() < deadline, "the old token stays valid"
        time.sleep(1)
    r = p.call(f"get pods {ns} x")
    assert r["status"] == 200 and r["attempts"] == 1, r
    p.close()
