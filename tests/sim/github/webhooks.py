"""Webhook payloads, signatures and the delivery worker.

Payloads are built from GitHub's example payloads (`@octokit/webhooks-examples`)
with fresh ids, names and timestamps, and validated against the webhook
description (`@octokit/openapi-webhooks`) before they are sent.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import http.client
import json
import logging
import queue
import socket
import threading
import time
import urllib.parse
import uuid
from typing import Any, Callable

from tests.sim.github import openapi

log = logging.getLogger("github-sim")


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def iso_ms(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def signature_256(secret: bytes, body: bytes) -> str:
    """X-Hub-Signature-256: `sha256=` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_1(secret: bytes, body: bytes) -> str:
    """X-Hub-Signature (legacy): `sha1=` + hex HMAC-SHA1 of the raw body."""
    return "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest()


def node_id(prefix: str, n: int) -> str:
    raw = n.to_bytes(8, "big")
    return prefix + base64.urlsafe_b64encode(b"\x93\x00\xce" + raw).decode().rstrip("=")


# ---------------------------------------------------------------------------
# Templates from the example payloads
# ---------------------------------------------------------------------------


def workflow_job_examples() -> list[dict]:
    for e in openapi.webhook_examples():
        if e["name"] == "workflow_job":
            return e["examples"]
    raise RuntimeError("no workflow_job examples in @octokit/webhooks-examples")


def ping_examples() -> list[dict]:
    for e in openapi.webhook_examples():
        if e["name"] == "ping":
            return e["examples"]
    raise RuntimeError("no ping examples in @octokit/webhooks-examples")


def _default_templates() -> dict[str, dict]:
    """One example per action, preferring examples sent to an App (with
    `installation`) that validate as they are."""
    out: dict[str, dict] = {}
    for ex in workflow_job_examples():
        action = ex["action"]
        score = (("installation" in ex) * 2) + (action == ex["workflow_job"]["status"])
        best = out.get(action)
        if best is None or score > best[0]:
            out[action] = (score, ex)
    return {a: v[1] for a, v in out.items()}


_TEMPLATES: dict[str, dict] | None = None
_TEMPLATE_LOCK = threading.Lock()


def templates() -> dict[str, dict]:
    global _TEMPLATES
    with _TEMPLATE_LOCK:
        if _TEMPLATES is None:
            _TEMPLATES = _default_templates()
        return _TEMPLATES


def _rebrand(obj: Any, old_full: str, new_full: str, old_owner: str, new_owner: str) -> Any:
    s = json.dumps(obj)
    s = s.replace(old_full, new_full)
    s = s.replace(f"/{old_owner}/", f"/{new_owner}/").replace(f"/{old_owner}\"", f"/{new_owner}\"")
    s = s.replace(f"\"{old_owner}\"", f"\"{new_owner}\"")
    return json.loads(s)


def repository_payload(template_repo: dict, repo: Any, org: Any, server_url: str) -> dict:
    """A webhook `repository` object for `repo` owned by `org`."""
    old_full = template_repo["full_name"]
    old_owner = template_repo["owner"]["login"]
    r = _rebrand(template_repo, old_full, repo.full_name, old_owner, org.login)
    # the example's owner may differ from the full name's owner
    if "/" in old_full and old_full.split("/")[0] != old_owner:
        r = _rebrand(r, old_full.split("/")[0] + "/", org.login + "/", old_full.split("/")[0], org.login)
    r["id"] = repo.id
    r["node_id"] = repo.node_id
    r["name"] = repo.name
    r["full_name"] = repo.full_name
    r["private"] = True
    if "visibility" in r:
        r["visibility"] = "private"
    owner = r["owner"]
    owner.update(org_user(org))
    r["html_url"] = f"https://github.com/{repo.full_name}"
    r["url"] = f"https://api.github.com/repos/{repo.full_name}"
    created = iso(repo.created_at)
    for k in ("created_at", "updated_at", "pushed_at"):
        if k in r and isinstance(r[k], str):
            r[k] = created
    if "default_branch" in r:
        r["default_branch"] = "main"
    if "master_branch" in r:
        r["master_branch"] = "main"
    return r


def org_user(org: Any) -> dict:
    login = org.login
    return {
        "login": login,
        "id": org.id,
        "node_id": org.node_id,
        "avatar_url": f"https://avatars.githubusercontent.com/u/{org.id}?v=4",
        "gravatar_id": "",
        "url": f"https://api.github.com/users/{login}",
        "html_url": f"https://github.com/{login}",
        "followers_url": f"https://api.github.com/users/{login}/followers",
        "following_url": f"https://api.github.com/users/{login}/following{{/other_user}}",
        "gists_url": f"https://api.github.com/users/{login}/gists{{/gist_id}}",
        "starred_url": f"https://api.github.com/users/{login}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"https://api.github.com/users/{login}/subscriptions",
        "organizations_url": f"https://api.github.com/users/{login}/orgs",
        "repos_url": f"https://api.github.com/users/{login}/repos",
        "events_url": f"https://api.github.com/users/{login}/events{{/privacy}}",
        "received_events_url": f"https://api.github.com/users/{login}/received_events",
        "type": "Organization",
        "site_admin": False,
    }


def organization_payload(org: Any) -> dict:
    login = org.login
    return {
        "login": login,
        "id": org.id,
        "node_id": org.node_id,
        "url": f"https://api.github.com/orgs/{login}",
        "repos_url": f"https://api.github.com/orgs/{login}/repos",
        "events_url": f"https://api.github.com/orgs/{login}/events",
        "hooks_url": f"https://api.github.com/orgs/{login}/hooks",
        "issues_url": f"https://api.github.com/orgs/{login}/issues",
        "members_url": f"https://api.github.com/orgs/{login}/members{{/member}}",
        "public_members_url": f"https://api.github.com/orgs/{login}/public_members{{/member}}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{org.id}?v=4",
        "description": "",
    }


def sender_payload(template_sender: dict, login: str, user_id: int) -> dict:
    s = copy.deepcopy(template_sender)
    old = s["login"]
    s = json.loads(json.dumps(s).replace(f"/{old}", f"/{login}"))
    s["login"] = login
    s["id"] = user_id
    s["node_id"] = node_id("U_kgDO", user_id)
    s["type"] = "User"
    s["site_admin"] = False
    s["avatar_url"] = f"https://avatars.githubusercontent.com/u/{user_id}?v=4"
    return s


# Fields the schema requires that some examples lack (the first in_progress
# example predates run_attempt, workflow_name, head_branch and created_at).
_REQUIRED_JOB_FIELDS = (
    "run_attempt",
    "workflow_name",
    "head_branch",
    "created_at",
    "runner_id",
    "runner_name",
    "runner_group_id",
    "runner_group_name",
)


def _steps(job: Any, action: str, now: float) -> list[dict]:
    if action in ("queued", "waiting"):
        return []
    start = job.started_at or now
    if action == "in_progress":
        return [
            {
                "name": "Set up job",
                "status": "in_progress",
                "conclusion": None,
                "number": 1,
                "started_at": iso_ms(start),
                "completed_at": None,
            }
        ]
    if job.runner_id is None:  # cancelled before any runner took it
        return []
    end = job.completed_at or now
    concl = job.conclusion or "success"
    return [
        {
            "name": "Set up job",
            "status": "completed",
            "conclusion": "success",
            "number": 1,
            "started_at": iso_ms(start),
            "completed_at": iso_ms(start),
        },
        {
            "name": "Run job",
            "status": "completed",
            "conclusion": concl,
            "number": 2,
            "started_at": iso_ms(start),
            "completed_at": iso_ms(end),
        },
        {
            "name": "Complete job",
            "status": "completed",
            "conclusion": "success",
            "number": 3,
            "started_at": iso_ms(end),
            "completed_at": iso_ms(end),
        },
    ]


def workflow_job_payload(
    template: dict,
    action: str,
    job: Any,
    repo: Any,
    org: Any,
    installation_id: int | None,
    sender: tuple[str, int],
    now: float | None = None,
) -> dict:
    """A `workflow_job` payload for `job` in state `action`, shaped like
    `template` (one of the example payloads)."""
    now = time.time() if now is None else now
    p = copy.deepcopy(template)
    p.pop("deployment", None)
    p.pop("enterprise", None)
    p["action"] = action
    p["repository"] = repository_payload(template["repository"], repo, org, "")
    p["organization"] = organization_payload(org)
    p["sender"] = sender_payload(template["sender"], sender[0], sender[1])
    if installation_id is not None:
        p["installation"] = {"id": installation_id, "node_id": node_id("MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u", installation_id)}
    else:
        p.pop("installation", None)
    wj = p["workflow_job"]
    full = repo.full_name
    wj.update(
        {
            "id": job.id,
            "run_id": job.run_id,
            "run_url": f"https://api.github.com/repos/{full}/actions/runs/{job.run_id}",
            "run_attempt": job.run_attempt,
            "node_id": job.node_id,
            "head_sha": job.head_sha,
            "head_branch": job.head_branch,
            "url": f"https://api.github.com/repos/{full}/actions/jobs/{job.id}",
            "html_url": f"https://github.com/{full}/actions/runs/{job.run_id}/job/{job.id}",
            "check_run_url": f"https://api.github.com/repos/{full}/check-runs/{job.id}",
            "name": job.name,
            "workflow_name": job.workflow_name,
            "labels": list(job.labels),
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at or job.created_at),
            "completed_at": iso(job.completed_at) if action == "completed" and job.completed_at else None,
            "steps": _steps(job, action, now),
        }
    )
    if action in ("queued", "waiting"):
        wj["status"] = action
        wj["conclusion"] = None
        wj["runner_id"] = None
        wj["runner_name"] = None
        wj["runner_group_id"] = None
        wj["runner_group_name"] = None
    elif action == "in_progress":
        wj["status"] = "in_progress"
        wj["conclusion"] = None
        wj["runner_id"] = job.runner_id
        wj["runner_name"] = job.runner_name
        wj["runner_group_id"] = job.runner_group_id
        wj["runner_group_name"] = job.runner_group_name
    else:
        wj["status"] = "completed"
        wj["conclusion"] = job.conclusion
        wj["completed_at"] = iso(job.completed_at or now)
        wj["runner_id"] = job.runner_id
        wj["runner_name"] = job.runner_name
        wj["runner_group_id"] = job.runner_group_id
        wj["runner_group_name"] = job.runner_group_name
    for f in _REQUIRED_JOB_FIELDS:
        assert f in wj, f
    return p


def ping_payload(hook_id: int, app_id: int, url: str | None, events: list[str], created: float) -> dict:
    template = next((e for e in ping_examples() if "app_id" in e.get("hook", {})), ping_examples()[0])
    p = copy.deepcopy(template)
    p.pop("repository", None)
    p.pop("organization", None)
    p.pop("sender", None)
    p["zen"] = "Keep it logically awesome."
    p["hook_id"] = hook_id
    hook = p["hook"]
    hook.update(
        {
            "type": "App",
            "id": hook_id,
            "name": "web",
            "active": True,
            "app_id": app_id,
            "events": events,
            "config": {"content_type": "json", "insecure_ssl": "0", "url": url or "https://example.invalid/webhook"},
            "updated_at": iso(created),
            "created_at": iso(created),
            "deliveries_url": "https://api.github.com/app/hook/deliveries",
        }
    )
    for k in ("url", "test_url", "ping_url", "last_response"):
        hook.pop(k, None)
    return p


# ---------------------------------------------------------------------------
# Deliveries
# ---------------------------------------------------------------------------


class Delivery:
    def __init__(self, id: int, guid: str, event: str, action: str | None, payload: dict,
                 installation_id: int | None, repository_id: int | None, redelivery: bool):
        self.id = id
        self.guid = guid
        self.event = event
        self.action = action
        self.payload = payload
        self.body = json.dumps(payload, separators=(",", ":")).encode()
        self.installation_id = installation_id
        self.repository_id = repository_id
        self.redelivery = redelivery
        self.delivered_at: float | None = None
        self.duration = 0.0
        self.status = "pending"
        self.status_code = 0
        self.url: str | None = None
        self.request_headers: dict[str, str] = {}
        self.response_headers: dict[str, str] = {}
        self.response_body = ""
        self.done = threading.Event()
        self.job_id: int | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    def item(self) -> dict:
        """The `hook-delivery-item` shape of the deliveries API."""
        return {
            "id": self.id,
            "guid": self.guid,
            "delivered_at": iso(self.delivered_at or time.time()),
            "redelivery": self.redelivery,
            "duration": round(self.duration, 3),
            "status": self.status,
            "status_code": self.status_code,
            "event": self.event,
            "action": self.action,
            "installation_id": self.installation_id,
            "repository_id": self.repository_id,
            "throttled_at": None,
        }

    def full(self) -> dict:
        """The `hook-delivery` shape (with request and response)."""
        d = self.item()
        d["url"] = self.url or ""
        d["request"] = {"headers": dict(self.request_headers), "payload": self.payload}
        d["response"] = {"headers": dict(self.response_headers), "payload": self.response_body}
        return d


class DeliveryWorker(threading.Thread):
    """Sends deliveries one at a time, in the order they were queued (so the
    events of one job arrive in order), without blocking the REST server."""

    def __init__(self, headers_for: Callable[[Delivery], dict], get_url: Callable[[], str | None],
                 timeout: Callable[[], float], on_done: Callable[[Delivery], None]):
        super().__init__(name="github-sim-deliveries", daemon=True)
        self.q: queue.Queue = queue.Queue()
        self.headers_for = headers_for
        self.get_url = get_url
        self.timeout = timeout
        self.on_done = on_done
        self._idle = threading.Condition()
        self._pending = 0
        self._stopping = threading.Event()

    def submit(self, d: Delivery) -> None:
        with self._idle:
            self._pending += 1
        self.q.put(d)

    def stop(self) -> None:
        """Ends the worker; deliveries still queued are not attempted."""
        self._stopping.set()
        self.q.put(None)

    def wait_idle(self, timeout: float) -> bool:
        end = time.time() + timeout
        with self._idle:
            while self._pending:
                left = end - time.time()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def run(self) -> None:
        while True:
            d = self.q.get()
            if d is None:
                return
            try:
                if self._stopping.is_set():
                    d.status = "not attempted: simulator stopped"
                else:
                    self.deliver(d)
            except Exception:  # a bug here must not kill the worker
                log.exception("delivery %s failed unexpectedly", d.id)
                d.status = "simulator error"
            finally:
                d.done.set()
                try:
                    self.on_done(d)
                finally:
                    with self._idle:
                        self._pending -= 1
                        self._idle.notify_all()

    def deliver(self, d: Delivery) -> None:
        url = self.get_url()
        d.url = url
        d.request_headers = self.headers_for(d)
        start = time.time()
        d.delivered_at = start
        if not url:
            d.status = "no webhook URL configured"
            d.status_code = 0
            return
        u = urllib.parse.urlsplit(url)
        timeout = self.timeout()
        conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(u.hostname, u.port, timeout=timeout)
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        try:
            conn.request("POST", path, body=d.body, headers=d.request_headers)
            resp = conn.getresponse()
            body = resp.read(65536)
            d.status_code = resp.status
            d.response_headers = {k: v for k, v in resp.getheaders()}
            d.response_body = body.decode("utf-8", "replace")
            d.status = "OK" if 200 <= resp.status < 300 else f"Invalid HTTP Response: {resp.status}"
        except (socket.timeout, TimeoutError):
            d.status = "timed out"
            d.status_code = 0
        except (ConnectionRefusedError, OSError) as e:
            if time.time() - start >= timeout:
                d.status = "timed out"
            else:
                d.status = "failed to connect to host"
            d.status_code = 0
            log.debug("delivery %s to %s: %s", d.id, url, e)
        except http.client.HTTPException as e:
            d.status = f"Invalid HTTP Response: {e.__class__.__name__}"
            d.status_code = 0
        finally:
            conn.close()
            d.duration = time.time() - start
            if d.duration > timeout and d.ok:
                # answered, but too late: GitHub records it as timed out
                d.status = "timed out"
                d.status_code = 0


def new_guid() -> str:
    return str(uuid.uuid4())
