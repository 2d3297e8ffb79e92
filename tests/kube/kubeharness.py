"""A real Kubernetes control plane for tests: etcd + kube-apiserver on loopback,
and on demand kube-scheduler with kwok's fake kubelets on EKS-like Nodes.

The binaries are the pinned builds of tests/kube/build-tools.sh (built once
into ${RUNFLEET_CACHE:-~/.cache/runfleet}/tools, outside the repo). One
cluster serves a whole pytest session: `shared_cluster()` starts it on first
use and the last `release()` (or interpreter exit) stops it, so fixtures in
several conftest.py files share it.

    cluster = KubeCluster(workdir); cluster.start()
    cluster.kubectl("get", "ns")          # CompletedProcess, checked
    cluster.api("GET", "/version")         # parsed JSON
    cluster.stop()

Kept general for the Kubernetes backend's tests: `extra_apiserver_args`,
`start_process()` for more components, and `kubeconfig` / `token` /
`ca_file` for clients.

Pods run on fake Nodes (see docs/DEPLOYMENT-VALIDATION.md, "Pods on fake
nodes"):

    cluster.start_scheduler(); cluster.start_kwok()  # both idempotent
    cluster.eks_nodes()                    # cpu-0, gpu-a100-0/1, gpu-t4-0, Ready
    cluster.api("POST", "/api/v1/namespaces/ns/pods", pod_manifest(...))
    cluster.wait_pod_phase("ns", "p", "Running")
    cluster.complete_pod("ns", "p", exit_code=0)   # -> Succeeded
    with cluster.record_pods("ns") as rec: ...     # every watch event, for
    rec.gpu_overcommits(); rec.unschedulable()     # assertions over time

The Nodes' kubelets are kwok (`kwok-stages.yaml`): a Pod bound to one runs,
completes when the test annotates it (complete_pod), fails to pull any
image under `unpullable.invalid/`, and once deleted ends (143, Failed) and
is removed. Nothing
else acts on objects: there is no kube-controller-manager, so no
ownerReference garbage collection, no namespace deletion, no node
lifecycle (a deleted Node's Pods stay unless delete_node(pod_gc=True)).
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_TOOLS = HERE / "build-tools.sh"
KWOK_STAGES = HERE / "kwok-stages.yaml"

GPU = "nvidia.com/gpu"
# A Pod annotated with this (an integer) completes with that exit code.
EXIT_CODE_ANNOTATION = "runfleet.dev/test-exit-code"
# Images under this registry fail to pull on the fake Nodes.
UNPULLABLE_REGISTRY = "unpullable.invalid"
# kwok manages the Nodes with this annotation, and no others.
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")


def versions() -> dict[str, str]:
    """The pinned tool versions (tests/kube/versions.env)."""
    out = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def tools_dir() -> Path:
    cache = os.environ.get("RUNFLEET_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "runfleet"
    )
    return Path(cache) / "tools"


class ToolBuildError(RuntimeError):
    pass


_built: set[str] = set()
# Commands of the k8s.io/kubernetes module that tool() can build on request
# (build-tools.sh builds kube-apiserver, kubectl and kube-scheduler by default).
KUBE_COMMANDS = ("kube-apiserver", "kubectl", "kube-scheduler", "kube-controller-manager")


def ensure_tools(*names: str, env: dict | None = None) -> None:
    """Builds the named tools (build-tools.sh names) unless cached already.

    The first build of everything takes a while (see docs/DEPLOYMENT-VALIDATION.md);
    its log is kept in <tools>/build.log and its tail is in the error.
    """
    want = [n for n in names if n not in _built]
    if not want:
        return
    log = tools_dir() / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(f"\n==== build-tools.sh {' '.join(want)} at {time.ctime()}\n".encode())
        fh.flush()
        rc = subprocess.call(
            [str(BUILD_TOOLS), *want], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, **(env or {})},
        )
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise ToolBuildError(
            f"tests/kube/build-tools.sh {' '.join(want)} failed (exit {rc}); "
            f"log {log}:\n" + "\n".join(tail)
        )
    _built.update(want)


def tool(name: str) -> Path:
    """Path of a built tool binary, building it first if needed."""
    v = versions()
    table = {
        "etcd": ("etcd", f"etcd-{v['ETCD_VERSION']}/bin/etcd"),
        "kwok": ("kwok", f"kwok-{v['KWOK_VERSION']}/bin/kwok"),
        "kustomize": ("kustomize", f"kustomize-{v['KUSTOMIZE_VERSION']}/bin/kustomize"),
        "helm": ("helm", f"helm-{v['HELM_VERSION']}/bin/helm"),
        "tofu": ("tofu", f"opentofu-{v['OPENTOFU_VERSION']}/bin/tofu"),
        "actionlint": ("actionlint", f"actionlint-{v['ACTIONLINT_VERSION']}/bin/actionlint"),
        "packer": ("packer", f"packer-{v['PACKER_VERSION']}/bin/packer"),
        "packer-plugins": (
            "packer_plugin_amazon",
            f"packer-plugin-amazon-{v['PACKER_PLUGIN_AMAZON_VERSION']}/plugins",
        ),
    }
    if name == "dockerfile-check":
        ensure_tools("dockerfile_check")
        found = sorted(tools_dir().glob(f"dockerfile-check-{v['BUILDKIT_VERSION']}-*/bin/dockerfile-check"),
                       key=lambda p: p.stat().st_mtime)
        if not found:
            raise ToolBuildError("dockerfile-check was not built")
        # The one matching the current main.go is the newest build.
        return found[-1]
    if name in KUBE_COMMANDS:
        path = tools_dir() / f"kubernetes-{v['KUBERNETES_VERSION']}/bin/{name}"
        if not path.exists():
            _built.discard("kube")
            ensure_tools("kube", env={"KUBE_COMMANDS": f"kube-apiserver kubectl kube-scheduler {name}"})
        return path
    target, rel = table[name]
    path = tools_dir() / rel
    if not path.exists():
        ensure_tools(target)
    if not path.exists():
        raise ToolBuildError(f"{name}: {path} missing after build-tools.sh {target}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- EKS-like nodes ----------------------------------------------------------
# AWS's published sizes of the instance types the Terraform environments use,
# and the pods EKS allows on each with the VPC CNI (eni-max-pods).
INSTANCE_TYPES = {
    "m6i.4xlarge": {"vcpu": 16, "mem_gib": 64, "gpus": 0, "max_pods": 234},
    "m6i.8xlarge": {"vcpu": 32, "mem_gib": 128, "gpus": 0, "max_pods": 234},
    "m6i.32xlarge": {"vcpu": 128, "mem_gib": 512, "gpus": 0, "max_pods": 737},
    "g4dn.12xlarge": {"vcpu": 48, "mem_gib": 192, "gpus": 4, "max_pods": 234},
    "p4d.24xlarge": {"vcpu": 96, "mem_gib": 1152, "gpus": 8, "max_pods": 737},
    "p5.48xlarge": {"vcpu": 192, "mem_gib": 2048, "gpus": 8, "max_pods": 100},
}
# Kept back from allocatable for the kubelet and system daemons, as
# tests/deploy/test_deploy_consistency.py assumes when it checks that each
# pool fits its node group.
RESERVED_VCPU = 2
USABLE_MEMORY = 0.9
GPU_TAINT = {"key": GPU, "value": "true", "effect": "NoSchedule"}
# The node groups of terraform/environments/{production,staging} (names,
# labels, taints, instance types), which the pools of the shipped runfleetd
# configs select with runfleet.dev/node-group; the cpu group is production's.
NODE_GROUPS = {
    "cpu": {"instance_type": "m6i.8xlarge", "labels": {"runfleet.dev/node-group": "cpu"},
            "taints": []},
    "gpu-a100": {"instance_type": "p4d.24xlarge", "taints": [GPU_TAINT], "labels": {
        "runfleet.dev/node-group": "gpu-a100", "runfleet.dev/accelerator": "nvidia",
        "runfleet.dev/gpu-type": "a100"}},
    "gpu-h100": {"instance_type": "p5.48xlarge", "taints": [GPU_TAINT], "labels": {
        "runfleet.dev/node-group": "gpu-h100", "runfleet.dev/accelerator": "nvidia",
        "runfleet.dev/gpu-type": "h100"}},
    "gpu-t4": {"instance_type": "g4dn.12xlarge", "taints": [GPU_TAINT], "labels": {
        "runfleet.dev/node-group": "gpu-t4", "runfleet.dev/accelerator": "nvidia",
        "runfleet.dev/gpu-type": "t4"}},
}
# What eks_nodes() creates by default: a CPU node, two 8-GPU A100 nodes and
# one 4-GPU T4 node.
DEFAULT_NODES = {"cpu": 1, "gpu-a100": 2, "gpu-t4": 1}


def node_manifest(name: str, group: str = "cpu", instance_type: str | None = None,
                  labels: dict | None = None, taints: list | None = None,
                  gpus: int | None = None, zone: str = "us-east-1a") -> dict:
    """A Node as EKS registers one of `group` (a NODE_GROUPS name, or any
    name with instance_type given), managed by kwok. Capacity is the
    instance type's; allocatable keeps RESERVED_VCPU and 10% of memory back.
    labels are added to the group's; taints and gpus replace its defaults."""
    spec = NODE_GROUPS.get(group, {"labels": {"runfleet.dev/node-group": group}, "taints": []})
    itype = instance_type or spec.get("instance_type")
    if itype not in INSTANCE_TYPES:
        raise ValueError(f"unknown instance type {itype!r} (one of {sorted(INSTANCE_TYPES)})")
    size = INSTANCE_TYPES[itype]
    ngpus = size["gpus"] if gpus is None else gpus
    capacity = {
        "cpu": str(size["vcpu"]), "memory": f"{size['mem_gib']}Gi",
        "ephemeral-storage": "200Gi", "pods": str(size["max_pods"]),
    }
    allocatable = {
        "cpu": f"{(size['vcpu'] - RESERVED_VCPU) * 1000}m",
        "memory": f"{int(size['mem_gib'] * USABLE_MEMORY * 1024)}Mi",
        "ephemeral-storage": "180Gi", "pods": str(size["max_pods"]),
    }
    if ngpus:
        capacity[GPU] = allocatable[GPU] = str(ngpus)
    # A stable private address per name, as the VPC CNI's node IP.
    h = int.from_bytes(name.encode()[:16].ljust(16, b"\0"), "big") % 65000
    ip = f"10.0.{1 + h // 254 % 250}.{1 + h % 254}"
    region = zone[:-1]
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": itype,
                "topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone,
                "eks.amazonaws.com/nodegroup": group, "eks.amazonaws.com/capacityType": "ON_DEMAND",
                **spec["labels"], **(labels or {}),
            },
            "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1],
                            "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {
            "providerID": f"aws:///{zone}/i-{os.urandom(8).hex()[:17]}",
            "taints": [dict(t) for t in (spec["taints"] if taints is None else taints)],
        },
        "status": {
            "capacity": capacity, "allocatable": allocatable,
            "addresses": [{"type": "InternalIP", "address": ip},
                          {"type": "Hostname", "address": name},
                          {"type": "InternalDNS", "address": f"ip-{ip.replace('.', '-')}.ec2.internal"}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                         "osImage": "Amazon Linux 2023",
                         "kubeletVersion": versions()["KUBERNETES_VERSION"]},
        },
    }


def pod_manifest(name: str, image: str = "registry.invalid/runfleet/runner-base:test",
                 group: str | None = None, gpus: int = 0, cpu: str = "100m",
                 memory: str = "128Mi", labels: dict | None = None,
                 annotations: dict | None = None, exit_code: int | None = None) -> dict:
    """A one-container, restartPolicy: Never Pod. group adds the
    runfleet.dev/node-group selector; gpus the nvidia.com/gpu limit and the
    GPU taint's toleration; exit_code makes it complete as soon as it runs."""
    res = {"cpu": cpu, "memory": memory}
    limits = dict(res)
    if gpus:
        limits[GPU] = str(gpus)
    ann = dict(annotations or {})
    if exit_code is not None:
        ann[EXIT_CODE_ANNOTATION] = str(int(exit_code))
    spec: dict = {
        "restartPolicy": "Never",
        "containers": [{"name": "runner", "image": image,
                        "resources": {"requests": res, "limits": limits}}],
    }
    if group:
        spec["nodeSelector"] = {"runfleet.dev/node-group": group}
    if gpus:
        spec["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": dict(labels or {}), "annotations": ann},
            "spec": spec}


def pod_gpus(pod: dict) -> int:
    """GPUs a Pod holds on its node, as the scheduler counts them: the
    larger of its containers' sum and its largest init container."""
    def gpus(c: dict) -> int:
        r = c.get("resources") or {}
        return int((r.get("requests") or {}).get(GPU) or (r.get("limits") or {}).get(GPU) or 0)
    spec = pod.get("spec") or {}
    main = sum(gpus(c) for c in spec.get("containers") or [])
    init = max([gpus(c) for c in spec.get("initContainers") or []] or [0])
    return max(main, init)


def pod_condition(pod: dict, ctype: str) -> dict | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def is_unschedulable(pod: dict) -> bool:
    """The scheduler tried and found no node that fits."""
    c = pod_condition(pod, "PodScheduled")
    return bool(c and c.get("status") == "False" and c.get("reason") == "Unschedulable")


class KubeError(RuntimeError):
    """An API answer other than 2xx: `code` and the Status `reason`."""

    def __init__(self, code: int, reason: str, message: str):
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message


class KubeCluster:
    """etcd + kube-apiserver on 127.0.0.1 with token authentication and RBAC;
    on demand kube-scheduler and kwok (start_scheduler, start_kwok).

    The apiserver runs without a watch cache, so watches are served by etcd
    itself and compact_etcd() expires older resourceVersions at once (a
    cached apiserver answers from its own window of recent events)."""

    def __init__(self, workdir: Path | None = None, extra_apiserver_args: list[str] | None = None,
                 audit: bool = False):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="runfleet-kube-"))
        self.extra_apiserver_args = list(extra_apiserver_args or [])
        # With audit, every request of a ServiceAccount is written to
        # audit_log (audit_events() reads it); other identities are not.
        self.audit = audit
        self.audit_log = self.workdir / "audit.log"
        self.token = "runfleet-test-admin-" + os.urandom(8).hex()
        self.scheduler_token = "runfleet-test-scheduler-" + os.urandom(8).hex()
        self.kwok_token = "runfleet-test-kwok-" + os.urandom(8).hex()
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.etcd_port = 0
        self.port = 0
        self.server = ""
        self.scheduler_port = 0
        self.kwok_port = 0
        self.kubeconfig = self.workdir / "kubeconfig"
        self.ca_file = self.workdir / "certs" / "apiserver.crt"
        self._apiserver_argv: list[str] = []
        self._ssl_ctx: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    # -- processes -------------------------------------------------------
    def start_process(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        """Starts a component in its own process group, logging to <workdir>/<name>.log
        (appended to, so a restarted component keeps its earlier lines)."""
        log = open(self.workdir / f"{name}.log", "ab")
        p = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.workdir, env=env,
        )
        log.close()
        self.procs.append((name, p))
        return p

    def running(self, name: str) -> bool:
        return any(n == name and p.poll() is None for n, p in self.procs)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _write_sa_keys(self) -> tuple[Path, Path]:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        priv = self.workdir / "sa.key"
        pub = self.workdir / "sa.pub"
        priv.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        pub.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return priv, pub

    def start(self, timeout: float = 90.0) -> "KubeCluster":
        etcd = tool("etcd")
        apiserver = tool("kube-apiserver")
        tool("kubectl")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "certs").mkdir(exist_ok=True)
        try:
            self._start_etcd(etcd, timeout)
            self._start_apiserver(apiserver, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_etcd(self, etcd: Path, timeout: float) -> None:
        self.etcd_port = free_port()
        peer = free_port()
        self.start_process("etcd", [
            str(etcd), "--name", "default", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            "--log-level", "warn", "--unsafe-no-fsync",
        ])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/health", timeout=2) as r:
                    if json.load(r).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("etcd did not become healthy:\n" + self.log_tail("etcd"))

    def _start_apiserver(self, apiserver: Path, timeout: float) -> None:
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        tokens = self.workdir / "tokens.csv"
        # The scheduler has its own identity, bound by the bootstrap RBAC
        # policy (system:kube-scheduler); kwok stands in for every kubelet.
        tokens.write_text(
            f'{self.token},admin,admin,"system:masters"\n'
            f"{self.scheduler_token},system:kube-scheduler,system:kube-scheduler\n"
            f'{self.kwok_token},runfleet-test-kwok,runfleet-test-kwok,"system:masters"\n')
        sa_key, sa_pub = self._write_sa_keys()
        self._apiserver_argv = [
            str(apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            # TokenRequest (service_account_token) signs with this key and
            # issuer; the apiserver also verifies what it signed.
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--watch-cache=false",
            # On SIGTERM, end open watches instead of waiting for them
            # (restart_apiserver takes a second, not a kill after 10).
            "--shutdown-watch-termination-grace-period=2s",
            *self._audit_args(),
            *self.extra_apiserver_args,
        ]
        self.start_process("kube-apiserver", self._apiserver_argv)
        self._wait_apiserver(timeout)
        self._write_kubeconfig(self.kubeconfig, "admin", self.token)

    def _audit_args(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(json.dumps({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            # A request is logged once answered; a watch also when its
            # answer starts (ResponseStarted), so it is seen while it runs.
            "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
                      {"level": "None"}],
        }))
        # The log backend's default mode is blocking: an event is in the
        # file before the request's answer is sent.
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json", "--audit-log-maxbackup=0"]

    def audit_events(self, user: str | None = None) -> list[dict]:
        """The requests in the audit log, one audit.k8s.io/v1 Event each (its
        last stage: verb, objectRef, responseStatus.code, user, userAgent,
        ...), in order, of `user` alone if given. Needs KubeCluster(audit=True)."""
        if not self.audit:
            raise RuntimeError("audit_events() needs KubeCluster(audit=True)")
        out: dict[str, dict] = {}
        if self.audit_log.exists():
            for line in self.audit_log.read_text().splitlines():
                if line.strip():
                    ev = json.loads(line)
                    if user is None or (ev.get("user") or {}).get("username") == user:
                        out[ev["auditID"]] = ev  # a later stage replaces an earlier
        return list(out.values())

    def _wait_apiserver(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                ok = self._raw("GET", "/readyz", verify=False, timeout=5)
                if ok.strip() == b"ok":
                    return
            except (OSError, urllib.error.URLError, KubeError) as e:
                last = str(e)
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready ({last}):\n" + self.log_tail("kube-apiserver"))

    def restart_apiserver(self, timeout: float = 90.0, while_down=None) -> None:
        """Stops kube-apiserver and starts it again on the same port, etcd,
        serving certificate and tokens; open watches break and clients
        reconnect (kube-scheduler and kwok do by themselves). while_down(),
        if given, runs once it has stopped: expire_resource_versions, say."""
        i = next(i for i, (n, _p) in enumerate(self.procs) if n == "kube-apiserver")
        _name, p = self.procs.pop(i)
        _terminate(p)
        if while_down is not None:
            try:
                while_down()
            except BaseException:
                self.start_process("kube-apiserver", self._apiserver_argv)
                self.procs.insert(i, self.procs.pop())
                raise
        # Back in its place, so stop() still ends the components in reverse start order.
        self.start_process("kube-apiserver", self._apiserver_argv)
        self.procs.insert(i, self.procs.pop())
        self._wait_apiserver(timeout)

    def _check_alive(self) -> None:
        for name, p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n" + self.log_tail(name))

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.server, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
        }))
        path.chmod(0o600)

    # -- kube-scheduler and kwok ----------------------------------------
    def start_scheduler(self, timeout: float = 60.0) -> None:
        """Starts kube-scheduler (the pinned build) unless running: no leader
        election, its own kubeconfig and identity, a loopback port, and a
        1 s backoff for Pods that did not fit, so they are retried quickly."""
        with self._lock:
            if self.running("kube-scheduler"):
                return
            binary = tool("kube-scheduler")
            self.scheduler_port = free_port()
            kubeconfig = self.workdir / "scheduler.kubeconfig"
            self._write_kubeconfig(kubeconfig, "system:kube-scheduler", self.scheduler_token)
            config = self.workdir / "scheduler.yaml"
            config.write_text(json.dumps({
                "apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "KubeSchedulerConfiguration",
                "clientConnection": {"kubeconfig": str(kubeconfig), "qps": 200, "burst": 400},
                "leaderElection": {"leaderElect": False},
                "podInitialBackoffSeconds": 1,
                "podMaxBackoffSeconds": 1,
            }))
            (self.workdir / "scheduler-certs").mkdir(exist_ok=True)
            self.start_process("kube-scheduler", [
                str(binary), f"--config={config}",
                "--bind-address=127.0.0.1", f"--secure-port={self.scheduler_port}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--v=2",
            ])
            self._wait_http(f"https://127.0.0.1:{self.scheduler_port}/readyz", "kube-scheduler", timeout)

    def start_kwok(self, timeout: float = 60.0) -> None:
        """Starts kwok unless running: the kubelet of every Node annotated
        kwok.x-k8s.io/node=fake (create_node sets it), acting as
        kwok-stages.yaml says, and of no other Node."""
        with self._lock:
            if self.running("kwok"):
                return
            binary = tool("kwok")
            self.kwok_port = free_port()
            kubeconfig = self.workdir / "kwok.kubeconfig"
            self._write_kubeconfig(kubeconfig, "runfleet-test-kwok", self.kwok_token)
            home = self.workdir / "kwok-home"  # so no ~/.kwok/kwok.yaml is read
            home.mkdir(exist_ok=True)
            self.start_process("kwok", [
                str(binary), f"--kubeconfig={kubeconfig}", f"--config={KWOK_STAGES}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=" + "=".join(KWOK_NODE_ANNOTATION),
                "--cidr=10.244.0.0/16",
                f"--server-address=127.0.0.1:{self.kwok_port}",
            ], env={**os.environ, "HOME": str(home)})
            self._wait_http(f"http://127.0.0.1:{self.kwok_port}/healthz", "kwok", timeout)

    def _wait_http(self, url: str, name: str, timeout: float) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                kw = {"context": ctx} if url.startswith("https") else {}
                with urllib.request.urlopen(url, timeout=2, **kw) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready at {url} ({last}):\n" + self.log_tail(name))

    # -- clients -------------------------------------------------------
    def _ssl(self, verify: bool = True) -> ssl.SSLContext:
        if not verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        if self._ssl_ctx is None:
            self._ssl_ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl_ctx

    def _raw(self, method: str, path: str, body: bytes | None = None, token: str | None = None,
             verify: bool = True, content_type: str = "application/json",
             timeout: float = 30) -> bytes:
        req = urllib.request.Request(self.server + path, data=body, method=method)
        tok = self.token if token is None else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        if body is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, context=self._ssl(verify), timeout=timeout) as r:
            return r.read()

    def api(self, method: str, path: str, obj: dict | None = None, token: str | None = None,
            content_type: str = "application/json"):
        """A REST call with the admin token (or `token`); returns parsed JSON.
        Errors raise urllib.error.HTTPError (code, and the Status as body)."""
        body = json.dumps(obj).encode() if obj is not None else None
        return json.loads(self._raw(method, path, body, token=token,
                                    content_type=content_type) or b"null")

    def try_api(self, method: str, path: str, obj: dict | None = None,
                content_type: str = "application/json"):
        """api(), but a 404 answers None and other errors raise KubeError."""
        try:
            return self.api(method, path, obj, content_type=content_type)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise _kube_error(e) from None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        cp = subprocess.run(
            [str(tool("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
        if check and cp.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({cp.returncode}):\n{cp.stderr}\n{cp.stdout}")
        return cp

    def wait_for(self, what: str, fn, timeout: float = 30.0, interval: float = 0.1):
        """Calls fn() until it returns something truthy, and returns that;
        AssertionError naming `what` after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            got = fn()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(interval)

    # -- nodes -----------------------------------------------------------
    def create_node(self, name: str, group: str = "cpu", instance_type: str | None = None,
                    labels: dict | None = None, taints: list | None = None,
                    gpus: int | None = None, zone: str = "us-east-1a",
                    wait_ready: bool = True, timeout: float = 30.0) -> dict:
        """Creates the Node node_manifest() describes (kwok must be running
        for it to become Ready) and, with wait_ready, waits until it is
        Ready with its allocatable; returns the Node."""
        self.api("POST", "/api/v1/nodes",
                 node_manifest(name, group, instance_type, labels, taints, gpus, zone))
        if not wait_ready:
            return self.api("GET", f"/api/v1/nodes/{name}")
        return self.wait_node_ready(name, timeout)

    def wait_node_ready(self, name: str, timeout: float = 30.0) -> dict:
        def ready():
            node = self.try_api("GET", f"/api/v1/nodes/{name}")
            c = node and pod_condition(node, "Ready")
            return node if c and c.get("status") == "True" else None
        return self.wait_for(f"node {name} Ready", ready, timeout)

    def eks_nodes(self, counts: dict[str, int] | None = None, wait_ready: bool = True,
                  timeout: float = 30.0) -> list[str]:
        """Creates counts[group] Nodes of each NODE_GROUPS group (default
        DEFAULT_NODES: cpu-0, gpu-a100-0, gpu-a100-1, gpu-t4-0), named
        <group>-<i>, and returns their names once all are Ready."""
        names = []
        for group, n in (DEFAULT_NODES if counts is None else counts).items():
            for i in range(n):
                names.append(f"{group}-{i}")
                self.create_node(names[-1], group, wait_ready=False)
        if wait_ready:
            for name in names:
                self.wait_node_ready(name, timeout)
        return names

    def delete_node(self, name: str, pod_gc: bool = False, wait: bool = True,
                    timeout: float = 30.0) -> None:
        """Deletes the Node. Its Pods stay bound to it (no controller removes
        them here) unless pod_gc, which does what the PodGC controller does
        for Pods of a vanished node: marks each Failed with the
        DisruptionTarget condition (reason DeletionByPodGC), then deletes it
        at once."""
        self.try_api("DELETE", f"/api/v1/nodes/{name}")
        if wait:
            self.wait_for(f"node {name} deleted",
                          lambda: self.try_api("GET", f"/api/v1/nodes/{name}") is None, timeout)
        if pod_gc:
            for pod in self.pods_on_node(name):
                self._pod_gc(pod)

    def delete_nodes(self, names: list[str] | None = None, pod_gc: bool = True) -> None:
        """Deletes the named Nodes (default: every kwok-managed Node)."""
        if names is None:
            names = [n["metadata"]["name"] for n in self.api("GET", "/api/v1/nodes")["items"]
                     if (n["metadata"].get("annotations") or {}).get(KWOK_NODE_ANNOTATION[0])
                     == KWOK_NODE_ANNOTATION[1]]
        for name in names:
            self.delete_node(name, pod_gc=pod_gc)

    def _pod_gc(self, pod: dict) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.try_api("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", {
                "status": {"phase": "Failed", "conditions": [{
                    "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                    "message": "PodGC: node no longer exists", "lastTransitionTime": now}]}},
                content_type="application/strategic-merge-patch+json")
        self.try_api("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}",
                     {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})

    def pods_on_node(self, name: str) -> list[dict]:
        sel = urllib.parse.quote(f"spec.nodeName={name}")
        return self.api("GET", f"/api/v1/pods?fieldSelector={sel}")["items"]

    def node_gpus(self) -> dict[str, int]:
        """{node: allocatable nvidia.com/gpu} of every Node."""
        return {n["metadata"]["name"]: int((n.get("status") or {}).get("allocatable", {}).get(GPU, 0))
                for n in self.api("GET", "/api/v1/nodes")["items"]}

    # -- namespaces and pods ---------------------------------------------
    def create_namespace(self, name: str) -> None:
        """Creates the namespace unless it exists."""
        try:
            self.api("POST", "/api/v1/namespaces",
                     {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise _kube_error(e) from None

    def delete_pods(self, ns: str) -> None:
        """Deletes every Pod in ns at once (grace period 0) and waits until
        they are gone (namespaces themselves are never finalized here: no
        namespace controller runs)."""
        self.try_api("DELETE", f"/api/v1/namespaces/{ns}/pods",
                     {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
        self.wait_for(f"pods of {ns} deleted",
                      lambda: not self.api("GET", f"/api/v1/namespaces/{ns}/pods")["items"])

    def create_pod(self, ns: str, pod: dict) -> dict:
        return self.api("POST", f"/api/v1/namespaces/{ns}/pods", pod)

    def get_pod(self, ns: str, name: str) -> dict | None:
        return self.try_api("GET", f"/api/v1/namespaces/{ns}/pods/{name}")

    def complete_pod(self, ns: str, name: str, exit_code: int = 0) -> None:
        """Tells the Pod's fake kubelet its containers exited with exit_code:
        once Running it becomes Succeeded (0) or Failed, each container
        terminated with that exitCode (reason Completed or Error)."""
        self.api("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}",
                 {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: str(int(exit_code))}}},
                 content_type="application/merge-patch+json")

    def wait_pod(self, ns: str, name: str, what: str, pred, timeout: float = 30.0) -> dict:
        """Waits until pred(pod) is true; returns the Pod."""
        def check():
            pod = self.get_pod(ns, name)
            return pod if pod is not None and pred(pod) else None
        return self.wait_for(f"pod {ns}/{name} {what}", check, timeout)

    def wait_pod_phase(self, ns: str, name: str, phase: str, timeout: float = 30.0) -> dict:
        """Waits until the Pod's status.phase is phase; returns the Pod."""
        return self.wait_pod(ns, name, f"phase {phase}",
                             lambda p: (p.get("status") or {}).get("phase") == phase, timeout)

    def wait_pod_gone(self, ns: str, name: str, timeout: float = 30.0) -> None:
        self.wait_for(f"pod {ns}/{name} gone", lambda: self.get_pod(ns, name) is None, timeout)

    def record_pods(self, ns: str | None = None, label_selector: str | None = None) -> "PodRecorder":
        """Starts recording every watch event of the Pods in ns (None: all
        namespaces) matching label_selector; see PodRecorder."""
        return PodRecorder(self, ns, label_selector).start()

    # -- etcd, tokens ----------------------------------------------------
    def compact_etcd(self) -> int:
        """Compacts etcd's history up to its current revision (etcd's JSON
        gateway, physically) and returns that revision: from then on a watch
        or list from an older resourceVersion answers 410 Gone."""
        base = f"http://127.0.0.1:{self.etcd_port}/v3/kv"

        def post(path, obj):
            req = urllib.request.Request(base + path, data=json.dumps(obj).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.load(r)
        # A range over an absent key answers only the header, with the revision.
        rev = int(post("/range", {"key": "AA=="})["header"]["revision"])
        post("/compaction", {"revision": str(rev), "physical": True})
        return rev

    def expire_resource_versions(self) -> int:
        """Writes a key of no resource straight to etcd twice (two
        revisions), then compacts up to the last: every resourceVersion a
        client holds, even that of the very last change, is then older than
        the compacted revision less one (a watch from which is still served,
        as it asks for what came after), and its next watch answers 410
        Gone. Meant for while the apiserver is down
        (restart_apiserver(while_down=...)): with no writes through it,
        nothing newer can be seen in between. Returns the revision."""
        base = f"http://127.0.0.1:{self.etcd_port}/v3/kv"
        key = base64.b64encode(b"/runfleet-tests/expire").decode()
        for _ in range(2):
            value = base64.b64encode(os.urandom(8)).decode()
            req = urllib.request.Request(base + "/put", data=json.dumps({"key": key, "value": value}).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                json.load(r)
        return self.compact_etcd()

    def service_account_token(self, ns: str, sa: str, audiences: list[str] | None = None,
                              expiration_seconds: int = 3600) -> str:
        """A bound token for ServiceAccount ns/sa (created if missing) from the
        TokenRequest API, as the kubelet mounts into pods; it authenticates
        as system:serviceaccount:<ns>:<sa> with RBAC deciding the rest."""
        try:
            self.api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
                     {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}})
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise _kube_error(e) from None
        spec: dict = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = audiences
        got = self.api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
                       {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                        "spec": spec})
        return got["status"]["token"]

    # -- teardown ------------------------------------------------------
    def stop(self) -> None:
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _name, p in reversed(self.procs):
            _reap(p)
        self.procs.clear()
        if self._own_workdir and not os.environ.get("RUNFLEET_KEEP_KUBE"):
            shutil.rmtree(self.workdir, ignore_errors=True)


def _reap(p: subprocess.Popen) -> None:
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)


def _terminate(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _reap(p)


def _kube_error(e: urllib.error.HTTPError) -> KubeError:
    try:
        status = json.loads(e.read() or b"{}")
    except ValueError:
        status = {}
    return KubeError(e.code, status.get("reason", ""), status.get("message", str(e)))


# -- watching pods -------------------------------------------------------------
@dataclass
class PodEvent:
    """One watch event: when it arrived (time.monotonic()), ADDED / MODIFIED /
    DELETED (or RELISTED: the state a relist after 410 Gone found), the Pod."""
    at: float
    type: str
    pod: dict

    @property
    def name(self) -> str:
        return self.pod["metadata"]["name"]

    @property
    def phase(self) -> str:
        return (self.pod.get("status") or {}).get("phase", "")

    @property
    def node(self) -> str:
        return (self.pod.get("spec") or {}).get("nodeName") or ""


@dataclass
class PodRecorder:
    """Watches Pods in a thread and keeps every event in `events`, in order,
    across apiserver restarts (reconnecting from the last resourceVersion)
    and 410 Gone (relisting). Use as a context manager, or start()/stop()."""
    cluster: KubeCluster
    ns: str | None
    label_selector: str | None
    events: list[PodEvent] = field(default_factory=list)
    relists: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._resp = None
        self._rv = ""
        self._state: dict[str, dict] = {}  # uid -> latest Pod
        self._capacity: dict[str, int] = {}

    # -- lifecycle --
    def start(self) -> "PodRecorder":
        self._capacity = self.cluster.node_gpus()
        self._list()
        self._thread = threading.Thread(target=self._run, name="pod-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self, sync: bool = True) -> None:
        """Stops watching, after catching up with the current state if sync."""
        if sync and self._thread and self._thread.is_alive():
            self.sync()
        self._stop.set()
        resp = self._resp
        if resp is not None:
            # Unblock the thread's read of the open watch at once.
            try:
                resp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
            except (AttributeError, OSError):
                pass  # it ends by itself within the watch's 2 s timeout
        if self._thread:
            self._thread.join(timeout=10)

    def __enter__(self) -> "PodRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.stop(sync=exc[0] is None)

    def _path(self) -> tuple[str, dict]:
        base = f"/api/v1/namespaces/{self.ns}/pods" if self.ns else "/api/v1/pods"
        q = {}
        if self.label_selector:
            q["labelSelector"] = self.label_selector
        return base, q

    def _list(self) -> None:
        base, q = self._path()
        got = self.cluster.api("GET", base + ("?" + urllib.parse.urlencode(q) if q else ""))
        now = time.monotonic()
        seen = set()
        with self._cond:
            for pod in got["items"]:
                uid = pod["metadata"]["uid"]
                seen.add(uid)
                old = self._state.get(uid)
                if old is None or old["metadata"]["resourceVersion"] != pod["metadata"]["resourceVersion"]:
                    self._record(PodEvent(now, "RELISTED" if self._rv else "ADDED", pod))
            for uid in [u for u in self._state if u not in seen]:
                self._record(PodEvent(now, "DELETED", self._state[uid]))
            self._rv = got["metadata"]["resourceVersion"]
            self._cond.notify_all()

    def _record(self, ev: PodEvent) -> None:
        self.events.append(ev)
        uid = ev.pod["metadata"]["uid"]
        if ev.type == "DELETED":
            self._state.pop(uid, None)
        else:
            self._state[uid] = ev.pod
        node = ev.node
        if node and node not in self._capacity:
            self._capacity[node] = self.cluster.node_gpus().get(node, 0)

    def _run(self) -> None:
        while not self._stop.is_set():
            base, q = self._path()
            q.update({"watch": "1", "resourceVersion": self._rv, "allowWatchBookmarks": "true",
                      "timeoutSeconds": "2"})
            try:
                req = urllib.request.Request(self.cluster.server + base + "?" + urllib.parse.urlencode(q))
                req.add_header("Authorization", f"Bearer {self.cluster.token}")
                with urllib.request.urlopen(req, context=self.cluster._ssl(), timeout=10) as r:
                    self._resp = r
                    for line in r:
                        if self._stop.is_set():
                            return
                        if line.strip():
                            self._event(json.loads(line))
            except _Gone:
                self.relists += 1
                self._relist()
            except urllib.error.HTTPError as e:
                if e.code == 410:
                    self.relists += 1
                    self._relist()
                else:
                    self.errors.append(f"watch: HTTP {e.code}")
                    time.sleep(0.2)
            except (OSError, ValueError, urllib.error.URLError) as e:
                if self._stop.is_set():
                    return
                # The apiserver restarting, or the connection cut: reconnect from _rv.
                self.errors.append(f"watch: {e}")
                time.sleep(0.2)
            finally:
                self._resp = None

    def _relist(self) -> None:
        while not self._stop.is_set():
            try:
                self._list()
                return
            except (OSError, urllib.error.URLError) as e:
                self.errors.append(f"relist: {e}")
                time.sleep(0.2)

    def _event(self, ev: dict) -> None:
        typ, obj = ev.get("type"), ev.get("object") or {}
        if typ == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise ValueError(f"watch error: {obj}")
        with self._cond:
            self._rv = obj["metadata"]["resourceVersion"]
            if typ != "BOOKMARK":
                self._record(PodEvent(time.monotonic(), typ, obj))
            self._cond.notify_all()

    # -- reading --
    def sync(self, timeout: float = 15.0) -> None:
        """Waits until the recorder has seen the Pods as a list shows them now."""
        base, q = self._path()
        got = self.cluster.api("GET", base + ("?" + urllib.parse.urlencode(q) if q else ""))
        want = {p["metadata"]["uid"]: p["metadata"]["resourceVersion"] for p in got["items"]}

        def caught_up():
            have = {u: p["metadata"]["resourceVersion"] for u, p in self._state.items()}
            return all(u in have and int(have[u]) >= int(rv) for u, rv in want.items()) and \
                all(u in want for u in have)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not caught_up():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("pod recorder did not catch up with the apiserver")
                self._cond.wait(min(left, 0.2))

    def of(self, name: str) -> list[PodEvent]:
        """The events of the Pods named name."""
        return [e for e in list(self.events) if e.name == name]

    def phases(self, name: str) -> list[str]:
        """The distinct phases the Pod went through, in order."""
        out: list[str] = []
        for e in self.of(name):
            if e.phase and (not out or out[-1] != e.phase):
                out.append(e.phase)
        return out

    def wait(self, what: str, pred, timeout: float = 30.0) -> PodEvent:
        """Waits for an event (past or future) with pred(event); returns it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            i = 0
            while True:
                while i < len(self.events):
                    if pred(self.events[i]):
                        return self.events[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
                self._cond.wait(min(left, 0.2))

    def unschedulable(self) -> list[PodEvent]:
        """Events in which a Pod was Pending because no node fitted it."""
        return [e for e in list(self.events) if e.type != "DELETED" and is_unschedulable(e.pod)]

    def gpus_in_use(self) -> list[tuple[float, dict[str, int]]]:
        """After each event: {node: nvidia.com/gpu held by the Pods bound to
        it that have not terminated} (a Pod being deleted still holds its
        GPUs until it is gone, as on a real node)."""
        state: dict[str, dict] = {}
        out = []
        for e in list(self.events):
            uid = e.pod["metadata"]["uid"]
            if e.type == "DELETED":
                state.pop(uid, None)
            else:
                state[uid] = e.pod
            use: dict[str, int] = {}
            for pod in state.values():
                node = (pod.get("spec") or {}).get("nodeName")
                if node and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    use[node] = use.get(node, 0) + pod_gpus(pod)
            out.append((e.at, use))
        return out

    def max_gpus_in_use(self) -> dict[str, int]:
        """{node: the most GPUs its Pods held at any one moment}."""
        peak: dict[str, int] = {}
        for _at, use in self.gpus_in_use():
            for node, n in use.items():
                peak[node] = max(peak.get(node, 0), n)
        return peak

    def gpu_overcommits(self, capacity: dict[str, int] | None = None) -> list[tuple[float, str, int, int]]:
        """(time, node, GPUs requested, GPUs allocatable) for every moment at
        which the Pods on a node held more GPUs than it has (capacity
        defaults to the nodes' allocatable as first seen)."""
        cap = dict(self._capacity, **(capacity or {}))
        bad = []
        for at, use in self.gpus_in_use():
            for node, n in use.items():
                if n > cap.get(node, 0):
                    bad.append((at, node, n, cap.get(node, 0)))
        return bad


class _Gone(Exception):
    """A watch answered 410 Gone: relist."""


# -- one cluster per test session ------------------------------------------
_shared: KubeCluster | None = None
_users = 0


def _interrupt_on_sigterm(signum, _frame):
    # As Ctrl-C: pytest runs the fixtures' teardown, then atexit stops the rest.
    raise KeyboardInterrupt(f"signal {signum}")


def shared_cluster() -> KubeCluster:
    """The session's cluster, started on first use; pair with release().
    It is stopped by the last release(), at interpreter exit, and on SIGTERM
    (turned into KeyboardInterrupt unless something else handles SIGTERM)."""
    global _shared, _users
    if _shared is None:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
            signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
        atexit.register(_stop_shared)
        _shared = KubeCluster().start()
    _users += 1
    return _shared


def release() -> None:
    global _users
    _users -= 1
    if _users <= 0:
        _stop_shared()


def _stop_shared() -> None:
    global _shared, _users
    if _shared is not None:
        _shared.stop()
        _shared = None
    _users = 0
