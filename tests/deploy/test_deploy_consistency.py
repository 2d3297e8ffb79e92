"""One fleet, described in several places, must agree with itself.

The runfleetd pools (kubernetes/overlays/<env>/runfleetd.yaml and
helm/runfleet/values-<env>.yaml), the node groups of
terraform/environments/<env> (instance types, labels, taints), the NVIDIA
device plugin's placement, the Packer AMIs, the image names and the tool
versions are written in different languages; these tests fail when they
drift apart."""

import json
import re
import tomllib

import kubeharness
import pytest
import yaml
from deploylib import (ENVIRONMENTS, PLACEHOLDER_REGISTRY, REPO, find, hcl, helm_config,
                       helm_objects, kustomize_objects, load_all, one, overlay_config, run,
                       runfleetd_config, terraform_eks_args)

# AWS's published sizes of the instance types the environments use.
INSTANCES = {
    "m6i.4xlarge": {"vcpu": 16, "mem_gib": 64, "gpus": 0},
    "m6i.8xlarge": {"vcpu": 32, "mem_gib": 128, "gpus": 0},
    "g4dn.12xlarge": {"vcpu": 48, "mem_gib": 192, "gpus": 4, "gpu": "t4"},
    "p4d.24xlarge": {"vcpu": 96, "mem_gib": 1152, "gpus": 8, "gpu": "a100"},
    "p5.48xlarge": {"vcpu": 192, "mem_gib": 2048, "gpus": 8, "gpu": "h100"},
}
# Kept free on every node for the kubelet, system daemons and DaemonSets.
RESERVED_VCPU = 2
USABLE_MEMORY = 0.9
EFFECT = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute",
          "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
# The GPU node groups the issue asks for.
WANTED_GPU_GROUPS = {
    "staging": {"g4dn.12xlarge"},
    "production": {"p4d.24xlarge", "p5.48xlarge"},
}
METRICS = {
    "runfleet_jobs_queued", "runfleet_runners", "runfleet_job_wait_seconds",
    "runfleet_webhooks_total", "runfleet_github_requests_total",
    "runfleet_github_ratelimit_remaining", "runfleet_capacity", "runfleet_build_info",
    "runfleet_job_duration_seconds", "runfleet_gpu_utilization_ratio",
    "runfleet_gpu_health_failures_total", "runfleet_gpus", "runfleet_github_ratelimit_limit",
    "runfleet_github_hold_seconds", "runfleet_github_secondary_limited_total",
    "runfleet_recovery_runs_total", "runfleet_recovery_redelivered_total",
    "runfleet_recovery_jobs_found_total", "runfleet_recovery_errors_total",
    "process_resident_memory_bytes", "process_virtual_memory_bytes", "process_cpu_seconds_total",
    "process_open_fds", "process_max_fds", "process_start_time_seconds",
    "runfleet_leader", "runfleet_leader_transitions_total",
}
HISTOGRAMS = {"runfleet_job_wait_seconds", "runfleet_job_duration_seconds"}


def gib(quantity: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti)?", str(quantity))
    assert m, quantity
    scale = {"Ki": 1 / 2**20, "Mi": 1 / 2**10, "Gi": 1, "Ti": 1024, None: 1 / 2**30}[m.group(2)]
    return float(m.group(1)) * scale


def node_groups(env: str) -> dict:
    """{name: {instance_type, gpu_count, labels, taints (k8s spelling), gpu}} from Terraform."""
    args = terraform_eks_args(env)
    cpu = args["cpu_node_group"]
    groups = {cpu["name"]: {
        "instance_types": cpu["instance_types"], "labels": cpu["labels"],
        "taints": [], "gpu": False, "gpu_count": 0,
    }}
    for name, g in args["gpu_node_groups"].items():
        groups[name] = {
            "instance_types": [g["instance_type"]], "labels": g["labels"], "gpu": True,
            "gpu_count": g["gpu_count"], "gpu_type": g["gpu_type"],
            "taints": [{"key": t["key"], "value": t["value"], "effect": EFFECT[t["effect"]]}
                       for t in g["taints"]],
        }
    return groups


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    for t in tolerations or []:
        if t.get("effect") not in (None, "", taint["effect"]):
            continue
        op = t.get("operator", "Equal")
        if op == "Exists" and t.get("key") in (None, taint["key"]):
            return True
        if op == "Equal" and t.get("key") == taint["key"] and t.get("value") == taint["value"]:
            return True
    return False


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_helm_values_and_overlay_configure_the_same_fleet(env):
    assert helm_config(env) == overlay_config(env)


def test_base_and_default_chart_configure_the_same_fleet():
    base = load_all(run([kubeharness.tool("kustomize"), "build", "kubernetes/base"]).stdout)
    assert runfleetd_config(base) == helm_config("default")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_config_is_for_the_kubernetes_backend(env):
    cfg = overlay_config(env)
    assert cfg["listen"] == "0.0.0.0:8080"  # reachable by the webhook Services
    assert cfg["admin_listen"] == "0.0.0.0:9090"  # by probes, Prometheus and runner pods
    assert cfg["backend"]["type"] == "kubernetes"
    kcfg = cfg["backend"]["kubernetes"]
    assert kcfg["namespace"] == "runfleet-runners" and kcfg["leader_election"] is True
    lease_role = one(kustomize_objects(env), "Role", "runfleetd-leader-election")
    assert any(kcfg["lease_name"] in r.get("resourceNames", []) for r in lease_role["rules"])
    for key in ("webhook_secret_file", "app"):
        assert key in cfg["github"]
    assert cfg["github"]["webhook_secret_file"].startswith("/etc/runfleet/github/")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_pool_lands_on_exactly_one_node_group_that_fits_it(env):
    groups = node_groups(env)
    for pool in overlay_config(env)["pools"]:
        name, res = pool["name"], pool["resources"]
        matching = [g for g, spec in groups.items() if selects(pool["node_selector"], spec["labels"])]
        assert len(matching) == 1, f"{env}/{name}: node_selector matches {matching}"
        group = groups[matching[0]]
        for taint in group["taints"]:
            assert tolerates(pool.get("tolerations"), taint), f"{env}/{name} does not tolerate {taint}"
        gpus = res.get("gpus", 0)
        assert bool(gpus) == group["gpu"], f"{env}/{name}: gpus={gpus} on {matching[0]}"
        for itype in group["instance_types"]:
            inst = INSTANCES[itype]
            assert gpus <= inst["gpus"], f"{env}/{name}: {gpus} GPUs > {itype}'s {inst['gpus']}"
            per_node = max(1, inst["gpus"] // gpus) if gpus else 1
            # All of a node's GPUs must be usable: the CPU and memory asked per
            # GPU times the runners that fit must fit the node too.
            assert res["cpus"] * per_node <= inst["vcpu"] - RESERVED_VCPU, f"{env}/{name} on {itype}"
            assert gib(res["memory"]) * per_node <= inst["mem_gib"] * USABLE_MEMORY, f"{env}/{name} on {itype}"
        if gpus:
            assert group["gpu_type"] in pool["labels"], f"{env}/{name} lacks label {group['gpu_type']}"
            assert f"gpu-{gpus}" in pool["labels"], f"{env}/{name} lacks label gpu-{gpus}"
            assert "gpu" in pool["labels"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_gpu_node_group_has_a_pool_and_the_wanted_instance_type(env):
    groups = node_groups(env)
    pools = overlay_config(env)["pools"]
    gpu_groups = {g: s for g, s in groups.items() if s["gpu"]}
    assert {s["instance_types"][0] for s in gpu_groups.values()} == WANTED_GPU_GROUPS[env]
    for g, spec in gpu_groups.items():
        inst = INSTANCES[spec["instance_types"][0]]
        assert spec["gpu_count"] == inst["gpus"] and spec["gpu_type"] == inst["gpu"], g
        assert any(selects(p["node_selector"], spec["labels"]) for p in pools), f"no pool uses {g}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_pool_names_and_label_sets_are_unique(env):
    pools = overlay_config(env)["pools"]
    assert len({p["name"] for p in pools}) == len(pools)
    assert len({frozenset(p["labels"]) for p in pools}) == len(pools)
    for p in pools:
        assert p["labels"][:2] == ["self-hosted", "linux"], p["name"]
        assert 0 <= p["min_idle"] <= p["max_runners"], p["name"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("render", ["kustomize", "helm"])
def test_device_plugin_runs_on_every_gpu_node_and_no_other(env, render):
    objs = kustomize_objects(env) if render == "kustomize" else helm_objects(env)
    ds = one(objs, "DaemonSet", "nvidia-device-plugin")["spec"]["template"]["spec"]
    for name, spec in node_groups(env).items():
        assert selects(ds["nodeSelector"], spec["labels"]) == spec["gpu"], name
        for taint in spec["taints"]:
            assert tolerates(ds["tolerations"], taint), (name, taint)
    image = ds["containers"][0]["image"]
    assert re.fullmatch(r"nvcr\.io/nvidia/k8s-device-plugin:v\d+\.\d+\.\d+", image), image


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_device_plugin_is_the_same_in_kustomize_and_helm(env):
    k = one(kustomize_objects(env), "DaemonSet", "nvidia-device-plugin")["spec"]["template"]["spec"]
    h = one(helm_objects(env), "DaemonSet", "nvidia-device-plugin")["spec"]["template"]["spec"]
    assert k == h


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_deployment_is_the_same_in_kustomize_and_helm(env):
    k = one(kustomize_objects(env), "Deployment", "runfleetd")["spec"]
    h = one(helm_objects(env), "Deployment", "runfleetd")["spec"]
    for spec in (k, h):
        tmpl = spec["template"]
        tmpl["metadata"]["labels"] = {a: b for a, b in tmpl["metadata"]["labels"].items()
                                      if a in ("app.kubernetes.io/name", "app.kubernetes.io/component")}
        tmpl["metadata"]["annotations"].pop("checksum/config", None)
        for v in tmpl["spec"]["volumes"]:
            if "configMap" in v:
                v["configMap"]["name"] = "runfleetd-config"  # kustomize appends a hash
    assert k == h


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_images_point_at_the_images_this_repo_builds(env):
    chart = yaml.safe_load((REPO / "helm/runfleet/Chart.yaml").read_text())
    version = chart["appVersion"]
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(rf"project\(runfleet VERSION {re.escape(version)}\b", cmake), "chart appVersion != project version"
    for pool in overlay_config(env)["pools"]:
        want = "runner-gpu" if pool["resources"].get("gpus") else "runner-base"
        assert pool["runner"]["image"] == f"{PLACEHOLDER_REGISTRY}/runfleet/{want}:{version}", pool["name"]
        assert pool["runner"]["command"] == "/home/runner/run.sh"
        assert (REPO / "images" / want / "Dockerfile").is_file()
    dep = one(kustomize_objects(env), "Deployment", "runfleetd")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"/runfleet/runfleetd:{version}")
    assert (REPO / "images/runfleetd/Dockerfile").is_file()


def test_packer_amis_are_the_ones_terraform_looks_up():
    eks = (REPO / "terraform/modules/eks/main.tf").read_text()
    for name in ("eks-base", "eks-gpu"):
        doc = hcl(f"ami/{name}/packer.pkr.hcl")
        src = next(iter(doc["source"][0].values()))
        src = next(iter(src.values()))
        assert src["ami_name"].startswith(f"runfleet-{name}-${{var.kubernetes_version}}-"), src["ami_name"]
        assert f'"runfleet-{name}-${{var.kubernetes_version}}-"' in eks, f"eks module does not look up {name}"
        k8s = next(v for v in doc["variable"] if "kubernetes_version" in v)["kubernetes_version"]["default"]
        tf = hcl("terraform/modules/eks/variables.tf")
        tf_default = next(v for v in tf["variable"] if "kubernetes_version" in v)["kubernetes_version"]["default"]
        assert k8s == tf_default
    for env in ENVIRONMENTS:
        env_vars = hcl(f"terraform/environments/{env}/variables.tf")
        d = next(v for v in env_vars["variable"] if "kubernetes_version" in v)["kubernetes_version"]["default"]
        assert d == tf_default, env
    # The apiserver the tests use is that Kubernetes minor version.
    pin = kubeharness.versions()["KUBERNETES_VERSION"]
    assert pin.startswith(f"v{tf_default}."), (pin, tf_default)


def test_mise_pins_the_versions_the_tests_build():
    mise = tomllib.loads((REPO / "mise.toml").read_text())["tools"]
    v = {k: x.lstrip("v") for k, x in kubeharness.versions().items()}
    assert mise["opentofu"] == v["OPENTOFU_VERSION"]
    assert mise["kubectl"] == v["KUBERNETES_VERSION"]
    assert mise["helm"] == v["HELM_VERSION"]
    assert mise["kustomize"] == v["KUSTOMIZE_VERSION"]
    assert mise["packer"] == v["PACKER_VERSION"]
    assert mise["actionlint"] == v["ACTIONLINT_VERSION"]
    assert mise["kwok"] == v["KWOK_VERSION"]
    pkg = json.loads((REPO / "package.json").read_text())
    assert mise["just"] == pkg["devDependencies"]["rust-just"]


def test_grafana_dashboard_uses_exactly_the_runfleet_metrics():
    dash = json.loads((REPO / "helm/runfleet/dashboards/runfleet.json").read_text())
    used = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            for m in re.findall(r"\b(?:runfleet|process)_[a-z_]+", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", m)
                assert base in METRICS, f"unknown metric {m} in panel {panel['title']!r}"
                if m != base:
                    assert base in HISTOGRAMS, m
                used.add(base)
    assert used == METRICS, f"metrics without a panel: {sorted(METRICS - used)}"
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_helm_dashboard_configmap_carries_the_dashboard_file():
    objs = helm_objects("production")
    cm = one(objs, "ConfigMap", "runfleet-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    on_disk = json.loads((REPO / "helm/runfleet/dashboards/runfleet.json").read_text())
    assert json.loads(cm["data"]["runfleet.json"]) == on_disk
    assert find(objs, "ServiceMonitor", "runfleetd")
