"""A GitHub simulator for runfleet's tests.

One HTTP server on 127.0.0.1 serves:
  * the GitHub REST endpoints runfleetd uses, every request and response
    validated against GitHub's OpenAPI description, with GitHub's auth,
    primary and secondary rate limits, and injectable faults;
  * the control API under /_sim/ (jobs, runners, calls, faults, deliveries);
  * the endpoints the fake runner talks to under /_sim/runner/.
A delivery worker sends `workflow_job` (and `ping`) webhooks, signed like
GitHub's, and records each attempt for the deliveries API.

See docs/SIMULATOR.md for the interface.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import random
import secrets
import select
import socket
import string
import threading
import time
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import jwt
from cryptography.hazmat.primitives import serialization

from tests.sim.github import openapi, webhooks
from tests.sim.github.webhooks import iso

log = logging.getLogger("github-sim")

DOCS = "https://docs.github.com/rest"
RATE_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
RUNNER_VERSION = "2.330.0"
MUTATING = ("POST", "PATCH", "PUT", "DELETE")
# Runner registration limits GitHub enforces beyond the OpenAPI schema (which
# already caps labels at 100): runner names of at most 64 characters, and
# label names of at most 256.
MAX_RUNNER_NAME = 64
MAX_LABEL_NAME = 256
PERM_LEVEL = {"read": 1, "write": 2, "admin": 3}
DEFAULT_PERMISSIONS = {
    "actions": "read",
    "administration": "write",
    "metadata": "read",
    "organization_self_hosted_runners": "write",
}
# Labels GitHub applies itself (shown as read-only in the runners API).
READ_ONLY_LABELS = {"self-hosted", "linux", "windows", "macos", "x64", "x86", "arm", "arm64"}
# Endpoints outside /app that authenticate as the App (JWT).
APP_JWT_OPS = {"apps/get-org-installation", "apps/get-repo-installation", "apps/get-user-installation"}
OUTCOMES = ("success", "failure", "cancelled", "skipped", "neutral", "timed_out", "action_required")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, doc: str = DOCS, headers: dict | None = None,
                 errors: list | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.doc = doc
        self.headers = headers or {}
        self.errors = errors


@dataclass
class Org:
    login: str
    id: int
    node_id: str


@dataclass
class Repo:
    id: int
    node_id: str
    name: str
    full_name: str
    owner: str
    created_at: float


@dataclass
class Job:
    id: int
    run_id: int
    run_number: int
    run_attempt: int
    repo: Repo
    labels: list
    duration: float
    outcome: str
    workflow_name: str
    name: str
    job_key: str
    head_sha: str
    head_branch: str
    node_id: str
    command: str | None
    created_at: float
    status: str = "queued"
    conclusion: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    runner_id: int | None = None
    runner_name: str | None = None
    runner_group_id: int | None = None
    runner_group_name: str | None = None
    cancel_requested: bool = False
    last_heartbeat: float = 0.0
    events: list = field(default_factory=list)
    report: dict = field(default_factory=dict)
    lost: bool = False
    held: bool = False
    queued_at: float | None = None

    def public(self) -> dict:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "repo": self.repo.full_name,
            "labels": list(self.labels),
            "name": self.name,
            "workflow_name": self.workflow_name,
            "status": self.status,
            "conclusion": self.conclusion,
            "outcome": self.outcome,
            "duration": self.duration,
            "runner_id": self.runner_id,
            "runner_name": self.runner_name,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "queued_at_ts": self.queued_at,
            "started_at_ts": self.started_at,
            "completed_at_ts": self.completed_at,
            "held": self.held,
            "events": list(self.events),
            "cancel_requested": self.cancel_requested,
            "lost": self.lost,
            "report": json.loads(json.dumps(self.report)),
        }


@dataclass
class Runner:
    id: int
    name: str
    labels: list
    group_id: int
    group_name: str
    scope: str  # "org" or "owner/repo"
    work_folder: str
    client_id: str
    modulus: str
    created_at: float
    version: str | None = None
    connected: bool = False
    session_active: bool = False
    busy: bool = False
    job_id: int | None = None
    last_seen: float = 0.0
    removed: bool = False
    removed_reason: str | None = None
    removed_at: float | None = None
    pid: int | None = None
    jobs_taken: int = 0

    def status(self, now: float, online_window: float) -> str:
        if self.busy or (self.session_active and now - self.last_seen <= online_window):
            return "online"
        return "offline"


@dataclass
class Token:
    token: str
    kind: str  # "installation" | "pat"
    expires_at: float
    permissions: dict
    repos: set | None  # None = all repositories of the installation


@dataclass
class Faults:
    error_ratio: float = 0.0
    error_status: int = 502
    latency: float = 0.0
    drop_ratio: float = 0.0
    exhaust_budget: bool = False
    endpoints: list | None = None  # operationIds or path prefixes; None = all
    count: int | None = None  # apply to the next N matching requests only
    after: bool = False  # process the request, then drop or fail the response

    def public(self) -> dict:
        return dict(self.__dict__)


class _Response:
    __slots__ = ("status", "body", "headers", "drop")

    def __init__(self, status: int, body: Any = None, headers: dict | None = None, drop: bool = False):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.drop = drop


def _error_body(status: int, message: str, doc: str = DOCS, errors: list | None = None) -> dict:
    body = {"message": message, "documentation_url": doc, "status": str(status)}
    if errors is not None:
        body["errors"] = errors
    return body


def _load_key(pem: bytes | str | None):
    if pem is None:
        return None
    if isinstance(pem, str):
        pem = pem.encode()
    if b"PRIVATE KEY" in pem:
        return serialization.load_pem_private_key(pem, password=None).public_key()
    return serialization.load_pem_public_key(pem)


class Simulator:
    """The GitHub simulator. See docs/SIMULATOR.md."""

    def __init__(
        self,
        app_id: int = 1,
        app_private_key_pem: bytes | str | None = None,
        app_public_key_pem: bytes | str | None = None,
        webhook_url: str | None = None,
        webhook_secret: bytes | str = b"",
        pat: str | None = None,
        installation_id: int = 1,
        org: str = "acme",
        repos: list[str] | None = None,
        rate_limit: int = 5000,
        secondary_points_per_minute: int = 900,
        content_creating_per_minute: int = 80,
        token_ttl: float = 3600,
        delivery_timeout: float = 10.0,
        *,
        secondary_status: int = 403,
        retry_after_grace: float = 1.0,
        runner_groups: dict[int, str] | None = None,
        permissions: dict[str, str] | None = None,
        hook_id: int = 448811,
        client_id: str | None = None,
        jwt_max_lifetime: int = 600,
        jwt_drift: int = 60,
        runner_lost_timeout: float = 600.0,
        heartbeat_interval: float = 0.5,
        max_poll_wait: float = 20.0,
        online_window: float = 30.0,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self._rng = random.Random(seed)
        self.app_id = int(app_id)
        self._app_key = _load_key(app_public_key_pem or app_private_key_pem)
        self._webhook_url = webhook_url
        self.webhook_secret = webhook_secret.encode() if isinstance(webhook_secret, str) else bytes(webhook_secret)
        self.pat = pat
        self.installation_id = int(installation_id)
        self.rate_limit = int(rate_limit)
        self.secondary_points_per_minute = int(secondary_points_per_minute)
        self.content_creating_per_minute = int(content_creating_per_minute)
        self.retry_after_grace = float(retry_after_grace)
        self.secondary_status = int(secondary_status)
        self.token_ttl = float(token_ttl)
        self.delivery_timeout = float(delivery_timeout)
        self.runner_groups = dict(runner_groups or {1: "Default"})
        self.permissions = dict(permissions or DEFAULT_PERMISSIONS)
        self.hook_id = int(hook_id)
        self.client_id = client_id or "Iv23li" + "".join(self._rng.choice(string.ascii_letters + string.digits)
                                                        for _ in range(14))
        self.jwt_max_lifetime = int(jwt_max_lifetime)
        self.jwt_drift = int(jwt_drift)
        self.runner_lost_timeout = float(runner_lost_timeout)
        self.heartbeat_interval = float(heartbeat_interval)
        self.max_poll_wait = float(max_poll_wait)
        self.online_window = float(online_window)
        self._host = host
        self._port = port
        self._hookshot = "GitHub-Hookshot/" + "".join(self._rng.choice("0123456789abcdef") for _ in range(7))

        self.spec = openapi.rest_spec()
        self.webhook_spec = openapi.webhook_spec()

        now = time.time()
        self._org = Org(org, 9000000 + self._rng.randrange(1000000), "")
        self._org.node_id = webhooks.node_id("O_kgDO", self._org.id)
        self.org = org  # the organization's login
        self._repos: dict[str, Repo] = {}
        for i, full in enumerate(repos or [f"{org}/widgets"]):
            owner, name = full.split("/", 1)
            if owner.lower() != org.lower():
                raise ValueError(f"repository {full} is not in organization {org}")
            rid = 700000000 + self._rng.randrange(10000000) * 10 + i
            self._repos[full.lower()] = Repo(rid, webhooks.node_id("R_kgDO", rid), name, f"{org}/{name}", org, now - 86400 * 30)

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._jobs: dict[int, Job] = {}
        self._runners: dict[int, Runner] = {}
        self._tokens: dict[str, Token] = {}
        # Every secret handed out, for tests that check none leaks.
        self._issued_tokens: list[str] = []
        self._issued_jit_configs: list[str] = []
        if pat:
            self._tokens[pat] = Token(pat, "pat", float("inf"), {k: "admin" for k in self.permissions}, None)
        self._next_job_id = 30000000000 + self._rng.randrange(1000000) * 1000
        self._next_run_id = 10000000000 + self._rng.randrange(1000000) * 1000
        self._next_runner_id = 100 + self._rng.randrange(1000)
        self._next_run_number = 1
        self._label_ids: dict[str, int] = {}
        self._runs: dict[int, list[int]] = {}

        self._rate_lock = threading.Lock()
        self._rate: dict[str, dict] = {}
        self._secondary: dict[tuple, deque] = {}
        self._content: dict[str, deque] = {}
        # Secondary-limit answers with Retry-After, and the requests of the
        # same kind sent before it passed (GitHub bans clients that do that).
        self._holds: dict[tuple, tuple[float, float]] = {}
        self._retry_after_ignored: list[dict] = []
        self._limited: list[dict] = []
        self._faults = Faults()
        # exhaust_secondary(): content-creating requests refused until then.
        self._secondary_until = 0.0
        # Every REST request, in arrival order (see requests()).
        self._request_log: list[dict] = []
        # Public SSH keys by login, served at /<login>.keys as github.com
        # does (see set_user_keys()).
        self._user_keys: dict[str, list[str]] = {}
        self._keys_fetches: dict[str, int] = {}

        self._stats_lock = threading.Lock()
        self._calls_by_op: dict[str, int] = {}
        self._calls_by_route: dict[str, int] = {}
        self._calls_by_status: dict[int, int] = {}
        self._calls_total = 0
        self._invalid_requests: list[dict] = []
        self._invalid_responses: list[dict] = []

        self._deliveries: dict[int, webhooks.Delivery] = {}
        self._next_delivery_id = 80000000000 + self._rng.randrange(1000000) * 1000
        self._worker = webhooks.DeliveryWorker(
            self._delivery_headers, lambda: self._webhook_url, lambda: self.delivery_timeout, self._delivery_done
        )
        self._sender = ("octocat", 583231)
        self._hook_created = now
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.url = ""

    # ------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------
    def start(self) -> "Simulator":
        sim = self

        class Handler(_Handler):
            simulator = sim

        self._server = _Server((self._host, self._port), Handler)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        t = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                             name="github-sim-http", daemon=True)
        t.start()
        self._threads.append(t)
        self._worker.start()
        m = threading.Thread(target=self._monitor, name="github-sim-monitor", daemon=True)
        m.start()
        self._threads.append(m)
        log.info("GitHub simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._worker.stop()
        self._worker.join(timeout=self.delivery_timeout + 2)
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------
    # Python control API
    # ------------------------------------------------------------------
    def set_user_keys(self, login: str, keys: list[str]) -> None:
        """The public keys github.com would list at /<login>.keys."""
        with self._lock:
            self._user_keys[login.lower()] = list(keys)

    def keys_fetches(self, login: str) -> int:
        """How often /<login>.keys was fetched."""
        with self._lock:
            return self._keys_fetches.get(login.lower(), 0)

    def handle_user_keys(self, method: str, path: str) -> tuple[int, str] | None:
        """GET /<login>.keys: one key a line, text/plain, 404 for no such user,
        like github.com. None when path is not such a request."""
        name = path.split("?", 1)[0]
        if method != "GET" or name.count("/") != 1 or not name.endswith(".keys"):
            return None
        login = name[1:-len(".keys")]
        if not login or not all(c.isalnum() or c == "-" for c in login):
            return None
        with self._lock:
            self._keys_fetches[login.lower()] = self._keys_fetches.get(login.lower(), 0) + 1
            keys = self._user_keys.get(login.lower())
        if keys is None:
            return 404, "Not Found"
        return 200, "".join(k + "\n" for k in keys)

    def set_webhook_url(self, url: str | None) -> None:
        self._webhook_url = url

    @property
    def webhook_url(self) -> str | None:
        return self._webhook_url

    def repo(self, full_name: str) -> Repo:
        r = self._repos.get(full_name.lower())
        if r is None:
            raise KeyError(f"unknown repository {full_name}")
        return r

    def add_job(
        self,
        labels: list[str],
        repo: str | None = None,
        duration: float = 0.2,
        outcome: str = "success",
        wait: bool = False,
        workflow: str | None = None,
        name: str | None = None,
        run_id: int | None = None,
        command: str | None = None,
        hold: bool = False,
        webhook: bool = True,
    ) -> int:
        """Declares a job; emits `queued` (or `waiting` when wait=True).
        hold=True keeps a queued job from being given to any runner until
        release_job() (GitHub being slow to assign). webhook=False sends no
        delivery at all for its first status (GitHub losing the event): the
        job is only seen through the REST API."""
        if not labels or not all(isinstance(l, str) and l for l in labels):
            raise ValueError("labels must be a non-empty list of strings")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        r = self.repo(repo or next(iter(self._repos.values())).full_name)
        now = time.time()
        with self._cond:
            jid = self._next_job_id
            self._next_job_id += 1 + self._rng.randrange(7)
            if run_id is None:
                run_id = self._next_run_id
                self._next_run_id += 1 + self._rng.randrange(7)
                run_number = self._next_run_number
                self._next_run_number += 1
            else:
                if run_id not in self._runs:
                    raise KeyError(f"unknown run {run_id}")
                run_number = self._jobs[self._runs[run_id][0]].run_number
            job_key = name or "build"
            job = Job(
                id=jid,
                run_id=run_id,
                run_number=run_number,
                run_attempt=1,
                repo=r,
                labels=list(labels),
                duration=float(duration),
                outcome=outcome,
                workflow_name=workflow or "CI",
                name=name or "build",
                job_key=job_key,
                head_sha=hashlib.sha1(f"{run_id}".encode()).hexdigest(),
                head_branch="main",
                node_id=webhooks.node_id("CR_kwDO", jid),
                command=command,
                created_at=now,
                status="waiting" if wait else "queued",
                held=bool(hold),
                queued_at=None if wait else now,
            )
            self._jobs[jid] = job
            self._runs.setdefault(run_id, []).append(jid)
            if webhook:
                self._emit_job(job, job.status)
            else:
                job.events.append(job.status)
            self._cond.notify_all()
        return jid

    def release_job(self, job_id: int) -> None:
        """waiting -> queued (emits `queued`); a held job becomes assignable."""
        with self._cond:
            job = self._job(job_id)
            if job.status == "waiting":
                job.status = "queued"
                job.queued_at = time.time()
                job.held = False
                self._emit_job(job, "queued")
            elif job.status == "queued" and job.held:
                job.held = False
            else:
                raise ValueError(f"job {job_id} is {job.status}, neither waiting nor held")
            self._cond.notify_all()

    def cancel_job(self, job_id: int) -> None:
        """Cancels a job. A waiting or queued job completes at once with
        conclusion `cancelled`; a running one is cancelled on its runner."""
        with self._cond:
            job = self._job(job_id)
            if job.status in ("waiting", "queued"):
                now = time.time()
                job.status = "completed"
                job.conclusion = "cancelled"
                job.started_at = job.started_at or now
                job.completed_at = now
                self._emit_job(job, "completed")
            elif job.status == "in_progress":
                job.cancel_requested = True
            self._cond.notify_all()

    def jobs(self) -> list[dict]:
        with self._lock:
            return [j.public() for j in self._jobs.values()]

    def job(self, job_id: int) -> dict:
        with self._lock:
            return self._job(job_id).public()

    def runners(self, include_removed: bool = False) -> list[dict]:
        now = time.time()
        with self._lock:
            out = []
            for r in self._runners.values():
                if r.removed and not include_removed:
                    continue
                out.append(
                    {
                        "id": r.id,
                        "name": r.name,
                        "labels": list(r.labels),
                        "scope": r.scope,
                        "runner_group_id": r.group_id,
                        "status": r.status(now, self.online_window),
                        "busy": r.busy,
                        "connected": r.connected,
                        "job_id": r.job_id,
                        "pid": r.pid,
                        "created_at": r.created_at,
                        "removed": r.removed,
                        "removed_reason": r.removed_reason,
                        "jobs_taken": r.jobs_taken,
                    }
                )
            return out

    def issued_tokens(self) -> list[str]:
        """Every installation access token issued, oldest first."""
        with self._lock:
            return list(self._issued_tokens)

    def issued_jit_configs(self) -> list[str]:
        """Every encoded_jit_config returned, oldest first."""
        with self._lock:
            return list(self._issued_jit_configs)

    def calls(self) -> dict:
        """GitHub API calls seen: total, by operationId, by "METHOD template", by status."""
        with self._stats_lock:
            return {
                "total": self._calls_total,
                "by_operation": dict(self._calls_by_op),
                "by_route": dict(self._calls_by_route),
                "by_status": {str(k): v for k, v in self._calls_by_status.items()},
            }

    def call_count(self, operation_id: str | None = None) -> int:
        with self._stats_lock:
            if operation_id is None:
                return self._calls_total
            return self._calls_by_op.get(operation_id, 0)

    def reset_calls(self) -> None:
        with self._stats_lock:
            self._calls_by_op.clear()
            self._calls_by_route.clear()
            self._calls_by_status.clear()
            self._calls_total = 0

    def invalid_requests(self) -> list[dict]:
        with self._stats_lock:
            return list(self._invalid_requests)

    def invalid_responses(self) -> list[dict]:
        with self._stats_lock:
            return list(self._invalid_responses)

    def take_invalid_requests(self) -> list[dict]:
        """Returns the invalid requests seen so far and forgets them: for a
        test that sends them on purpose, so that the teardown check
        (`testing.assert_clean`) looks only at the rest."""
        with self._stats_lock:
            out, self._invalid_requests = self._invalid_requests, []
            return out

    def secondary_limited(self) -> list[dict]:
        """Every request refused by a secondary limit: {time, operation, limit, retry_after}."""
        with self._rate_lock:
            return list(self._limited)

    def take_retry_after_ignored(self) -> list[dict]:
        """retry_after_ignored(), forgotten: for a test that ignores a
        Retry-After on purpose."""
        with self._rate_lock:
            out, self._retry_after_ignored = self._retry_after_ignored, []
            return out

    def exhaust_secondary(self, seconds: float) -> None:
        """Exhausts the secondary limit on content creation for seconds:
        every POST, PATCH or PUT of any principal is refused (403 or
        secondary_status) with a Retry-After of the time left, as GitHub
        does when a client went too fast; a request of the same kind sent
        again before that passed is recorded in retry_after_ignored()."""
        with self._rate_lock:
            self._secondary_until = time.time() + float(seconds)

    def requests(self) -> list[dict]:
        """Every REST request, in arrival order: {time, method, path,
        operation, status, auth ("jwt", "token" or "none"), retry_after
        (the answer's, or None)}."""
        with self._stats_lock:
            return [dict(r) for r in self._request_log]

    def retry_after_ignored(self) -> list[dict]:
        """Requests sent while a Retry-After of the same kind (the endpoint,
        or content creation) still held: {time, operation, limit, held_for}.
        A client that honours Retry-After leaves this empty."""
        with self._rate_lock:
            return list(self._retry_after_ignored)

    def deliveries(self) -> list[dict]:
        """Every delivery attempt, oldest first, with its payload."""
        with self._lock:
            out = []
            for d in sorted(self._deliveries.values(), key=lambda d: d.id):
                item = d.item()
                item["delivered_at"] = d.delivered_at
                item["pending"] = not d.done.is_set()
                item["job_id"] = d.job_id
                item["payload"] = d.payload
                item["request_headers"] = dict(d.request_headers)
                item["url"] = d.url
                out.append(item)
            return out

    def wait_deliveries(self, timeout: float = 10.0) -> bool:
        """Waits until every queued delivery has been attempted."""
        return self._worker.wait_idle(timeout)

    def faults(
        self,
        error_ratio: float = 0.0,
        latency: float = 0.0,
        drop_ratio: float = 0.0,
        exhaust_budget: bool = False,
        error_status: int = 502,
        endpoints: list[str] | None = None,
        count: int | None = None,
        after: bool = False,
    ) -> dict:
        """Replaces the injected faults (call with no arguments to clear them).
        With after=True a faulted request is processed first (it takes
        effect), then its response is dropped or replaced by error_status."""
        f = Faults(float(error_ratio), int(error_status), float(latency), float(drop_ratio), bool(exhaust_budget),
                   list(endpoints) if endpoints else None, count, bool(after))
        with self._rate_lock:
            self._faults = f
        return f.public()

    def current_faults(self) -> dict:
        with self._rate_lock:
            return self._faults.public()

    def send_ping(self, wait: bool = True) -> int:
        """Sends a `ping` delivery (after any queued ones). With wait=True
        (default) waits for the attempt and returns the receiver's HTTP status
        (0 if there was no answer); with wait=False returns the delivery id."""
        payload = webhooks.ping_payload(self.hook_id, self.app_id, self._webhook_url, ["workflow_job"],
                                        self._hook_created)
        with self._lock:
            d = self._new_delivery("ping", None, payload, None, None, webhooks.new_guid(), False)
        if not wait:
            return d.id
        d.done.wait(self.delivery_timeout + 60)
        return d.status_code

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
                 message: str | None = None) -> Any:
        """Polls predicate until it returns something truthy; returns that
        value, or raises TimeoutError. $RUNFLEET_TIMEOUT_SCALE stretches the
        timeout for a daemon run under a slow wrapper (valgrind)."""
        timeout *= float(os.environ.get("RUNFLEET_TIMEOUT_SCALE", "1"))
        end = time.time() + timeout
        while True:
            v = predicate()
            if v:
                return v
            if time.time() >= end:
                raise TimeoutError(message or f"condition not met within {timeout}s")
            time.sleep(interval)

    def rate_limit_state(self, principal: str | None = None) -> dict:
        key = principal or f"installation:{self.installation_id}"
        with self._rate_lock:
            st = self._rate_state(key, time.time())
            return dict(st)

    # ------------------------------------------------------------------
    # internals: jobs, runners, webhooks
    # ------------------------------------------------------------------
    def _job(self, job_id: int) -> Job:
        job = self._jobs.get(int(job_id))
        if job is None:
            raise KeyError(f"unknown job {job_id}")
        return job

    def _emit_job(self, job: Job, action: str) -> None:
        """Builds, validates and queues a workflow_job delivery (lock held)."""
        template = webhooks.templates()[action]
        payload = webhooks.workflow_job_payload(
            template, action, job, job.repo, self._org, self.installation_id, self._sender
        )
        errs = self.webhook_spec.validate("workflow_job", action, payload)
        if errs:
            self._record_invalid_response("webhook", f"workflow_job.{action}", 0, errs)
        job.events.append(action)
        d = self._new_delivery("workflow_job", action, payload, self.installation_id, job.repo.id,
                               webhooks.new_guid(), False)
        d.job_id = job.id

    def _new_delivery(self, event, action, payload, inst, repo_id, guid, redelivery) -> webhooks.Delivery:
        did = self._next_delivery_id
        self._next_delivery_id += 1 + self._rng.randrange(3)
        d = webhooks.Delivery(did, guid, event, action, payload, inst, repo_id, redelivery)
        self._deliveries[did] = d
        self._worker.submit(d)
        return d

    def _delivery_headers(self, d: webhooks.Delivery) -> dict:
        h = {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "User-Agent": self._hookshot,
            "X-GitHub-Delivery": d.guid,
            "X-GitHub-Event": d.event,
            "X-GitHub-Hook-ID": str(self.hook_id),
            "X-GitHub-Hook-Installation-Target-ID": str(self.app_id),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
        }
        if self.webhook_secret:
            h["X-Hub-Signature"] = webhooks.signature_1(self.webhook_secret, d.body)
            h["X-Hub-Signature-256"] = webhooks.signature_256(self.webhook_secret, d.body)
        return h

    def _delivery_done(self, d: webhooks.Delivery) -> None:
        level = logging.DEBUG if d.ok else logging.INFO
        log.log(level, "delivery %s %s.%s guid=%s -> %s (%.3fs)", d.id, d.event, d.action, d.guid, d.status,
                d.duration)

    @staticmethod
    def labels_match(job_labels: list[str], runner_labels: list[str]) -> bool:
        have = {l.lower() for l in runner_labels} | {"self-hosted"}
        return all(l.lower() in have for l in job_labels)

    def _runner_can_take(self, runner: Runner, job: Job) -> bool:
        if runner.scope != "org" and runner.scope.lower() != job.repo.full_name.lower():
            return False
        return self.labels_match(job.labels, runner.labels)

    def _find_job_for(self, runner: Runner) -> Job | None:
        for job in self._jobs.values():  # insertion order = queue order
            if job.status == "queued" and not job.held and self._runner_can_take(runner, job):
                return job
        return None

    def _remove_runner(self, runner: Runner, reason: str) -> None:
        if not runner.removed:
            runner.removed = True
            runner.removed_reason = reason
            runner.removed_at = time.time()
            runner.session_active = False
            self._cond.notify_all()

    def _complete_job(self, job: Job, conclusion: str) -> None:
        now = time.time()
        job.status = "completed"
        job.conclusion = conclusion
        job.completed_at = now
        self._emit_job(job, "completed")
        runner = self._runners.get(job.runner_id) if job.runner_id is not None else None
        if runner is not None:
            runner.busy = False
            runner.job_id = None
            # A JIT runner takes exactly one job and is then removed.
            self._remove_runner(runner, "ephemeral runner finished its job")
        self._cond.notify_all()

    def _monitor(self) -> None:
        while not self._stopping.wait(0.2):
            now = time.time()
            with self._cond:
                for job in self._jobs.values():
                    if job.status == "in_progress" and now - job.last_heartbeat > self.runner_lost_timeout:
                        job.lost = True
                        log.info("job %s: runner %s lost communication", job.id, job.runner_name)
                        self._complete_job(job, "cancelled" if job.cancel_requested else "failure")

    # ------------------------------------------------------------------
    # stats
    # ------------------------------------------------------------------
    def _count_call(self, op_id: str, route: str, status: int) -> None:
        with self._stats_lock:
            self._calls_total += 1
            self._calls_by_op[op_id] = self._calls_by_op.get(op_id, 0) + 1
            self._calls_by_route[route] = self._calls_by_route.get(route, 0) + 1
            self._calls_by_status[status] = self._calls_by_status.get(status, 0) + 1

    def _record_invalid_request(self, method, path, op_id, status, errors) -> None:
        entry = {"time": time.time(), "method": method, "path": path, "operation": op_id, "status": status,
                 "reason": "; ".join(errors), "errors": list(errors)}
        with self._stats_lock:
            self._invalid_requests.append(entry)
        log.warning("invalid request %s %s (%s): %s", method, path, op_id, entry["reason"])

    def _record_invalid_response(self, kind, what, status, errors) -> None:
        entry = {"time": time.time(), "kind": kind, "operation": what, "status": status,
                 "reason": "; ".join(errors), "errors": list(errors)}
        with self._stats_lock:
            self._invalid_responses.append(entry)
        log.error("SIMULATOR BUG: invalid %s for %s (status %s): %s", kind, what, status, entry["reason"])

    # ------------------------------------------------------------------
    # rate limits and faults
    # ------------------------------------------------------------------
    def _limit_for(self, principal: str) -> int:
        return 60 if principal.startswith("anonymous") else self.rate_limit

    def _rate_state(self, principal: str, now: float) -> dict:
        st = self._rate.get(principal)
        if st is None or now >= st["reset"]:
            st = {"limit": self._limit_for(principal), "used": 0, "reset": int(now) + 3600}
            self._rate[principal] = st
        st["remaining"] = 0 if self._faults.exhaust_budget else max(0, st["limit"] - st["used"])
        return st

    def _rate_headers(self, st: dict) -> dict:
        return {
            "x-ratelimit-limit": str(st["limit"]),
            "x-ratelimit-remaining": str(st["remaining"]),
            "x-ratelimit-used": str(st["used"]),
            "x-ratelimit-reset": str(st["reset"]),
            "x-ratelimit-resource": "core",
        }

    def _fault_applies(self, op_id: str, path: str) -> Faults | None:
        with self._rate_lock:
            f = self._faults
            if not (f.error_ratio or f.latency or f.drop_ratio):
                return None
            if f.endpoints and not any(op_id == e or path.startswith(e) for e in f.endpoints):
                return None
            if f.count is not None:
                if f.count <= 0:
                    return None
                f.count -= 1
            return Faults(f.error_ratio, f.error_status, f.latency, f.drop_ratio, f.exhaust_budget, after=f.after)

    # ------------------------------------------------------------------
    # REST request pipeline
    # ------------------------------------------------------------------
    def handle_rest(self, method: str, raw_path: str, headers, body_bytes: bytes) -> _Response:
        start = time.time()
        resp = self._handle_rest(method, raw_path, headers, body_bytes)
        op, _, _ = self.spec.match(method, urllib.parse.urlsplit(raw_path).path)
        auth = headers.get("Authorization") or ""
        kind = "none" if not auth else ("jwt" if auth.count(".") == 2 else "token")
        entry = {"time": start, "method": method, "path": raw_path,
                 "operation": op.operation_id if op else "unknown",
                 "status": resp.status, "auth": kind,
                 "retry_after": resp.headers.get("retry-after")}
        with self._stats_lock:
            self._request_log.append(entry)
        return resp

    def _handle_rest(self, method: str, raw_path: str, headers, body_bytes: bytes) -> _Response:
        split = urllib.parse.urlsplit(raw_path)
        path = split.path
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        op, path_params, path_exists = self.spec.match(method, path)
        op_id = op.operation_id if op else "unknown"
        route = f"{method} {op.template}" if op else f"{method} {path}"

        version = headers.get("X-GitHub-Api-Version") or openapi.DEFAULT_API_VERSION
        rate_headers: dict = {}
        ctx: _Ctx | None = None
        try:
            if op is None:
                why = (f"{method} is not an operation on {path}" if path_exists
                       else f"no operation matches {method} {path}")
                self._record_invalid_request(method, raw_path, op_id, 404, [why])
                raise HTTPError(404, "Not Found")
            if not headers.get("User-Agent"):
                self._record_invalid_request(method, raw_path, op_id, 403, ["missing User-Agent header"])
                raise HTTPError(
                    403,
                    "Request forbidden by administrative rules. Please make sure your request has a "
                    "User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). "
                    "Check https://developer.github.com for other possible causes.",
                )
            if version not in openapi.SUPPORTED_API_VERSIONS:
                self._record_invalid_request(method, raw_path, op_id, 400, [f"unsupported API version {version}"])
                raise HTTPError(400, f"Unsupported 'X-GitHub-Api-Version' header value: {version}. "
                                     f"Supported versions are: {', '.join(openapi.SUPPORTED_API_VERSIONS)}",
                                "https://docs.github.com/rest/about-the-rest-api/api-versions")
            ctx = _Ctx(self, method, raw_path, op, path_params, query, headers, version)
            self._authenticate(ctx)
            # primary rate limit
            now = time.time()
            if op_id != "rate-limit/get":
                with self._rate_lock:
                    st = self._rate_state(ctx.principal, now)
                    if st["remaining"] <= 0:
                        rate_headers = self._rate_headers(st)
                        raise HTTPError(403, self._rate_limit_message(ctx), RATE_DOCS, rate_headers)
                    st["used"] += 1
                    st["remaining"] = max(0, st["limit"] - st["used"])
                    rate_headers = self._rate_headers(st)
                    ctx.charged = True
                    self._secondary_limits(ctx, op_id, method, now, rate_headers)
            else:
                with self._rate_lock:
                    ctx.rate_state = dict(self._rate_state(ctx.principal, now))
                    rate_headers = self._rate_headers(ctx.rate_state)
            # request validation
            body, has_body = None, bool(body_bytes.strip())
            if has_body:
                try:
                    body = json.loads(body_bytes)
                except ValueError:
                    self._record_invalid_request(method, raw_path, op_id, 400, ["body is not JSON"])
                    raise HTTPError(400, "Problems parsing JSON")
            errs = self.spec.validate_request(op, path_params, query, body, has_body, version)
            if errs:
                self._record_invalid_request(method, raw_path, op_id, 422, errs)
                raise HTTPError(422, "Invalid request.\n\n" + "\n".join(errs), DOCS,
                                errors=self.spec.error_list(op, errs))
            ctx.body = body
            ctx.params = self._coerced_params(op, path_params, query)
            # Faults come after authentication and validation, so a faulted
            # request is still checked; they stand for failures before the
            # request took effect, or with `after` for a response lost after.
            fault = self._fault_applies(op_id, path)
            if fault is not None and not fault.after:
                faulted = self._faulted(fault, op_id, route)
                if faulted is not None:
                    return faulted
            handler = _HANDLERS.get(op_id)
            if handler is None:
                self._record_invalid_request(method, raw_path, op_id, 404,
                                             [f"{op_id} is valid but not implemented by the simulator"])
                raise HTTPError(404, "Not Found")
            resp = handler(self, ctx)
            if fault is not None and fault.after:
                faulted = self._faulted(fault, op_id, route)
                if faulted is not None:
                    return faulted
        except HTTPError as e:
            resp = _Response(e.status, _error_body(e.status, e.message, e.doc, e.errors), dict(e.headers))
        # response validation
        if op is not None and resp.status != 304:
            verrs = self.spec.validate_response(op, resp.status, resp.body, version)
            if verrs:
                self._record_invalid_response("response", op_id, resp.status, verrs)
        for k, v in rate_headers.items():
            resp.headers.setdefault(k, v)
        resp.headers.setdefault("x-github-api-version-selected", version)
        resp.headers.setdefault("x-github-media-type", "github.v3; format=json")
        # conditional requests: a matching ETag is answered 304 and not charged
        if method == "GET" and resp.status == 200 and resp.body is not None:
            etag = 'W/"' + hashlib.sha256(json.dumps(resp.body, sort_keys=True).encode()).hexdigest()[:40] + '"'
            resp.headers["ETag"] = etag
            inm = headers.get("If-None-Match")
            if inm and etag in [t.strip() for t in inm.split(",")]:
                resp = _Response(304, None, resp.headers)
                if ctx is not None and ctx.charged:
                    self._refund(ctx.principal, resp)
        self._count_call(op_id, route, resp.status)
        return resp

    def _faulted(self, fault: Faults, op_id: str, route: str) -> _Response | None:
        """The answer a fault puts in place of the real one (after its
        latency), or None when its dice say the request goes through."""
        if fault.latency:
            time.sleep(fault.latency)
        if fault.drop_ratio and self._rng.random() < fault.drop_ratio:
            self._count_call(op_id, route, 0)
            return _Response(0, drop=True)
        if fault.error_ratio and self._rng.random() < fault.error_ratio:
            self._count_call(op_id, route, fault.error_status)
            return _Response(fault.error_status, {"message": "Server Error", "documentation_url": DOCS})
        return None

    def _secondary_limits(self, ctx: "_Ctx", op_id: str, method: str, now: float, rate_headers: dict) -> None:
        """GitHub's secondary limits, called with _rate_lock held: points per
        minute per endpoint (5 a mutation, 1 a read), and content-creating
        requests (POST, PATCH, PUT) per minute across endpoints. A refusal
        carries Retry-After; a request of the same kind sent before it
        passed is recorded in retry_after_ignored()."""
        creating = method in ("POST", "PATCH", "PUT")
        for key in ((ctx.principal, op_id), (ctx.principal, "content") if creating else None):
            if key is None:
                continue
            # A request that arrives within retry_after_grace of the refusal
            # was in flight before the client could see it.
            refused, until = self._holds.get(key, (0.0, 0.0))
            if now - refused > self.retry_after_grace and now < until:
                self._retry_after_ignored.append(
                    {"time": now, "operation": op_id, "limit": key[1], "held_for": round(until - now, 3)})
        if creating and now < self._secondary_until:
            ckey = (ctx.principal, "content")
            self._refuse_secondary(ctx, ckey, deque([(self._secondary_until - 60, 1)]), 1, now, rate_headers)
        points = 5 if method in MUTATING else 1
        key = (ctx.principal, op_id)
        win = self._secondary.setdefault(key, deque())
        while win and now - win[0][0] >= 60:
            win.popleft()
        used = sum(p for _, p in win)
        if used + points > self.secondary_points_per_minute:
            self._refuse_secondary(ctx, key, win, used + points - self.secondary_points_per_minute, now,
                                   rate_headers)
        if creating:
            cwin = self._content.setdefault(ctx.principal, deque())
            while cwin and now - cwin[0][0] >= 60:
                cwin.popleft()
            if len(cwin) + 1 > self.content_creating_per_minute:
                self._refuse_secondary(ctx, (ctx.principal, "content"), cwin,
                                       len(cwin) + 1 - self.content_creating_per_minute, now, rate_headers)
            cwin.append((now, 1))
        win.append((now, points))

    def _refuse_secondary(self, ctx: "_Ctx", key: tuple, win: deque, need: int, now: float,
                          rate_headers: dict) -> None:
        """Raises the secondary-limit answer, with Retry-After the time until
        enough of the window's points leave it."""
        freed, retry = 0, 60.0
        for t, p in win:
            freed += p
            if freed >= need:
                retry = t + 60 - now
                break
        retry_after = max(1, math.ceil(retry))
        self._holds[key] = (now, now + retry_after)
        self._limited.append({"time": now, "operation": ctx.op.operation_id, "limit": key[1],
                              "retry_after": retry_after})
        h = dict(rate_headers)
        h["retry-after"] = str(retry_after)
        raise HTTPError(
            self.secondary_status,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
            f"again. If you reach out to GitHub Support for help, please include the request ID "
            f"{ctx.request_id}.",
            "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
            h,
        )

    def _refund(self, principal: str, resp: _Response) -> None:
        with self._rate_lock:
            st = self._rate_state(principal, time.time())
            st["used"] = max(0, st["used"] - 1)
            st["remaining"] = 0 if self._faults.exhaust_budget else st["limit"] - st["used"]
            resp.headers.update(self._rate_headers(st))

    def _rate_limit_message(self, ctx) -> str:
        if ctx.principal.startswith("installation:"):
            return f"API rate limit exceeded for installation ID {self.installation_id}."
        if ctx.principal == "app":
            return f"API rate limit exceeded for app ID {self.app_id}."
        if ctx.principal == "pat":
            return ("API rate limit exceeded for user ID 583231. If you reach out to GitHub Support for help, "
                    "please include the request ID " + ctx.request_id + ".")
        return "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)"

    def _coerced_params(self, op, path_params, query) -> dict:
        out: dict[str, Any] = {}
        for p in op.params:
            schema = p.get("schema", {})
            if p["in"] == "path" and p["name"] in path_params:
                out[p["name"]] = openapi._coerce(path_params[p["name"]], schema)[0]
            elif p["in"] == "query":
                if p["name"] in query:
                    vals = query[p["name"]]
                    out[p["name"]] = openapi._coerce(vals if schema.get("type") == "array" else vals[0], schema)[0]
                elif "default" in schema:
                    out[p["name"]] = schema["default"]
        return out

    # ------------------------------------------------------------------
    # authentication
    # ------------------------------------------------------------------
    def _authenticate(self, ctx: "_Ctx", quiet: bool = False) -> None:
        auth = ctx.headers.get("Authorization")
        app_only = ctx.op is not None and (
            ctx.op.template == "/app" or ctx.op.template.startswith("/app/") or ctx.op.operation_id in APP_JWT_OPS
        )
        optional = ctx.op is not None and ctx.op.operation_id == "rate-limit/get"
        if not auth:
            ctx.principal = "anonymous"
            if optional or quiet:
                return
            raise HTTPError(401, "Requires authentication")
        scheme, _, cred = auth.partition(" ")
        scheme = scheme.lower()
        cred = cred.strip()
        if scheme not in ("bearer", "token") or not cred:
            raise HTTPError(401, "Bad credentials")
        looks_jwt = cred.count(".") == 2 and cred.startswith("eyJ")
        if looks_jwt and scheme == "bearer":
            self._verify_jwt(cred)
            ctx.principal = "app"
            ctx.kind = "app"
            if not app_only and not optional:
                # an App JWT only authenticates as the App (/app/... endpoints)
                raise HTTPError(401, "Bad credentials")
            return
        if app_only:
            raise HTTPError(401, "A JSON web token could not be decoded")
        tok = self._tokens.get(cred)
        if tok is None or time.time() >= tok.expires_at:
            raise HTTPError(401, "Bad credentials")
        ctx.token = tok
        ctx.kind = tok.kind
        ctx.principal = f"installation:{self.installation_id}" if tok.kind == "installation" else "pat"

    def _verify_jwt(self, token: str) -> None:
        if self._app_key is None:
            raise HTTPError(401, "A JSON web token could not be decoded")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "RS256":
                raise HTTPError(401, "A JSON web token could not be decoded")
            claims = jwt.decode(token, self._app_key, algorithms=["RS256"],
                                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                                         "verify_aud": False, "verify_iss": False})
        except HTTPError:
            raise
        except jwt.PyJWTError:
            raise HTTPError(401, "A JSON web token could not be decoded")
        now = int(time.time())
        iat, exp, iss = claims.get("iat"), claims.get("exp"), claims.get("iss")
        if not isinstance(iat, int) or isinstance(iat, bool) or iat > now + self.jwt_drift:
            raise HTTPError(401, "'Issued at' claim ('iat') must be an Integer representing the time that the "
                                 "assertion was issued.")
        if not isinstance(exp, int) or isinstance(exp, bool) or exp <= now:
            raise HTTPError(401, "'Expiration time' claim ('exp') must be a numeric value representing the future "
                                 "time at which the assertion expires.")
        if exp > now + self.jwt_max_lifetime:
            raise HTTPError(401, "'Expiration time' claim ('exp') is too far in the future.")
        if str(iss) not in (str(self.app_id), self.client_id):
            raise HTTPError(401, "'Issuer' claim ('iss') must be an Integer or the client ID of the app.")

    # ------------------------------------------------------------------
    # REST handlers (helpers)
    # ------------------------------------------------------------------
    def _require_perm(self, ctx: "_Ctx", perm: str, level: str) -> None:
        tok = ctx.token
        if tok is None:
            raise HTTPError(401, "Requires authentication")
        have = tok.permissions.get(perm)
        if have is None or PERM_LEVEL[have] < PERM_LEVEL[level]:
            raise HTTPError(403, "Resource not accessible by integration" if tok.kind == "installation"
                            else "Resource not accessible by personal access token")

    def _org_or_404(self, ctx: "_Ctx") -> None:
        if ctx.params.get("org", "").lower() != self._org.login.lower():
            raise HTTPError(404, "Not Found")

    def _repo_or_404(self, ctx: "_Ctx") -> Repo:
        owner, name = ctx.params.get("owner", ""), ctx.params.get("repo", "")
        r = self._repos.get(f"{owner}/{name}".lower())
        if r is None:
            raise HTTPError(404, "Not Found")
        tok = ctx.token
        if tok is not None and tok.repos is not None and r.full_name.lower() not in tok.repos:
            raise HTTPError(404, "Not Found")
        return r

    def _label_id(self, name: str) -> int:
        key = name.lower()
        if key not in self._label_ids:
            self._label_ids[key] = len(self._label_ids) + 1
        return self._label_ids[key]

    def runner_object(self, r: Runner) -> dict:
        return {
            "id": r.id,
            "runner_group_id": r.group_id,
            "name": r.name,
            "os": "Linux" if r.connected else "unknown",
            "status": r.status(time.time(), self.online_window),
            "busy": r.busy,
            "ephemeral": True,
            "version": r.version,
            "labels": [
                {"id": self._label_id(l), "name": l,
                 "type": "read-only" if l.lower() in READ_ONLY_LABELS else "custom"}
                for l in r.labels
            ],
        }

    def _paginate(self, ctx: "_Ctx", items: list) -> tuple[list, dict]:
        per_page = max(1, min(100, int(ctx.params.get("per_page") or 30)))
        page = max(1, int(ctx.params.get("page") or 1))
        total = len(items)
        last = max(1, math.ceil(total / per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        links = []
        split = urllib.parse.urlsplit(ctx.raw_path)
        q = urllib.parse.parse_qs(split.query, keep_blank_values=True)

        def url(n: int) -> str:
            qq = dict(q)
            qq["page"] = [str(n)]
            qq["per_page"] = [str(per_page)]
            return f"{self.url}{split.path}?{urllib.parse.urlencode(qq, doseq=True)}"

        if page > 1:
            links.append(f'<{url(page - 1)}>; rel="prev"')
        if page < last:
            links.append(f'<{url(page + 1)}>; rel="next"')
            links.append(f'<{url(last)}>; rel="last"')
        if page > 1:
            links.append(f'<{url(1)}>; rel="first"')
        return chunk, ({"Link": ", ".join(links)} if links else {})

    def repository_object(self, r: Repo) -> dict:
        tmpl = self.spec.doc["components"]["examples"]["repository-paginated-2"]["value"]["repositories"][0]
        obj = webhooks.repository_payload(tmpl, r, self._org, self.url)
        obj["owner"] = webhooks.org_user(self._org)
        return obj

    def _job_object(self, job: Job) -> dict:
        full = job.repo.full_name
        steps = webhooks._steps(job, job.status if job.status != "waiting" else "queued", time.time())
        return {
            "id": job.id,
            "run_id": job.run_id,
            "run_url": f"{self.url}/repos/{full}/actions/runs/{job.run_id}",
            "run_attempt": job.run_attempt,
            "node_id": job.node_id,
            "head_sha": job.head_sha,
            "url": f"{self.url}/repos/{full}/actions/jobs/{job.id}",
            "html_url": f"https://github.com/{full}/actions/runs/{job.run_id}/job/{job.id}",
            "status": job.status,
            "conclusion": job.conclusion,
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at or job.created_at),
            "completed_at": iso(job.completed_at) if job.completed_at else None,
            "name": job.name,
            "steps": steps,
            "check_run_url": f"{self.url}/repos/{full}/check-runs/{job.id}",
            "labels": list(job.labels),
            "runner_id": job.runner_id,
            "runner_name": job.runner_name,
            "runner_group_id": job.runner_group_id,
            "runner_group_name": job.runner_group_name,
            "workflow_name": job.workflow_name,
            "head_branch": job.head_branch,
        }

    def _run_status(self, jobs: list[Job]) -> tuple[str, str | None]:
        sts = {j.status for j in jobs}
        if sts == {"completed"}:
            concl = {j.conclusion for j in jobs}
            for c in ("failure", "cancelled", "timed_out", "action_required"):
                if c in concl:
                    return "completed", c
            return "completed", "success"
        if "in_progress" in sts:
            return "in_progress", None
        if "queued" in sts:
            return "queued", None
        if "waiting" in sts:
            return "waiting", None
        return "in_progress", None

    def _run_object(self, run_id: int) -> dict:
        jobs = [self._jobs[j] for j in self._runs[run_id]]
        first = jobs[0]
        r = first.repo
        full = r.full_name
        tmpl = self.spec.doc["components"]["examples"]["workflow-run-paginated"]["value"]["workflow_runs"][0]
        obj = json.loads(json.dumps(tmpl).replace("octo-org/octo-repo", full).replace("octocat/Hello-World", full))
        status, conclusion = self._run_status(jobs)
        repo_obj = self._minimal_repo(r)
        obj.update(
            {
                "id": run_id,
                "name": first.workflow_name,
                "node_id": webhooks.node_id("WFR_kwLO", run_id),
                "check_suite_id": run_id + 1,
                "check_suite_node_id": webhooks.node_id("CS_kwDO", run_id + 1),
                "head_branch": first.head_branch,
                "head_sha": first.head_sha,
                "path": ".github/workflows/ci.yml",
                "display_title": first.workflow_name,
                "run_number": first.run_number,
                "run_attempt": first.run_attempt,
                "event": "push",
                "status": status,
                "conclusion": conclusion,
                "workflow_id": 161335,
                "url": f"{self.url}/repos/{full}/actions/runs/{run_id}",
                "html_url": f"https://github.com/{full}/actions/runs/{run_id}",
                "jobs_url": f"{self.url}/repos/{full}/actions/runs/{run_id}/jobs",
                "logs_url": f"{self.url}/repos/{full}/actions/runs/{run_id}/logs",
                "check_suite_url": f"{self.url}/repos/{full}/check-suites/{run_id + 1}",
                "artifacts_url": f"{self.url}/repos/{full}/actions/runs/{run_id}/artifacts",
                "cancel_url": f"{self.url}/repos/{full}/actions/runs/{run_id}/cancel",
                "rerun_url": f"{self.url}/repos/{full}/actions/runs/{run_id}/rerun",
                "workflow_url": f"{self.url}/repos/{full}/actions/workflows/161335",
                "created_at": iso(first.created_at),
                "updated_at": iso(max((j.completed_at or j.started_at or j.created_at) for j in jobs)),
                "run_started_at": iso(first.created_at),
                "pull_requests": [],
                "repository": repo_obj,
                "head_repository": repo_obj,
            }
        )
        obj["head_commit"] = dict(obj.get("head_commit") or {}, id=first.head_sha, tree_id=first.head_sha)
        obj["actor"] = obj.get("actor")
        obj["triggering_actor"] = obj.get("triggering_actor") or obj.get("actor")
        return obj

    def _minimal_repo(self, r: Repo) -> dict:
        full = self.repository_object(r)
        return full

    # ------------------------------------------------------------------
    # runner protocol (used by tests/sim/fake-runner)
    # ------------------------------------------------------------------
    def _runner_auth(self, body: dict) -> Runner:
        try:
            rid = int(body.get("agent_id"))
        except (TypeError, ValueError):
            raise HTTPError(400, "agent_id missing")
        r = self._runners.get(rid)
        if r is None:
            raise HTTPError(404, "The runner registration has been deleted from the server, please re-configure.")
        if not secrets.compare_digest(str(body.get("client_id", "")), r.client_id) or not secrets.compare_digest(
            str(body.get("modulus", "")), r.modulus
        ):
            raise HTTPError(401, "Invalid runner credentials")
        if r.removed:
            raise HTTPError(404, "The runner registration has been deleted from the server, please re-configure.")
        return r

    def _job_message(self, job: Job, runner: Runner) -> dict:
        return {
            "job_id": job.id,
            "run_id": job.run_id,
            "run_number": job.run_number,
            "run_attempt": job.run_attempt,
            "repository": job.repo.full_name,
            "repository_id": job.repo.id,
            "repository_owner": self._org.login,
            "repository_owner_id": self._org.id,
            "job_key": job.job_key,
            "job_name": job.name,
            "workflow": job.workflow_name,
            "workflow_ref": f"{job.repo.full_name}/.github/workflows/ci.yml@refs/heads/{job.head_branch}",
            "sha": job.head_sha,
            "ref": f"refs/heads/{job.head_branch}",
            "ref_name": job.head_branch,
            "event_name": "push",
            "actor": self._sender[0],
            "actor_id": self._sender[1],
            "labels": list(job.labels),
            "duration": job.duration,
            "outcome": job.outcome,
            "command": job.command,
            "server_url": self.url,
            "api_url": self.url,
            "graphql_url": self.url + "/graphql",
            "heartbeat_interval": self.heartbeat_interval,
            "runner_name": runner.name,
        }

    def handle_runner(self, method: str, path: str, body: dict,
                      client_alive: Callable[[], bool] = lambda: True) -> tuple[int, Any]:
        parts = path.strip("/").split("/")  # _sim runner ...
        action = parts[2] if len(parts) > 2 else ""
        now = time.time()
        if action == "connect":
            with self._cond:
                r = self._runner_auth(body)
                if r.jobs_taken:
                    raise HTTPError(404, "The runner registration has been deleted from the server, please re-configure.")
                if r.session_active and now - r.last_seen <= self.online_window and r.pid not in (None, body.get("pid")):
                    raise HTTPError(409, "A session for this runner already exists.")
                r.connected = True
                r.session_active = True
                r.last_seen = now
                r.pid = body.get("pid")
                r.version = str(body.get("version") or RUNNER_VERSION)
                return 200, {"runner_id": r.id, "runner_name": r.name, "max_poll_wait": self.max_poll_wait}
        if action == "acquire":
            wait = min(float(body.get("wait", 10)), self.max_poll_wait)
            end = now + wait
            with self._cond:
                r = self._runner_auth(body)
                if r.busy:
                    raise HTTPError(409, "This runner is already running a job.")
                r.session_active = True
                while True:
                    r = self._runner_auth(body)  # deleted while waiting: 404
                    r.last_seen = time.time()
                    if not r.session_active:  # disconnected while waiting
                        return 204, None
                    if not client_alive():  # the runner went away mid-poll: assign nothing
                        r.session_active = False
                        return 204, None
                    job = self._find_job_for(r)
                    if job is not None:
                        t = time.time()
                        job.status = "in_progress"
                        job.started_at = t
                        job.last_heartbeat = t
                        job.runner_id = r.id
                        job.runner_name = r.name
                        job.runner_group_id = r.group_id
                        job.runner_group_name = r.group_name
                        r.busy = True
                        r.job_id = job.id
                        r.jobs_taken += 1
                        self._emit_job(job, "in_progress")
                        return 200, {"job": self._job_message(job, r)}
                    left = end - time.time()
                    if left <= 0 or self._stopping.is_set():
                        return 204, None
                    self._cond.wait(min(left, 1.0))
        if action == "disconnect":
            with self._cond:
                r = self._runner_auth(body)
                r.session_active = False
                self._cond.notify_all()
                return 200, {}
        if action == "jobs" and len(parts) >= 5:
            job_id, verb = int(parts[3]), parts[4]
            with self._cond:
                r = self._runner_auth(body)
                job = self._jobs.get(job_id)
                if job is None or job.runner_id != r.id:
                    raise HTTPError(404, "job not assigned to this runner")
                r.last_seen = now
                job.last_heartbeat = now
                if verb == "heartbeat":
                    return 200, {"cancel": job.cancel_requested, "status": job.status}
                if verb == "started":
                    job.report.update(body.get("report") or {})
                    return 200, {"cancel": job.cancel_requested}
                if verb == "complete":
                    job.report.update(body.get("report") or {})
                    if job.status != "in_progress":
                        return 200, {"status": job.status}
                    concl = body.get("conclusion")
                    if concl not in OUTCOMES:
                        raise HTTPError(400, f"bad conclusion {concl!r}")
                    self._complete_job(job, concl)
                    return 200, {"status": job.status}
        raise HTTPError(404, "Not Found")

    # ------------------------------------------------------------------
    # control API over HTTP (/_sim/...)
    # ------------------------------------------------------------------
    def handle_control(self, method: str, raw_path: str, body: Any,
                       client_alive: Callable[[], bool] = lambda: True) -> tuple[int, Any]:
        split = urllib.parse.urlsplit(raw_path)
        path = split.path.rstrip("/")
        parts = path.strip("/").split("/")[1:]  # after _sim
        body = body or {}
        try:
            if parts[:1] == ["runner"]:
                return self.handle_runner(method, path, body, client_alive)
            if parts == ["jobs"] and method == "POST":
                jid = self.add_job(
                    labels=body.get("labels") or [],
                    repo=body.get("repo"),
                    duration=float(body.get("duration", 0.2)),
                    outcome=body.get("outcome", "success"),
                    wait=bool(body.get("wait", False)),
                    workflow=body.get("workflow"),
                    name=body.get("name"),
                    run_id=body.get("run_id"),
                    command=body.get("command"),
                    hold=bool(body.get("hold", False)),
                    webhook=bool(body.get("webhook", True)),
                )
                return 201, self.job(jid)
            if parts == ["jobs"] and method == "GET":
                return 200, self.jobs()
            if len(parts) == 2 and parts[0] == "jobs" and method == "GET":
                return 200, self.job(int(parts[1]))
            if len(parts) == 3 and parts[0] == "jobs" and method == "POST":
                jid = int(parts[1])
                if parts[2] == "cancel":
                    self.cancel_job(jid)
                elif parts[2] == "release":
                    self.release_job(jid)
                else:
                    return 404, {"message": "Not Found"}
                return 200, self.job(jid)
            if parts == ["runners"] and method == "GET":
                q = urllib.parse.parse_qs(split.query)
                return 200, self.runners(include_removed=q.get("include_removed", ["false"])[0] == "true")
            if parts == ["calls"] and method == "GET":
                return 200, self.calls()
            if parts == ["calls"] and method == "DELETE":
                self.reset_calls()
                return 200, self.calls()
            if parts == ["invalid"] and method == "GET":
                return 200, {"requests": self.invalid_requests(), "responses": self.invalid_responses()}
            if parts == ["faults"] and method == "POST":
                allowed = {"error_ratio", "latency", "drop_ratio", "exhaust_budget", "error_status", "endpoints",
                           "count", "after"}
                bad = set(body) - allowed
                if bad:
                    return 400, {"message": f"unknown fault(s): {sorted(bad)}"}
                return 200, self.faults(**body)
            if parts == ["faults"] and method == "GET":
                return 200, self.current_faults()
            if parts == ["deliveries"] and method == "GET":
                return 200, self.deliveries()
            if parts == ["requests"] and method == "GET":
                return 200, self.requests()
            if parts == ["secondary"] and method == "POST":
                self.exhaust_secondary(float(body.get("seconds", 60)))
                return 200, {"seconds": float(body.get("seconds", 60))}
            if parts == ["webhook-url"] and method == "POST":
                self.set_webhook_url(body.get("url"))
                return 200, {"url": self._webhook_url}
            if parts == ["ping"] and method == "POST":
                did = self.send_ping(wait=False)
                return 201, {"delivery_id": did}
            if parts == ["state"] and method == "GET":
                return 200, {
                    "url": self.url,
                    "app_id": self.app_id,
                    "installation_id": self.installation_id,
                    "org": self._org.login,
                    "repos": [r.full_name for r in self._repos.values()],
                    "webhook_url": self._webhook_url,
                    "rate": self.rate_limit_state(),
                }
        except HTTPError:
            raise
        except (KeyError, ValueError, TypeError) as e:
            return 400, {"message": str(e)}
        return 404, {"message": "Not Found"}


class _Ctx:
    def __init__(self, sim, method, raw_path, op, path_params, query, headers, version):
        self.sim = sim
        self.method = method
        self.raw_path = raw_path
        self.op = op
        self.path_params = path_params
        self.query = query
        self.headers = headers
        self.version = version
        self.principal = "anonymous"
        self.kind = None
        self.token: Token | None = None
        self.body: Any = None
        self.params: dict = {}
        self.charged = False
        self.rate_state: dict | None = None
        self.request_id = "%04X:%04X:%06X:%06X:%08X" % tuple(
            random.getrandbits(b) for b in (16, 16, 24, 24, 32)
        )


# ----------------------------------------------------------------------
# REST handlers
# ----------------------------------------------------------------------
def _h_access_token(sim: Simulator, ctx: _Ctx) -> _Response:
    if ctx.params["installation_id"] != sim.installation_id:
        raise HTTPError(404, "Not Found")
    body = ctx.body or {}
    perms = dict(sim.permissions)
    if "permissions" in body:
        req = body["permissions"]
        for k, v in req.items():
            have = sim.permissions.get(k)
            if have is None or PERM_LEVEL.get(v, 9) > PERM_LEVEL[have]:
                raise HTTPError(422, "The permissions requested are not granted to this installation.")
        perms = dict(req)
    repos = None
    selected = []
    if body.get("repositories") or body.get("repository_ids"):
        repos = set()
        for name in body.get("repositories", []):
            r = sim._repos.get(f"{sim._org.login}/{name}".lower())
            if r is None:
                raise HTTPError(422, "There is at least one repository that does not exist or is not accessible "
                                     "to the parent installation.")
            repos.add(r.full_name.lower())
            selected.append(r)
        for rid in body.get("repository_ids", []):
            r = next((x for x in sim._repos.values() if x.id == rid), None)
            if r is None:
                raise HTTPError(422, "There is at least one repository that does not exist or is not accessible "
                                     "to the parent installation.")
            repos.add(r.full_name.lower())
            selected.append(r)
    token = "ghs_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))
    expires = time.time() + sim.token_ttl
    with sim._lock:
        sim._tokens[token] = Token(token, "installation", expires, perms, repos)
        sim._issued_tokens.append(token)
    out = {
        "token": token,
        "expires_at": iso(expires),
        "permissions": perms,
        "repository_selection": "selected" if repos is not None else "all",
    }
    if selected:
        out["repositories"] = [sim.repository_object(r) for r in selected]
    return _Response(201, out)


def _scope(sim: Simulator, ctx: _Ctx, write: bool) -> str:
    if "org" in ctx.params:
        sim._require_perm(ctx, "organization_self_hosted_runners", "write" if write else "read")
        sim._org_or_404(ctx)
        return "org"
    sim._require_perm(ctx, "administration", "write" if write else "read")
    return sim._repo_or_404(ctx).full_name


def _h_jitconfig(sim: Simulator, ctx: _Ctx) -> _Response:
    scope = _scope(sim, ctx, write=True)
    body = ctx.body
    gid = body["runner_group_id"]
    if gid not in sim.runner_groups:
        raise HTTPError(404, "Not Found")
    if scope != "org" and gid != 1:
        raise HTTPError(422, "Repository-level runners can only be added to the default runner group.")
    name = body["name"]
    labels = list(dict.fromkeys(body["labels"]))
    if any(not l.strip() for l in labels):
        raise HTTPError(422, "Invalid label name.")
    # GitHub refuses these; they are recorded as invalid requests so that a
    # test fails even where the daemon would only log the refusal.
    if not name.strip() or len(name) > MAX_RUNNER_NAME:
        sim._record_invalid_request(ctx.method, ctx.raw_path, ctx.op.operation_id, 422,
                                    [f"runner name {name!r} is {len(name)} characters (1 to {MAX_RUNNER_NAME})"])
        raise HTTPError(422, f"Runner name must be between 1 and {MAX_RUNNER_NAME} characters.")
    long = [l for l in labels if len(l) > MAX_LABEL_NAME]
    if long:
        sim._record_invalid_request(ctx.method, ctx.raw_path, ctx.op.operation_id, 422,
                                    [f"label {long[0][:40]!r}... is over {MAX_LABEL_NAME} characters"])
        raise HTTPError(422, "Invalid label name.")
    work_folder = body.get("work_folder", "_work")
    with sim._lock:
        for r in sim._runners.values():
            if not r.removed and r.scope == scope and r.name.lower() == name.lower():
                raise HTTPError(409, f"Already exists - A runner with the name {name} already exists.")
        rid = sim._next_runner_id
        sim._next_runner_id += 1
        runner = Runner(
            id=rid,
            name=name,
            labels=labels,
            group_id=gid,
            group_name=sim.runner_groups[gid],
            scope=scope,
            work_folder=work_folder,
            client_id=str(uuid.uuid4()),
            modulus=base64.b64encode(secrets.token_bytes(256)).decode(),
            created_at=time.time(),
        )
        sim._runners[rid] = runner
        for l in labels:
            sim._label_id(l)
        obj = sim.runner_object(runner)
        encoded = encode_jit_config(sim, runner)
        sim._issued_jit_configs.append(encoded)
    return _Response(201, {"runner": obj, "encoded_jit_config": encoded})


def encode_jit_config(sim: Simulator, r: Runner) -> str:
    """base64 of a JSON object whose values are the base64 of the
    `.runner`, `.credentials` and `.credentials_rsaparams` files, as
    GitHub's encoded_jit_config is."""
    git_url = f"https://github.com/{sim._org.login}" if r.scope == "org" else f"https://github.com/{r.scope}"
    server = f"{sim.url}/_sim/runner/"
    runner_file = {
        "agentId": r.id,
        "agentName": r.name,
        "poolId": r.group_id,
        "poolName": r.group_name,
        "ephemeral": True,
        "serverUrl": server,
        "gitHubUrl": git_url,
        "workFolder": r.work_folder,
        "useV2Flow": True,
        "serverUrlV2": server,
    }
    credentials = {
        "scheme": "OAuth",
        "data": {
            "clientId": r.client_id,
            "authorizationUrl": f"{sim.url}/_sim/runner/oauth2/token/{r.client_id}",
            "requireFipsCryptography": "False",
        },
    }
    rnd = lambda n: base64.b64encode(secrets.token_bytes(n)).decode()  # noqa: E731
    rsaparams = {
        "d": rnd(256),
        "dp": rnd(128),
        "dq": rnd(128),
        "exponent": "AQAB",
        "inverseQ": rnd(128),
        "modulus": r.modulus,
        "p": rnd(128),
        "q": rnd(128),
    }

    def b64json(o: Any) -> str:
        return base64.b64encode(json.dumps(o, indent=2).encode("utf-8-sig")).decode()

    files = {".runner": b64json(runner_file), ".credentials": b64json(credentials),
             ".credentials_rsaparams": b64json(rsaparams)}
    return base64.b64encode(json.dumps(files).encode()).decode()


def _runners_in_scope(sim: Simulator, scope: str) -> list[Runner]:
    return [r for r in sim._runners.values() if not r.removed and r.scope.lower() == scope.lower()]


def _h_list_runners(sim: Simulator, ctx: _Ctx) -> _Response:
    scope = _scope(sim, ctx, write=False)
    with sim._lock:
        rs = sorted(_runners_in_scope(sim, scope), key=lambda r: r.id)
        if ctx.params.get("name") is not None:
            rs = [r for r in rs if r.name == ctx.params["name"]]
        page, headers = sim._paginate(ctx, rs)
        body = {"total_count": len(rs), "runners": [sim.runner_object(r) for r in page]}
    return _Response(200, body, headers)


def _find_runner(sim: Simulator, ctx: _Ctx, scope: str) -> Runner:
    r = sim._runners.get(ctx.params["runner_id"])
    if r is None or r.removed or r.scope.lower() != scope.lower():
        raise HTTPError(404, "Not Found")
    return r


def _h_get_runner(sim: Simulator, ctx: _Ctx) -> _Response:
    scope = _scope(sim, ctx, write=False)
    with sim._lock:
        return _Response(200, sim.runner_object(_find_runner(sim, ctx, scope)))


def _h_delete_runner(sim: Simulator, ctx: _Ctx) -> _Response:
    scope = _scope(sim, ctx, write=True)
    with sim._cond:
        r = _find_runner(sim, ctx, scope)
        if r.busy:
            raise HTTPError(422, f"Bad request - Runner \"{r.name}\" is still running a job.")
        sim._remove_runner(r, "deleted through the REST API")
    return _Response(204)


def _h_registration_token(sim: Simulator, ctx: _Ctx) -> _Response:
    _scope(sim, ctx, write=True)
    token = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(29))
    return _Response(201, {"token": token, "expires_at": iso(time.time() + 3600)})


def _h_installation_repos(sim: Simulator, ctx: _Ctx) -> _Response:
    if ctx.kind != "installation":
        raise HTTPError(403, "You must authenticate with an installation access token in order to list "
                             "repositories for an installation.")
    repos = sorted(sim._repos.values(), key=lambda r: r.full_name)
    if ctx.token.repos is not None:
        repos = [r for r in repos if r.full_name.lower() in ctx.token.repos]
    page, headers = sim._paginate(ctx, repos)
    body = {
        "total_count": len(repos),
        "repositories": [sim.repository_object(r) for r in page],
        "repository_selection": "selected" if ctx.token.repos is not None else "all",
    }
    return _Response(200, body, headers)


def _h_list_runs(sim: Simulator, ctx: _Ctx) -> _Response:
    sim._require_perm(ctx, "actions", "read")
    repo = sim._repo_or_404(ctx)
    want = ctx.params.get("status")
    with sim._lock:
        runs = []
        for run_id in sorted(sim._runs, reverse=True):
            jobs = [sim._jobs[j] for j in sim._runs[run_id]]
            if jobs[0].repo is not repo:
                continue
            if want:
                st, concl = sim._run_status(jobs)
                if want not in (st, concl):
                    continue
            runs.append(run_id)
        page, headers = sim._paginate(ctx, runs)
        body = {"total_count": len(runs), "workflow_runs": [sim._run_object(r) for r in page]}
    return _Response(200, body, headers)


def _h_get_run(sim: Simulator, ctx: _Ctx) -> _Response:
    sim._require_perm(ctx, "actions", "read")
    repo = sim._repo_or_404(ctx)
    with sim._lock:
        run_id = ctx.params["run_id"]
        if run_id not in sim._runs or sim._jobs[sim._runs[run_id][0]].repo is not repo:
            raise HTTPError(404, "Not Found")
        return _Response(200, sim._run_object(run_id))


def _h_list_run_jobs(sim: Simulator, ctx: _Ctx) -> _Response:
    sim._require_perm(ctx, "actions", "read")
    repo = sim._repo_or_404(ctx)
    with sim._lock:
        run_id = ctx.params["run_id"]
        if run_id not in sim._runs or sim._jobs[sim._runs[run_id][0]].repo is not repo:
            raise HTTPError(404, "Not Found")
        jobs = [sim._jobs[j] for j in sim._runs[run_id]]
        page, headers = sim._paginate(ctx, jobs)
        body = {"total_count": len(jobs), "jobs": [sim._job_object(j) for j in page]}
    return _Response(200, body, headers)


def _h_get_job(sim: Simulator, ctx: _Ctx) -> _Response:
    sim._require_perm(ctx, "actions", "read")
    repo = sim._repo_or_404(ctx)
    with sim._lock:
        job = sim._jobs.get(ctx.params["job_id"])
        if job is None or job.repo is not repo:
            raise HTTPError(404, "Not Found")
        return _Response(200, sim._job_object(job))


def _decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, val = raw.partition(":")
        if kind != "after":
            raise ValueError
        return int(val)
    except (ValueError, UnicodeDecodeError):
        raise HTTPError(400, "Invalid cursor value")


def _encode_cursor(delivery_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{delivery_id}".encode()).decode().rstrip("=")


def _h_list_deliveries(sim: Simulator, ctx: _Ctx) -> _Response:
    per_page = max(1, min(100, int(ctx.params.get("per_page") or 30)))
    after = _decode_cursor(ctx.params.get("cursor"))
    status = ctx.params.get("status")
    with sim._lock:
        ds = [d for d in sorted(sim._deliveries.values(), key=lambda d: -d.id) if d.done.is_set()]
    if status == "success":
        ds = [d for d in ds if 200 <= d.status_code <= 399]
    elif status == "failure":
        ds = [d for d in ds if 400 <= d.status_code <= 599]
    if after is not None:
        ds = [d for d in ds if d.id < after]
    page = ds[:per_page]
    headers = {}
    if len(ds) > per_page:
        q = {"per_page": per_page, "cursor": _encode_cursor(page[-1].id)}
        if status:
            q["status"] = status
        headers["Link"] = f'<{sim.url}/app/hook/deliveries?{urllib.parse.urlencode(q)}>; rel="next"'
    return _Response(200, [d.item() for d in page], headers)


def _h_get_delivery(sim: Simulator, ctx: _Ctx) -> _Response:
    with sim._lock:
        d = sim._deliveries.get(ctx.params["delivery_id"])
    if d is None or not d.done.is_set():
        raise HTTPError(404, "Not Found")
    return _Response(200, d.full())


def _h_redeliver(sim: Simulator, ctx: _Ctx) -> _Response:
    with sim._lock:
        d = sim._deliveries.get(ctx.params["delivery_id"])
        if d is None or not d.done.is_set():
            raise HTTPError(404, "Not Found")
        nd = sim._new_delivery(d.event, d.action, d.payload, d.installation_id, d.repository_id, d.guid, True)
        nd.job_id = d.job_id
    return _Response(202, {})


def _h_rate_limit(sim: Simulator, ctx: _Ctx) -> _Response:
    st = ctx.rate_state or sim.rate_limit_state(ctx.principal)
    core = {"limit": st["limit"], "used": st["used"], "remaining": st["remaining"], "reset": st["reset"]}
    reset = st["reset"]

    def res(limit: int) -> dict:
        return {"limit": limit, "used": 0, "remaining": limit, "reset": reset}

    body = {
        "resources": {
            "core": core,
            "search": res(30),
            "graphql": res(5000),
            "integration_manifest": res(5000),
            "source_import": res(100),
            "actions_runner_registration": res(10000),
            "scim": res(15000),
            "dependency_snapshots": res(100),
            "code_search": res(10),
            "code_scanning_autofix": res(10),
        },
    }
    if ctx.version == openapi.DEFAULT_API_VERSION:
        body["rate"] = dict(core)
    return _Response(200, body)


def _h_get_app(sim: Simulator, ctx: _Ctx) -> _Response:
    tmpl = sim.spec.doc["components"]["examples"]["integration"]["value"]
    obj = json.loads(json.dumps(tmpl))
    obj["id"] = sim.app_id
    obj["owner"] = webhooks.org_user(sim._org)
    obj["events"] = ["workflow_job"]
    obj["permissions"] = dict(sim.permissions)
    return _Response(200, obj)


def _h_org_installation(sim: Simulator, ctx: _Ctx) -> _Response:
    sim._org_or_404(ctx)
    tmpl = sim.spec.doc["components"]["examples"]["installation"]["value"]
    obj = json.loads(json.dumps(tmpl))
    obj["id"] = sim.installation_id
    obj["app_id"] = sim.app_id
    obj["target_id"] = sim._org.id
    obj["target_type"] = "Organization"
    obj["account"] = webhooks.org_user(sim._org)
    obj["permissions"] = dict(sim.permissions)
    obj["events"] = ["workflow_job"]
    obj["repository_selection"] = "all"
    obj["access_tokens_url"] = f"{sim.url}/app/installations/{sim.installation_id}/access_tokens"
    return _Response(200, obj)


_HANDLERS: dict[str, Callable[[Simulator, _Ctx], _Response]] = {
    "apps/create-installation-access-token": _h_access_token,
    "apps/get-authenticated": _h_get_app,
    "apps/get-org-installation": _h_org_installation,
    "actions/generate-runner-jitconfig-for-org": _h_jitconfig,
    "actions/generate-runner-jitconfig-for-repo": _h_jitconfig,
    "actions/list-self-hosted-runners-for-org": _h_list_runners,
    "actions/list-self-hosted-runners-for-repo": _h_list_runners,
    "actions/get-self-hosted-runner-for-org": _h_get_runner,
    "actions/get-self-hosted-runner-for-repo": _h_get_runner,
    "actions/delete-self-hosted-runner-from-org": _h_delete_runner,
    "actions/delete-self-hosted-runner-from-repo": _h_delete_runner,
    "actions/create-registration-token-for-org": _h_registration_token,
    "actions/create-registration-token-for-repo": _h_registration_token,
    "apps/list-repos-accessible-to-installation": _h_installation_repos,
    "actions/list-workflow-runs-for-repo": _h_list_runs,
    "actions/get-workflow-run": _h_get_run,
    "actions/list-jobs-for-workflow-run": _h_list_run_jobs,
    "actions/get-job-for-workflow-run": _h_get_job,
    "apps/list-webhook-deliveries": _h_list_deliveries,
    "apps/get-webhook-delivery": _h_get_delivery,
    "apps/redeliver-webhook-delivery": _h_redeliver,
    "rate-limit/get": _h_rate_limit,
}


# ----------------------------------------------------------------------
# HTTP server
# ----------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    simulator: Simulator
    protocol_version = "HTTP/1.1"
    server_version = "github.com"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, fmt, *args):  # quiet; the simulator logs what matters
        log.debug("%s " + fmt, self.address_string(), *args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _dispatch(self) -> None:
        sim = self.simulator
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if self.path.startswith("/_sim/") or self.path == "/_sim":
            try:
                obj = json.loads(body) if body.strip() else None
            except ValueError:
                self._send(400, {"message": "body is not JSON"}, {})
                return
            try:
                status, out = sim.handle_control(self.command, self.path, obj, self._client_alive)
            except HTTPError as e:
                status, out = e.status, {"message": e.message}
            self._send(status, out, {})
            return
        keys = sim.handle_user_keys(self.command, self.path)
        if keys is not None:
            self._send_text(*keys)
            return
        try:
            resp = sim.handle_rest(self.command, self.path, self.headers, body)
        except Exception as e:  # simulator bug: answer 500 and record it
            log.exception("simulator error on %s %s", self.command, self.path)
            sim._record_invalid_response("exception", f"{self.command} {self.path}", 500, [repr(e)])
            resp = _Response(500, {"message": "Server Error", "documentation_url": DOCS})
        if resp.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(resp.status, resp.body, resp.headers)

    def _client_alive(self) -> bool:
        """False once the client closed its end (a long poll whose runner died)."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if r:
                return self.connection.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False
        return True

    def _send(self, status: int, obj: Any, headers: dict) -> None:
        data = b""
        if obj is not None and status not in (204, 304):
            data = json.dumps(obj, separators=(",", ":")).encode()
        try:
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("X-GitHub-Request-Id", "%04X:%04X:%06X" % (random.getrandbits(16), random.getrandbits(16),
                                                                        random.getrandbits(24)))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_text(self, status: int, text: str) -> None:
        data = text.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch
