"""What the end-to-end tests of the Kubernetes backend share: runfleetd on
backend kubernetes (KubeDaemon), the pools, the fixtures `sim` (the GitHub
simulator) and `runner_ns` (a runner namespace), RunnerPlayer (see below),
and the checks that every job ran once, on one runner, and that nothing was
left behind.

They run runfleetd end to end on the Kubernetes backend: the real daemon (ASan
build), the GitHub simulator, kube-apiserver with kube-scheduler binding the
runner pods to kwok's fake EKS nodes (tests/kube/kubeharness.py).

No container runs on a kwok node, so the test plays the runner's part: when
a runner pod is Running, RunnerPlayer starts the fake runner
(tests/sim/fake-runner/fake_runner.py) here, with the JIT config and hook
token from the pod's Secret and the pod's plain environment; it takes one
job from the simulator as actions/runner would, and when it exits its exit
code is written on the pod (runfleet.dev/test-exit-code), which kwok turns
into the pod's Succeeded/Failed. A pod deleted while its fake runner lives
stops it as the kubelet would (SIGTERM), or kills it (SIGKILL) when the
pod's node is gone.
"""

from __future__ import annotations

import base64
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
from pathlib import Path

import pytest

import kubeharness
from tests.runfleetd import Daemon, timeout_scale
from tests.sim.github import Simulator
from tests.sim.github.testing import assert_clean
from tests.test_runfleetd import app_key_files  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent.parent
FAKE_RUNNER = REPO / "tests" / "sim" / "fake-runner" / "fake_runner.py"
FLEET = "rf-e2e"
SELECTOR = f"runfleet.dev/fleet={FLEET}"
GPU_TOLERATION = "[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]"
# Pod environment the fake runner must not take: paths inside the image.
IMAGE_ONLY_ENV = ("ACTIONS_RUNNER_HOOK_JOB_STARTED", "ACTIONS_RUNNER_HOOK_JOB_COMPLETED",
                  "RUNFLEET_WORK_DIR", "RUNFLEET_CACHE_DIR")


def kube_pool(name: str, labels: list[str], max_runners: int, node_selector: str, *,
              gpus: int = 0, cpus: int = 2, memory: str = "2Gi", priority: int = 0,
              image: str = "registry.invalid/runfleet/runner:test", idle_timeout: str = "5s",
              min_idle: int = 0, kubernetes: str = "") -> str:
    tol = f"    tolerations: {GPU_TOLERATION}\n" if gpus else ""
    kube = f"    kubernetes: {{{kubernetes}}}\n" if kubernetes else ""
    return (
        f"  - name: {name}\n"
        f"    labels: [{', '.join(labels)}]\n"
        f"    max_runners: {max_runners}\n"
        f"    min_idle: {min_idle}\n"
        f"    idle_timeout: {idle_timeout}\n"
        f"    priority: {priority}\n"
        f"    resources: {{cpus: {cpus}, memory: {memory}, gpus: {gpus}}}\n"
        f"    runner: {{image: {image}}}\n"
        f"    node_selector: {{{node_selector}}}\n"
        f"{tol}{kube}"
    )


# A CPU pool and GPU pools of 1, 4 and 8 GPUs on the default nodes: cpu-0
# (30 usable vCPU), gpu-a100-0/1 (8 GPUs each) and gpu-t4-0 (4 GPUs). The
# 4-GPU pool takes any NVIDIA node, so it competes with the other two.
BURST_POOLS = [
    kube_pool("cpu", ["linux", "cpu"], 10, "runfleet.dev/node-group: cpu"),
    kube_pool("gpu-1", ["linux", "gpu-1"], 10, "runfleet.dev/node-group: gpu-a100",
              gpus=1, cpus=4, memory="16Gi", priority=10),
    kube_pool("gpu-4", ["linux", "gpu-4"], 4, "runfleet.dev/accelerator: nvidia",
              gpus=4, cpus=8, memory="32Gi", priority=10),
    kube_pool("gpu-8", ["linux", "gpu-8"], 2, "runfleet.dev/node-group: gpu-a100",
              gpus=8, cpus=32, memory="256Gi", priority=20),
]
POOL_GROUPS = {"cpu": {"cpu"}, "gpu-1": {"gpu-a100"}, "gpu-4": {"gpu-a100", "gpu-t4"},
               "gpu-8": {"gpu-a100"}}


def runner_namespace(kube) -> str:
    """A runner namespace with what the shipped manifests put there."""
    name = "rf-e2e-" + os.urandom(3).hex()
    kube.create_namespace(name)
    kube.api("POST", f"/api/v1/namespaces/{name}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "runfleet-runner"}, "automountServiceAccountToken": False})
    kube.kubectl("apply", "--server-side", "--field-manager=runfleet-tests", "-f",
                 str(REPO / "kubernetes" / "base" / "priorityclasses.yaml"))
    return name


class KubeDaemon(Daemon):
    """A Daemon on backend kubernetes with the given pools."""

    def __init__(self, tmp, sim, kube, ns: str, pools: list[str]):
        super().__init__(tmp, sim, pools=[])
        cut = self.config_text.index("backend:\n")
        self.config_text = (
            self.config_text[:cut]
            + "backend:\n"
            "  type: kubernetes\n"
            f"  kubernetes: {{namespace: {ns}, lease_name: {FLEET}, "
            f"kubeconfig: {kube.kubeconfig}}}\n"
            "pools:\n" + "".join(pools)
        )
        self.config_path.write_text(self.config_text)

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, the journal as it was."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._log_fh.close()


class RunnerPlayer:
    """Plays the runner container of every Running pod of the fleet in ns
    (see the module's docstring). `exits` is {pod: fake runner exit code};
    `jit_configs` is {pod: the JIT config its Secret carried}. env_for(pod)
    gives extra environment for a pod's fake runner (its hooks, say);
    selector picks the fleet's pods (runfleet.dev/fleet=<its lease name>)."""

    def __init__(self, kube, ns: str, workdir: Path, env_for=None, selector: str = SELECTOR):
        self.kube, self.ns, self.workdir = kube, ns, workdir
        self.selector = selector
        self.env_for = env_for
        self.jit_configs: dict[str, str] = {}
        self.procs: dict[str, tuple[subprocess.Popen, str]] = {}  # pod -> (proc, node)
        self.started: list[str] = []
        self.exits: dict[str, int] = {}
        self.errors: list[str] = []
        self.errors_at: list[float] = []  # time.monotonic() of each of errors
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runner-player", daemon=True)

    def __enter__(self) -> "RunnerPlayer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for _name, (p, _node) in list(self.procs.items()):
            if p.poll() is None:
                p.kill()
            p.wait()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self._step()
            except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError,
                    kubeharness.KubeError, KeyError) as e:
                # Tried again at the next step (an apiserver restarting, say).
                self.errors.append(repr(e))
                self.errors_at.append(time.monotonic())

    def _step(self) -> None:
        sel = urllib.parse.quote(self.selector)
        pods = self.kube.api("GET", f"/api/v1/namespaces/{self.ns}/pods?labelSelector={sel}")
        by_name = {p["metadata"]["name"]: p for p in pods["items"]}
        for name, pod in by_name.items():
            phase = (pod.get("status") or {}).get("phase")
            deleting = bool(pod["metadata"].get("deletionTimestamp"))
            if name not in self.procs and phase == "Running" and not deleting:
                self._start(pod)
        nodes = None
        for name, (p, node) in list(self.procs.items()):
            pod = by_name.get(name)
            if p.poll() is None:
                if pod is None or pod["metadata"].get("deletionTimestamp"):
                    if nodes is None:
                        nodes = self.kube.node_gpus()
                    p.send_signal(signal.SIGKILL if node not in nodes else signal.SIGTERM)
                continue
            if name in self.exits:
                continue
            if pod is not None and not pod["metadata"].get("deletionTimestamp"):
                try:
                    self.kube.complete_pod(self.ns, name, exit_code=p.returncode)
                except urllib.error.HTTPError as e:
                    if e.code != 404:
                        raise
            # Only once written: a failed write is tried again next step.
            self.exits[name] = p.returncode

    def _start(self, pod: dict) -> None:
        name = pod["metadata"]["name"]
        # kwok runs a pod at once; a kubelet would wait for the Secret
        # (created right after the pod), so this waits for it too.
        secret = self.kube.try_api("GET", f"/api/v1/namespaces/{self.ns}/secrets/{name}-jit")
        if secret is None:
            return
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        env = dict(os.environ)
        for e in pod["spec"]["containers"][0].get("env") or []:
            if "value" in e and e["name"] not in IMAGE_ONLY_ENV:
                env[e["name"]] = e["value"]
        env["RUNFLEET_RUNNER_TOKEN"] = data["runner-token"]
        env["RUNFLEET_NODE_NAME"] = pod["spec"]["nodeName"]
        if self.env_for is not None:
            env.update(self.env_for(pod))
        self.jit_configs[name] = data["jitconfig"]
        cwd = self.workdir / name
        cwd.mkdir(exist_ok=True)
        log = open(self.workdir / f"{name}.log", "ab")
        p = subprocess.Popen([sys.executable, "-u", str(FAKE_RUNNER), "--jitconfig", data["jitconfig"]],
                             cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        log.close()
        self.procs[name] = (p, pod["spec"]["nodeName"])
        self.started.append(name)


@pytest.fixture
def sim(app_key_files):  # noqa: F811
    priv, pub = app_key_files
    s = Simulator(
        app_id=4242, app_public_key_pem=pub, webhook_secret=b"runfleet-test-secret",
        installation_id=77, org="acme", repos=["acme/widgets", "acme/gadgets"],
        secondary_points_per_minute=100000, content_creating_per_minute=100000,
        delivery_timeout=10.0,
        # A runner that vanished with its node fails its job soon, as GitHub
        # does after it stops hearing from the runner.
        runner_lost_timeout=3.0,
    )
    s.app_key_file = str(priv)
    s.start()
    yield s
    s.stop()
    assert_clean(s)


@pytest.fixture
def runner_ns(kwok_cluster):
    ns = runner_namespace(kwok_cluster)
    try:
        yield ns
    finally:
        kwok_cluster.delete_pods(ns)


def fleet_items(kube, ns: str, kind: str, selector: str = SELECTOR) -> list[dict]:
    sel = urllib.parse.quote(selector)
    return kube.api("GET", f"/api/v1/namespaces/{ns}/{kind}?labelSelector={sel}")["items"]


def wait(pred, timeout: float, what: str, daemon: Daemon, detail=None):
    deadline = time.monotonic() + timeout * timeout_scale()
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.25)
    extra = f"\n{detail()}" if detail else ""
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}; "
                         f"log tail:\n{daemon.log()[-4000:]}")


def jobs_done(sim, ids: list[int]) -> bool:
    return all(sim.job(j)["status"] == "completed" for j in ids)


def unfinished(sim, ids: list[int]) -> str:
    return "\n".join(f"job {j}: {sim.job(j)['status']} labels={sim.job(j)['labels']} "
                     f"runner={sim.job(j)['runner_name']}"
                     for j in ids if sim.job(j)["status"] != "completed")


def assert_ran_once(sim, ids: list[int]) -> None:
    runners = {}
    for j in ids:
        job = sim.job(j)
        assert job["status"] == "completed" and job["conclusion"] == "success", job
        assert job["events"].count("in_progress") == 1, job["events"]
        runners.setdefault(job["runner_name"], []).append(j)
    doubled = {r: js for r, js in runners.items() if len(js) > 1}
    assert not doubled, f"runners that took more than one job: {doubled}"
    taken = [r for r in sim.runners(include_removed=True) if r["jobs_taken"] > 1]
    assert not taken, taken


def assert_cleaned_up(kube, ns: str, d: Daemon) -> None:
    wait(lambda: not fleet_items(kube, ns, "pods") and not fleet_items(kube, ns, "secrets"),
         30, "the fleet's pods and secrets to go", d)


def node_group(kube, node: str, cache: dict) -> str:
    if node not in cache:
        n = kube.api("GET", f"/api/v1/nodes/{node}")
        cache[node] = n["metadata"]["labels"]["runfleet.dev/node-group"]
    return cache[node]


def max_pods_at_once(rec, pool: str) -> int:
    live: set[str] = set()
    peak = 0
    for e in list(rec.events):
        if e.pod["metadata"]["labels"].get("runfleet.dev/pool") != pool:
            continue
        if e.type == "DELETED" or e.phase in ("Succeeded", "Failed"):
            live.discard(e.name)
        else:
            live.add(e.name)
        peak = max(peak, len(live))
    return peak


def burst(sim, n: int, slower: float = 1.0) -> list[int]:
    """n jobs spread over the four pools, interleaved, over two repos; each
    runs `slower` times its usual 1 or 1.5 s."""
    kinds = [(["self-hosted", "linux", "cpu"], 1.0), (["self-hosted", "linux", "gpu-1"], 1.0),
             (["self-hosted", "linux", "cpu"], 1.0), (["self-hosted", "linux", "gpu-1"], 1.0),
             (["self-hosted", "linux", "gpu-4"], 1.5), (["self-hosted", "linux", "gpu-8"], 1.5)]
    ids = []
    for i in range(n):
        labels, duration = kinds[i % len(kinds)]
        ids.append(sim.add_job(labels, repo=["acme/widgets", "acme/gadgets"][i % 2],
                               duration=duration * slower))
    return ids


def undeleted(items: list[dict]) -> list[str]:
    """Names (with phase) of the objects nobody has asked to delete."""
    return [f"{o['metadata']['name']} ({(o.get('status') or {}).get('phase', '-')})"
            for o in items if not o["metadata"].get("deletionTimestamp")]


def finish(d: KubeDaemon, kube, ns: str, sim) -> None:
    """Stops runfleetd and checks it left nothing: every pod and secret it
    made is deleted by the time it exits. A deleted pod stays listed, with
    a deletionTimestamp, until the fake kubelet has terminated it and kwok
    removes it (two Stages, later under load), so those are waited for."""
    rc = d.stop()
    assert rc == 0, d.log()[-3000:]
    assert d.sanitizer_report() is None, d.sanitizer_report()
    pods = fleet_items(kube, ns, "pods")
    assert undeleted(pods) == [], (undeleted(pods), d.log()[-3000:])
    assert fleet_items(kube, ns, "secrets") == []
    wait(lambda: not fleet_items(kube, ns, "pods"), 30, "the deleted pods to go", d,
         lambda: [o["metadata"]["name"] for o in fleet_items(kube, ns, "pods")])
    assert sim.invalid_requests() == []
