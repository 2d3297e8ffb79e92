"""Starts the real runfleetd (the ASan+UBSan build under test) on 127.0.0.1
with a generated config, and reads its API, metrics and log.

Used by the system tests and the demo. The binaries come from
$RUNFLEET_BIN_DIR (set by scripts/run-tests.sh), else build/asan/bin.
$RUNFLEET_WRAPPER (e.g. "valgrind --error-exitcode=99 ...") is put in
front of runfleetd's command line; $RUNFLEET_TIMEOUT_SCALE multiplies the
start, stop and wait_for timeouts for such a slower daemon.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
FAKE_RUNNER = ROOT / "tests" / "sim" / "fake-runner" / "run.sh"

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
)
# Under valgrind: any error (definite leaks count as errors there).
VALGRIND_ERRORS = re.compile(r"==\d+== ERROR SUMMARY: [1-9]")


def timeout_scale() -> float:
    return float(os.environ.get("RUNFLEET_TIMEOUT_SCALE", "1"))


def wrapper() -> list[str]:
    return shlex.split(os.environ.get("RUNFLEET_WRAPPER", ""))


def bin_dir() -> Path:
    env = os.environ.get("RUNFLEET_BIN_DIR")
    # Absolute: runners start in their own work dirs and run hooks by path.
    return Path(env).resolve() if env else ROOT / "build" / "asan" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def yaml_list(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def pool_yaml(
    name: str,
    labels: list[str],
    max_runners: int,
    *,
    min_idle: int = 0,
    idle_timeout: str = "300s",
    priority: int = 0,
    gpus: int = 0,
    cpus: int = 1,
    command: str | None = None,
) -> str:
    return (
        f"  - name: {name}\n"
        f"    labels: {yaml_list(labels)}\n"
        f"    max_runners: {max_runners}\n"
        f"    min_idle: {min_idle}\n"
        f"    idle_timeout: {idle_timeout}\n"
        f"    priority: {priority}\n"
        f"    resources: {{cpus: {cpus}, gpus: {gpus}}}\n"
        f"    runner: {{command: {command or FAKE_RUNNER}}}\n"
    )


# The standard fleet of the system tests: a CPU pool and two GPU pools on
# four pretend GPUs.
STANDARD_POOLS = [
    dict(name="cpu", labels=["linux", "x64", "cpu"], max_runners=6),
    dict(name="gpu-1", labels=["linux", "x64", "gpu", "gpu-1"], max_runners=4, gpus=1, priority=10),
    dict(name="gpu-2", labels=["linux", "x64", "gpu", "gpu-2"], max_runners=2, gpus=2, priority=0),
]


class Daemon:
    """One runfleetd process. `start()` waits for /readyz; `stop()` sends
    SIGTERM and returns the exit code; `log()` is everything it wrote.

    It listens twice: `public_url` (`port`) is what GitHub reaches
    (`/webhook`, `/healthz`); `url` (`admin_port`) is the admin listener
    with the API, metrics, the status page and hook reports."""

    def __init__(
        self,
        tmp: Path,
        sim: Any,
        *,
        pools: list[dict] | None = None,
        gpus: list[int] | None = None,
        cpu_slots: int = 8,
        webhook_secret: bytes = b"runfleet-test-secret",
        extra: str = "",
        hooks: tuple[str, str] | None = None,
        max_body_bytes: int = 1 << 20,
        read_timeout: str = "2s",
        env: dict | None = None,
        mutations_per_minute: int | None = 3000,
        log_level: str = "debug",
        max_connections: int = 64,
        admin: str = "",
    ):
        self.tmp = Path(tmp)
        self.sim = sim
        self.port = free_port()
        self.admin_port = free_port()
        while self.admin_port == self.port:
            self.admin_port = free_port()
        self.public_url = f"http://127.0.0.1:{self.port}"
        self.url = f"http://127.0.0.1:{self.admin_port}"
        self.token: str | None = None  # sent as a bearer token when set
        self.work_root = self.tmp / "runners"
        self.secret = webhook_secret
        self.secret_file = self.tmp / "webhook-secret"
        self.secret_file.write_bytes(webhook_secret + b"\n")
        self.secret_file.chmod(0o600)
        self.config_path = self.tmp / "runfleetd.yaml"
        self.log_path = self.tmp / "runfleetd.log"
        self.proc: subprocess.Popen | None = None
        self.env = dict(env or {})
        self.pools = pools if pools is not None else STANDARD_POOLS
        gpus = [0, 1, 2, 3] if gpus is None else gpus
        hook_lines = ""
        if hooks:
            hook_lines = f"    hook_started: {hooks[0]}\n    hook_completed: {hooks[1]}\n"
        self.config_text = (
            f"listen: 127.0.0.1:{self.port}\n"
            f"admin_listen: 127.0.0.1:{self.admin_port}\n"
            f"{admin}"
            f"state_dir: {self.tmp}\n"
            f"log: {{level: {log_level}, format: logfmt}}\n"
            f"limits: {{max_body_bytes: {max_body_bytes}, read_timeout: {read_timeout}, "
            f"max_connections: {max_connections}}}\n"
            "reconcile_interval: 200ms\n"
            "github:\n"
            f"  api_url: {sim.url}\n"
            f"  app: {{id: {sim.app_id}, private_key_file: {sim.app_key_file}, "
            f"installation_id: {sim.installation_id}}}\n"
            f"  webhook_secret_file: {self.secret_file}\n"
            f"  org: {getattr(sim.org, 'login', sim.org)}\n"
            + (f"  mutations_per_minute: {mutations_per_minute}\n" if mutations_per_minute else "")
            + "backend:\n"
            "  type: local\n"
            "  local:\n"
            f"    work_root: {self.work_root}\n"
            f"    gpus: {yaml_list([str(g) for g in gpus]) if gpus else 'none'}\n"
            f"    cpu_slots: {cpu_slots}\n"
            f"{hook_lines}"
            f"{extra}"
            "pools:\n" + "".join(pool_yaml(**p) for p in self.pools)
        )
        self.config_path.write_text(self.config_text)

    def successor(self) -> "Daemon":
        """A new, unstarted runfleetd on the same state_dir, ports and
        config: what a restart after a crash or an upgrade starts."""
        d = Daemon(self.tmp, self.sim, pools=self.pools, webhook_secret=self.secret, env=self.env)
        d.port, d.url, d.admin_port, d.public_url = self.port, self.url, self.admin_port, self.public_url
        d.config_text = self.config_text
        d.config_path.write_text(self.config_text)
        return d

    # -- process ---------------------------------------------------------

    def start(self, timeout: float = 20.0) -> "Daemon":
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.update(self.env)
        timeout *= timeout_scale()
        self._log_fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            wrapper() + [str(bin_dir() / "runfleetd"), "--config", str(self.config_path)],
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runfleetd exited {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    self.sim.set_webhook_url(self.public_url + "/webhook")
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("runfleetd did not become ready:\n" + self.log())

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        timeout *= timeout_scale()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("runfleetd did not stop on SIGTERM:\n" + self.log()[-4000:])
        self._log_fh.close()
        return self.proc.returncode

    def leftovers(self) -> list[Path]:
        """Runner work dirs, pid files and output files still under
        work_root."""
        if not self.work_root.exists():
            return []
        kept = (".runfleet-pids", ".runfleet-logs")
        out = [p for p in self.work_root.iterdir() if p.name not in kept]
        for name in kept:
            if (self.work_root / name).exists():
                out += list((self.work_root / name).iterdir())
        return out

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sanitizer_report(self) -> str | None:
        text = self.log()
        for m in SANITIZER_MARKERS:
            i = text.find(m)
            if i >= 0:
                return text[max(0, i - 200) : i + 3000]
        m = VALGRIND_ERRORS.search(text)
        if m:
            return text[-6000:]
        return None

    # -- API ---------------------------------------------------------------

    def get(self, path: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return requests.get(self.url + path, headers=headers, timeout=5)

    def api(self, what: str) -> Any:
        r = self.get(f"/api/v1/{what}")
        r.raise_for_status()
        return r.json()[what]

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as {'name{labels}': value}."""
        return self._scrape()[0]

    def _scrape(self) -> tuple[dict[str, float], dict[str, str]]:
        """Samples as metrics() gives them, and each family's `# TYPE`."""
        out, types = {}, {}
        for line in self.get("/metrics").text.splitlines():
            if line.startswith("# TYPE "):
                _, _, family, kind = line.split(" ", 3)
                types[family] = kind
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
        return out, types

    def metric(self, name: str, **labels: str) -> float:
        """The sum of name's samples whose labels include labels. A family
        the daemon does not export is an error, not 0: a renamed metric
        must fail the checks that read it."""
        samples, types = self._scrape()
        family = name
        for suffix in ("_bucket", "_count", "_sum"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
                family = base
        if family not in types:
            raise KeyError(f"runfleetd exports no metric family {name!r} (no # TYPE line)")
        total = 0.0
        for key, value in samples.items():
            base, _, rest = key.partition("{")
            if base != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
            if all(have.get(k) == v for k, v in labels.items()):
                total += value
        return total

    def runners(self) -> list[dict]:
        return self.api("runners")

    def pools_state(self) -> dict[str, dict]:
        return {p["name"]: p for p in self.api("pools")}

    def wait_for(self, pred, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout * timeout_scale()
        last = None
        while time.monotonic() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; daemon log tail:\n{self.log()[-3000:]}")
