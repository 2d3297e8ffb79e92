"""GPU developer servers (docs/DEVSERVERS.md). What runfleetd does with them
today: the devservers: section is checked like the rest of the
configuration. The SSH end-to-end tests come with the local backend's dev
servers."""
from __future__ import annotations

import hashlib
import subprocess

from tests.runfleetd import bin_dir

TOKEN_SHA = hashlib.sha256(b"alice-token").hexdigest()


def base_config(tmp_path) -> str:
    (tmp_path / "pat").write_text("ghp_x\n")
    (tmp_path / "secret").write_text("s3cret\n")
    return (
        "github:\n"
        f"  pat_file: {tmp_path}/pat\n"
        f"  webhook_secret_file: {tmp_path}/secret\n"
        "  org: acme\n"
        f"state_dir: {tmp_path}/state\n"
        "backend:\n"
        "  type: local\n"
        f"  local: {{gpus: [0, 1, 2, 3], work_root: {tmp_path}/work}}\n"
        "pools:\n"
        "  - {name: cpu, labels: [linux], max_runners: 1, runner: {command: /bin/true}}\n"
    )


def check_config(path) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir() / "runfleetd"), "--check-config", str(path)],
                          capture_output=True, text=True)


def test_check_config_takes_a_devservers_section(tmp_path):
    p = tmp_path / "good.yaml"
    p.write_text(base_config(tmp_path) + (
        "devservers:\n"
        "  ci_min_gpus: 1\n"
        "  keys_url: http://127.0.0.1:1/{user}.keys\n"
        "  flavors:\n"
        "    - {name: gpu-1, gpus: 1, max_hours: 4}\n"
        "    - {name: gpu-2, gpus: 2, max_hours: 2, max_extend_hours: 1}\n"
        "  users:\n"
        f"    - {{name: alice, github_user: alice, token_sha256: {TOKEN_SHA}}}\n"))
    r = check_config(p)
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_config_reports_devservers_problems_at_their_lines(tmp_path):
    p = tmp_path / "bad.yaml"
    # Lines 1-10 are the base config; the section starts at line 11.
    p.write_text(base_config(tmp_path) + (
        "devservers:\n"
        "  warnings: [5m, 30m]\n"
        "  flavors:\n"
        "    - {name: gpu-8, gpus: 8}\n"
        "    - {name: gpu-1, gpus: 1, max_hours: 500}\n"
        "  users:\n"
        "    - {name: alice, github_user: alice, token_sha256: nothex}\n"))
    r = check_config(p)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    expect = [
        ":12: devservers.warnings[1]: warnings must be listed from the earliest",
        ":14: devservers.flavors[0].gpus: flavor needs 8 GPUs but backend.local.gpus lists 4",
        ":15: devservers.flavors[1].max_hours: 500 is out of range (1 to 168)",
        ":17: devservers.users[0].token_sha256: must be 64 hex digits",
    ]
    for e in expect:
        assert f"{p}{e}" in out, (e, out)


# ---------------------------------------------------------------------------
# Dev servers end to end: runfleetd starts real OpenSSH sshd on loopback.
# ---------------------------------------------------------------------------

import json
import os
import pwd
import signal
import socket
import time
from pathlib import Path

import pytest
import requests

from tests.runfleetd import Daemon, free_port
from tests.sim.github.simulator import Simulator
from tests.test_runfleetd import app_key_files  # noqa: F401  (fixture)

TOKENS = {"alice": "alice-token", "bob": "bob-token", "ops": "ops-token"}
RUN_AS = "runfleet"  # devservers.run_as, made by scripts/dev.sh


def sha(t: str) -> str:
    return hashlib.sha256(t.encode()).hexdigest()


@pytest.fixture
def sim(app_key_files):  # noqa: F811
    priv, pub = app_key_files
    s = Simulator(app_id=4242, app_public_key_pem=pub, webhook_secret=b"runfleet-test-secret",
                  installation_id=77, org="acme", repos=["acme/widgets"],
                  secondary_points_per_minute=100000, content_creating_per_minute=100000)
    s.app_key_file = priv
    s.start()
    yield s
    s.stop()


def open_for_run_as(path: Path) -> None:
    """Under root, sshd runs as devservers.run_as and must reach its files
    under state_dir: pytest's directories are 0700, so they are opened for
    traversal (only that) up to /tmp."""
    if os.geteuid() != 0:
        return
    assert pwd.getpwnam(RUN_AS).pw_shell.endswith("sh"), "run scripts/dev.sh (it adds the runfleet user)"
    p = path
    while p != Path("/tmp") and p != p.parent:
        p.chmod(p.stat().st_mode | 0o711)
        p = p.parent


def keygen(tmp: Path, name: str, kind: str, bits: str | None = None) -> tuple[Path, str]:
    key = tmp / f"key-{name}"
    cmd = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(key)]
    if bits:
        cmd += ["-b", bits]
    subprocess.run(cmd, check=True)
    return key, (tmp / f"key-{name}.pub").read_text().strip()


DEV_EXTRA = """devservers:
  keys_url: {sim_url}/{{user}}.keys
  min_duration: 1s
  expiry_grace: 0s
  preparing_timeout: 20s
  flavors:
    - {{name: gpu-1, gpus: 1, max_hours: 4, per_user_max: 3}}
    - {{name: gpu-2, gpus: 2, max_hours: 2, max_extend_hours: 1, per_user_max: 2}}
    - {{name: gpu-3, gpus: 3, max_hours: 2, per_user_max: 2}}
  users:
    - {{name: alice, github_user: alice-gh, token_sha256: {alice}}}
    - {{name: bob, github_user: bob-gh, token_sha256: {bob}}}
    - {{name: ops, github_user: ops-gh, token_sha256: {ops}, role: admin}}
"""


class Dev:
    """The dev server API of one runfleetd, as each user calls it."""

    def __init__(self, d: Daemon):
        self.d = d

    def call(self, user: str | None, method: str, path: str, body=None, token=None) -> requests.Response:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        elif user is not None:
            headers["Authorization"] = f"Bearer {TOKENS[user]}"
        return requests.request(method, f"{self.d.url}/api/v1/devservers{path}", headers=headers,
                                data=None if body is None else json.dumps(body), timeout=10)

    def reserve(self, user: str, **body) -> dict:
        r = self.call(user, "POST", "", body)
        assert r.status_code == 201, r.text
        return r.json()

    def show(self, user: str, rid: str) -> dict:
        r = self.call(user, "GET", f"/{rid}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_state(self, user: str, rid: str, state: str, timeout: float = 30) -> dict:
        return self.d.wait_for(lambda: (lambda s: s if s["state"] == state else None)(self.show(user, rid)),
                               timeout=timeout, what=f"{rid} {state}")


def start_dev_daemon(tmp_path: Path, sim, gpus=(0, 1, 2, 3)) -> Daemon:
    open_for_run_as(tmp_path)
    extra = DEV_EXTRA.format(sim_url=sim.url, alice=sha(TOKENS["alice"]), bob=sha(TOKENS["bob"]),
                             ops=sha(TOKENS["ops"]))
    pools = [dict(name="gpu-1", labels=["linux", "gpu-1"], max_runners=4, gpus=1)]
    return Daemon(tmp_path, sim, pools=pools, gpus=list(gpus), extra=extra).start()


def ssh(key: Path, port: int, cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         "-o", "ConnectTimeout=5", "-p", str(port), f"{RUN_AS if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name}@127.0.0.1",
         cmd], capture_output=True, text=True, timeout=timeout)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pids_of(rid: str) -> list[int]:
    """Processes of the reservation: its sshd (by the config on its
    command line: sshd's process title hides its environment) and what
    sessions run (their environment names it)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = (p / "environ").read_bytes().split(b"\0")
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if f"RUNFLEET_DEVSERVER={rid}".encode() in env or f"/devservers/{rid}/".encode() in cmd:
            out.append(int(p.name))
    return out


def session_pids(rid: str) -> list[int]:
    """What sessions of the reservation run (SetEnv names it)."""
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and f"RUNFLEET_DEVSERVER={rid}".encode() in (p / "environ").read_bytes().split(b"\0"):
                out.append(int(p.name))
        except OSError:
            pass
    return out


def proc_table() -> dict[int, tuple[int, bytes, bytes]]:
    """pid -> (ppid, cmdline, environ) of every process we may read."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            out[int(p.name)] = (ppid, (p / "cmdline").read_bytes(), (p / "environ").read_bytes())
        except (OSError, ValueError, IndexError):
            pass
    return out


@pytest.fixture(autouse=True)
def no_leftover_sshd(tmp_path):
    """Dev servers outlive runfleetd by design: whatever a failed test left
    (listeners, connections, sessions) is killed, so it holds no port."""
    yield
    procs = proc_table()
    mine = {pid for pid, (_, cmd, env) in procs.items()
            if f"{tmp_path}/devservers/".encode() in cmd or f"HOME={tmp_path}/devhomes/".encode() in env}
    for pid in list(mine):  # a session's sshd parents left the listener's tree
        ppid = procs[pid][0]
        while ppid in procs and procs[ppid][1].startswith(b"sshd:") and ppid not in mine:
            mine.add(ppid)
            ppid = procs[ppid][0]
    for pid in mine:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def stop_clean(d: Daemon) -> None:
    rc = d.stop()
    report = d.sanitizer_report()
    assert report is None, report
    assert rc == 0, d.log()[-3000:]


def test_ssh_with_github_keys_gpus_disjoint_from_ci_and_cancel(tmp_path, sim):
    keys = {kind: keygen(tmp_path, kind, kind, bits) for kind, bits in
            (("ed25519", None), ("ecdsa", "384"), ("rsa", "3072"))}
    stranger, stranger_pub = keygen(tmp_path, "stranger", "ed25519")
    late, late_pub = keygen(tmp_path, "late", "ed25519")
    sim.set_user_keys("alice-gh", [pub for _, pub in keys.values()] + ["not a key at all"])
    d = start_dev_daemon(tmp_path, sim)
    dev = Dev(d)
    try:
        r = dev.reserve("alice", flavor="gpu-2", hours=1)
        assert r["state"] in ("queued", "preparing"), r
        # Nothing in the way: it starts now, or has started (no ETA then).
        assert r["eta_seconds"] == (0 if r["state"] == "queued" else None), r
        s = dev.wait_state("alice", r["id"], "active")
        held = s["gpu_indices"]
        assert len(held) == 2 and s["ssh"]["port"] > 0
        port = s["ssh"]["port"]
        # CI runs beside it on the other GPUs at the same time.
        jobs = [sim.add_job(labels=["self-hosted", "gpu-1"], duration=4) for _ in range(2)]
        for key, _ in keys.values():
            out = ssh(key, port, "echo $CUDA_VISIBLE_DEVICES; echo $HOME")
            assert out.returncode == 0, out.stderr
            cuda, home = out.stdout.split()
            assert [int(g) for g in cuda.split(",")] == held
            assert home == str(tmp_path / "devhomes" / "alice")
        assert ssh(stranger, port, "true").returncode != 0
        assert ssh(late, port, "true").returncode != 0
        r2 = dev.call("alice", "POST", f"/{r['id'][:6]}/keys", {"key": late_pub})
        assert r2.status_code == 200, r2.text
        assert ssh(late, port, "echo in").stdout.strip() == "in"
        sim.wait_for(lambda: all(j["status"] == "completed" for j in sim.jobs()), timeout=60)
        ci = set()
        for j in sim.jobs():
            assert j["conclusion"] == "success", j
            ci |= {int(g) for g in j["report"]["env"]["CUDA_VISIBLE_DEVICES"].split(",")}
        assert ci and not (ci & set(held)), (ci, held)
        cfg = dev.call("alice", "GET", f"/{r['id']}/ssh-config")
        assert cfg.status_code == 200 and f"Port {port}" in cfg.text and "IdentitiesOnly yes" in cfg.text
        # An open session goes with the reservation.
        session = subprocess.Popen(
            ["ssh", "-F", "/dev/null", "-i", str(keys["ed25519"][0]), "-o", "IdentitiesOnly=yes",
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-p", str(port), f"{RUN_AS}@127.0.0.1", "sleep 300"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        d.wait_for(lambda: session_pids(r["id"]), what="the open session")
        assert len(pids_of(r["id"])) >= 2  # the listener and the session
        c = dev.call("alice", "DELETE", f"/{r['id']}")
        assert c.status_code == 200 and c.json()["state"] == "cancelled", c.text
        assert session.wait(timeout=20) != 0
        d.wait_for(lambda: not port_open(port), what="the port to close")
        assert pids_of(r["id"]) == []
        assert not (tmp_path / "devservers" / r["id"]).exists()
        assert (tmp_path / "devhomes" / "alice").is_dir()
        assert d.metric("runfleet_devservers", flavor="gpu-2", state="cancelled") == 1
        assert d.metric("runfleet_devserver_gpus_held") == 0
        assert d.metric("runfleet_devserver_gpu_seconds_total") > 0
    finally:
        stop_clean(d)


def test_expiry_closes_the_port_and_ends_every_process(tmp_path, sim):
    key, pub = keygen(tmp_path, "k", "ed25519")
    sim.set_user_keys("bob-gh", [pub])
    d = start_dev_daemon(tmp_path, sim)
    dev = Dev(d)
    try:
        # 8 seconds: long enough to log in, short enough to watch it end.
        r = dev.reserve("bob", flavor="gpu-1", hours=8 / 3600)
        s = dev.wait_state("bob", r["id"], "active")
        port = s["ssh"]["port"]
        assert ssh(key, port, "echo up").stdout.strip() == "up"
        dev.wait_state("bob", r["id"], "expired", timeout=30)
        d.wait_for(lambda: not port_open(port), what="the port to close")
        d.wait_for(lambda: pids_of(r["id"]) == [], what="its processes to end")
        assert dev.show("bob", r["id"])["reason"] == "reservation time is over"
        assert d.metric("runfleet_devservers", flavor="gpu-1", state="expired") == 1
    finally:
        stop_clean(d)


def test_kill_9_keeps_queue_order_and_the_active_server(tmp_path, sim):
    key, pub = keygen(tmp_path, "k", "ecdsa")
    sim.set_user_keys("alice-gh", [pub])
    sim.set_user_keys("bob-gh", [pub])
    d = start_dev_daemon(tmp_path, sim)
    dev = Dev(d)
    a = dev.reserve("alice", flavor="gpu-3", hours=1)
    s = dev.wait_state("alice", a["id"], "active")
    port = s["ssh"]["port"]
    # Three more of the same flavor wait behind it, in this order.
    queued = [dev.reserve("bob", flavor="gpu-3", hours=1)["id"],
              dev.reserve("alice", flavor="gpu-3", hours=1)["id"],
              dev.reserve("bob", flavor="gpu-3", hours=1)["id"]]
    before = [dev.show("ops", q)["queue_position"] for q in queued]
    assert before == [1, 2, 3]
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d._log_fh.close()
    assert ssh(key, port, "echo alive").stdout.strip() == "alive"  # sshd outlives runfleetd
    d2 = d.successor().start()
    dev2 = Dev(d2)
    try:
        after = dev2.show("ops", a["id"])
        assert after["state"] == "active" and after["ssh"]["port"] == port
        assert after["gpu_indices"] == s["gpu_indices"]
        assert [dev2.show("ops", q)["queue_position"] for q in queued] == [1, 2, 3]
        # Only the active one is in the way, and its end is known: each
        # waits for the hours of those ahead of it.
        etas = [dev2.show("ops", q)["eta_seconds"] for q in queued]
        for n, eta in enumerate(etas, 1):
            assert eta is not None and n * 3600 - 120 <= eta <= n * 3600, etas
        out = ssh(key, port, "echo $CUDA_VISIBLE_DEVICES")
        assert out.returncode == 0, out.stderr
        assert [int(g) for g in out.stdout.strip().split(",")] == s["gpu_indices"]
        # Its end lets the head of the queue in, on the same GPUs.
        assert dev2.call("alice", "DELETE", f"/{a['id']}").status_code == 200
        d2.wait_for(lambda: not port_open(port), what="the adopted sshd to end")
        nxt = dev2.wait_state("bob", queued[0], "active")
        assert [dev2.show("ops", q)["queue_position"] for q in queued[1:]] == [1, 2]
        assert ssh(key, nxt["ssh"]["port"], "echo next").stdout.strip() == "next"
        for rid in [queued[0]] + queued[1:]:
            dev2.call("ops", "DELETE", f"/{rid}")
    finally:
        stop_clean(d2)


def test_bad_input_answers_4xx_and_changes_nothing(tmp_path, sim):
    _, pub = keygen(tmp_path, "k", "ed25519")
    sim.set_user_keys("alice-gh", [pub])
    d = start_dev_daemon(tmp_path, sim)
    dev = Dev(d)
    try:
        mine = dev.reserve("alice", flavor="gpu-1", hours=1, key=pub)
        dev.wait_state("alice", mine["id"], "active")
        snapshot = dev.call("ops", "GET", "").json()
        bad = [
            ("alice", "POST", "", {"flavor": "gpu-9", "hours": 1}, 400, "unknown flavor"),
            ("alice", "POST", "", {"flavor": "gpu-1", "hours": 5}, 400, "duration must be"),
            ("alice", "POST", "", {"flavor": "gpu-1", "hours": -1}, 400, "positive number"),
            ("alice", "POST", "", {"flavor": "gpu-1"}, 400, "positive number"),
            ("alice", "POST", "", {"hours": 1}, 400, "'flavor' is required"),
            ("alice", "POST", "", {"flavor": "gpu-1", "hours": 1, "key": "ssh-rsa nope"}, 400, "public key"),
            ("alice", "POST", "", {"flavor": "gpu-1", "hours": 1, "github_user": "bad user"}, 400, "GitHub login"),
            ("alice", "POST", "", {"flavor": "gpu-1", "hours": 1, "user": "bob"}, 403, "admin"),
            ("alice", "POST", "", "[1, 2]", 400, "JSON object"),
            ("alice", "POST", "", {"flavor": "gpu-1", "hours": 1, "name": "x" * 65}, 400, "printable"),
            ("alice", "POST", "", {"flavor": "gpu-1", "hours": 1, "name": "a\nb"}, 400, "printable"),
            ("bob", "GET", f"/{mine['id']}", None, 404, "no such reservation"),
            ("bob", "DELETE", f"/{mine['id']}", None, 404, "no such reservation"),
            ("bob", "POST", f"/{mine['id']}/extend", {"hours": 1}, 404, "no such reservation"),
            ("alice", "POST", f"/{mine['id']}/extend", {"hours": 9}, 400, "capped"),
            ("alice", "POST", f"/{mine['id']}/keys", {"key": "ssh-ed25519 !!!"}, 400, "public key"),
            ("alice", "GET", f"/{mine['id'][:3]}", None, 404, "no such reservation"),
            (None, "GET", "", None, 401, "bearer token"),
        ]
        for user, method, path, body, status, text in bad:
            if isinstance(body, str):
                r = requests.request(method, f"{d.url}/api/v1/devservers{path}", data=body, timeout=10,
                                     headers={"Authorization": f"Bearer {TOKENS[user]}"})
            else:
                r = dev.call(user, method, path, body)
            assert r.status_code == status, (method, path, body, r.status_code, r.text)
            assert text in r.json()["message"], (method, path, r.text)
        assert dev.call(None, "GET", "", token="wrong").status_code == 403
        for _ in range(2):
            dev.reserve("alice", flavor="gpu-1", hours=1)
        over = dev.call("alice", "POST", "", {"flavor": "gpu-1", "hours": 1})
        assert over.status_code == 429 and "most allowed" in over.json()["message"], over.text
        after = dev.call("ops", "GET", "").json()["devservers"]
        assert [x for x in after if x["id"] in {y["id"] for y in snapshot["devservers"]}] == snapshot["devservers"]
        assert dev.call("bob", "GET", "").json()["devservers"] == []
        assert {x["id"] for x in dev.call("alice", "GET", "?state=active").json()["devservers"]} >= {mine["id"]}
        assert dev.call("alice", "GET", "?state=nope").status_code == 400
        for x in after:
            assert dev.call("ops", "DELETE", f"/{x['id']}").status_code == 200
        r = dev.call("alice", "GET", f"/{mine['id']}/ssh-config")
        assert r.status_code == 409 and "not active" in r.json()["message"]
        r = dev.call("alice", "DELETE", f"/{mine['id']}")
        assert r.status_code == 409 and "ended" in r.json()["message"]
    finally:
        stop_clean(d)


def test_cli_reserve_wait_ssh_extend_cancel(tmp_path, sim):
    key, pub = keygen(tmp_path, "k", "ed25519")
    sim.set_user_keys("alice-gh", [])  # the key comes from --key
    extra, extra_pub = keygen(tmp_path, "extra", "rsa")
    d = start_dev_daemon(tmp_path, sim)
    token = tmp_path / "alice.token"
    token.write_text(TOKENS["alice"] + "\n")
    token.chmod(0o600)

    def cli(*args, timeout=60):
        return subprocess.run([str(bin_dir() / "runfleet"), "dev", "--url", d.url, "--token-file", str(token),
                               *args], capture_output=True, text=True, timeout=timeout)

    try:
        r = cli("reserve", "--flavor", "gpu-2", "--hours", "1.5", "--key", str(key) + ".pub", "--name", "my box",
                "--wait")
        assert r.returncode == 0, r.stdout + r.stderr
        rid = r.stdout.split()[0]
        assert len(rid) == 16 and "active" in r.stdout and "ssh -p" in r.stdout
        gpus = Dev(d).show("alice", rid)["gpu_indices"]
        assert Dev(d).show("alice", rid)["name"] == "my box"
        opts = ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o",
                "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        r = cli("ssh", rid[:8], *opts, "--", "echo", "$CUDA_VISIBLE_DEVICES")
        assert r.returncode == 0, r.stderr
        assert [int(g) for g in r.stdout.strip().split(",")] == gpus
        r = cli("list")
        assert r.returncode == 0 and rid in r.stdout and "active" in r.stdout, r.stdout + r.stderr
        r = cli("ssh-config", rid)
        assert r.returncode == 0 and r.stdout.startswith(f"Host runfleet-{rid}\n"), r.stdout + r.stderr
        before = Dev(d).show("alice", rid)["duration_seconds"]
        r = cli("extend", rid, "0.5")
        assert r.returncode == 0, r.stderr
        assert Dev(d).show("alice", rid)["duration_seconds"] == before + 1800
        r = cli("extend", rid, "1")
        assert r.returncode == 1 and "capped" in r.stderr, r.stderr
        r = cli("add-key", rid, str(extra) + ".pub")
        assert r.returncode == 0, r.stderr
        port = Dev(d).show("alice", rid)["ssh"]["port"]
        assert ssh(extra, port, "echo extra").stdout.strip() == "extra"
        r = cli("reserve", "--flavor", "nope", "--hours", "1")
        assert r.returncode == 1 and "unknown flavor" in r.stderr, r.stderr
        assert cli("reserve", "--hours", "1").returncode == 2
        r = cli("cancel", rid)
        assert r.returncode == 0 and "cancelled" in r.stdout, r.stdout + r.stderr
        d.wait_for(lambda: not port_open(port), what="the port to close")
        r = cli("show", "ffff")
        assert r.returncode == 1 and "no such reservation" in r.stderr
    finally:
        stop_clean(d)


def test_queued_head_claims_gpus_so_ci_drains_them(tmp_path, sim):
    _, pub = keygen(tmp_path, "k", "ed25519")
    sim.set_user_keys("bob-gh", [pub])
    d = start_dev_daemon(tmp_path, sim)
    dev = Dev(d)
    try:
        first = [sim.add_job(labels=["self-hosted", "gpu-1"], duration=6) for _ in range(3)]
        sim.wait_for(lambda: all(j["status"] == "in_progress" for j in sim.jobs()), timeout=30)
        # One GPU is free; the reservation needs two, on one node.
        r = dev.reserve("bob", flavor="gpu-2", hours=1)
        assert dev.show("bob", r["id"])["state"] == "queued"
        later = [sim.add_job(labels=["self-hosted", "gpu-1"], duration=1) for _ in range(2)]
        time.sleep(2)
        jobs = {j["id"]: j for j in sim.jobs()}
        # The free GPU is claimed for the reservation: no CI runner took it.
        assert [jobs[i]["status"] for i in later] == ["queued", "queued"], [jobs[i] for i in later]
        assert dev.show("bob", r["id"])["queue_position"] == 1
        # CI runners hold the GPUs it waits for, and when they end nobody
        # can tell: the estimate says unknown, not 0.
        assert dev.show("bob", r["id"])["eta_seconds"] is None
        s = dev.wait_state("bob", r["id"], "active", timeout=40)
        sim.wait_for(lambda: all(j["status"] == "completed" for j in sim.jobs()), timeout=60)
        jobs = {j["id"]: j for j in sim.jobs()}
        ends = max(jobs[i]["report"]["finished_at"] for i in first)
        ci = set()
        for i in later:
            assert jobs[i]["report"]["started_at"] >= min(jobs[f]["report"]["finished_at"] for f in first)
            ci |= {int(g) for g in jobs[i]["report"]["env"]["CUDA_VISIBLE_DEVICES"].split(",")}
        assert ends and not (ci & set(s["gpu_indices"])), (ci, s["gpu_indices"])
        assert dev.call("bob", "DELETE", f"/{r['id']}").status_code == 200
    finally:
        stop_clean(d)


def test_sigterm_leaves_the_server_running_and_the_next_start_adopts_it(tmp_path, sim):
    key, pub = keygen(tmp_path, "k", "ed25519")
    sim.set_user_keys("alice-gh", [pub])
    d = start_dev_daemon(tmp_path, sim)
    s = Dev(d).wait_state("alice", Dev(d).reserve("alice", flavor="gpu-1", hours=1)["id"], "active")
    stop_clean(d)
    assert "dev servers restored" in d.log()
    assert ssh(key, s["ssh"]["port"], "echo still").stdout.strip() == "still"
    d2 = d.successor().start()
    try:
        again = Dev(d2).show("alice", s["id"])
        assert again["state"] == "active" and again["ssh"] == s["ssh"], again
        assert again["gpu_indices"] == s["gpu_indices"]
        assert "dev server adopted" in d2.log()
        assert Dev(d2).call("alice", "DELETE", f"/{s['id']}").status_code == 200
        d2.wait_for(lambda: not port_open(s["ssh"]["port"]), what="the port to close")
        assert pids_of(s["id"]) == []
    finally:
        stop_clean(d2)
