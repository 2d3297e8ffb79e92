"""The Kustomize overlays and the Helm chart render, and the real
kube-apiserver accepts every object they render (server-side dry-run with
strict field validation); the chart lints; runfleetd's RBAC grants exactly
what it needs."""

import re
from pathlib import Path

import kubeharness
import pytest
import yaml
from deploylib import (CONTROL_NS, ENVIRONMENTS, PLACEHOLDER_REGISTRY, RUNNER_NS, find,
                       helm_objects, helm_text, kustomize_objects, kustomize_text, one, run)

FIXTURES = Path(__file__).resolve().parent / "fixtures"

EXPECTED = {
    ("Namespace", RUNNER_NS), ("PriorityClass", "runfleet-control-plane"),
    ("PriorityClass", "runfleet-runner"), ("PriorityClass", "runfleet-runner-idle"),
    ("ServiceAccount", "runfleetd"), ("ServiceAccount", "runfleet-runner"),
    ("Role", "runfleetd-runners"), ("RoleBinding", "runfleetd-runners"),
    ("Role", "runfleetd-leader-election"), ("RoleBinding", "runfleetd-leader-election"),
    ("ClusterRole", "runfleetd-nodes"), ("ClusterRoleBinding", "runfleetd-nodes"),
    ("Role", "runfleetd-node-events"), ("RoleBinding", "runfleetd-node-events"),
    ("DaemonSet", "nvidia-device-plugin"), ("Deployment", "runfleetd"),
    ("Service", "runfleetd"), ("Service", "runfleetd-webhook"), ("Service", "runfleetd-admin"),
    ("Service", "runfleetd-metrics"),
    ("PodDisruptionBudget", "runfleetd"), ("NetworkPolicy", "runfleet-runners"),
    ("ValidatingAdmissionPolicy", "runfleet-runner-pods"),
    ("ValidatingAdmissionPolicyBinding", "runfleet-runner-pods"),
}
REPLICAS = {"staging": 2, "production": 3}


@pytest.fixture(scope="module")
def cluster(kube):
    """The control-plane and runner namespaces exist (namespaced dry-runs need them)."""
    namespaces = [o for o in kustomize_objects("production") if o["kind"] == "Namespace"]
    assert {n["metadata"]["name"] for n in namespaces} == {CONTROL_NS, RUNNER_NS}
    # For real, with their Pod Security labels, which dry-runs are judged by.
    kube.kubectl("apply", "--server-side", "--field-manager=runfleet-tests", "-f", "-",
                 input=yaml.safe_dump_all(namespaces))
    return kube


def server_dry_run(kube, text: str) -> str:
    cp = kube.kubectl("apply", "--dry-run=server", "--validate=strict", "--server-side",
                      "--field-manager=runfleet-tests", "-f", "-", input=text)
    # runfleetd's namespace enforces the "restricted" Pod Security level: the
    # apiserver warns about a workload that would violate it.
    assert "PodSecurity" not in cp.stderr, cp.stderr
    return cp.stdout


def names(objs):
    return {(o["kind"], o["metadata"]["name"]) for o in objs}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlay_renders_every_object(env):
    objs = kustomize_objects(env)
    have = names(objs)
    assert EXPECTED | {("Namespace", CONTROL_NS)} <= have, sorted(EXPECTED - have)
    cms = [n for k, n in have if k == "ConfigMap"]
    assert len(cms) == 1 and cms[0].startswith("runfleetd-config-"), cms  # hashed: rolls pods
    for o in objs:
        assert o["metadata"]["labels"].get("runfleet.dev/environment") == env, o["metadata"]["name"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlay_is_accepted_by_the_apiserver(cluster, env):
    out = server_dry_run(cluster, kustomize_text(env))
    assert "deployment.apps/runfleetd serverside-applied (server dry run)" in out, out
    assert out.count("(server dry run)") == len(kustomize_objects(env)), out


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlay_runfleetd_deployment(env):
    objs = kustomize_objects(env)
    dep = one(objs, "Deployment", "runfleetd")
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == REPLICAS[env]
    assert spec["nodeSelector"] == {"runfleet.dev/node-group": "cpu"}
    assert spec["serviceAccountName"] == "runfleetd"
    assert spec["priorityClassName"] == "runfleet-control-plane"
    assert spec["securityContext"]["runAsNonRoot"] is True
    (c,) = spec["containers"]
    assert c["image"] == f"{PLACEHOLDER_REGISTRY}/runfleet/runfleetd:0.1.0"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Ready as a standby too (a Lease-gated probe stalls rollouts); the
    # Services that carry traffic select the leader's label.
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    for name in ("runfleetd", "runfleetd-admin", "runfleetd-webhook"):
        assert one(objs, "Service", name)["spec"]["selector"]["runfleet.dev/role"] == "leader"
    assert "runfleet.dev/role" not in one(objs, "Service", "runfleetd-metrics")["spec"]["selector"]
    assert c["ports"][0]["containerPort"] == 8080
    assert_two_listeners(objs, dep)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    vols = {v["name"]: v for v in spec["volumes"]}
    cm = find(objs, "ConfigMap")[0]["metadata"]["name"]
    assert vols["config"]["configMap"]["name"] == cm
    assert vols["github"]["secret"]["secretName"] == "runfleet-github"  # by reference only
    assert not find(objs, "Secret"), "secrets are never shipped"
    pdb = one(objs, "PodDisruptionBudget", "runfleetd")
    assert 0 < pdb["spec"]["minAvailable"] < REPLICAS[env]


def assert_two_listeners(objs, dep):
    """The public port (listen) alone faces GitHub; probes, metrics and the
    admin Service use the admin port (admin_listen)."""
    tmpl = dep["spec"]["template"]
    (c,) = tmpl["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] == "admin", probe
    assert tmpl["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    for name in ("runfleetd", "runfleetd-webhook"):
        svc = find(objs, "Service", name)
        if svc:
            assert [p["targetPort"] for p in svc[0]["spec"]["ports"]] == ["http"], name
    admin = one(objs, "Service", "runfleetd-admin")
    assert admin["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in admin["spec"]["ports"]] == [(9090, "admin")]
    cm = find(objs, "ConfigMap", "runfleetd-config") or [
        o for o in find(objs, "ConfigMap") if o["metadata"]["name"].startswith("runfleetd-config")]
    cfg = yaml.safe_load(cm[0]["data"]["runfleetd.yaml"])
    assert cfg["listen"] == "0.0.0.0:8080" and cfg["admin_listen"] == "0.0.0.0:9090"
    # Runner pods send their hook reports to the admin Service.
    assert cfg["admin_url"] == f"http://runfleetd-admin.{CONTROL_NS}.svc:9090"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_helm_two_listeners(env):
    objs = helm_objects(env, "--set", "webhookService.enabled=true")
    assert_two_listeners(objs, one(objs, "Deployment", "runfleetd"))


@pytest.mark.parametrize("env", ["default", *ENVIRONMENTS])
def test_helm_lint(env):
    args = [kubeharness.tool("helm"), "lint", "--strict", "helm/runfleet",
            "--namespace", CONTROL_NS, "--set", f"registry={PLACEHOLDER_REGISTRY}"]
    if env != "default":
        args += ["-f", f"helm/runfleet/values-{env}.yaml"]
    out = run(args).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out


def test_helm_requires_a_registry():
    cp = kubeharness.subprocess.run(
        [str(kubeharness.tool("helm")), "template", "runfleet", "helm/runfleet"],
        cwd=kubeharness.REPO, capture_output=True, text=True)
    assert cp.returncode != 0 and "set registry" in cp.stderr


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_helm_renders_the_same_objects_as_the_overlay(env):
    kinds = names(helm_objects(env))
    assert EXPECTED <= kinds, sorted(EXPECTED - kinds)
    extra = {("ServiceMonitor", "runfleetd"), ("ConfigMap", "runfleet-dashboard")}
    assert kinds - EXPECTED - extra == {("ConfigMap", "runfleetd-config")}, kinds - EXPECTED


@pytest.fixture(scope="module")
def servicemonitor_crd(cluster):
    cluster.kubectl("apply", "-f", str(FIXTURES / "servicemonitor-crd.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/servicemonitors.monitoring.coreos.com")
    return cluster


@pytest.mark.parametrize("env", ["default", *ENVIRONMENTS])
def test_helm_chart_is_accepted_by_the_apiserver(servicemonitor_crd, env):
    text = helm_text(env)
    out = server_dry_run(servicemonitor_crd, text)
    assert out.count("(server dry run)") == len(helm_objects(env)), out


def test_helm_optional_objects_are_accepted(servicemonitor_crd):
    extra = ("--set", "serviceMonitor.enabled=true", "--set", "grafanaDashboard.enabled=true",
             "--set", "webhookService.enabled=true")
    objs = helm_objects("staging", *extra)
    assert find(objs, "ServiceMonitor", "runfleetd")
    # Metrics are on the admin listener: the monitor selects the metrics
    # Service (every replica, the standby too) and scrapes its admin port.
    (mon,) = find(objs, "ServiceMonitor", "runfleetd")
    assert [e["port"] for e in mon["spec"]["endpoints"]] == ["admin"]
    sel = mon["spec"]["selector"]["matchLabels"]
    matched = [o["metadata"]["name"] for o in find(objs, "Service")
               if sel.items() <= o["metadata"]["labels"].items()]
    assert matched == ["runfleetd-metrics"]
    for name in ("runfleetd", "runfleetd-admin", "runfleetd-webhook"):
        assert one(objs, "Service", name)["spec"]["selector"]["runfleet.dev/role"] == "leader"
    (c,) = one(objs, "Deployment", "runfleetd")["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert find(objs, "ConfigMap", "runfleet-dashboard")
    server_dry_run(servicemonitor_crd, helm_text("staging", *extra))
    # A field the CRD does not know is rejected: the check has teeth.
    bad = helm_text("staging", *extra).replace("interval: 30s", "intervall: 30s")
    cp = servicemonitor_crd.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                                    input=bad, check=False)
    assert cp.returncode != 0 and "intervall" in cp.stderr


@pytest.fixture(scope="module")
def empty_cluster():
    """A second, empty control plane: what an operator installs the chart into."""
    cluster = kubeharness.KubeCluster().start()
    try:
        cluster.kubectl("apply", "-f", str(FIXTURES / "servicemonitor-crd.yaml"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                        "crd/servicemonitors.monitoring.coreos.com")
        yield cluster
    finally:
        cluster.stop()


def test_helm_install_and_uninstall_on_an_empty_cluster(empty_cluster):
    """Helm's own install path against the real server (kubeVersion check,
    --create-namespace, ownership), then a clean uninstall."""
    helm = [kubeharness.tool("helm"), "--kubeconfig", empty_cluster.kubeconfig]
    out = run([*helm, "install", "runfleet", "helm/runfleet", "--namespace", CONTROL_NS,
               "--create-namespace", "-f", "helm/runfleet/values-production.yaml",
               "--set", f"registry={PLACEHOLDER_REGISTRY}"]).stdout
    assert "STATUS: deployed" in out, out
    dep = empty_cluster.api("GET", f"/apis/apps/v1/namespaces/{CONTROL_NS}/deployments/runfleetd")
    assert dep["spec"]["replicas"] == 3
    empty_cluster.api("GET", f"/api/v1/namespaces/{RUNNER_NS}")
    run([*helm, "uninstall", "runfleet", "--namespace", CONTROL_NS])
    left = empty_cluster.kubectl("get", "deployments,clusterroles,priorityclasses", "-A",
                                 "-l", "app.kubernetes.io/part-of=runfleet", "-o", "name").stdout
    assert left.strip() == "", left


def test_pod_security_violations_are_caught(cluster):
    bad = kustomize_text("staging").replace("runAsNonRoot: true", "runAsNonRoot: false")
    cp = cluster.kubectl("apply", "--dry-run=server", "--server-side",
                         "--field-manager=runfleet-tests", "-f", "-", input=bad)
    assert 'would violate PodSecurity "restricted' in cp.stderr, cp.stderr


def test_strict_validation_rejects_unknown_fields(cluster):
    bad = kustomize_text("staging").replace("revisionHistoryLimit: 5", "revisionHistoryLimt: 5")
    cp = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                         input=bad, check=False)
    assert cp.returncode != 0 and "revisionHistoryLimt" in cp.stderr


@pytest.fixture(scope="module")
def applied(cluster):
    """The production overlay applied for real (nothing runs: no controllers)."""
    cluster.kubectl("apply", "--server-side", "--field-manager=runfleet-tests", "-f", "-",
                    input=kustomize_text("production"))
    return cluster


SA = f"--as=system:serviceaccount:{CONTROL_NS}:runfleetd"


@pytest.mark.parametrize("verb,resource,ns,allowed", [
    ("create", "pods", RUNNER_NS, True),
    ("delete", "pods", RUNNER_NS, True),
    ("watch", "pods", RUNNER_NS, True),
    ("create", "secrets", RUNNER_NS, True),
    ("create", "pods", CONTROL_NS, False),
    ("create", "pods", "default", False),
    ("get", "secrets", CONTROL_NS, False),
    ("get", "secrets", "kube-system", False),
    ("list", "nodes", None, True),
    ("watch", "nodes", None, True),
    ("patch", "nodes", None, True),
    ("update", "nodes", None, False),
    ("create", "nodes", None, False),
    ("create", "events", "default", True),
    ("patch", "events", "default", False),
    ("create", "events", "kube-system", False),
    ("watch", "pods", "kube-system", True),
    ("list", "pods", "default", True),
    ("delete", "pods", "default", False),
    ("get", "pods/log", "default", False),
    ("delete", "nodes", None, False),
    ("create", "leases.coordination.k8s.io", CONTROL_NS, True),
    ("update", "leases.coordination.k8s.io/runfleetd", CONTROL_NS, True),
    ("update", "leases.coordination.k8s.io/other", CONTROL_NS, False),
    ("patch", "pods", CONTROL_NS, True),  # the leader's role label on its own pod
    ("delete", "pods", CONTROL_NS, False),
    ("patch", "pods", "kube-system", False),
    ("create", "deployments.apps", RUNNER_NS, False),
    ("create", "rolebindings.rbac.authorization.k8s.io", RUNNER_NS, False),
])
def test_runfleetd_rbac_is_least_privilege(applied, verb, resource, ns, allowed):
    args = ["auth", "can-i", verb, resource, SA]
    if ns:
        args += ["-n", ns]
    cp = applied.kubectl(*args, check=False)
    assert cp.stdout.strip() == ("yes" if allowed else "no"), (args, cp.stdout, cp.stderr)


def test_runner_service_account_has_no_token_and_no_rights(applied):
    sa = applied.api("GET", f"/api/v1/namespaces/{RUNNER_NS}/serviceaccounts/runfleet-runner")
    assert sa["automountServiceAccountToken"] is False
    def rights(user):
        return applied.kubectl("auth", "can-i", "--list", "-n", RUNNER_NS, f"--as={user}").stdout

    # Exactly what any authenticated identity without bindings may do.
    assert rights(f"system:serviceaccount:{RUNNER_NS}:runfleet-runner") == \
        rights(f"system:serviceaccount:{RUNNER_NS}:unbound")


# ---- what a runner pod may ask for (Pod Security and runner-pod-policy.yaml)

POD_FIXTURE = kubeharness.REPO / "manager" / "tests" / "fixtures" / "kube" / "pod-cpu.expected.json"


def runner_pod(ns: str = RUNNER_NS, dind: bool = False) -> dict:
    """A runner pod exactly as runfleetd's pod builder makes it (the unit
    tests' expected output), with the git cache hostPath; dind adds the
    privileged daemon container of a `docker: dind` pool."""
    import json
    pod = json.loads(POD_FIXTURE.read_text())
    pod["metadata"]["namespace"] = ns
    pod["metadata"].pop("ownerReferences", None)
    if dind:
        pod["spec"]["containers"].append({
            "name": "dind", "image": "registry.invalid/docker:dind",
            "securityContext": {"privileged": True}})
    return pod


def try_create(kube, pod: dict) -> str:
    """'' when the apiserver admits pod (server-side dry run: admission runs,
    nothing is stored), else its refusal."""
    cp = kube.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod),
                      check=False)
    return "" if cp.returncode == 0 else cp.stderr


def test_runner_pods_as_runfleetd_builds_them_are_admitted(applied):
    assert any(v.get("hostPath", {}).get("path") == "/var/cache/runfleet"
               for v in runner_pod()["spec"]["volumes"])
    assert try_create(applied, runner_pod()) == ""
    assert try_create(applied, runner_pod(dind=True)) == ""


def test_baseline_alone_would_refuse_them(applied):
    """Why the runner namespace enforces "privileged": under baseline, the
    namespace's label before, the same pod is refused for its hostPath."""
    ns = "runfleet-baseline-check"
    applied.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}))
    err = try_create(applied, runner_pod(ns))
    assert "violates PodSecurity" in err and "hostPath" in err, err


def _with(change) -> dict:
    pod = runner_pod()
    change(pod)
    return pod


@pytest.mark.parametrize("what,change,message", [
    ("a hostPath of /", lambda p: p["spec"]["volumes"].append(
        {"name": "root", "hostPath": {"path": "/"}}), "no hostPath but /var/cache/runfleet"),
    ("the cache's parent", lambda p: p["spec"]["volumes"].append(
        {"name": "var", "hostPath": {"path": "/var/cache"}}), "no hostPath but /var/cache/runfleet"),
    ("a privileged runner", lambda p: p["spec"]["containers"][0]["securityContext"].update(
        privileged=True, allowPrivilegeEscalation=True), "only the dind container"),
    ("a privileged init container", lambda p: p["spec"].update(initContainers=[
        {"name": "setup", "image": "registry.invalid/x", "securityContext": {"privileged": True}}]),
        "only the dind container"),
    ("an added capability", lambda p: p["spec"]["containers"][0]["securityContext"].update(
        capabilities={"add": ["NET_ADMIN"]}), "add capabilities"),
    ("the host network", lambda p: p["spec"].update(hostNetwork=True), "network, PID or IPC"),
    ("the host PID namespace", lambda p: p["spec"].update(hostPID=True), "network, PID or IPC"),
    ("a host port", lambda p: p["spec"]["containers"][0].update(
        ports=[{"containerPort": 80, "hostPort": 80}]), "host ports"),
    ("an unsafe sysctl", lambda p: p["spec"]["securityContext"].update(
        sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "sysctls"),
], ids=lambda x: x.replace(" ", "-") if isinstance(x, str) and " " in x else "")
def test_runner_pods_may_not_ask_for_more(applied, what, change, message):
    # A new policy is compiled asynchronously: wait until it refuses.
    pod = _with(change)
    err = applied.wait_for(f"the policy to refuse {what}", lambda: try_create(applied, pod),
                           timeout=20)
    assert "runfleet-runner-pods" in err and message in err, err


def test_the_policy_allows_the_cache_path_every_shipped_pool_uses():
    for objs in (kustomize_objects("production"), helm_objects("production")):
        (pol,) = find(objs, "ValidatingAdmissionPolicy", "runfleet-runner-pods")
        assert "'/var/cache/runfleet'" in pol["spec"]["validations"][0]["expression"]
    for env in ENVIRONMENTS:
        for cm in find(kustomize_objects(env), "ConfigMap") + find(helm_objects(env), "ConfigMap"):
            for text in cm.get("data", {}).values():
                # Shipped pools turn the cache off (cache_host_path: none) or use
                # the path the policy admits; no other path.
                for path in re.findall(r"cache_host_path:\s*([^\s,}]+)", text):
                    assert path in ("none", "/var/cache/runfleet"), (cm["metadata"], path)
    assert one(helm_objects("production"), "ValidatingAdmissionPolicy", "runfleet-runner-pods")["spec"] \
        == one(kustomize_objects("production"), "ValidatingAdmissionPolicy", "runfleet-runner-pods")["spec"]
