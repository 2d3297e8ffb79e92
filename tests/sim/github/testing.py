"""Helpers for tests that drive the simulator: a webhook receiver, a
GitHub REST client with App authentication, and an in-process runner that
speaks the fake runner's protocol (for tests that need no process)."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

API_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "User-Agent": "runfleet-tests",
}


# The configuration of the `github_sim` fixture.
SIM_DEFAULTS = dict(
    app_id=1,
    installation_id=42,
    org="acme",
    repos=["acme/widgets", "acme/gadgets"],
    webhook_secret=b"It's a Secret to Everybody",
    pat="ghp_simulatorPersonalAccessToken0001",
)


def assert_clean(sim) -> None:
    """The teardown check of every fixture that starts a simulator: no
    request GitHub would refuse as malformed (requests a test sent on
    purpose are taken with `take_invalid_requests()`), no response or
    payload of the simulator's own that fails GitHub's description, and no
    request sent while a Retry-After of its kind still held."""
    problems = []
    if sim.invalid_requests():
        problems.append(f"invalid requests: {sim.invalid_requests()}")
    if sim.invalid_responses():
        problems.append(f"simulator produced invalid responses: {sim.invalid_responses()}")
    if sim.retry_after_ignored():
        problems.append(f"requests sent before Retry-After passed: {sim.retry_after_ignored()}")
    assert not problems, "\n".join(problems)


class AppKey:
    """An RSA 2048 key pair for a GitHub App, with PEM files on disk."""

    def __init__(self, directory: str):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_key = key
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.private_path = os.path.join(directory, "app-key.pem")
        self.public_path = os.path.join(directory, "app-key.pub.pem")
        with open(self.private_path, "wb") as f:
            f.write(self.private_pem)
        os.chmod(self.private_path, 0o600)
        with open(self.public_path, "wb") as f:
            f.write(self.public_pem)

    def jwt(self, app_id: int = 1, iat_offset: int = -60, exp_offset: int = 540, **claims) -> str:
        """An App JWT like GitHub documents (iat 60 s in the past, exp <= 10 min ahead)."""
        return app_jwt(self.private_pem, app_id, iat_offset, exp_offset, **claims)


def app_jwt(private_pem: bytes, app_id: int, iat_offset: int = -60, exp_offset: int = 540, **claims) -> str:
    now = int(time.time())
    payload = {"iat": now + iat_offset, "exp": now + exp_offset, "iss": str(app_id)}
    payload.update(claims)
    return jwt.encode(payload, private_pem, algorithm="RS256")


class GitHubClient:
    """A tiny REST client for tests: App JWT -> installation token -> calls."""

    def __init__(self, sim, private_pem: bytes | None = None, token: str | None = None):
        self.sim = sim
        self.private_pem = private_pem
        self.token = token
        self.s = requests.Session()

    def jwt(self, **kw) -> str:
        return app_jwt(self.private_pem, self.sim.app_id, **kw)

    def installation_token(self) -> str:
        r = self.post(f"/app/installations/{self.sim.installation_id}/access_tokens", auth=f"Bearer {self.jwt()}")
        assert r.status_code == 201, r.text
        self.token = r.json()["token"]
        return self.token

    def request(self, method: str, path: str, auth: str | None = None, headers: dict | None = None,
                **kw) -> requests.Response:
        h = dict(API_HEADERS)
        if auth is None and self.token:
            auth = f"Bearer {self.token}"
        if auth:
            h["Authorization"] = auth
        h.update(headers or {})
        return self.s.request(method, self.sim.url + path, headers=h, timeout=30, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def jitconfig(self, name: str, labels: list[str], repo: str | None = None, group: int = 1) -> dict:
        path = (f"/repos/{repo}/actions/runners/generate-jitconfig" if repo
                else f"/orgs/{self.sim.org}/actions/runners/generate-jitconfig")
        r = self.post(path, json={"name": name, "runner_group_id": group, "labels": labels, "work_folder": "_work"})
        assert r.status_code == 201, r.text
        return r.json()


class WebhookReceiver:
    """Collects webhook deliveries; `status` and `delay` shape its answers."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        self.status = status
        self.delay = delay
        self.received: list[dict] = []
        self._cond = threading.Condition()
        recv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                if recv.delay:
                    time.sleep(recv.delay)
                with recv._cond:
                    recv.received.append({"headers": dict(self.headers.items()), "body": body,
                                          "json": json.loads(body), "time": time.time()})
                    recv._cond.notify_all()
                try:
                    self.send_response(recv.status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhook"
        self._t = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._t.start()

    def events(self, event: str = "workflow_job") -> list[dict]:
        with self._cond:
            return [r for r in self.received if r["headers"].get("X-GitHub-Event") == event]

    def actions(self, job_id: int | None = None) -> list[str]:
        return [r["json"]["action"] for r in self.events()
                if job_id is None or r["json"]["workflow_job"]["id"] == job_id]

    def wait(self, predicate, timeout: float = 10.0) -> Any:
        end = time.time() + timeout
        with self._cond:
            while True:
                v = predicate(self)
                if v:
                    return v
                left = end - time.time()
                if left <= 0:
                    raise TimeoutError("webhook condition not met")
                self._cond.wait(left)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def decode_jit_config(encoded: str) -> dict[str, dict]:
    files = json.loads(base64.b64decode(encoded))
    return {k: json.loads(base64.b64decode(v).decode("utf-8-sig")) for k, v in files.items()}


class RunnerClient:
    """Speaks the fake runner's protocol from the test process."""

    def __init__(self, encoded_jit_config: str):
        files = decode_jit_config(encoded_jit_config)
        self.runner = files[".runner"]
        self.base = self.runner["serverUrl"]
        self.ident = {
            "agent_id": self.runner["agentId"],
            "client_id": files[".credentials"]["data"]["clientId"],
            "modulus": files[".credentials_rsaparams"]["modulus"],
        }
        self.s = requests.Session()

    def post(self, path: str, **body) -> requests.Response:
        return self.s.post(self.base + path, json={**self.ident, **body}, timeout=60)

    def connect(self) -> requests.Response:
        return self.post("connect", pid=0, version="2.330.0")

    def acquire(self, wait: float = 5.0) -> dict | None:
        r = self.post("acquire", wait=wait)
        if r.status_code == 204:
            return None
        assert r.status_code == 200, r.text
        return r.json()["job"]

    def complete(self, job_id: int, conclusion: str = "success", **report) -> requests.Response:
        return self.post(f"jobs/{job_id}/complete", conclusion=conclusion, report=report)
