"""Two runfleetd replicas against one cluster (real kube-apiserver,
kube-scheduler and kwok; tests/kube/kubeharness.py), one leader at a time
on a coordination.k8s.io Lease with client-go's default timing (15 s
lease, 10 s renew deadline, 2 s retry).

GitHub's webhooks reach the replicas through `Front`, which plays the
Service: it forwards each delivery to the replica whose /readyz says 200
(a standby says 503) and answers 503 itself when none is Ready. Runner
pods are played by RunnerPlayer (kube_e2e.py).

  - kill -9 of the leader in the middle of a 300-job burst: the standby
    leads within the lease duration (plus one retry), adopts the pods the
    dead leader started, and every job runs once, on one pod per JIT
    config; nothing is left in the cluster;
  - SIGTERM (a rolling restart): the Lease is released, the standby leads
    within one retry period, webhooks fail only inside that gap, and those
    that failed are redelivered (recovery, the cursor kept on the Lease);
  - a leader cut off from the API server (ApiProxy stops forwarding)
    stops acting before its lease could expire, the other replica takes
    over, and the cut-off one does not act again when its traffic flows
    once more, as the Lease is not its own.
"""

from __future__ import annotations

import os
import re
import select
import socket
import threading
import subprocess
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubeharness
import pytest
import requests

from kube_e2e import (BURST_POOLS, FLEET, KubeDaemon, RunnerPlayer, assert_ran_once, burst,
                      fleet_items, jobs_done, runner_ns, sim, unfinished, wait)  # noqa: F401  (fixtures)
from tests.runfleetd import bin_dir, timeout_scale, wrapper
from tests.test_runfleetd import app_key_files  # noqa: F401  (fixture)

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15.0, 10.0, 2.0
TS = re.compile(r'^ts=(\S+) .*msg="([^"]+)"', re.M)


def log_times(text: str, msg: str, **fields: str) -> list[float]:
    """When the daemon logged msg (with these key=value fields), as Unix
    times."""
    out = []
    for line in text.splitlines():
        m = TS.match(line)
        if not m or m.group(2) != msg:
            continue
        if all(f"{k}={v}" in line or f'{k}="{v}"' in line for k, v in fields.items()):
            out.append(datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp())
    return out


class Replica(KubeDaemon):
    """A replica: its own state_dir, ports and pod name; the Lease in
    lease_ns. start() returns once it is up, leader or standby."""

    def __init__(self, tmp: Path, sim, kube, ns: str, lease_ns: str, name: str,
                 kubeconfig: Path | None = None):
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(tmp, sim, kube, ns, BURST_POOLS)
        self.name = name
        self.env.update({"POD_NAME": name, "POD_NAMESPACE": lease_ns})
        if kubeconfig is not None:
            self.config_text = self.config_text.replace(str(kube.kubeconfig), str(kubeconfig))
        self.config_text += "recovery: {interval: 1h, cursor_settle: 0s}\n"
        self.config_path.write_text(self.config_text)

    def start(self, timeout: float = 30.0) -> "Replica":
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.update(self.env)
        self._log_fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            wrapper() + [str(bin_dir() / "runfleetd"), "--config", str(self.config_path)],
            stdout=self._log_fh, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout * timeout_scale()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runfleetd exited {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200 \
                        and "runner pods listed" in self.log():
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("runfleetd did not come up:\n" + self.log())

    def ready(self) -> bool:
        try:
            return requests.get(self.url + "/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Front:
    """The Service in front of the replicas: each delivery goes to a Ready
    one (checked every 50 ms), else it is answered 503. `answers` is every
    (time, status) it gave GitHub."""

    def __init__(self, replicas: list[Replica]):
        self.replicas = replicas
        self.answers: list[tuple[float, int]] = []
        self.target: Replica | None = None
        self._stop = threading.Event()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                status, text = 503, b"no ready replica\n"
                target = front.target
                if target is not None:
                    try:
                        r = requests.post(target.public_url + self.path, data=body,
                                          headers=headers, timeout=10)
                        status, text = r.status_code, r.content
                    except requests.RequestException:
                        status, text = 502, b"replica unreachable\n"
                front.answers.append((time.time(), status))
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # GitHub hung up (the simulator's delivery timeout)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True),
                         threading.Thread(target=self._watch, daemon=True)]

    def _pick(self) -> None:
        ready = [r for r in self.replicas if r.alive() and r.ready()]
        self.target = ready[0] if ready else None

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self._pick()

    def __enter__(self) -> "Front":
        self._pick()
        assert self.target is not None, "no replica is Ready"
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


class ApiProxy:
    """A TCP proxy to the API server that can stop forwarding: cut() drops
    every byte of the connections it holds (they stay open, silent, as
    behind a broken network) and of new ones; heal() forwards new
    connections again and resets the ones from before the cut, as a
    firewall or NAT that lost their state would (left silent, a request the
    client still had on one would wait out its whole timeout, 30 s, and the
    replica's stop with it)."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.cut_at: float | None = None
        self._gen = 0  # connections of an older generation than _open_gen drop
        self._open_gen = 0
        self._cut = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def cut(self) -> None:
        self._cut = True
        self._open_gen = self._gen + 1
        self.cut_at = time.time()

    def heal(self) -> None:
        self._cut = False
        self._gen += 1
        self._open_gen = self._gen

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._pipe, args=(c, self._gen), daemon=True).start()

    def _pipe(self, c: socket.socket, gen: int) -> None:
        try:
            u = socket.create_connection(self.target)
        except OSError:
            c.close()
            return
        peer = {c: u, u: c}
        try:
            while not self._stop.is_set():
                if not self._cut and gen < self._open_gen:
                    return  # from before the cut: reset once healed
                ready, _, _ = select.select([c, u], [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if self._cut or gen < self._open_gen:
                        continue  # dropped on the floor
                    peer[s].sendall(data)
        except OSError:
            pass
        finally:
            c.close()
            u.close()

    def kubeconfig(self, kube, path: Path) -> Path:
        text = kube.kubeconfig.read_text().replace(kube.server, f"https://127.0.0.1:{self.port}")
        path.write_text(text)
        path.chmod(0o600)
        return path

    def __enter__(self) -> "ApiProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def lease_ns(kwok_cluster):
    ns = "rf-system-" + os.urandom(3).hex()
    kwok_cluster.create_namespace(ns)
    return ns


def lease(kube, ns: str) -> dict:
    return kube.api("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{FLEET}")


def leaders(replicas: list[Replica]) -> list[str]:
    return [r.name for r in replicas if r.alive() and r.ready()]


def metric(r: Replica, name: str) -> float:
    return r.metric(name)


ROLE = "runfleet.dev/role"


def role(kube, lease_ns: str, pod: str) -> str | None:
    return kube.api("GET", f"/api/v1/namespaces/{lease_ns}/pods/{pod}")["metadata"] \
        .get("labels", {}).get(ROLE)


def replica_pods(kube, lease_ns: str) -> None:
    """The replicas' own Pod objects (what the Deployment would make), for
    the leader to label: kept Pending (no node matches), so they hold no
    capacity."""
    for name in ("runfleetd-a", "runfleetd-b"):
        pod = kubeharness.pod_manifest(name, labels={"app.kubernetes.io/name": "runfleetd"})
        pod["spec"]["nodeSelector"] = {"runfleet.dev/no-such-group": "none"}
        kube.create_pod(lease_ns, pod)


def two_replicas(tmp_path, sim, kube, ns, lease_ns, kubeconfig_a=None):  # noqa: F811
    replica_pods(kube, lease_ns)
    a = Replica(tmp_path / "a", sim, kube, ns, lease_ns, "runfleetd-a", kubeconfig_a).start()
    wait(a.ready, 30, "the first replica to lead", a)
    b = Replica(tmp_path / "b", sim, kube, ns, lease_ns, "runfleetd-b").start()
    return a, b


def assert_one_leader(kube, lease_ns: str, a: Replica, b: Replica) -> None:
    time.sleep(RETRY_PERIOD * 1.5)  # b has tried at least once
    assert leaders([a, b]) == ["runfleetd-a"]
    assert lease(kube, lease_ns)["spec"]["holderIdentity"] == "runfleetd-a"
    assert metric(a, "runfleet_leader") == 1 and metric(b, "runfleet_leader") == 0
    assert requests.get(b.url + "/readyz", timeout=2).status_code == 503
    # A delivery that reaches the standby all the same is refused.
    r = requests.post(b.public_url + "/webhook", data=b"{}", timeout=2,
                      headers={"X-GitHub-Event": "ping", "X-GitHub-Delivery": "x"})
    assert r.status_code == 503
    # The Services find the leader by the label it put on its own pod.
    wait(lambda: role(kube, lease_ns, "runfleetd-a") == "leader", 10, "the leader's pod label", a)
    assert role(kube, lease_ns, "runfleetd-b") is None


def finish(kube, ns: str, sim, replicas: list[Replica]) -> None:
    for r in replicas:
        if r.alive():
            assert r.stop() == 0, r.log()[-3000:]
        assert r.sanitizer_report() is None, r.sanitizer_report()
    assert sim.invalid_requests() == []


def one_pod_per_jit_config(rec, player) -> None:
    names = [e.pod["metadata"]["annotations"]["runfleet.dev/runner-name"]
             for e in rec.events if e.type == "ADDED"]
    assert len(names) == len(set(names)), "a runner name got two pods"
    jits = list(player.jit_configs.values())
    assert len(jits) == len(set(jits)), "a JIT config got two pods"


def test_kill9_of_the_leader_mid_burst(kwok_cluster, eks_nodes, runner_ns, lease_ns, sim, tmp_path):
    kube, ns = kwok_cluster, runner_ns
    a, b = two_replicas(tmp_path, sim, kube, ns, lease_ns)
    try:
        assert_one_leader(kube, lease_ns, a, b)
        with Front([a, b]) as front, kube.record_pods(ns, f"runfleet.dev/fleet={FLEET}") as rec, \
                RunnerPlayer(kube, ns, tmp_path / "pods") as player:
            sim.set_webhook_url(front.url + "/webhook")
            # Four long jobs that run across the takeover, then the burst.
            long = [sim.add_job(["self-hosted", "linux", "gpu-1"], duration=40) for _ in range(4)]
            wait(lambda: all(sim.job(j)["status"] == "in_progress" for j in long), 120,
                 "the long jobs to run", a)
            ids = burst(sim, 300)
            wait(lambda: sum(sim.job(j)["status"] == "completed" for j in ids) >= 100, 300,
                 "a third of the burst", a, lambda: unfinished(sim, ids)[:2000])
            a.kill()
            killed = time.time()
            busy = {sim.job(j)["runner_name"] for j in long}
            assert all(sim.job(j)["status"] == "in_progress" for j in long)
            ids += long
            wait(b.ready, LEASE_DURATION + RETRY_PERIOD + 10, "the standby to lead", b)
            led = time.time()
            wait(lambda: role(kube, lease_ns, "runfleetd-b") == "leader", 10,
                 "the new leader's pod label", b)
            wait(lambda: jobs_done(sim, ids), 600, "every job of the burst", b,
                 lambda: unfinished(sim, ids)[:2000])
            wait(lambda: not fleet_items(kube, ns, "pods") and not fleet_items(kube, ns, "secrets"),
                 60, "the fleet's pods and secrets to go", b)
        assert player.errors == []
        assert_ran_once(sim, ids)
        one_pod_per_jit_config(rec, player)
        assert rec.gpu_overcommits() == []
        blog = b.log()
        # Led within the lease duration (and one retry) of the kill, and
        # adopted the dead leader's runners rather than stopping them.
        took = log_times(blog, "leading", identity="runfleetd-b")
        assert took and took[0] - killed <= LEASE_DURATION + RETRY_PERIOD + 1, (took, killed)
        assert "adopted runners of an earlier run" in blog
        assert "stopping a runner this run does not know" not in blog
        # The runners busy at the kill were adopted by the new leader and
        # finished their jobs (exit 0), not stopped (143).
        runner_pod = {e.pod["metadata"]["annotations"]["runfleet.dev/runner-name"]: e.name
                      for e in rec.events}
        for r in busy:
            assert f'msg="runner adopted" runner={r} ' in blog, r
            assert player.exits[runner_pod[r]] == 0, (r, player.exits.get(runner_pod[r]))
        assert metric(b, "runfleet_leader_transitions_total") == 1
        takeover = metric(b, "runfleet_leader_takeover_seconds")
        assert 0 < takeover <= LEASE_DURATION + RETRY_PERIOD + 1
        holder = lease(kube, lease_ns)["spec"]
        assert holder["holderIdentity"] == "runfleetd-b" and holder["leaseTransitions"] == 1
        print(f"\nFAILOVER kill9 jobs={len(ids)} kill_to_ready={led - killed:.2f}s "
              f"kill_to_leading={took[0] - killed:.2f}s takeover_metric={takeover:.2f}s "
              f"pods={len({e.name for e in rec.events})} duplicates=0 leftovers=0")
    finally:
        finish(kube, ns, sim, [a, b])
    assert fleet_items(kube, ns, "pods") == [] and fleet_items(kube, ns, "secrets") == []


def test_sigterm_hands_over_within_one_retry_period(kwok_cluster, eks_nodes, runner_ns, lease_ns,
                                                   sim, tmp_path):
    kube, ns = kwok_cluster, runner_ns
    a, b = two_replicas(tmp_path, sim, kube, ns, lease_ns)
    ids: list[int] = []
    try:
        assert_one_leader(kube, lease_ns, a, b)
        with Front([a, b]) as front, kube.record_pods(ns, f"runfleet.dev/fleet={FLEET}") as rec, \
                RunnerPlayer(kube, ns, tmp_path / "pods") as player:
            sim.set_webhook_url(front.url + "/webhook")
            stop = threading.Event()

            def feed():  # a job every 100 ms, through the handover
                while not stop.wait(0.1):
                    ids.append(sim.add_job(["self-hosted", "linux", "cpu"], duration=0.5))
            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            wait(lambda: sum(sim.job(j)["status"] == "completed" for j in list(ids)) >= 10, 120,
                 "jobs flowing", a)
            termed = time.time()
            assert a.stop() == 0, a.log()[-3000:]
            wait(b.ready, 30, "the standby to lead", b)
            wait(lambda: role(kube, lease_ns, "runfleetd-b") == "leader", 10,
                 "the new leader's pod label", b)
            time.sleep(3)
            stop.set()
            feeder.join()
            # The takeover's recovery run, and the one after it that sees
            # what GitHub was still attempting during the takeover.
            wait(lambda: b.metric("runfleet_recovery_runs_total", trigger="failover") >= 2, 60,
                 "the failover's second recovery run", b)
            wait(lambda: jobs_done(sim, ids), 300, "every job", b, lambda: unfinished(sim, ids)[:2000])
            wait(lambda: not fleet_items(kube, ns, "pods") and not fleet_items(kube, ns, "secrets"),
                 60, "the fleet's pods and secrets to go", b)
        assert player.errors == []
        assert_ran_once(sim, ids)
        one_pod_per_jit_config(rec, player)
        released = log_times(a.log(), "released the lease")
        took = log_times(b.log(), "leading", identity="runfleetd-b")
        assert released and took
        gap = took[0] - released[0]
        assert gap <= RETRY_PERIOD + 0.5 * timeout_scale(), gap
        # GitHub saw errors only inside the gap: from the SIGTERM to the
        # moment the new leader was Ready (the Front notices in 50 ms).
        errors = [(t, s) for t, s in front.answers if s >= 300]
        late = [(t, s) for t, s in errors if t > took[0] + 1.0]
        assert late == [], late
        # The deliveries that failed in the gap were redelivered, and
        # accepted, by the new leader.
        sim.wait_deliveries(20)
        dels = sim.deliveries()
        failed = {d["guid"] for d in dels if d["status_code"] != 200 and not d["redelivery"]
                  and d["action"] == "queued"}
        redone = {d["guid"] for d in dels if d["redelivery"] and d["status_code"] == 200}
        assert failed <= redone, (failed - redone)
        assert "adopted runners of an earlier run" in b.log() or not rec.events
        print(f"\nFAILOVER sigterm jobs={len(ids)} release_to_leading={gap:.2f}s "
              f"sigterm_to_leading={took[0] - termed:.2f}s webhook_errors={len(errors)} "
              f"redelivered={len(failed)} duplicates=0 leftovers=0")
    finally:
        finish(kube, ns, sim, [a, b])
    assert fleet_items(kube, ns, "pods") == [] and fleet_items(kube, ns, "secrets") == []


def test_a_leader_cut_off_from_the_api_server_stops_acting(kwok_cluster, eks_nodes, runner_ns,
                                                          lease_ns, sim, tmp_path):
    kube, ns = kwok_cluster, runner_ns
    with ApiProxy(kube.port) as proxy:
        a, b = two_replicas(tmp_path, sim, kube, ns, lease_ns,
                            proxy.kubeconfig(kube, tmp_path / "proxy.kubeconfig"))
        try:
            assert_one_leader(kube, lease_ns, a, b)
            with Front([a, b]) as front, RunnerPlayer(kube, ns, tmp_path / "pods") as player:
                sim.set_webhook_url(front.url + "/webhook")
                first = burst(sim, 12)
                wait(lambda: jobs_done(sim, first), 120, "jobs before the cut", a)
                proxy.cut()
                cut = proxy.cut_at
                wait(lambda: metric(b, "runfleet_leader") == 1, LEASE_DURATION + RETRY_PERIOD + 15,
                     "the other replica to lead", b)
                alog = a.log()
                fenced = log_times(alog, "not leading", identity="runfleetd-a")
                took = log_times(b.log(), "leading", identity="runfleetd-b")
                assert fenced and took
                # It stopped before its lease could expire for b, and within
                # its renew deadline of the cut (its last renewal came before).
                assert fenced[0] < took[0], (fenced, took)
                assert fenced[0] - cut <= RENEW_DEADLINE + 1, (fenced[0] - cut)
                assert "renew deadline passed" in alog
                assert not a.ready()
                starts_at_fence = alog.count('msg="runner starting"')
                # Work for the new leader while a is still cut off, then a's
                # traffic flows again: the Lease is b's, so a stays a standby.
                second = burst(sim, 12)
                proxy.heal()
                wait(lambda: jobs_done(sim, second), 180, "jobs after the takeover", b,
                     lambda: unfinished(sim, second))
                time.sleep(RETRY_PERIOD * 2)
                assert metric(a, "runfleet_leader") == 0 and not a.ready()
                assert a.log().count('msg="runner starting"') == starts_at_fence
                assert lease(kube, lease_ns)["spec"]["holderIdentity"] == "runfleetd-b"
                wait(lambda: not fleet_items(kube, ns, "pods") and not fleet_items(kube, ns, "secrets"),
                     60, "the fleet's pods and secrets to go", b)
            assert player.errors == []
            assert_ran_once(sim, first + second)
            print(f"\nFAILOVER cutoff cut_to_fenced={fenced[0] - cut:.2f}s "
                  f"cut_to_leading={took[0] - cut:.2f}s")
        finally:
            finish(kube, ns, sim, [a, b])
    assert fleet_items(kube, ns, "pods") == [] and fleet_items(kube, ns, "secrets") == []
