"""The shipped deployment, applied for real and run with its own RBAC.

For each environment, `just k8s-apply ENV REGISTRY` (the Kustomize overlay)
and `just helm-install ENV REGISTRY` (the Helm chart), run as an operator
runs them, with KUBECONFIG naming a fresh test cluster (kube-apiserver with
audit logging, kubeharness.KubeCluster(audit=True)): every object they
render is on the apiserver as rendered, and running the recipe again
changes nothing that breaks.

Then runfleetd starts in in-cluster mode as the Deployment would start it:
the runfleetd.yaml of the ConfigMap the recipe applied (only listen
addresses, URLs, file paths and the service account directory replaced,
and the test checks that nothing else was), the token of the shipped
ServiceAccount from the TokenRequest API in `service_account_dir`,
KUBERNETES_SERVICE_HOST/PORT naming the test apiserver. A burst of jobs
over every pool (CPU and GPU) runs through it on kwok's fake EKS nodes,
then one GPU job whose pre-job check finds ECC errors, so that runfleetd
cordons the node and posts an Event on it (the GPU-health path).

Least privilege, from the apiserver's audit log of that ServiceAccount:
no request runfleetd made was refused (a 403 means the shipped RBAC is not
enough), and every (verb, resource, namespace) the shipped Roles and
ClusterRoles grant was used, except the few in NOT_EXERCISED, each with the
path that uses it and why these runs do not. `kubectl auth can-i` as the
ServiceAccount shows what it must not do."""

from __future__ import annotations

import copy
import os
import subprocess
import time
import urllib.parse

import kubeharness
import pytest
import yaml
from deploylib import CONTROL_NS, ENVIRONMENTS, PLACEHOLDER_REGISTRY, RUNNER_NS, REPO, just_bin, load_all, run
from kube_e2e import RunnerPlayer, fleet_items, jobs_done, unfinished, wait
from tests.runfleetd import Daemon, bin_dir, timeout_scale
from tests.sim.github import Simulator
from tests.sim.github.testing import assert_clean
from tests.test_runfleetd import app_key_files  # noqa: F401  (fixture)

REGISTRY = "registry.runfleet.test:5000"
SA_USER = f"system:serviceaccount:{CONTROL_NS}:runfleetd"
WEBHOOK_SECRET = b"runfleet-test-secret"
FIXTURES = REPO / "tests" / "deploy" / "fixtures"
NVML = bin_dir().parent / "lib" / "libnvml_fake.so"
GPU = kubeharness.GPU

# Granted to runfleetd but not used in these runs: (namespace or "*" for
# cluster-wide, API group, resource, verb) -> the path that uses it and why
# it is not exercised here. Anything else granted and unused fails the test.
NOT_EXERCISED = {}
NOT_EXERCISED[("*", "", "nodes", "get")] = (
    "with backend.kubernetes.gpu_unhealthy.action: taint, a taint patch answered 409 "
    "Conflict (the Node changed since it was read) reads the Node again; the shipped "
    "action, cordon, is what these runs take")


def cases():
    for env in ENVIRONMENTS:
        for recipe in ("k8s-apply", "helm-install"):
            yield pytest.param(recipe, env, id=f"{recipe}-{env}")


# -- the recipes ---------------------------------------------------------------
def just(recipe: str, env: str, kube) -> subprocess.CompletedProcess:
    """`just RECIPE ENV REGISTRY` with the pinned kubectl, kustomize and helm
    first on PATH and KUBECONFIG naming the test cluster."""
    tools = [str(kubeharness.tool(t).parent) for t in ("kubectl", "kustomize", "helm")]
    envs = {**os.environ, "KUBECONFIG": str(kube.kubeconfig),
            "PATH": os.pathsep.join([*tools, os.environ.get("PATH", "")])}
    return run([just_bin(), recipe, env, REGISTRY], env=envs)


def rendered(recipe: str, env: str) -> list[dict]:
    """What the recipe applies, rendered here on its own."""
    if recipe == "k8s-apply":
        text = run([kubeharness.tool("kustomize"), "build", f"kubernetes/overlays/{env}"]).stdout
        return load_all(text.replace(PLACEHOLDER_REGISTRY, REGISTRY))
    return load_all(run([kubeharness.tool("helm"), "template", "runfleet", "helm/runfleet",
                         "--namespace", CONTROL_NS, "-f", f"helm/runfleet/values-{env}.yaml",
                         "--set", f"registry={REGISTRY}"]).stdout)


def key(o: dict) -> tuple:
    return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])


def differences(want, have, path="") -> list[str]:
    """Where `want` (rendered) is not in `have` (live: defaults added)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [f"{path}: {have!r} is not a map"]
        out = []
        for k, v in want.items():
            if k not in have:
                if v not in (False, 0, "", None, [], {}):  # the server omits empty fields
                    out.append(f"{path}.{k}: missing")
            else:
                out += differences(v, have[k], f"{path}.{k}")
        return out
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return [f"{path}: {have!r} != {want!r}"]
        return [d for i, (w, h) in enumerate(zip(want, have)) for d in differences(w, h, f"{path}[{i}]")]
    return [] if want == have else [f"{path}: {have!r} != {want!r}"]


def live_objects(kube, objs: list[dict]) -> dict[tuple, dict]:
    got = kube.kubectl("get", "-f", "-", "-o", "json", input=yaml.safe_dump_all(objs)).stdout
    items = yaml.safe_load(got)
    return {key(o): o for o in items.get("items", [items])}


def assert_applied_as_rendered(kube, objs: list[dict]) -> dict[tuple, dict]:
    live = live_objects(kube, objs)
    assert set(live) == {key(o) for o in objs}, sorted(set(map(key, objs)) ^ set(live))
    for o in objs:
        have = live[key(o)]
        body = {k: v for k, v in o.items() if k not in ("apiVersion", "kind")}
        # Annotations: the recipe's tools add their own (Helm's ownership).
        body["metadata"] = {k: v for k, v in o["metadata"].items() if k != "annotations"}
        diff = differences(body, have)
        assert not diff, (key(o), diff[:10])
        assert (o["metadata"].get("annotations") or {}).items() <= \
            (have["metadata"].get("annotations") or {}).items(), key(o)
    return live


# -- RBAC, from the rendered objects ---------------------------------------------
def grants(objs: list[dict]) -> set[tuple]:
    """(namespace or "*", API group, resource, verb, resourceNames) that the
    shipped bindings give runfleetd's ServiceAccount."""
    roles = {key(o): o for o in objs if o["kind"] in ("Role", "ClusterRole")}
    out = set()
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == "runfleetd"
                   and s.get("namespace") == CONTROL_NS for s in b["subjects"]):
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace", "")
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else "", ref["name"])]
        scope = ns if b["kind"] == "RoleBinding" else "*"
        for rule in role["rules"]:
            names = tuple(rule.get("resourceNames") or ())
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        out.add((scope, g, r, v, names))
    return out


def request_of(ev: dict) -> tuple:
    """(namespace or "", API group, resource[/subresource], verb, name) of
    an audit event."""
    ref = ev.get("objectRef") or {}
    res = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return (ref.get("namespace", ""), ref.get("apiGroup", ""), res, ev["verb"], ref.get("name", ""))


def grant_used(grant: tuple, requests: set[tuple]) -> bool:
    scope, group, res, verb, names = grant
    return any(g == group and r == res and v == verb and (scope == "*" or ns == scope)
               and (not names or name in names) for ns, g, r, v, name in requests)


def forbidden(events: list[dict]) -> list[tuple]:
    return [request_of(e) for e in events if (e.get("responseStatus") or {}).get("code") == 403]


# -- runfleetd in the cluster ------------------------------------------------------
class InClusterDaemon(Daemon):
    """runfleetd on the shipped runfleetd.yaml, in in-cluster mode."""

    def __init__(self, tmp, sim, shipped: dict, kube, sa_dir):
        super().__init__(tmp, sim, pools=[], webhook_secret=WEBHOOK_SECRET)
        cfg = copy.deepcopy(shipped)
        cfg["listen"] = f"127.0.0.1:{self.port}"
        cfg["admin_listen"] = f"127.0.0.1:{self.admin_port}"
        cfg["admin_url"] = self.url
        cfg["state_dir"] = str(self.tmp / "state")
        gh = cfg["github"]
        gh["api_url"] = sim.url
        gh["app"]["private_key_file"] = str(sim.app_key_file)
        gh["webhook_secret_file"] = str(self.secret_file)
        cfg["backend"]["kubernetes"]["service_account_dir"] = str(sa_dir)
        self.changed = sorted(changed_keys(shipped, cfg))
        self.config_text = yaml.safe_dump(cfg, sort_keys=False)
        self.config_path.write_text(self.config_text)
        # What the Pod has: the kubelet's Service environment, the downward API.
        self.env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kube.port),
                    "POD_NAME": "runfleetd-0", "POD_NAMESPACE": CONTROL_NS}


def changed_keys(a, b, path="") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return {c for k in a.keys() | b.keys() for c in changed_keys(a.get(k), b.get(k), f"{path}.{k}")}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return {c for i, (x, y) in enumerate(zip(a, b)) for c in changed_keys(x, y, f"{path}[{i}]")}
    return set() if a == b else {path}


# Every change to the shipped runfleetd.yaml: where it listens, the URLs,
# paths on this machine, the service account directory. Pools, images,
# namespaces, the fleet's name and everything else are as shipped.
CHANGED = sorted([".listen", ".admin_listen", ".admin_url", ".state_dir", ".github.api_url",
                  ".github.app.private_key_file", ".github.webhook_secret_file",
                  ".backend.kubernetes.service_account_dir"])


def applied_config(kube) -> dict:
    cms = [c for c in kube.api("GET", f"/api/v1/namespaces/{CONTROL_NS}/configmaps")["items"]
           if c["metadata"]["name"].startswith("runfleetd-config")]
    assert len(cms) == 1, [c["metadata"]["name"] for c in cms]
    return yaml.safe_load(cms[0]["data"]["runfleetd.yaml"])


def node_groups(cfg: dict) -> dict[str, int]:
    """Nodes to make for the pools: one of the CPU group, two of each GPU
    group (one is cordoned by the GPU-health step)."""
    out = {}
    for p in cfg["pools"]:
        group = p["node_selector"]["runfleet.dev/node-group"]
        out[group] = 2 if p["resources"]["gpus"] else 1
    return out


def pod_gpus(pod: dict) -> int:
    return kubeharness.pod_gpus(pod)


def gpu_events(kube, node: str) -> list[dict]:
    sel = urllib.parse.quote(f"involvedObject.kind=Node,involvedObject.name={node}")
    items = kube.api("GET", f"/api/v1/namespaces/default/events?fieldSelector={sel}")["items"]
    return [e for e in items if e.get("reason") == "RunfleetGPUUnhealthy"]


@pytest.fixture
def cluster():
    """A fresh, audited control plane: what an operator applies to (the
    same names in both recipes, and no namespace deletion without a
    controller manager, so one per test)."""
    kube = kubeharness.KubeCluster(audit=True).start()
    try:
        # The chart's ServiceMonitor needs Prometheus Operator's CRD (a
        # cut-down copy), as on a cluster that runs it.
        kube.kubectl("apply", "-f", str(FIXTURES / "servicemonitor-crd.yaml"))
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     "crd/servicemonitors.monitoring.coreos.com")
        yield kube
    finally:
        kube.stop()


@pytest.mark.parametrize("recipe,env", list(cases()))
def test_recipe_applies_the_deployment_and_runfleetd_runs_with_its_rbac(
        cluster, app_key_files, tmp_path, recipe, env):  # noqa: F811
    kube = cluster
    objs = rendered(recipe, env)
    assert {o["kind"] for o in objs} >= {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
        "ConfigMap", "Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", "PriorityClass",
        "DaemonSet"}

    # 1. The recipe, for real, twice (an upgrade of the same thing).
    for _ in range(2):
        out = just(recipe, env, kube).stdout
        if recipe == "helm-install":
            assert "STATUS: deployed" in out, out
    live = assert_applied_as_rendered(kube, objs)
    if recipe == "helm-install":
        rel = run([kubeharness.tool("helm"), "--kubeconfig", kube.kubeconfig, "list", "-n", CONTROL_NS,
                   "-o", "json"]).stdout
        (release,) = yaml.safe_load(rel)
        assert release["name"] == "runfleet" and release["status"] == "deployed"
        assert release["revision"] == "2"
    images = [c["image"] for o in live.values() if o["kind"] in ("Deployment", "DaemonSet")
              for c in o["spec"]["template"]["spec"]["containers"]]
    images += [p["runner"]["image"] for p in applied_config(kube)["pools"]]
    runfleet_images = [i for i in images if "/runfleet/" in i]
    assert runfleet_images and all(i.startswith(REGISTRY + "/") for i in runfleet_images), images
    assert PLACEHOLDER_REGISTRY not in yaml.safe_dump_all(list(live.values()))

    # 2. runfleetd in the cluster, with the shipped ServiceAccount's token.
    shipped = applied_config(kube)
    kcfg = shipped["backend"]["kubernetes"]
    assert kcfg["namespace"] == RUNNER_NS and "kubeconfig" not in kcfg
    kube.start_scheduler()
    kube.start_kwok()
    nodes = kube.eks_nodes(node_groups(shipped))
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "token").write_text(kube.service_account_token(CONTROL_NS, "runfleetd"))
    (sa_dir / "ca.crt").write_bytes(kube.ca_file.read_bytes())
    (sa_dir / "namespace").write_text(CONTROL_NS)
    gh = shipped["github"]
    priv, pub = app_key_files
    sim = Simulator(app_id=gh["app"]["id"], app_public_key_pem=pub, webhook_secret=WEBHOOK_SECRET,
                    installation_id=gh["app"]["installation_id"], org=gh["org"],
                    repos=[f"{gh['org']}/widgets"], secondary_points_per_minute=100000,
                    content_creating_per_minute=100000, runner_lost_timeout=3.0)
    sim.app_key_file = str(priv)
    sim.start()
    d = InClusterDaemon(tmp_path, sim, shipped, kube, sa_dir)
    assert d.changed == CHANGED, d.changed
    fleet = kcfg.get("lease_name", "runfleetd")
    selector = f"runfleet.dev/fleet={fleet}"
    ecc = {"on": False}  # GPU pods started once set fail their pre-job check

    def hooks_env(pod: dict) -> dict:
        if not ecc["on"] or not pod_gpus(pod):
            return {}
        return {"ACTIONS_RUNNER_HOOK_JOB_STARTED": str(bin_dir() / "pre-job.sh"),
                "RUNFLEET_NVML_LIB": str(NVML), "FAKE_NVML_COUNT": "1", "FAKE_NVML_UTIL": "0:50",
                "FAKE_NVML_MEM": "0:1073741824", "RUNFLEET_GIT_CACHE": "0", "FAKE_NVML_ECC": "0:3"}

    d.start(timeout=60)
    stopped = False
    try:
        with kube.record_pods(RUNNER_NS, selector) as rec, \
                RunnerPlayer(kube, RUNNER_NS, tmp_path / "pods", env_for=hooks_env,
                             selector=selector) as player:
            wait(lambda: "runner pods listed" in d.log(), 30, "the first pod list", d)
            ids = [sim.add_job(p["labels"], repo=f"{gh['org']}/widgets", duration=1)
                   for p in shipped["pools"] for _ in range(2)]
            wait(lambda: jobs_done(sim, ids), 120, f"{len(ids)} jobs to complete", d,
                 lambda: unfinished(sim, ids))
            for j in ids:
                assert sim.job(j)["conclusion"] == "success", sim.job(j)
            bound = {e.name: e.pod["metadata"]["labels"]["runfleet.dev/pool"] for e in rec.events if e.node}
            assert set(bound.values()) == {p["name"] for p in shipped["pools"]}, bound

            # The GPU-health path: a GPU job whose pre-job check finds ECC
            # errors; runfleetd cordons its node and posts an Event on it.
            wait(lambda: not [p for p in fleet_items(kube, RUNNER_NS, "pods", selector) if pod_gpus(p)],
                 30, "the burst's GPU pods to go", d)
            ecc["on"] = True
            gpu_pool = next(p for p in shipped["pools"] if p["resources"]["gpus"])
            bad_job = sim.add_job(gpu_pool["labels"], repo=f"{gh['org']}/widgets", duration=1)
            wait(lambda: jobs_done(sim, [bad_job]), 60, "the ECC job to end", d,
                 lambda: unfinished(sim, [bad_job]))
            assert sim.job(bad_job)["conclusion"] == "failure", sim.job(bad_job)
            runner = sim.job(bad_job)["runner_name"]
            bad = next(e.node for e in rec.events if e.node
                       and e.pod["metadata"]["annotations"]["runfleet.dev/runner-name"] == runner)
            wait(lambda: kube.api("GET", f"/api/v1/nodes/{bad}")["spec"].get("unschedulable")
                 or "taints" in str(kube.api("GET", f"/api/v1/nodes/{bad}")["spec"].get("taints")), 20,
                 f"{bad} to be marked", d)
            wait(lambda: gpu_events(kube, bad), 20, "the GPU-unhealthy Event", d)
            assert player.errors == []
            running = {o["metadata"]["name"] for o in fleet_items(kube, RUNNER_NS, "pods", selector)}
        rc = d.stop()
        stopped = True
        # Refused requests first: they are why anything else went wrong.
        ours = [e for e in kube.audit_events(SA_USER) if e.get("userAgent", "").startswith("runfleetd/")]
        assert forbidden(ours) == [], "refused to runfleetd (the RBAC is not enough)"
        assert rc == 0, d.log()[-3000:]
        assert d.sanitizer_report() is None, d.sanitizer_report()
        # The shipped config elects a leader: a stop leaves the runners that
        # still run (idle ones, min_idle) to the next leader, which adopts
        # them; everything else is deleted. A pod goes once its (fake)
        # kubelet saw it end.
        assert shipped["backend"]["kubernetes"]["leader_election"] is True
        def left():
            return [(kind, o["metadata"]["name"]) for kind in ("pods", "secrets")
                    for o in fleet_items(kube, RUNNER_NS, kind, selector)
                    if not any(o["metadata"]["name"].startswith(r) for r in running)]
        deadline = time.monotonic() + 30 * timeout_scale()
        while left() and time.monotonic() < deadline:
            time.sleep(0.25)
        assert left() == []
        kept = {o["metadata"]["name"] for o in fleet_items(kube, RUNNER_NS, "pods", selector)}
        assert kept <= running, (kept, running)
        assert sim.invalid_requests() == []
        assert rec.unschedulable() == [], rec.unschedulable()[:3]
    finally:
        if not stopped:
            d.stop()
        sim.stop()
    assert_clean(sim)
    assert set(nodes) >= {bad}

    # 3. Least privilege, from the audit log of the ServiceAccount.
    events = kube.audit_events(SA_USER)
    ours = [e for e in events if e.get("userAgent", "").startswith("runfleetd/")]
    assert ours, "no request of runfleetd in the audit log"
    assert forbidden(ours) == [], "refused to runfleetd (the RBAC is not enough)"
    assert [e for e in ours if (e.get("responseStatus") or {}).get("code") == 401] == []
    used = {request_of(e) for e in ours}
    for want in [(RUNNER_NS, "", "pods", "create"), (RUNNER_NS, "", "pods", "delete"),
                 (RUNNER_NS, "", "pods", "watch"), (RUNNER_NS, "", "secrets", "create"),
                 (RUNNER_NS, "", "secrets", "delete"), ("", "", "pods", "watch"),
                 ("", "", "nodes", "watch"), ("", "", "nodes", "patch"),
                 ("default", "", "events", "create")]:
        assert any(u[:4] == want for u in used), (want, sorted(used))
    creates = [e for e in ours if request_of(e)[1:4] == ("", "pods", "create")]
    assert len(creates) >= len(ids) + 1
    granted = grants(objs)
    unused = sorted(g for g in granted if not grant_used(g, used) and g[:4] not in NOT_EXERCISED)
    assert unused == [], f"granted to runfleetd and never used: {unused}\nused: {sorted(used)}"
    stale = [k for k in NOT_EXERCISED if not any(g[:4] == k for g in granted)]
    assert stale == [], f"NOT_EXERCISED names what the RBAC does not grant: {stale}"

    # The audit check has teeth: a call the RBAC refuses, with the same
    # token, is in the log as a 403.
    token = (sa_dir / "token").read_text()
    with pytest.raises(kubeharness.urllib.error.HTTPError) as e:
        kube.api("GET", "/api/v1/namespaces/kube-system/secrets", token=token)
    assert e.value.code == 403
    probe = [e for e in kube.audit_events(SA_USER) if not e.get("userAgent", "").startswith("runfleetd/")]
    assert ("kube-system", "", "secrets", "list", "") in forbidden(probe)

    # What it must not do.
    sa = f"--as={SA_USER}"
    for args, allowed in [
        (("delete", "nodes"), False), (("create", "nodes"), False), (("update", "nodes"), False),
        (("get", "secrets", "-n", "kube-system"), False), (("list", "secrets", "-A"), False),
        (("get", "secrets", "-n", CONTROL_NS), False), (("get", "secrets", "-n", "default"), False),
        (("create", "pods", "-n", "kube-system"), False), (("create", "pods", "-n", CONTROL_NS), False),
        (("delete", "pods", "-n", "kube-system"), False), (("create", "pods", "--subresource=exec", "-n", RUNNER_NS), False),
        (("patch", "pods", "-n", RUNNER_NS), False), (("update", "configmaps", "-n", CONTROL_NS), False),
        (("create", "rolebindings.rbac.authorization.k8s.io", "-n", RUNNER_NS), False),
        (("create", "serviceaccounts", "--subresource=token", "-n", CONTROL_NS), False),
        (("get", "pods", "--subresource=log", "-n", RUNNER_NS), False),
        (("create", "pods", "-n", RUNNER_NS), True), (("create", "secrets", "-n", RUNNER_NS), True),
    ]:
        cp = kube.kubectl("auth", "can-i", *args, sa, check=False)
        assert cp.stdout.strip() == ("yes" if allowed else "no"), (args, cp.stdout, cp.stderr)

