"""Secrets never leak: a full burst at debug log level, with hook reports,
a reload, a bad admin token and a bad webhook signature, then everything
runfleetd wrote and served is searched for every secret it held, plain and
encoded. Also: secret files others can read are named in a warning at
start."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import signal
import urllib.parse
from pathlib import Path

import pytest
import requests
from tests.runfleetd import Daemon, bin_dir
from tests.sim.github import Simulator
from tests.sim.github.testing import assert_clean
from tests.sim.github.webhooks import signature_256
from tests.test_runfleetd import app_key_files, post_webhook, sim, workflow_job_examples  # noqa: F401

NVML = bin_dir().parent / "lib" / "libnvml_fake.so"
POOLS = [
    dict(name="cpu", labels=["linux", "cpu"], max_runners=4),
    dict(name="gpu-1", labels=["linux", "gpu", "gpu-1"], max_runners=4, gpus=1),
]
# Windows this long are searched too, so that a secret cut short (the
# logger truncates long values) is still found.
WINDOW = 40


def encodings(s: str) -> set[str]:
    """s and its base64, base64url and URL-encoded forms (with and without
    padding, URL-encoding of every byte as well as of the unsafe ones)."""
    raw = s.encode()
    b64 = base64.b64encode(raw).decode()
    b64url = base64.urlsafe_b64encode(raw).decode()
    out = {s, b64, b64.rstrip("="), b64url, b64url.rstrip("="),
           urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s),
           "".join(f"%{b:02X}" for b in raw), "".join(f"%{b:02x}" for b in raw)}
    return {x for x in out if x}


def needles(secret: str) -> dict[str, str]:
    """What to look for: each encoding of the secret and of its first and
    last WINDOW characters, mapped to a description that does not repeat
    the secret (a failure message must not leak it either)."""
    parts = {"whole": secret}
    if len(secret) > WINDOW:
        # The base64 of a prefix is a prefix of the base64 when the prefix
        # ends on a 3-byte boundary.
        parts["start"] = secret[: WINDOW - WINDOW % 3]
        parts["end"] = secret[-WINDOW:]
    out = {}
    for where, part in parts.items():
        for i, enc in enumerate(sorted(encodings(part))):
            out[enc] = f"{where}, form {i}"
    return out


def find_leaks(texts: dict[str, str], named_secrets: dict[str, list[str]]) -> list[str]:
    """Every (source, secret kind, form) where a secret shows up."""
    found = []
    for kind, values in named_secrets.items():
        for n, value in enumerate(values):
            for needle, form in needles(value).items():
                for source, text in texts.items():
                    if needle in text:
                        found.append(f"{kind} #{n} ({form}) in {source}")
    return found


def pem_lines(path: str) -> list[str]:
    """The base64 lines of a PEM private key (each is a secret on its own)."""
    lines = Path(path).read_text().splitlines()
    return [line for line in lines if line and not line.startswith("-----") and len(line) >= 16]


def test_the_search_finds_encoded_secrets():
    """The check below can fail: a secret base64url-encoded, URL-encoded or
    cut short inside a log line is found, and a clean text is not."""
    secret = "ghs_" + "A1b2C3d4" * 5 + "?/+="
    leaked = base64.urlsafe_b64encode(secret.encode()).decode().rstrip("=")
    log = f'ts=1 level=debug mod=github msg="response" note={leaked}\n'
    assert find_leaks({"log": log}, {"token": [secret]}) != []
    quoted = urllib.parse.quote(secret, safe="")
    assert find_leaks({"api": '{"x": "' + quoted + '"}'}, {"token": [secret]}) != []
    truncated = 'msg="jit" config=' + secret[:45] + "...\n"
    assert find_leaks({"log": truncated}, {"token": [secret]}) != []
    assert find_leaks({"log": log.replace(leaked, "ghs_***")}, {"token": [secret]}) == []


WEBHOOK_SECRET = ("whsec-" + secrets.token_urlsafe(30)).encode()


@pytest.fixture
def secret_sim(app_key_files):
    """The simulator signing its deliveries with a random webhook secret."""
    priv, pub = app_key_files
    s = Simulator(app_id=4242, app_public_key_pem=pub, webhook_secret=WEBHOOK_SECRET, installation_id=77,
                  org="acme", repos=["acme/widgets", "acme/gadgets"], secondary_points_per_minute=100000,
                  content_creating_per_minute=100000, delivery_timeout=10.0)
    s.app_key_file = str(priv)
    s.start()
    yield s
    s.stop()
    assert_clean(s)


def secret_daemon(tmp_path: Path, sim, admin_token: str, webhook_secret: bytes) -> Daemon:
    sha = hashlib.sha256(admin_token.encode()).hexdigest()
    admin = f"admin:\n  auth: all\n  tokens: [{{name: ops, sha256: {sha}}}]\n"
    env = {
        "RUNFLEET_NVML_LIB": str(NVML),
        "FAKE_NVML_COUNT": "4",
        "FAKE_NVML_UTIL": "0:50,1:60,2:80,3:90",
        "FAKE_NVML_MEM": "0:1073741824,1:1073741824,2:1073741824,3:1073741824",
        "RUNFLEET_SAMPLE_INTERVAL_MS": "50",
        "RUNFLEET_GIT_CACHE": "0",
        "RUNFLEET_FAKE_RUNNER_TOKEN_LOG": str(tmp_path / "runner-tokens"),
    }
    hooks = (str(bin_dir() / "pre-job.sh"), str(bin_dir() / "post-job.sh"))
    return Daemon(tmp_path, sim, pools=POOLS, hooks=hooks, env=env, admin=admin,
                  webhook_secret=webhook_secret, log_level="debug")


def test_no_secret_in_logs_metrics_or_answers(tmp_path, secret_sim):
    sim = secret_sim
    admin_token = "rfadm-" + secrets.token_urlsafe(30)
    webhook_secret = WEBHOOK_SECRET
    d = secret_daemon(tmp_path, sim, admin_token, webhook_secret)
    d.token = admin_token
    served: dict[str, str] = {}
    d.start()
    try:
        ids = [sim.add_job(labels=["self-hosted", "cpu"], duration=0.1) for _ in range(12)]
        ids += [sim.add_job(labels=["self-hosted", "gpu-1"], duration=0.1) for _ in range(8)]
        sim.wait_for(lambda: all(sim.job(i)["status"] == "completed" for i in ids), timeout=120)
        assert all(sim.job(i)["conclusion"] == "success" for i in ids)
        d.wait_for(lambda: d.metric("runfleet_hook_reports_total", hook="completed", result="ok") == 20,
                   timeout=30, what="20 completed hook reports")
        # A reload (same config) re-reads the webhook secret.
        d.signal(signal.SIGHUP)
        d.wait_for(lambda: "config reloaded" in d.log(), what="the reload")
        # Wrong admin tokens, in and out of shape.
        for auth in ("Bearer not-" + admin_token, "Basic " + admin_token, "Bearer"):
            r = requests.get(d.url + "/api/v1/pools", headers={"Authorization": auth}, timeout=5)
            assert r.status_code in (401, 403), auth
            served[f"admin answer to a bad token ({r.status_code})"] = r.text + json.dumps(dict(r.headers))
        # A hook report with a made-up token.
        r = requests.post(d.url + "/api/v1/hooks/started", data=b"{}", timeout=5,
                          headers={"Authorization": "Bearer " + "0" * 64, "Content-Type": "application/json"})
        served["hook answer to a bad token"] = r.text
        # A webhook signed with the wrong secret, and one with none.
        ex = next(e for e in workflow_job_examples() if e["action"] == "queued")
        body = json.dumps(ex).encode()
        r = post_webhook(d, "workflow_job", body, signature=signature_256(b"wrong" + webhook_secret, body))
        assert r.status_code == 401
        served["webhook answer to a bad signature"] = r.text
        r = post_webhook(d, "workflow_job", body, signature=None)
        served["webhook answer to no signature"] = r.text
        for path in ("/metrics", "/api/v1/pools", "/api/v1/jobs", "/api/v1/runners", "/api/v1/nodes",
                     "/api/v1/queue", "/api/v1/history", "/", "/healthz",
                     "/readyz", "/api/v1/nothing-here"):
            r = d.get(path)
            served[f"GET {path} ({r.status_code})"] = r.text
        r = requests.get(d.public_url + "/healthz", timeout=5)
        served["public /healthz"] = r.text
    finally:
        rc = d.stop()
    assert rc == 0, d.log()[-3000:]
    assert d.sanitizer_report() is None, d.sanitizer_report()

    runner_tokens = (tmp_path / "runner-tokens").read_text().split()
    named = {
        "installation token": sim.issued_tokens(),
        "JIT config": sim.issued_jit_configs(),
        "runner token": runner_tokens,
        "webhook secret": [webhook_secret.decode()],
        "admin token": [admin_token],
        "App key line": pem_lines(sim.app_key_file),
    }
    # The secrets were really there to be leaked: the daemon used them.
    assert len(named["installation token"]) >= 1
    assert len(named["JIT config"]) >= 20
    assert len(runner_tokens) >= 20 and all(len(t) == 64 for t in runner_tokens)
    assert named["App key line"]
    texts = {"log": d.log(), **served}
    texts["log"] += "\n" + "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log")
                                     if p != d.log_path)
    leaks = find_leaks(texts, named)
    assert leaks == [], leaks
    for source, text in texts.items():
        assert "PRIVATE KEY" not in text, source


def test_secret_files_others_can_read_are_named_at_start(tmp_path, sim):
    key = tmp_path / "app-key.pem"
    shutil.copy(sim.app_key_file, key)
    key.chmod(0o640)
    tokens = tmp_path / "admin-tokens"
    tokens.write_text("ops " + hashlib.sha256(b"tok").hexdigest() + "\n")
    tokens.chmod(0o604)
    d = Daemon(tmp_path, sim, admin=f"admin:\n  tokens_file: {tokens}\n")
    d.config_path.write_text(d.config_text.replace(f"private_key_file: {sim.app_key_file}",
                                                   f"private_key_file: {key}"))
    d.secret_file.chmod(0o644)
    d.start()
    assert d.stop() == 0
    warns = [line for line in d.log().splitlines() if "secret file is readable by group or others" in line]
    assert len(warns) == 3, warns
    for path, mode in ((d.secret_file, "0644"), (key, "0640"), (tokens, "0604")):
        line = next(w for w in warns if f"file={path}" in w)
        assert "level=warn" in line and f"mode={mode}" in line, line
    # The warning names the file, never what is in it.
    assert d.secret.decode() not in d.log()
    assert d.sanitizer_report() is None


def test_owner_only_secret_files_start_quietly(tmp_path, sim):
    d = Daemon(tmp_path, sim).start()
    assert d.stop() == 0
    assert "secret file is readable" not in d.log()
