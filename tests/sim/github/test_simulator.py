"""Tests of the GitHub simulator itself: GitHub's behaviour it must reproduce."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.sim.github import Simulator, openapi, signature_256, webhooks
from tests.sim.github.openapi import REPO_ROOT
from tests.sim.github.testing import SIM_DEFAULTS, GitHubClient, assert_clean, RunnerClient, WebhookReceiver, decode_jit_config


@pytest.fixture
def make_sim(app_key):
    sims = []

    def make(**kw):
        args = dict(SIM_DEFAULTS)
        args.update(kw)
        sim = Simulator(app_public_key_pem=app_key.public_pem, **args).start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.stop()
    for sim in sims:
        assert_clean(sim)


@pytest.fixture
def receiver():
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture
def gh(github_sim, app_key):
    c = GitHubClient(github_sim, app_key.private_pem)
    c.installation_token()
    return c


# --- webhooks -----------------------------------------------------------


def test_signature_matches_githubs_documented_test_vector():
    sig = signature_256(b"It's a Secret to Everybody", b"Hello, World!")
    assert sig == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_user_keys_are_served_like_github_com(github_sim):
    keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample alice@laptop",
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI"]
    github_sim.set_user_keys("Alice-1", keys)
    r = requests.get(f"{github_sim.url}/alice-1.keys", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text == keys[0] + "\n" + keys[1] + "\n"
    assert requests.get(f"{github_sim.url}/nobody.keys", timeout=5).status_code == 404
    assert requests.post(f"{github_sim.url}/alice-1.keys", timeout=5).status_code == 404
    github_sim.take_invalid_requests()  # the POST is no GitHub route
    github_sim.set_user_keys("alice-1", [])
    assert requests.get(f"{github_sim.url}/alice-1.keys", timeout=5).text == ""
    assert github_sim.keys_fetches("alice-1") == 2


@pytest.mark.parametrize("index", range(len(webhooks.workflow_job_examples())))
def test_every_workflow_job_example_builds_a_valid_payload(github_sim, index):
    template = webhooks.workflow_job_examples()[index]
    job_id = github_sim.add_job(["self-hosted", "gpu"], repo="acme/gadgets")
    with github_sim._lock:
        job = github_sim._jobs[job_id]
        job.runner_id, job.runner_name, job.runner_group_id, job.runner_group_name = 7, "r-7", 1, "Default"
        job.started_at, job.completed_at, job.conclusion = job.created_at + 1, job.created_at + 2, "success"
    for action in ("queued", "waiting", "in_progress", "completed"):
        p = webhooks.workflow_job_payload(template, action, job, job.repo, github_sim._org, 42, ("octocat", 1))
        assert openapi.webhook_spec().validate("workflow_job", action, p) == []
        wj = p["workflow_job"]
        assert wj["id"] == job_id and wj["labels"] == ["self-hosted", "gpu"]
        assert p["repository"]["full_name"] == "acme/gadgets" and p["installation"]["id"] == 42
        assert wj["runner_name"] == (None if action in ("queued", "waiting") else "r-7")


def test_webhook_headers_and_signature(github_sim, receiver):
    github_sim.set_webhook_url(receiver.url)
    job = github_sim.add_job(["self-hosted", "linux"])
    receiver.wait(lambda r: r.actions(job) == ["queued"])
    d = receiver.events()[0]
    h = d["headers"]
    secret = SIM_DEFAULTS["webhook_secret"]
    assert h["X-Hub-Signature-256"] == "sha256=" + hmac.new(secret, d["body"], hashlib.sha256).hexdigest()
    assert h["X-Hub-Signature"] == "sha1=" + hmac.new(secret, d["body"], hashlib.sha1).hexdigest()
    assert h["X-GitHub-Event"] == "workflow_job"
    assert h["X-GitHub-Hook-Installation-Target-Type"] == "integration"
    assert h["X-GitHub-Hook-Installation-Target-ID"] == "1"
    assert h["X-GitHub-Hook-ID"].isdigit()
    assert h["User-Agent"].startswith("GitHub-Hookshot/")
    assert h["Content-Type"] == "application/json"
    assert len(h["X-GitHub-Delivery"]) == 36
    wj = d["json"]["workflow_job"]
    assert wj["status"] == "queued" and wj["runner_name"] is None


def test_ping(github_sim, receiver):
    github_sim.set_webhook_url(receiver.url)
    assert github_sim.send_ping() == 200
    r = receiver.wait(lambda r: r.events("ping"))
    assert r[0]["json"]["hook"]["app_id"] == 1
    assert openapi.webhook_spec().validate("ping", None, r[0]["json"]) == []


def test_failed_deliveries_are_listed_and_redelivery_keeps_the_guid(make_sim, app_key, receiver):
    sim = make_sim(delivery_timeout=0.5)
    c = GitHubClient(sim, app_key.private_pem)
    # receiver down: nothing listens on this port
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/webhook"
    s.close()
    sim.set_webhook_url(dead)
    job = sim.add_job(["self-hosted"])
    assert sim.wait_deliveries(5)
    # receiver slow: answers after the delivery timeout
    slow = WebhookReceiver(delay=1.0)
    sim.set_webhook_url(slow.url)
    sim.cancel_job(job)
    assert sim.wait_deliveries(5)
    slow.close()

    jwt_auth = f"Bearer {c.jwt()}"
    r = c.get("/app/hook/deliveries", auth=jwt_auth)
    assert r.status_code == 200, r.text
    items = r.json()
    assert [i["action"] for i in items] == ["completed", "queued"]  # newest first
    completed, queued = items
    assert queued["status"] == "failed to connect to host" and queued["status_code"] == 0
    assert completed["status"] == "timed out" and completed["status_code"] == 0
    assert queued["redelivery"] is False and queued["event"] == "workflow_job"
    assert queued["installation_id"] == 42 and queued["repository_id"] == sim.repo("acme/widgets").id
    full = c.get(f"/app/hook/deliveries/{queued['id']}", auth=jwt_auth).json()
    assert full["request"]["headers"]["X-GitHub-Delivery"] == queued["guid"]
    assert full["request"]["payload"]["action"] == "queued"

    sim.set_webhook_url(receiver.url)
    r = c.post(f"/app/hook/deliveries/{queued['id']}/attempts", auth=jwt_auth)
    assert r.status_code == 202, r.text
    got = receiver.wait(lambda r: r.events())
    assert got[0]["headers"]["X-GitHub-Delivery"] == queued["guid"]
    assert got[0]["json"]["action"] == "queued"
    assert sim.wait_deliveries(5)
    items = c.get("/app/hook/deliveries", auth=jwt_auth).json()
    assert items[0]["guid"] == queued["guid"] and items[0]["redelivery"] is True and items[0]["status"] == "OK"
    # status filter is by status_code range, like GitHub's
    assert [i["id"] for i in c.get("/app/hook/deliveries?status=success", auth=jwt_auth).json()] == [items[0]["id"]]
    # cursor pagination with a Link header
    r = c.get("/app/hook/deliveries?per_page=1", auth=jwt_auth)
    assert len(r.json()) == 1 and 'rel="next"' in r.headers["Link"]
    nxt = r.headers["Link"].split(">")[0].lstrip("<")
    r2 = c.get(nxt.replace(sim.url, ""), auth=jwt_auth)
    assert r2.status_code == 200 and r2.json()[0]["id"] == items[1]["id"]


# --- authentication -----------------------------------------------------


def test_jwt_claims_are_checked(github_sim, app_key):
    c = GitHubClient(github_sim, app_key.private_pem)
    path = "/app/installations/42/access_tokens"
    r = c.post(path, auth=f"Bearer {c.jwt(exp_offset=11 * 60)}")
    assert r.status_code == 401 and "too far in the future" in r.json()["message"]
    assert r.json()["documentation_url"]
    r = c.post(path, auth=f"Bearer {c.jwt(iat_offset=120)}")
    assert r.status_code == 401 and "'iat'" in r.json()["message"]
    r = c.post(path, auth=f"Bearer {c.jwt(exp_offset=-1, iat_offset=-300)}")
    assert r.status_code == 401
    r = c.post(path, auth=f"Bearer {c.jwt(iss='2')}")
    assert r.status_code == 401
    r = c.post(path, auth=f"Bearer {c.jwt()[:-4]}AAAA")
    assert r.status_code == 401 and r.json()["message"] == "A JSON web token could not be decoded"
    r = c.post(path, auth=f"Bearer {c.jwt()}")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["token"].startswith("ghs_") and body["expires_at"].endswith("Z")
    exp = time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(exp - (time.time() + 3600)) < 5
    r = c.post("/app/installations/43/access_tokens", auth=f"Bearer {c.jwt()}")
    assert r.status_code == 404


def test_bad_or_missing_credentials(gh, github_sim):
    r = gh.get("/orgs/acme/actions/runners", auth="Bearer nope")
    assert r.status_code == 401 and r.json()["message"] == "Bad credentials"
    assert r.json()["documentation_url"].startswith("https://docs.github.com")
    r = requests.get(github_sim.url + "/orgs/acme/actions/runners", headers={"User-Agent": "t"})
    assert r.status_code == 401
    # an installation token is not accepted where GitHub wants the App JWT
    assert gh.get("/app/hook/deliveries").status_code == 401
    # and the App JWT is not accepted for installation endpoints
    assert gh.get("/orgs/acme/actions/runners", auth=f"Bearer {gh.jwt()}").status_code == 401
    # the PAT works (both schemes)
    pat = SIM_DEFAULTS["pat"]
    assert gh.get("/orgs/acme/actions/runners", auth=f"Bearer {pat}").status_code == 200
    assert gh.get("/orgs/acme/actions/runners", auth=f"token {pat}").status_code == 200
    assert gh.get("/orgs/acme/actions/runners", auth=f"token {gh.token}").status_code == 200
    # missing User-Agent is refused like GitHub does
    r = requests.get(github_sim.url + "/rate_limit", headers={"User-Agent": ""})
    assert r.status_code == 403
    assert [x["reason"] for x in github_sim.take_invalid_requests()] == ["missing User-Agent header"]


def test_app_endpoints_and_api_versions(gh, github_sim):
    jwt_auth = f"Bearer {gh.jwt()}"
    assert gh.get("/app", auth=jwt_auth).json()["id"] == 1
    inst = gh.get("/orgs/acme/installation", auth=jwt_auth)
    assert inst.status_code == 200 and inst.json()["id"] == 42
    assert gh.get("/orgs/acme/installation").status_code == 401
    old = gh.get("/rate_limit")
    assert "rate" in old.json() and old.headers["x-github-api-version-selected"] == "2022-11-28"
    new = gh.get("/rate_limit", headers={"X-GitHub-Api-Version": "2026-03-10"})
    assert new.status_code == 200 and "rate" not in new.json()


def test_installation_token_expires(make_sim, app_key):
    sim = make_sim(token_ttl=0.5)
    c = GitHubClient(sim, app_key.private_pem)
    c.installation_token()
    assert c.get("/orgs/acme/actions/runners").status_code == 200
    sim.wait_for(lambda: c.get("/orgs/acme/actions/runners").status_code == 401, timeout=5)
    c.installation_token()
    assert c.get("/orgs/acme/actions/runners").status_code == 200


# --- request validation ---------------------------------------------------


def test_generate_jitconfig_without_labels_is_rejected_citing_the_schema(gh, github_sim):
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig", json={"name": "r1", "runner_group_id": 1})
    assert r.status_code == 422
    msg = r.json()["message"]
    assert "'labels' is a required property" in msg and "schema" in msg
    bad = github_sim.invalid_requests()
    assert len(bad) == 1 and bad[0]["operation"] == "actions/generate-runner-jitconfig-for-org"
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                json={"name": "r1", "runner_group_id": "1", "labels": ["x"]})
    assert r.status_code == 422 and "is not of type 'integer'" in r.json()["message"]
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig", data=b"{not json",
                headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["message"] == "Problems parsing JSON"
    assert len(github_sim.take_invalid_requests()) == 3


def test_unknown_paths_and_query_parameters_are_invalid(gh, github_sim):
    assert gh.get("/orgs/acme/actions/runners?perpage=10").status_code == 422
    assert gh.get("/orgs/acme/actions/runners?per_page=ten").status_code == 422
    assert gh.get("/orgs/acme/actions/runnerz").status_code == 404
    assert gh.request("PATCH", "/orgs/acme/actions/runners").status_code == 404
    assert gh.get("/orgs/acme/actions/runners", headers={"X-GitHub-Api-Version": "2020-01-01"}).status_code == 400
    assert len(github_sim.invalid_requests()) == 5
    assert gh.get("/orgs/acme/actions/runners?per_page=10&page=1").status_code == 200
    assert len(github_sim.take_invalid_requests()) == 5


# --- runners and jobs -----------------------------------------------------


def test_jitconfig_encoding_and_runner_lifecycle(gh, github_sim):
    out = gh.jitconfig("gpu-1", ["self-hosted", "linux", "gpu"])
    runner = out["runner"]
    assert runner["status"] == "offline" and runner["busy"] is False
    assert {l["name"]: l["type"] for l in runner["labels"]} == {"self-hosted": "read-only", "linux": "read-only",
                                                               "gpu": "custom"}
    files = decode_jit_config(out["encoded_jit_config"])
    assert set(files) == {".runner", ".credentials", ".credentials_rsaparams"}
    assert files[".runner"]["agentName"] == "gpu-1" and files[".runner"]["agentId"] == runner["id"]
    assert files[".runner"]["serverUrl"].startswith(github_sim.url)
    assert files[".credentials"]["scheme"] == "OAuth"
    # same name again: 409
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                json={"name": "gpu-1", "runner_group_id": 1, "labels": ["gpu"]})
    assert r.status_code == 409
    # unknown runner group: 404
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                json={"name": "gpu-2", "runner_group_id": 99, "labels": ["gpu"]})
    assert r.status_code == 404
    listed = gh.get("/orgs/acme/actions/runners").json()
    assert listed["total_count"] == 1 and listed["runners"][0]["name"] == "gpu-1"
    assert gh.get("/orgs/acme/actions/runners?name=gpu-1").json()["total_count"] == 1
    assert gh.get(f"/orgs/acme/actions/runners/{runner['id']}").json()["id"] == runner["id"]
    # repo-level runners are separate
    rr = gh.jitconfig("repo-1", ["cpu"], repo="acme/widgets")
    assert gh.get("/repos/acme/widgets/actions/runners").json()["total_count"] == 1
    assert gh.get(f"/orgs/acme/actions/runners/{rr['runner']['id']}").status_code == 404
    # deleted before connecting: can no longer connect
    assert gh.delete(f"/orgs/acme/actions/runners/{runner['id']}").status_code == 204
    assert gh.get(f"/orgs/acme/actions/runners/{runner['id']}").status_code == 404
    assert RunnerClient(out["encoded_jit_config"]).connect().status_code == 404
    assert gh.post("/orgs/acme/actions/runners/registration-token").status_code == 201
    assert gh.post("/repos/acme/widgets/actions/runners/registration-token").status_code == 201


def test_assignment_gives_any_matching_job_and_removes_the_jit_runner(gh, github_sim, receiver):
    github_sim.set_webhook_url(receiver.url)
    gpu_a = RunnerClient(gh.jitconfig("gpu-a", ["linux", "GPU"])["encoded_jit_config"])
    gpu_b = RunnerClient(gh.jitconfig("gpu-b", ["linux", "gpu"])["encoded_jit_config"])
    cpu = RunnerClient(gh.jitconfig("cpu-a", ["linux", "cpu"])["encoded_jit_config"])
    for r in (gpu_a, gpu_b, cpu):
        assert r.connect().status_code == 200
    # job 1 is "for" gpu-a (created for it), but gpu-b asks first and gets it
    j1 = github_sim.add_job(["self-hosted", "Linux", "gpu"])
    assert cpu.acquire(wait=0.2) is None  # labels not satisfied: waits, gets nothing
    got = gpu_b.acquire(wait=1)
    assert got["job_id"] == j1 and got["runner_name"] == "gpu-b"
    # a runner waiting (long-poll) gets a job that arrives later
    import threading
    result = {}
    t = threading.Thread(target=lambda: result.update(job=gpu_a.acquire(wait=5)))
    t.start()
    time.sleep(0.2)
    j2 = github_sim.add_job(["gpu"], repo="acme/gadgets")
    t.join(5)
    assert result["job"]["job_id"] == j2
    assert gpu_b.complete(j1, "success").status_code == 200
    assert gpu_a.complete(j2, "failure").status_code == 200
    jobs = {j["id"]: j for j in github_sim.jobs()}
    assert jobs[j1]["runner_name"] == "gpu-b" and jobs[j1]["conclusion"] == "success"
    assert jobs[j2]["runner_name"] == "gpu-a" and jobs[j2]["conclusion"] == "failure"
    names = [r["name"] for r in gh.get("/orgs/acme/actions/runners").json()["runners"]]
    assert names == ["cpu-a"]  # JIT runners are removed after their job
    assert gpu_b.connect().status_code == 404
    receiver.wait(lambda r: r.actions(j1) == ["queued", "in_progress", "completed"])
    ip = [e["json"] for e in receiver.events() if e["json"]["action"] == "in_progress"
          and e["json"]["workflow_job"]["id"] == j1][0]
    assert ip["workflow_job"]["runner_name"] == "gpu-b" and ip["workflow_job"]["runner_id"] == gpu_b.ident["agent_id"]


def test_cancel_waiting_release_and_rest_views(gh, github_sim, receiver):
    github_sim.set_webhook_url(receiver.url)
    j1 = github_sim.add_job(["gpu"], wait=True, workflow="Train")
    j2 = github_sim.add_job(["gpu"])
    github_sim.release_job(j1)
    github_sim.cancel_job(j2)
    receiver.wait(lambda r: r.actions(j1) == ["waiting", "queued"] and r.actions(j2) == ["queued", "completed"])
    done = [e["json"]["workflow_job"] for e in receiver.events() if e["json"]["action"] == "completed"][0]
    assert done["conclusion"] == "cancelled" and done["runner_name"] is None
    runs = gh.get("/repos/acme/widgets/actions/runs").json()
    assert runs["total_count"] == 2
    by_id = {r["id"]: r for r in runs["workflow_runs"]}
    run1 = github_sim.job(j1)["run_id"]
    assert by_id[run1]["status"] == "queued" and by_id[run1]["name"] == "Train"
    assert gh.get("/repos/acme/widgets/actions/runs?status=cancelled").json()["total_count"] == 1
    jobs = gh.get(f"/repos/acme/widgets/actions/runs/{run1}/jobs").json()
    assert jobs["jobs"][0]["id"] == j1 and jobs["jobs"][0]["labels"] == ["gpu"]
    assert gh.get(f"/repos/acme/widgets/actions/jobs/{j2}").json()["conclusion"] == "cancelled"
    repos = gh.get("/installation/repositories").json()
    assert sorted(r["full_name"] for r in repos["repositories"]) == ["acme/gadgets", "acme/widgets"]


# --- rate limits and faults -------------------------------------------------


def test_rate_limit_headers_decrement_and_exhaustion_is_403(make_sim, app_key):
    sim = make_sim(rate_limit=3)
    c = GitHubClient(sim, app_key.private_pem)
    c.installation_token()
    seen = []
    for _ in range(3):
        r = c.get("/orgs/acme/actions/runners")
        assert r.status_code == 200
        seen.append(int(r.headers["x-ratelimit-remaining"]))
        assert r.headers["x-ratelimit-limit"] == "3" and r.headers["x-ratelimit-resource"] == "core"
        assert int(r.headers["x-ratelimit-reset"]) > time.time()
    assert seen == [2, 1, 0]
    r = c.get("/orgs/acme/actions/runners")
    assert r.status_code == 403 and r.headers["x-ratelimit-remaining"] == "0"
    assert r.json()["message"].startswith("API rate limit exceeded")
    # /rate_limit itself is free
    rl = c.get("/rate_limit")
    assert rl.status_code == 200 and rl.json()["resources"]["core"]["remaining"] == 0


def test_conditional_requests_are_not_charged(gh):
    r = gh.get("/orgs/acme/actions/runners")
    left = int(r.headers["x-ratelimit-remaining"])
    r2 = gh.get("/orgs/acme/actions/runners", headers={"If-None-Match": r.headers["ETag"]})
    assert r2.status_code == 304 and int(r2.headers["x-ratelimit-remaining"]) == left


def test_secondary_rate_limit_answers_retry_after(make_sim, app_key):
    sim = make_sim(secondary_points_per_minute=12, retry_after_grace=0)
    c = GitHubClient(sim, app_key.private_pem)
    c.installation_token()
    codes = [c.post("/orgs/acme/actions/runners/generate-jitconfig",
                    json={"name": f"r{i}", "runner_group_id": 1, "labels": ["x"]}).status_code for i in range(3)]
    assert codes == [201, 201, 403]
    r = c.post("/orgs/acme/actions/runners/generate-jitconfig",
               json={"name": "r9", "runner_group_id": 1, "labels": ["x"]})
    assert r.status_code == 403 and 1 <= int(r.headers["retry-after"]) <= 60
    assert "secondary rate limit" in r.json()["message"]
    # That second try ignored the first answer's Retry-After.
    assert [x["limit"] for x in sim.take_retry_after_ignored()] == ["actions/generate-runner-jitconfig-for-org"]
    # GETs cost 1 point and are counted per endpoint
    assert c.get("/orgs/acme/actions/runners").status_code == 200


def test_content_creation_limit_spans_endpoints_and_records_ignored_retry_after(make_sim, app_key):
    sim = make_sim(content_creating_per_minute=3, retry_after_grace=0)
    c = GitHubClient(sim, app_key.private_pem)
    c.installation_token()
    org = "/orgs/acme/actions/runners/generate-jitconfig"
    repo = "/repos/acme/widgets/actions/runners/generate-jitconfig"
    codes = [c.post(org if i % 2 else repo, json={"name": f"c{i}", "runner_group_id": 1,
                                                   "labels": ["x"]}).status_code for i in range(4)]
    assert codes == [201, 201, 201, 403]
    limited = sim.secondary_limited()
    assert [x["limit"] for x in limited] == ["content"] and 1 <= limited[0]["retry_after"] <= 60
    assert sim.retry_after_ignored() == []
    # A GET is no content creation: not held, not recorded.
    assert c.get("/orgs/acme/actions/runners").status_code == 200
    assert sim.retry_after_ignored() == []
    # Another POST before Retry-After passed is what a client must not send.
    assert c.post(org, json={"name": "c9", "runner_group_id": 1, "labels": ["x"]}).status_code == 403
    ignored = sim.retry_after_ignored()
    assert len(ignored) == 1 and ignored[0]["limit"] == "content"
    sim.take_retry_after_ignored()  # sent on purpose


def test_runner_names_over_64_and_long_labels_are_refused(gh, github_sim):
    ok = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                 json={"name": "n" * 64, "runner_group_id": 1, "labels": ["x"]})
    assert ok.status_code == 201
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                json={"name": "n" * 65, "runner_group_id": 1, "labels": ["x"]})
    assert r.status_code == 422 and "64" in r.json()["message"]
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                json={"name": "l1", "runner_group_id": 1, "labels": ["x" * 257]})
    assert r.status_code == 422
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                json={"name": "l2", "runner_group_id": 1, "labels": [f"l{i}" for i in range(101)]})
    assert r.status_code == 422
    assert [x["status"] for x in github_sim.take_invalid_requests()] == [422, 422, 422]


def test_fault_after_processing_takes_effect(gh, github_sim):
    github_sim.faults(error_ratio=1.0, after=True, count=1)
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                json={"name": "a1", "runner_group_id": 1, "labels": ["x"]})
    assert r.status_code == 502
    assert [x["name"] for x in github_sim.runners()] == ["a1"]
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                json={"name": "a1", "runner_group_id": 1, "labels": ["x"]})
    assert r.status_code == 409


def test_faulted_requests_are_still_validated(gh, github_sim):
    github_sim.faults(error_ratio=1.0)
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig", json={"name": "v1", "labels": ["x"]})
    assert r.status_code == 422
    assert [x["operation"] for x in github_sim.take_invalid_requests()] == [
        "actions/generate-runner-jitconfig-for-org"]
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                json={"name": "v1", "runner_group_id": 1, "labels": ["x"]})
    assert r.status_code == 502
    github_sim.faults()


def test_fault_injection(gh, github_sim):
    github_sim.faults(error_ratio=1.0)
    assert gh.get("/orgs/acme/actions/runners").status_code == 502
    github_sim.faults(drop_ratio=1.0)
    with pytest.raises(requests.ConnectionError):
        gh.get("/orgs/acme/actions/runners")
    github_sim.faults(latency=0.3)
    t = time.time()
    assert gh.get("/orgs/acme/actions/runners").status_code == 200
    assert time.time() - t >= 0.3
    github_sim.faults(exhaust_budget=True)
    r = gh.get("/orgs/acme/actions/runners")
    assert r.status_code == 403 and r.headers["x-ratelimit-remaining"] == "0"
    github_sim.faults(error_ratio=1.0, error_status=503, count=1,
                      endpoints=["actions/generate-runner-jitconfig-for-org"])
    assert gh.get("/orgs/acme/actions/runners").status_code == 200
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                json={"name": "f1", "runner_group_id": 1, "labels": ["x"]})
    assert r.status_code == 503
    r = gh.post("/orgs/acme/actions/runners/generate-jitconfig",
                json={"name": "f1", "runner_group_id": 1, "labels": ["x"]})
    assert r.status_code == 201
    github_sim.faults()
    assert gh.get("/orgs/acme/actions/runners").status_code == 200


def test_calls_are_counted_per_endpoint(gh, github_sim):
    github_sim.reset_calls()
    gh.jitconfig("c1", ["x"])
    gh.get("/orgs/acme/actions/runners")
    gh.get("/orgs/acme/actions/runners")
    calls = github_sim.calls()
    assert calls["total"] == 3
    assert calls["by_operation"] == {"actions/generate-runner-jitconfig-for-org": 1,
                                     "actions/list-self-hosted-runners-for-org": 2}
    assert calls["by_route"]["GET /orgs/{org}/actions/runners"] == 2


# --- command line and control API -------------------------------------------


def test_command_line_and_http_control_api(tmp_path, app_key):
    (tmp_path / "secret").write_bytes(b"s3cret\n")
    (tmp_path / "pat").write_text("ghp_cli\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sim.github", "--port", "0", "--app-id", "7", "--app-key-file",
         app_key.public_path, "--installation-id", "42", "--org", "acme", "--repos", "acme/widgets",
         "--webhook-secret-file", str(tmp_path / "secret"), "--pat-file", str(tmp_path / "pat")],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = json.loads(proc.stdout.readline())["url"]
        r = requests.post(url + "/_sim/jobs", json={"labels": ["gpu"], "repo": "acme/widgets", "duration": 0.1})
        assert r.status_code == 201
        jid = r.json()["id"]
        assert requests.post(f"{url}/_sim/jobs/{jid}/cancel").json()["conclusion"] == "cancelled"
        assert [j["id"] for j in requests.get(url + "/_sim/jobs").json()] == [jid]
        h = {"Authorization": "Bearer ghp_cli", "User-Agent": "t"}
        assert requests.get(url + "/orgs/acme/actions/runners", headers=h).status_code == 200
        assert requests.get(url + "/_sim/calls").json()["total"] == 1
        assert requests.post(url + "/_sim/faults", json={"error_ratio": 1}).status_code == 200
        assert requests.get(url + "/orgs/acme/actions/runners", headers=h).status_code == 502
        assert requests.get(url + "/_sim/invalid").json() == {"requests": [], "responses": []}
        assert requests.get(url + "/_sim/runners").json() == []
        assert len(requests.get(url + "/_sim/deliveries").json()) == 2
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_repo_runners_serve_only_their_repository_and_held_jobs_wait(gh, github_sim):
    rr = RunnerClient(gh.jitconfig("repo-r", ["cpu"], repo="acme/widgets")["encoded_jit_config"])
    assert rr.connect().status_code == 200
    other = github_sim.add_job(["cpu"], repo="acme/gadgets")
    assert rr.acquire(wait=0.1) is None
    held = github_sim.add_job(["cpu"], repo="acme/widgets", hold=True)
    assert rr.acquire(wait=0.1) is None
    assert github_sim.job(held)["status"] == "queued" and github_sim.job(held)["held"]
    github_sim.release_job(held)
    assert rr.acquire(wait=1)["job_id"] == held
    assert github_sim.job(other)["status"] == "queued"
    # a repo-level runner cannot join another runner group; a busy runner cannot be deleted
    r = gh.post("/repos/acme/widgets/actions/runners/generate-jitconfig",
                json={"name": "x", "runner_group_id": 2, "labels": ["cpu"]})
    assert r.status_code == 404
    assert gh.delete(f"/repos/acme/widgets/actions/runners/{rr.ident['agent_id']}").status_code == 422
    assert rr.complete(held).status_code == 200
    assert gh.get("/repos/acme/widgets/actions/runners").json()["total_count"] == 0
