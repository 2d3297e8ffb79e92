"""The two listeners of runfleetd: what each one serves, bearer tokens on
the admin one, and a public one that stays usable under a crowd of idle
connections and a stream of bad signatures."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import subprocess
import time

import requests
from tests.runfleetd import Daemon, bin_dir
from tests.test_runfleetd import app_key_files, daemon, post_webhook, sim, workflow_job_examples  # noqa: F401

TOKEN = "ops-token-0123456789"
TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()
ADMIN_ALL = f"admin:\n  auth: all\n  tokens: [{{name: ops, sha256: {TOKEN_SHA256}}}]\n"


def queued_body() -> bytes:
    ex = next(e for e in workflow_job_examples() if e["action"] == "queued")
    ex = json.loads(json.dumps(ex))
    ex["workflow_job"]["labels"] = ["self-hosted", "cpu"]
    return json.dumps(ex).encode()


def stopped_cleanly(d: Daemon) -> None:
    rc = d.stop()
    report = d.sanitizer_report()
    assert report is None, report
    assert rc == 0, d.log()[-3000:]


def test_public_listener_serves_only_webhook_and_healthz(tmp_path, sim):
    d = Daemon(tmp_path, sim).start()
    try:
        for path in ("/api/v1/pools", "/api/v1/jobs", "/metrics", "/", "/readyz"):
            assert requests.get(d.public_url + path, timeout=5).status_code == 404, path
        assert requests.get(d.public_url + "/healthz", timeout=5).status_code == 200
        assert post_webhook(d, "workflow_job", queued_body()).status_code == 200
        # The admin listener has everything but the webhook.
        assert requests.post(d.url + "/webhook", data=b"{}", timeout=5).status_code == 404
        for path in ("/healthz", "/readyz", "/metrics", "/", "/api/v1/pools"):
            assert d.get(path).status_code == 200, path
        assert len(d.api("jobs")) == 1
    finally:
        stopped_cleanly(d)


def test_admin_tokens_when_auth_is_all(tmp_path, sim):
    d = Daemon(tmp_path, sim, admin=ADMIN_ALL).start()
    try:
        r = requests.get(d.url + "/api/v1/pools", timeout=5)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert r.text == "unauthorized\n"
        for bad in ("Basic b3BzOng=", "Bearer", "Bearer two words"):
            r = requests.get(d.url + "/metrics", headers={"Authorization": bad}, timeout=5)
            assert r.status_code == 401, bad
        r = requests.get(d.url + "/api/v1/pools", headers={"Authorization": "Bearer not-it"}, timeout=5)
        assert r.status_code == 403
        assert r.text == "forbidden\n"
        # Probes never need one.
        assert requests.get(d.url + "/healthz", timeout=5).status_code == 200
        assert requests.get(d.url + "/readyz", timeout=5).status_code == 200
        d.token = TOKEN
        assert [p["name"] for p in d.api("pools")] == ["cpu", "gpu-1", "gpu-2"]
        assert d.get("/").status_code == 200
        # Hook reports keep their runner tokens: no bearer check comes first.
        r = requests.post(d.url + "/api/v1/hooks/started", data=b"{}", timeout=5)
        assert r.status_code in (400, 401) and "WWW-Authenticate" not in r.headers
        cli = str(bin_dir() / "runfleet")
        env = dict(os.environ, RUNFLEET_URL=d.url)
        env.pop("RUNFLEET_TOKEN", None)
        out = subprocess.run([cli, "pools", "--json"], capture_output=True, text=True, env=env)
        assert out.returncode == 1 and "401" in out.stderr
        env["RUNFLEET_TOKEN"] = TOKEN
        out = subprocess.run([cli, "status"], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        del env["RUNFLEET_TOKEN"]
        out = subprocess.run([cli, "pools", "--token-file", str(token_file)], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        out = subprocess.run([cli, "token", "hash"], input=TOKEN + "\n", capture_output=True, text=True)
        assert out.stdout.strip() == TOKEN_SHA256
    finally:
        stopped_cleanly(d)


def test_bad_signatures_are_rate_limited_per_address(daemon):
    body = queued_body()
    codes = [post_webhook(daemon, "workflow_job", body, signature="sha256=" + "0" * 64).status_code
             for _ in range(40)]
    # The default budget is 30 a minute, as deep.
    assert codes[:30] == [401] * 30
    assert set(codes[30:]) == {429}
    r = post_webhook(daemon, "workflow_job", body, signature="sha256=" + "0" * 64)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    # A signed delivery from the same address is not held back.
    assert post_webhook(daemon, "workflow_job", body).status_code == 200
    assert daemon.metric("runfleet_http_refused_total", listener="public", reason="rate_limited") == 11
    lines = [ln for ln in daemon.log().splitlines() if "rate_limited=" in ln]
    assert 1 <= len(lines) <= 2


def test_idle_connection_flood_leaves_room_for_github(tmp_path, sim):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    d = Daemon(tmp_path, sim, log_level="info").start()
    flood: list[socket.socket] = []
    try:
        log_before = len(d.log().splitlines())
        for _ in range(1500):
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", d.port))
            flood.append(s)
        # The admin listener is not crowded: it answers at once and shows
        # the public one closing idle connections to keep room.
        t0 = time.monotonic()
        d.wait_for(lambda: d.metric("runfleet_http_refused_total", listener="public", reason="evicted") >= 1500 - 64,
                   timeout=10, what="idle connections evicted")
        assert time.monotonic() - t0 < 10
        t0 = time.monotonic()
        assert post_webhook(d, "workflow_job", queued_body()).status_code == 200
        assert requests.get(d.public_url + "/healthz", timeout=5).status_code == 200
        assert time.monotonic() - t0 < 5
        assert len(d.api("jobs")) == 1
        assert d.metric("runfleet_http_refused_total", listener="admin") == 0
        assert d.metric("runfleet_http_connections", listener="public") <= 64
        about_http = [ln for ln in d.log().splitlines()[log_before:] if "mod=http" in ln]
        assert len(about_http) < 20, "\n".join(about_http[:40])
    finally:
        for s in flood:
            s.close()
        stopped_cleanly(d)
