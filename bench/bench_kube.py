"""How fast runfleetd puts a burst of jobs on Kubernetes, and what it asks
of the API server per runner.

A real kube-apiserver + etcd + kube-scheduler + kwok (tests/kube/kubeharness.py)
with the EKS node groups (kubeharness.DEFAULT_NODES) and as many large CPU
nodes of the cpu group (m6i.32xlarge) as hold every runner at once; no
container runs, kwok makes bound pods Running. runfleetd (release build,
logging at info) on backend kubernetes, with one CPU pool as large as the
burst, against the GitHub simulator (no latency, limits out of the way,
mutations_per_minute at its maximum), with the Kubernetes client's qps and
burst at runfleetd's defaults (BENCH_KUBE_QPS, BENCH_KUBE_BURST to change).

- Up: BENCH_JOBS (default 1,000) jobs queued, each announced by a webhook;
  the time from the first webhook until every runner pod is Running and
  has its Secret (a kubelet starts the runner container only then), and
  the latency from each queued webhook to a pod made, and to a pod and its
  Secret both made (the n-th webhook sent against the n-th pod, or pod
  with its Secret, the watches saw: runners are not tied to jobs).
- Down: every job cancelled (a `completed` webhook each); the time from
  the first cancel until the pods and Secrets are gone.
- Requests: every request runfleetd made from its start to its stop, from
  the API server's audit log (runfleetd has an identity of its own), by
  verb and resource, per runner (every try: a retry counts). Create pod,
  create secret, delete pod and delete secret once each is the least a
  runner costs.

The reference, in the same run against the same API server: a plain
client (Python threads on keep-alive connections, one token bucket of the
same qps and burst) creating the same pods (runfleetd's, as the API server
stored them) and each pod's Secret (runfleetd's too, owned by the new
pod), then deleting them: what the same objects cost a client that does
nothing else. Ratios are reference time / runfleetd time (goal: >= 0.8).
Prints one table; nothing is asserted.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import queue
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "kube"))

import kubeharness  # noqa: E402
from tests.runfleetd import Daemon  # noqa: E402
from tests.sim.github import Simulator  # noqa: E402
from tests.sim.github.testing import AppKey  # noqa: E402

JOBS = int(os.environ.get("BENCH_JOBS", "1000"))
QPS = int(os.environ.get("BENCH_KUBE_QPS", "20"))
BURST = int(os.environ.get("BENCH_KUBE_BURST", "40"))
# Connections of the reference client (runfleetd's libcurl opens as many
# as it has requests in flight).
REF_THREADS = 8
FLEET = "rf-bench"
SELECTOR = f"runfleet.dev/fleet={FLEET}"
RUNNER_NS = "rf-bench-runners"
REF_NS = "rf-bench-reference"
SYSTEM_NS = "rf-bench-system"
BIG_NODE = "m6i.32xlarge"
POD_CPUS, POD_MEMORY_GIB = 1, 1
LABELS = ["self-hosted", "linux", "cpu"]
WEBHOOK_SECRET = b"runfleet-bench-secret"


def audit_policy(users: list[str]) -> str:
    # One event per request, when it is answered (a watch: when it ends).
    return json.dumps({
        "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
        "omitStages": ["RequestReceived", "ResponseStarted"],
        "rules": [{"level": "Metadata", "users": users}, {"level": "None"}],
    })


def identity(kube: kubeharness.KubeCluster, name: str) -> tuple[str, Path]:
    """A service account with cluster-admin, and a kubeconfig with its token."""
    token = kube.service_account_token(SYSTEM_NS, name, expiration_seconds=24 * 3600)
    kube.api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"rf-bench-{name}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": SYSTEM_NS}]})
    path = kube.workdir / f"{name}.kubeconfig"
    kube._write_kubeconfig(path, name, token)
    return token, path


def runner_namespace(kube: kubeharness.KubeCluster, ns: str) -> None:
    """What the shipped manifests put in a runner namespace."""
    kube.create_namespace(ns)
    kube.api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "runfleet-runner"}, "automountServiceAccountToken": False})


class Bucket:
    """A token bucket of rate qps and size burst, full at first (as
    runfleetd's): take() reserves a token and sleeps until it is due."""

    def __init__(self, qps: float, burst: int):
        self.qps, self.burst = qps, burst
        self.tokens = float(burst)
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.qps)
            self.last = now
            self.tokens -= 1
            wait = -self.tokens / self.qps if self.tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class Client:
    """Requests on one keep-alive connection with a bearer token."""

    def __init__(self, kube: kubeharness.KubeCluster, token: str):
        u = urllib.parse.urlsplit(kube.server)
        self.conn = http.client.HTTPSConnection(u.hostname, u.port, context=kube._ssl(), timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                        "Accept": "application/json"}

    def call(self, method: str, path: str, obj: dict | None = None) -> dict:
        body = json.dumps(obj).encode() if obj is not None else None
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=body, headers=self.headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException):
                self.conn.close()
                if attempt == 2:
                    raise
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
        return json.loads(data or b"null")

    def close(self) -> None:
        self.conn.close()


def stored(obj: dict, ns: str) -> dict:
    """An object as read back, made fit to create again in ns."""
    o = json.loads(json.dumps(obj))
    meta = o["metadata"]
    for k in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation",
              "ownerReferences", "deletionTimestamp", "deletionGracePeriodSeconds"):
        meta.pop(k, None)
    meta["namespace"] = ns
    o.pop("status", None)
    if o.get("kind") == "Pod":
        o["spec"].pop("nodeName", None)
    return o


def reference(kube: kubeharness.KubeCluster, token: str, pods: list[dict], secrets: dict[str, dict]) -> dict:
    """Creates each pod and then its Secret (owned by it) from REF_THREADS
    threads sharing one bucket, until every pod is Running with its Secret;
    then deletes them all (pod, then Secret) until both are gone."""
    bucket = Bucket(QPS, BURST)
    errors: list[str] = []

    def run(work: queue.Queue, step) -> None:
        c = Client(kube, token)
        try:
            while True:
                try:
                    item = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    step(c, item)
                except Exception as e:  # noqa: BLE001  (reported below)
                    errors.append(repr(e))
        finally:
            c.close()

    def create(c: Client, pod: dict) -> None:
        bucket.take()
        made = c.call("POST", f"/api/v1/namespaces/{REF_NS}/pods", pod)
        secret = json.loads(json.dumps(secrets[pod["metadata"]["name"]]))
        secret["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod",
                                                  "name": made["metadata"]["name"],
                                                  "uid": made["metadata"]["uid"]}]
        bucket.take()
        c.call("POST", f"/api/v1/namespaces/{REF_NS}/secrets", secret)

    def delete(c: Client, name: str) -> None:
        bucket.take()
        c.call("DELETE", f"/api/v1/namespaces/{REF_NS}/pods/{name}?propagationPolicy=Background")
        bucket.take()
        c.call("DELETE", f"/api/v1/namespaces/{REF_NS}/secrets/{name}-jit?propagationPolicy=Background")

    def phase(step, items) -> None:
        work: queue.Queue = queue.Queue()
        for it in items:
            work.put(it)
        threads = [threading.Thread(target=run, args=(work, step), daemon=True) for _ in range(REF_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"reference client: {len(errors)} errors, first {errors[0]}")

    with kube.record_pods(REF_NS, SELECTOR) as rec, SecretTimes(kube, REF_NS) as st:
        t0 = time.monotonic()
        phase(create, pods)
        wait_running(rec, len(pods), what="reference pods Running")
        st.wait(len(pods))
        out = timings(rec, st, [t0] * len(pods))
    t1 = time.monotonic()
    phase(delete, [p["metadata"]["name"] for p in pods])
    wait_gone(kube, REF_NS)
    out["down"] = time.monotonic() - t1
    return out


def timings(rec: kubeharness.PodRecorder, st: "SecretTimes", queued: list[float]) -> dict:
    """From the watches (time.monotonic()): up, the seconds from the first
    of queued until every pod was Running and had its Secret; created and
    startable, the n-th pod seen, and the n-th runner with both its pod and
    its Secret, less the n-th of queued."""
    made = first_events(rec, lambda e: True)
    run_at = first_events(rec, running)
    secret_at = {name: st.added[name + "-jit"] for name in made}
    startable = sorted(max(made[n], secret_at[n]) for n in made)
    queued = sorted(queued)
    return {
        "up": max(max(run_at[n], secret_at[n]) for n in made) - queued[0],
        "created": [c - q for c, q in zip(sorted(made.values()), queued)],
        "startable": [c - q for c, q in zip(startable, queued)],
    }


class SecretTimes:
    """Watches the fleet's Secrets in ns from a thread: `added` is {name:
    when the watch first saw it (time.monotonic())}."""

    def __init__(self, kube: kubeharness.KubeCluster, ns: str):
        self.kube, self.ns = kube, ns
        self.added: dict[str, float] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="secret-times", daemon=True)

    def __enter__(self) -> "SecretTimes":
        self._rv = self._list()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.ns}/secrets?labelSelector={urllib.parse.quote(SELECTOR)}"

    def _list(self) -> str:
        got = self.kube.api("GET", self._path())
        now = time.monotonic()
        for item in got["items"]:
            self.added.setdefault(item["metadata"]["name"], now)
        return got["metadata"]["resourceVersion"]

    def _run(self) -> None:
        c = Client(self.kube, self.kube.token)
        try:
            while not self._stop.is_set():
                try:
                    self._watch(c)
                except Exception as e:  # noqa: BLE001  (counted; the watch starts again)
                    self.errors.append(repr(e))
                    c.close()
                    time.sleep(0.2)
        finally:
            c.close()

    def _watch(self, c: Client) -> None:
        c.conn.request("GET", self._path() + f"&watch=1&resourceVersion={self._rv}&timeoutSeconds=2"
                       "&allowWatchBookmarks=true", headers=c.headers)
        resp = c.conn.getresponse()
        if resp.status == 410:
            resp.read()
            self._rv = self._list()
            return
        if resp.status != 200:
            raise RuntimeError(f"watch secrets: {resp.status} {resp.read()[:200]!r}")
        while True:
            line = resp.readline()
            if not line:
                return
            ev = json.loads(line)
            obj = ev["object"]
            if ev["type"] == "ERROR":
                self._rv = self._list()
                resp.read()
                return
            self._rv = obj["metadata"]["resourceVersion"]
            if ev["type"] == "ADDED":
                self.added.setdefault(obj["metadata"]["name"], time.monotonic())

    def wait(self, n: int, log=None) -> None:
        deadline = time.monotonic() + 120 + 4 * n / QPS
        while len(self.added) < n:
            if time.monotonic() > deadline:
                tail = log()[-3000:] if log else ""
                raise RuntimeError(f"timed out waiting for {n} secrets in {self.ns} "
                                   f"(have {len(self.added)}; {self.errors[-3:]})\n{tail}")
            time.sleep(0.2)


def first_events(rec: kubeharness.PodRecorder, pred) -> dict[str, float]:
    """{pod: when the watch first saw it with pred(event)}."""
    out: dict[str, float] = {}
    for e in list(rec.events):
        if e.type != "DELETED" and e.name not in out and pred(e):
            out[e.name] = e.at
    return out


def running(e: kubeharness.PodEvent) -> bool:
    return e.phase == "Running" and not e.pod["metadata"].get("deletionTimestamp")


def wait_running(rec: kubeharness.PodRecorder, n: int, what: str, log=None) -> None:
    # The slowest path is QPS-bound: 2 requests a runner.
    deadline = time.monotonic() + 120 + 4 * n / QPS
    while len(first_events(rec, running)) < n:
        if time.monotonic() > deadline:
            tail = log()[-3000:] if log else ""
            raise RuntimeError(f"timed out waiting for {n} {what} "
                               f"(have {len(first_events(rec, running))})\n{tail}")
        time.sleep(0.2)


def wait_gone(kube: kubeharness.KubeCluster, ns: str, log=None) -> None:
    sel = urllib.parse.quote(SELECTOR)
    deadline = time.monotonic() + 120 + 4 * JOBS / QPS

    def left(kind: str) -> bool:
        return bool(kube.api("GET", f"/api/v1/namespaces/{ns}/{kind}?labelSelector={sel}&limit=1")["items"])
    while left("pods") or left("secrets"):
        if time.monotonic() > deadline:
            tail = log()[-3000:] if log else ""
            raise RuntimeError(f"timed out waiting for the pods and secrets of {ns} to go\n{tail}")
        time.sleep(0.2)


def audit_counts(path: Path, user: str) -> Counter:
    """(verb, resource) -> requests the user made, from the audit log."""
    out: Counter = Counter()
    with open(path) as f:
        for line in f:
            ev = json.loads(line)
            if ev.get("user", {}).get("username") != user:
                continue
            ref = ev.get("objectRef") or {}
            res = ref.get("resource", ev.get("requestURI", "?"))
            if ref.get("subresource"):
                res += "/" + ref["subresource"]
            out[(ev["verb"], res)] += 1
    return out


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def kube_pool() -> str:
    return (
        "  - name: cpu\n"
        f"    labels: [{', '.join(LABELS[1:])}]\n"
        f"    max_runners: {JOBS}\n"
        "    min_idle: 0\n"
        "    idle_timeout: 1h\n"
        f"    resources: {{cpus: {POD_CPUS}, memory: {POD_MEMORY_GIB}Gi, gpus: 0}}\n"
        "    runner: {image: registry.invalid/runfleet/runner:bench}\n"
        "    node_selector: {runfleet.dev/node-group: cpu}\n"
    )


def daemon(tmp: Path, sim: Simulator, kubeconfig: Path) -> Daemon:
    tmp.mkdir(parents=True, exist_ok=True)
    d = Daemon(tmp, sim, pools=[], webhook_secret=WEBHOOK_SECRET, mutations_per_minute=10000,
               log_level="info")
    cut = d.config_text.index("backend:\n")
    d.config_text = (
        d.config_text[:cut]
        + "backend:\n"
        "  type: kubernetes\n"
        f"  kubernetes: {{namespace: {RUNNER_NS}, lease_name: {FLEET}, kubeconfig: {kubeconfig}, "
        f"qps: {QPS}, burst: {BURST}}}\n"
        "pools:\n" + kube_pool()
    )
    d.config_path.write_text(d.config_text)
    return d


def measure_runfleetd(kube, sim, tmp, kubeconfig) -> dict:
    d = daemon(tmp / "runfleetd", sim, kubeconfig)
    with kube.record_pods(RUNNER_NS, SELECTOR) as rec, SecretTimes(kube, RUNNER_NS) as st:
        try:
            d.start()
            d.wait_for(lambda: "runner pods listed" in d.log(), 60, "the first pod list")
            sim.reset_calls()
            ids = [sim.add_job(LABELS, repo=["acme/widgets", "acme/gadgets"][i % 2])
                   for i in range(JOBS)]
            wait_running(rec, JOBS, "runner pods Running", d.log)
            st.wait(JOBS, d.log)
            # delivered_at is wall-clock time; the watches keep time.monotonic().
            offset = time.time() - time.monotonic()
            jobs = set(ids)
            sent = [x["delivered_at"] - offset for x in sim.deliveries()
                    if x["event"] == "workflow_job" and x["action"] == "queued" and x["job_id"] in jobs]
            out = timings(rec, st, sent)
            out["webhooks"] = max(sent) - min(sent)
            # The objects runfleetd made, as stored, for the reference.
            sel = urllib.parse.quote(SELECTOR)
            pods = kube.api("GET", f"/api/v1/namespaces/{RUNNER_NS}/pods?labelSelector={sel}")["items"]
            secrets = kube.api("GET", f"/api/v1/namespaces/{RUNNER_NS}/secrets?labelSelector={sel}")["items"]
            by_name = {x["metadata"]["name"]: x for x in secrets}
            out["pods"] = [stored(p, REF_NS) for p in pods]
            out["secrets"] = {p["metadata"]["name"]: stored(by_name[p["metadata"]["name"] + "-jit"], REF_NS)
                              for p in pods}
            out["nodes"] = Counter(p["spec"]["nodeName"] for p in pods)
            t1 = time.monotonic()
            for j in ids:
                sim.cancel_job(j)
            wait_gone(kube, RUNNER_NS, d.log)
            out["down"] = time.monotonic() - t1
            out["github_calls"] = sim.call_count()
        finally:
            rc = d.stop()
    if rc != 0:
        raise RuntimeError(f"runfleetd exited {rc}:\n{d.log()[-3000:]}")
    return out


def interrupted(signum, _frame):
    # As Ctrl-C: the finally blocks stop runfleetd, the simulator and the cluster.
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    os.environ.setdefault("RUNFLEET_BIN_DIR", str(ROOT / "build" / "bin"))
    signal.signal(signal.SIGTERM, interrupted)
    with tempfile.TemporaryDirectory(prefix="runfleet-bench-kube-") as tmpdir:
        tmp = Path(tmpdir)
        users = [f"system:serviceaccount:{SYSTEM_NS}:{n}" for n in ("runfleetd", "reference")]
        policy = tmp / "audit-policy.json"
        policy.write_text(audit_policy(users))
        audit_log = tmp / "audit.log"
        kube = kubeharness.KubeCluster(tmp / "kube", extra_apiserver_args=[
            f"--audit-policy-file={policy}", f"--audit-log-path={audit_log}",
            "--audit-log-format=json", "--audit-log-maxsize=0"])
        key = AppKey(str(tmp))
        sim = Simulator(app_id=1, app_public_key_pem=key.public_pem, installation_id=1, org="acme",
                        repos=["acme/widgets", "acme/gadgets"], webhook_secret=WEBHOOK_SECRET,
                        rate_limit=10_000_000, secondary_points_per_minute=10_000_000,
                        content_creating_per_minute=10_000_000)
        sim.app_key_file = key.private_path
        sim.start()
        try:
            kube.start()
            kube.start_scheduler()
            kube.start_kwok()
            kube.eks_nodes()
            big = [f"cpu-large-{i}" for i in range(math.ceil(JOBS / 120))]
            for name in big:
                kube.create_node(name, "cpu", instance_type=BIG_NODE, wait_ready=False)
            for name in big:
                kube.wait_node_ready(name)
            kube.create_namespace(SYSTEM_NS)
            for ns in (RUNNER_NS, REF_NS):
                runner_namespace(kube, ns)
            kube.kubectl("apply", "--server-side", "--field-manager=runfleet-bench", "-f",
                         str(ROOT / "kubernetes" / "base" / "priorityclasses.yaml"))
            _, rf_kubeconfig = identity(kube, "runfleetd")
            ref_token, _ = identity(kube, "reference")
            rf = measure_runfleetd(kube, sim, tmp, rf_kubeconfig)
            ref = reference(kube, ref_token, rf["pods"], rf["secrets"])
            rf_req = audit_counts(audit_log, users[0])
            ref_req = audit_counts(audit_log, users[1])
        finally:
            try:
                for ns in (RUNNER_NS, REF_NS):
                    if kube.running("kube-apiserver"):
                        kube.try_api("DELETE", f"/api/v1/namespaces/{ns}/secrets")
                        kube.delete_pods(ns)
            finally:
                kube.stop()
                sim.stop()
    report(rf, rf_req, ref, ref_req, len(big))
    return 0


def report(rf, rf_req, ref, ref_req, nbig) -> None:
    four = [("create", "pods"), ("create", "secrets"), ("delete", "pods"), ("delete", "secrets")]

    def ratio(a: float, b: float) -> str:
        return f"{b / a:.2f}x" if a > 0 else "-"
    rows = [
        ("first webhook -> all Running + Secret (s)", f"{rf['up']:.2f}", f"{ref['up']:.2f}", ratio(rf["up"], ref["up"])),
        ("first cancel -> all gone (s)", f"{rf['down']:.2f}", f"{ref['down']:.2f}",
         ratio(rf["down"], ref["down"])),
    ]
    for verb, res in four:
        rows.append((f"{verb} {res} / runner", f"{rf_req[(verb, res)] / JOBS:.3f}",
                     f"{ref_req[(verb, res)] / JOBS:.3f}", ""))
    other = {k: v for k, v in rf_req.items() if k not in four}
    ref_other = {k: v for k, v in ref_req.items() if k not in four}
    rows.append(("other requests / runner", f"{sum(other.values()) / JOBS:.3f}",
                 f"{sum(ref_other.values()) / JOBS:.3f}", ""))
    for name, key in (("webhook -> pod created", "created"), ("webhook -> pod + Secret", "startable")):
        for q in (0.5, 0.99):
            a, b = percentile(rf[key], q), percentile(ref[key], q)
            rows.append((f"{name} p{q * 100:.0f} (s)", f"{a:.2f}", f"{b:.2f}", ratio(a, b)))
    w = max(len(r[0]) for r in rows)
    print(f"{'':<{w}} {'runfleetd':>10} {'reference':>10} {'ref/runfleetd':>14}")
    for r in rows:
        print(f"{r[0]:<{w}} {r[1]:>10} {r[2]:>10} {r[3]:>14}")
    print(f"{JOBS} jobs, kube qps {QPS} burst {BURST} (runfleetd and the reference alike); "
          f"webhooks sent over {rf['webhooks']:.2f} s (the reference: all at its start); "
          f"{nbig} {BIG_NODE} nodes added to the EKS node groups, the pods on {len(rf['nodes'])}; "
          f"{rf['github_calls']} GitHub calls")
    print("runfleetd's other requests: " + (", ".join(f"{v} {verb} {res}" for (verb, res), v
                                                        in sorted(other.items())) or "none"))
    if ref_other:
        print("reference's other requests: " + ", ".join(f"{v} {verb} {res}" for (verb, res), v
                                                          in sorted(ref_other.items())))


if __name__ == "__main__":
    sys.exit(main())
