"""The harness itself: the pinned control plane starts, authenticates by
token, authorizes by RBAC and stores objects."""

import json
import os
import signal
import ssl
import subprocess
import urllib.error
import urllib.request

import kubeharness
import pytest


def test_apiserver_is_the_pinned_version(kube):
    want = kubeharness.versions()["KUBERNETES_VERSION"]
    assert kube.api("GET", "/version")["gitVersion"] == want
    out = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == want
    assert out["serverVersion"]["gitVersion"] == want


def test_requests_without_a_valid_token_are_rejected(kube):
    for token in ("", "not-the-token"):
        with pytest.raises(urllib.error.HTTPError) as e:
            kube.api("GET", "/api/v1/namespaces", token=token)
        assert e.value.code == 401


def test_serving_certificate_verifies_against_the_generated_ca(kube):
    ctx = ssl.create_default_context(cafile=str(kube.ca_file))
    req = urllib.request.Request(kube.server + "/readyz",
                                 headers={"Authorization": f"Bearer {kube.token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        assert r.read() == b"ok"


def test_objects_round_trip_through_etcd(kube):
    ns = "harness-roundtrip"
    kube.kubectl("create", "namespace", ns)
    try:
        kube.kubectl("-n", ns, "create", "configmap", "c", "--from-literal=k=v")
        got = kube.api("GET", f"/api/v1/namespaces/{ns}/configmaps/c")
        assert got["data"] == {"k": "v"}
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false")


def test_rbac_is_enforced_for_service_accounts(kube):
    # A service account without bindings may do nothing.
    cp = kube.kubectl("auth", "can-i", "list", "pods", "-n", "default",
                      "--as=system:serviceaccount:default:nobody", check=False)
    assert cp.stdout.strip() == "no"


# -- kube-scheduler and kwok on fake EKS nodes --------------------------------
# Pods here are bound by the real kube-scheduler and run by kwok's fake
# kubelets following tests/kube/kwok-stages.yaml.

import sys  # noqa: E402
import urllib.parse  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))

from deploylib import ENVIRONMENTS, terraform_eks_args  # noqa: E402
from kubeharness import GPU, pod_condition, pod_manifest  # noqa: E402

EFFECT = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute",
          "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


def status(pod):
    return pod.get("status") or {}


def test_node_groups_are_those_of_the_terraform_environments():
    """Each harness node group is a node group of a shipped environment:
    same name, labels, taints, instance type and GPU count."""
    tf = {}
    for env in ENVIRONMENTS:
        args = terraform_eks_args(env)
        cpu = args["cpu_node_group"]
        tf.setdefault(cpu["name"], []).append(
            (cpu["instance_types"], cpu["labels"], [], 0))
        for name, g in args["gpu_node_groups"].items():
            taints = [{"key": t["key"], "value": t["value"], "effect": EFFECT[t["effect"]]}
                      for t in g["taints"]]
            tf.setdefault(name, []).append(([g["instance_type"]], g["labels"], taints,
                                            g["gpu_count"]))
    assert set(kubeharness.NODE_GROUPS) == set(tf)
    for name, spec in kubeharness.NODE_GROUPS.items():
        itype = spec["instance_type"]
        assert any(itype in types and spec["labels"] == labels and spec["taints"] == taints
                   and kubeharness.INSTANCE_TYPES[itype]["gpus"] == gpus
                   for types, labels, taints, gpus in tf[name]), (name, tf[name])


def test_nodes_register_ready_with_their_gpus(kwok_cluster, eks_nodes):
    assert eks_nodes == ["cpu-0", "gpu-a100-0", "gpu-a100-1", "gpu-t4-0"]
    want_gpus = {"cpu-0": None, "gpu-a100-0": "8", "gpu-a100-1": "8", "gpu-t4-0": "4"}
    want_type = {"cpu-0": "m6i.8xlarge", "gpu-a100-0": "p4d.24xlarge",
                 "gpu-a100-1": "p4d.24xlarge", "gpu-t4-0": "g4dn.12xlarge"}
    for name in eks_nodes:
        node = kwok_cluster.api("GET", f"/api/v1/nodes/{name}")
        assert pod_condition(node, "Ready")["status"] == "True"
        alloc = node["status"]["allocatable"]
        assert alloc.get(GPU) == want_gpus[name]
        assert node["status"]["capacity"].get(GPU) == want_gpus[name]
        labels = node["metadata"]["labels"]
        assert labels["node.kubernetes.io/instance-type"] == want_type[name]
        assert labels["runfleet.dev/node-group"] == name.rsplit("-", 1)[0]
        taints = node["spec"].get("taints") or []
        if want_gpus[name]:
            assert taints == [{"key": GPU, "value": "true", "effect": "NoSchedule"}]
        else:
            assert taints == []
    # p4d.24xlarge: 96 vCPU less 2 kept back; 90 % of 1152 GiB.
    alloc = kwok_cluster.api("GET", "/api/v1/nodes/gpu-a100-0")["status"]["allocatable"]
    assert alloc["cpu"] == "94" and alloc["memory"] == f"{int(1152 * 0.9 * 1024)}Mi"


def test_kwok_manages_only_annotated_nodes(kwok_cluster):
    plain = kubeharness.node_manifest("unmanaged-0")
    del plain["metadata"]["annotations"][kubeharness.KWOK_NODE_ANNOTATION[0]]
    kwok_cluster.api("POST", "/api/v1/nodes", plain)
    try:
        # A managed node created after it gets Ready; the unmanaged one never does.
        kwok_cluster.create_node("managed-0")
        kwok_cluster.delete_node("managed-0")
        node = kwok_cluster.api("GET", "/api/v1/nodes/unmanaged-0")
        assert pod_condition(node, "Ready") is None
    finally:
        kwok_cluster.delete_node("unmanaged-0")


@pytest.mark.parametrize("exit_code,phase,reason", [(0, "Succeeded", "Completed"),
                                                    (3, "Failed", "Error")])
def test_gpu_pod_is_bound_to_its_group_runs_and_completes(kwok_cluster, eks_nodes, pod_ns,
                                                          exit_code, phase, reason):
    with kwok_cluster.record_pods(pod_ns) as rec:
        kwok_cluster.create_pod(pod_ns, pod_manifest("job", group="gpu-a100", gpus=2))
        pod = kwok_cluster.wait_pod_phase(pod_ns, "job", "Running")
        assert pod["spec"]["nodeName"] in ("gpu-a100-0", "gpu-a100-1")
        assert pod_condition(pod, "PodScheduled")["status"] == "True"
        assert pod_condition(pod, "Ready")["status"] == "True"
        st = status(pod)
        assert st["podIP"].startswith("10.244.") and st["startTime"]
        node = kwok_cluster.api("GET", f"/api/v1/nodes/{pod['spec']['nodeName']}")
        assert st["hostIP"] == node["status"]["addresses"][0]["address"]
        (cs,) = st["containerStatuses"]
        assert cs["name"] == "runner" and cs["ready"] is True and "running" in cs["state"]
        started = cs["state"]["running"]["startedAt"]

        kwok_cluster.complete_pod(pod_ns, "job", exit_code)
        pod = kwok_cluster.wait_pod_phase(pod_ns, "job", phase)
        (cs,) = status(pod)["containerStatuses"]
        term = cs["state"]["terminated"]
        assert term["exitCode"] == exit_code and term["reason"] == reason
        assert term["startedAt"] == started and term["finishedAt"]
        assert pod_condition(pod, "Ready")["status"] == "False"
    assert rec.phases("job") == ["Pending", "Running", phase]
    assert rec.unschedulable() == []


def test_init_containers_complete_before_the_pod_runs(kwok_cluster, eks_nodes, pod_ns):
    pod = pod_manifest("init", group="cpu")
    pod["spec"]["initContainers"] = [
        {"name": "setup", "image": "registry.invalid/setup:1"},
        {"name": "sidecar", "image": "registry.invalid/sidecar:1", "restartPolicy": "Always"}]
    kwok_cluster.create_pod(pod_ns, pod)
    got = kwok_cluster.wait_pod_phase(pod_ns, "init", "Running")
    setup, sidecar = status(got)["initContainerStatuses"]
    assert setup["name"] == "setup" and setup["state"]["terminated"]["reason"] == "Completed"
    assert sidecar["name"] == "sidecar" and "running" in sidecar["state"]


def test_pod_bigger_than_any_node_stays_pending_unschedulable(kwok_cluster, eks_nodes, pod_ns):
    kwok_cluster.create_pod(pod_ns, pod_manifest("huge", group="gpu-a100", gpus=9))
    pod = kwok_cluster.wait_pod(pod_ns, "huge", "unschedulable", kubeharness.is_unschedulable)
    assert status(pod)["phase"] == "Pending" and not pod["spec"].get("nodeName")
    msg = pod_condition(pod, "PodScheduled")["message"]
    assert f"Insufficient {GPU}" in msg and "0/4 nodes are available" in msg, msg


def test_recorder_sees_every_gpu_on_every_node_and_who_did_not_fit(kwok_cluster, eks_nodes,
                                                                   pod_ns):
    """Three whole-node A100 pods on two A100 nodes: two run, one waits until
    a node is free; at no moment does a node hold more than 8 GPUs."""
    with kwok_cluster.record_pods(pod_ns, "app=x8") as rec:
        for i in range(3):
            kwok_cluster.create_pod(pod_ns, pod_manifest(
                f"x8-{i}", group="gpu-a100", gpus=8, labels={"app": "x8"}))
        waiting = rec.wait("a pod that does not fit", lambda e: kubeharness.is_unschedulable(e.pod))
        running = [p for p in (f"x8-{i}" for i in range(3)) if p != waiting.name]
        for name in running:
            kwok_cluster.wait_pod_phase(pod_ns, name, "Running")
        kwok_cluster.complete_pod(pod_ns, running[0], 0)
        kwok_cluster.wait_pod_phase(pod_ns, running[0], "Succeeded")
        kwok_cluster.api("DELETE", f"/api/v1/namespaces/{pod_ns}/pods/{running[0]}")
        kwok_cluster.wait_pod_phase(pod_ns, waiting.name, "Running")
        kwok_cluster.create_pod(pod_ns, pod_manifest("other", group="gpu-a100", gpus=1))
    assert rec.gpu_overcommits() == []
    assert rec.max_gpus_in_use() == {"gpu-a100-0": 8, "gpu-a100-1": 8}
    assert {e.name for e in rec.unschedulable()} == {waiting.name}
    assert not rec.of("other")  # the label selector holds
    # The check has teeth: with a 4-GPU allowance every moment of a busy node counts.
    over = rec.gpu_overcommits({"gpu-a100-0": 4, "gpu-a100-1": 4})
    assert over and all(n == 8 and cap == 4 for _at, _node, n, cap in over)


def test_unpullable_image_gives_err_image_pull_then_backoff(kwok_cluster, eks_nodes, pod_ns):
    image = f"{kubeharness.UNPULLABLE_REGISTRY}/runfleet/runner-base:missing"
    kwok_cluster.create_pod(pod_ns, pod_manifest("nopull", image=image, group="cpu"))

    def waiting(reason):
        def pred(pod):
            cs = status(pod).get("containerStatuses") or []
            return cs and (cs[0]["state"].get("waiting") or {}).get("reason") == reason
        return pred
    pod = kwok_cluster.wait_pod(pod_ns, "nopull", "ErrImagePull", waiting("ErrImagePull"))
    assert status(pod)["phase"] == "Pending" and pod["spec"]["nodeName"] == "cpu-0"
    assert image in status(pod)["containerStatuses"][0]["state"]["waiting"]["message"]
    pod = kwok_cluster.wait_pod(pod_ns, "nopull", "ImagePullBackOff", waiting("ImagePullBackOff"))
    assert status(pod)["phase"] == "Pending"
    assert pod_condition(pod, "Ready")["status"] == "False"


def test_deleted_pod_goes_away(kwok_cluster, eks_nodes, pod_ns):
    with kwok_cluster.record_pods(pod_ns) as rec:
        kwok_cluster.create_pod(pod_ns, pod_manifest("gone", group="cpu"))
        kwok_cluster.wait_pod_phase(pod_ns, "gone", "Running")
        # A graceful delete (30 s by default): the kubelet removes it, not the clock.
        got = kwok_cluster.api("DELETE", f"/api/v1/namespaces/{pod_ns}/pods/gone")
        assert got["metadata"]["deletionTimestamp"]
        kwok_cluster.wait_pod_gone(pod_ns, "gone", timeout=15)
    events = rec.of("gone")
    assert events[-1].type == "DELETED"
    # As a kubelet does, it reports the containers' end (SIGTERM) before the Pod goes.
    (cs,) = status(events[-1].pod)["containerStatuses"]
    assert events[-1].phase == "Failed" and cs["state"]["terminated"]["exitCode"] == 143
    assert rec.phases("gone") == ["Pending", "Running", "Failed"]


def test_node_deletion(kwok_cluster, pod_ns):
    for name in ("gpu-t4-8", "gpu-t4-9"):
        kwok_cluster.create_node(name, "gpu-t4")
    for name in ("kept", "collected"):
        pod = pod_manifest(name, group="gpu-t4", gpus=4)
        pod["spec"]["nodeName"] = "gpu-t4-8" if name == "kept" else "gpu-t4-9"
        kwok_cluster.create_pod(pod_ns, pod)
        kwok_cluster.wait_pod_phase(pod_ns, name, "Running")
    with kwok_cluster.record_pods(pod_ns) as rec:
        # Without PodGC the Pod stays bound to a node that is gone...
        kwok_cluster.delete_node("gpu-t4-8")
        assert kwok_cluster.try_api("GET", "/api/v1/nodes/gpu-t4-8") is None
        pod = kwok_cluster.get_pod(pod_ns, "kept")
        assert pod["spec"]["nodeName"] == "gpu-t4-8" and status(pod)["phase"] == "Running"
        # ...with it, it fails with DisruptionTarget and is removed.
        kwok_cluster.delete_node("gpu-t4-9", pod_gc=True)
        assert kwok_cluster.get_pod(pod_ns, "collected") is None
    failed = [e for e in rec.of("collected") if e.phase == "Failed"]
    assert failed and pod_condition(failed[0].pod, "DisruptionTarget")["reason"] == "DeletionByPodGC"
    assert rec.of("collected")[-1].type == "DELETED"
    assert kwok_cluster.pods_on_node("gpu-t4-8")[0]["metadata"]["name"] == "kept"


def test_apiserver_restart_keeps_the_cluster_working(kwok_cluster, eks_nodes, pod_ns):
    with kwok_cluster.record_pods(pod_ns) as rec:
        kwok_cluster.create_pod(pod_ns, pod_manifest("before", group="cpu"))
        kwok_cluster.wait_pod_phase(pod_ns, "before", "Running")
        kwok_cluster.restart_apiserver()
        # Same CA, same port, same tokens; scheduler and kwok reconnected.
        assert kwok_cluster.api("GET", "/version")["gitVersion"]
        kwok_cluster.create_pod(pod_ns, pod_manifest("after", group="gpu-t4", gpus=1))
        kwok_cluster.wait_pod_phase(pod_ns, "after", "Running")
        kwok_cluster.complete_pod(pod_ns, "before", 0)
        kwok_cluster.wait_pod_phase(pod_ns, "before", "Succeeded")
    assert rec.phases("after") == ["Pending", "Running"]
    assert rec.phases("before") == ["Pending", "Running", "Succeeded"]
    assert rec.errors  # the watch did break


def watch_from(cluster, path, rv):
    """The first line a watch from resourceVersion rv answers, or its HTTP error."""
    q = urllib.parse.urlencode({"watch": "1", "resourceVersion": rv, "timeoutSeconds": "5"})
    req = urllib.request.Request(f"{cluster.server}{path}?{q}",
                                 headers={"Authorization": f"Bearer {cluster.token}"})
    try:
        with urllib.request.urlopen(req, context=cluster._ssl(), timeout=10) as r:
            return json.loads(r.readline() or b"{}")
    except urllib.error.HTTPError as e:
        return {"type": "HTTP", "object": {"code": e.code}}


def test_compaction_makes_old_resource_versions_gone(kwok_cluster, pod_ns):
    path = f"/api/v1/namespaces/{pod_ns}/configmaps"
    with kwok_cluster.record_pods(pod_ns) as rec:
        # The recorder's last version is from before these writes (no Pod changed).
        old = kwok_cluster.api("GET", path)["metadata"]["resourceVersion"]
        for i in range(2):
            kwok_cluster.api("POST", path, {"apiVersion": "v1", "kind": "ConfigMap",
                                            "metadata": {"name": f"c{i}"}})
        # Before compaction the old version still replays what came after it.
        got = watch_from(kwok_cluster, path, old)
        assert got["type"] == "ADDED" and got["object"]["metadata"]["name"] == "c0"
        assert rec.relists == 0
        rev = kwok_cluster.compact_etcd()
        assert rev > int(old)
        got = watch_from(kwok_cluster, path, old)
        assert got["type"] in ("ERROR", "HTTP") and got["object"]["code"] == 410, got
        # A watch from the compacted revision itself is still served.
        kwok_cluster.api("POST", path, {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "c2"}})
        got = watch_from(kwok_cluster, path, str(rev))
        assert got["type"] == "ADDED" and got["object"]["metadata"]["name"] == "c2"
        # The recorder's next reconnect is from a version now gone: it relists.
        kwok_cluster.wait_for("the recorder to relist", lambda: rec.relists > 0, timeout=15)


def test_service_account_token_from_the_token_request_api(kwok_cluster, pod_ns):
    token = kwok_cluster.service_account_token(pod_ns, "runner")
    review = kwok_cluster.api("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                              {"apiVersion": "authentication.k8s.io/v1",
                               "kind": "SelfSubjectReview"}, token=token)
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{pod_ns}:runner"
    with pytest.raises(urllib.error.HTTPError) as e:
        kwok_cluster.api("GET", f"/api/v1/namespaces/{pod_ns}/pods", token=token)
    assert e.value.code == 403
    # A token for another audience is not one the apiserver accepts.
    other = kwok_cluster.service_account_token(pod_ns, "runner", audiences=["vault"])
    with pytest.raises(urllib.error.HTTPError) as e:
        kwok_cluster.api("GET", "/api", token=other)
    assert e.value.code == 401


CHILD = """
import sys, time
sys.path.insert(0, {here!r})
import kubeharness
c = kubeharness.shared_cluster()
c.start_scheduler()
c.start_kwok()
print(" ".join(str(p.pid) for _n, p in c.procs), flush=True)
if {how!r} == "exception":
    raise RuntimeError("a test run that fails")
time.sleep(120)
"""


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", ["exception", "sigterm"])
def test_everything_started_is_stopped_when_a_run_ends_badly(tmp_path, how):
    here = str(Path(kubeharness.__file__).parent)
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(here=here, how=how)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        pids = [int(p) for p in child.stdout.readline().split()]
        assert len(pids) == 4, child.stderr.read()  # etcd, apiserver, scheduler, kwok
        assert all(alive(p) for p in pids)
        if how == "sigterm":
            child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) != 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not any(alive(p) for p in pids)
    assert not list(tmp_path.glob("runfleet-kube-*"))  # its work directory is gone too
