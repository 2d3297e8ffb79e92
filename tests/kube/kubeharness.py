"""A real Kubernetes control plane for tests: etcd + kube-apiserver on loopback.

The binaries are the pinned builds of tests/kube/build-tools.sh (built once
into ${RUNFLEET_CACHE:-~/.cache/runfleet}/tools, outside the repo). One
cluster serves a whole pytest session: `shared_cluster()` starts it on first
use and the last `release()` (or interpreter exit) stops it, so fixtures in
several conftest.py files share it.

    cluster = KubeCluster(workdir); cluster.start()
    cluster.kubectl("get", "ns")          # CompletedProcess, checked
    cluster.api("GET", "/version")         # parsed JSON
    cluster.stop()

Kept general for the Kubernetes backend's tests, which add kube-scheduler and
kwok nodes: `extra_apiserver_args`, `start_process()` for more components,
and `kubeconfig` / `token` / `ca_file` for clients.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_TOOLS = HERE / "build-tools.sh"


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
# (build-tools.sh builds kube-apiserver and kubectl by default).
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
            ensure_tools("kube", env={"KUBE_COMMANDS": f"kube-apiserver kubectl {name}"})
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


class KubeCluster:
    """etcd + kube-apiserver on 127.0.0.1 with token authentication and RBAC."""

    def __init__(self, workdir: Path | None = None, extra_apiserver_args: list[str] | None = None):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="runfleet-kube-"))
        self.extra_apiserver_args = list(extra_apiserver_args or [])
        self.token = "runfleet-test-admin-" + os.urandom(8).hex()
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.etcd_port = 0
        self.port = 0
        self.server = ""
        self.kubeconfig = self.workdir / "kubeconfig"
        self.ca_file = self.workdir / "certs" / "apiserver.crt"

    # -- processes -------------------------------------------------------
    def start_process(self, name: str, argv: list[str]) -> subprocess.Popen:
        """Starts a component in its own process group, logging to <workdir>/<name>.log."""
        log = open(self.workdir / f"{name}.log", "wb")
        p = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.workdir,
        )
        log.close()
        self.procs.append((name, p))
        return p

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
        tokens.write_text(f'{self.token},admin,admin,"system:masters"\n')
        sa_key, sa_pub = self._write_sa_keys()
        self.start_process("kube-apiserver", [
            str(apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            f"--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            *self.extra_apiserver_args,
        ])
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                ok = self._raw("GET", "/readyz", verify=False)
                if ok.strip() == b"ok":
                    break
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            time.sleep(0.3)
        else:
            raise RuntimeError(f"kube-apiserver not ready ({last}):\n" + self.log_tail("kube-apiserver"))
        self._write_kubeconfig()

    def _check_alive(self) -> None:
        for name, p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n" + self.log_tail(name))

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.server, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }))
        self.kubeconfig.chmod(0o600)

    # -- clients -------------------------------------------------------
    def _ssl(self, verify: bool = True) -> ssl.SSLContext:
        if not verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _raw(self, method: str, path: str, body: bytes | None = None, token: str | None = None,
             verify: bool = True, content_type: str = "application/json") -> bytes:
        req = urllib.request.Request(self.server + path, data=body, method=method)
        tok = self.token if token is None else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        if body is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, context=self._ssl(verify), timeout=30) as r:
            return r.read()

    def api(self, method: str, path: str, obj: dict | None = None, token: str | None = None):
        """A REST call with the admin token (or `token`); returns parsed JSON."""
        body = json.dumps(obj).encode() if obj is not None else None
        return json.loads(self._raw(method, path, body, token=token) or b"null")

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

    # -- teardown ------------------------------------------------------
    def stop(self) -> None:
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _name, p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
        self.procs.clear()
        if self._own_workdir and not os.environ.get("RUNFLEET_KEEP_KUBE"):
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- one cluster per test session ------------------------------------------
_shared: KubeCluster | None = None
_users = 0


def shared_cluster() -> KubeCluster:
    """The session's cluster, started on first use; pair with release()."""
    global _shared, _users
    if _shared is None:
        _shared = KubeCluster().start()
        atexit.register(_stop_shared)
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
