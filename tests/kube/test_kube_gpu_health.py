"""A failed pre-job GPU check on the Kubernetes backend, end to end: the
real runfleet-hook runs as the runner's job-started hook (through the
stand-in NVML library, with uncorrectable ECC errors on the first runner's
node), reports to runfleetd, and runfleetd cordons (or taints) that node on
the real kube-apiserver, posts an Event on it, keeps the node's GPUs out of
capacity and places later GPU jobs only on the other node; when the
operator lifts the cordon (or taint), its GPUs come back."""

from __future__ import annotations

import urllib.parse

import pytest

from kube_e2e import (FLEET, SELECTOR, KubeDaemon, RunnerPlayer, finish, jobs_done, kube_pool,
                      runner_ns, sim, unfinished, wait)  # noqa: F401  (fixtures)
from tests.runfleetd import bin_dir
from tests.test_runfleetd import app_key_files  # noqa: F401  (fixture)

NVML = bin_dir().parent / "lib" / "libnvml_fake.so"
GPU_JOB = ["self-hosted", "linux", "gpu"]
REASON = "RunfleetGPUUnhealthy"
TAINT = {"key": "runfleet.dev/gpu-unhealthy", "value": "true", "effect": "NoSchedule"}


def gpu_events(kube, node: str) -> list[dict]:
    """The GPU-unhealthy Events on this node (by uid: the node of the same
    name in an earlier test had its own)."""
    uid = kube.api("GET", f"/api/v1/nodes/{node}")["metadata"]["uid"]
    sel = urllib.parse.quote(f"involvedObject.kind=Node,involvedObject.name={node},"
                             f"involvedObject.uid={uid}")
    items = kube.api("GET", f"/api/v1/namespaces/default/events?fieldSelector={sel}")["items"]
    return [e for e in items if e.get("reason") == REASON]


def runner_of(event) -> str:
    return event.pod["metadata"]["annotations"]["runfleet.dev/runner-name"]


def marked(kube, node: str, action: str) -> bool:
    spec = kube.api("GET", f"/api/v1/nodes/{node}")["spec"]
    if action == "cordon":
        return spec.get("unschedulable") is True
    return any({k: t.get(k) for k in TAINT} == TAINT for t in spec.get("taints") or [])


def lift(kube, node: str, action: str) -> None:
    """What the operator does: kubectl uncordon, or kubectl taint ...-."""
    if action == "cordon":
        patch = {"spec": {"unschedulable": False}}
    else:
        taints = kube.api("GET", f"/api/v1/nodes/{node}")["spec"]["taints"]
        patch = {"spec": {"taints": [t for t in taints if t["key"] != TAINT["key"]]}}
    kube.api("PATCH", f"/api/v1/nodes/{node}", patch, content_type="application/merge-patch+json")


@pytest.mark.parametrize("action", ["cordon", "taint"])
def test_failed_gpu_check_marks_the_node_and_later_jobs_go_elsewhere(
        kwok_cluster, eks_nodes, runner_ns, sim, tmp_path, action):
    kube, ns = kwok_cluster, runner_ns
    assert NVML.exists(), f"{NVML} is built with the tests (RUNFLEET_TESTS=ON)"
    pools = [kube_pool("gpu-1", ["linux", "gpu"], 4, "runfleet.dev/node-group: gpu-a100",
                       gpus=1, cpus=4, memory="16Gi")]
    broken: list[str] = []  # the node whose GPU fails its check, once chosen

    def hooks_env(pod: dict) -> dict:
        node = pod["spec"]["nodeName"]
        if not broken:
            broken.append(node)
        env = {"ACTIONS_RUNNER_HOOK_JOB_STARTED": str(bin_dir() / "pre-job.sh"),
               "RUNFLEET_NVML_LIB": str(NVML), "FAKE_NVML_COUNT": "1",
               "FAKE_NVML_UTIL": "0:50", "FAKE_NVML_MEM": "0:1073741824",
               "RUNFLEET_GIT_CACHE": "0"}
        if node == broken[0]:
            env["FAKE_NVML_ECC"] = "0:3"
        return env

    d = KubeDaemon(tmp_path, sim, kube, ns, pools)
    if action == "taint":
        access = f"kubeconfig: {kube.kubeconfig}}}"
        assert access in d.config_text
        d.config_text = d.config_text.replace(
            access, f"kubeconfig: {kube.kubeconfig}, gpu_unhealthy: {{action: taint}}}}")
        d.config_path.write_text(d.config_text)
    d.start()
    try:
        with kube.record_pods(ns, SELECTOR) as rec, \
                RunnerPlayer(kube, ns, tmp_path / "pods", env_for=hooks_env) as player:
            wait(lambda: "runner pods listed" in d.log(), 30, "the first pod list", d)
            first = sim.add_job(GPU_JOB, duration=1)
            wait(lambda: jobs_done(sim, [first]), 60, "the first job to end", d,
                 lambda: unfinished(sim, [first]))
            job = sim.job(first)
            # The hook failed the job before its steps ran.
            assert job["conclusion"] == "failure", job
            assert job["report"]["steps_ran"] is False, job["report"]
            bad = next(e.node for e in rec.events if e.node and runner_of(e) == job["runner_name"])
            assert broken == [bad]
            other = next(n for n in eks_nodes if n.startswith("gpu-a100-") and n != bad)

            # Cordoned (tainted) on the apiserver, with one Event saying why.
            wait(lambda: marked(kube, bad, action), 20, f"{bad} to be marked ({action})", d)
            wait(lambda: gpu_events(kube, bad), 20, "the GPU-unhealthy Event", d)
            events = gpu_events(kube, bad)
            assert len(events) == 1, events
            ev = events[0]
            assert ev["type"] == "Warning"
            assert ev["involvedObject"]["uid"] == kube.api("GET", f"/api/v1/nodes/{bad}")["metadata"]["uid"]
            assert job["runner_name"] in ev["message"] and "(ecc)" in ev["message"]
            words = "cordoned the node" if action == "cordon" else "tainted the node"
            assert "GPU 0" in ev["message"] and words in ev["message"]
            assert ev["metadata"]["labels"]["runfleet.dev/fleet"] == FLEET
            assert not marked(kube, other, "cordon") and not marked(kube, other, "taint")
            if action == "taint":  # the node stays schedulable for what tolerates the taint
                assert not marked(kube, bad, "cordon")
            assert d.metric("runfleet_gpu_health_failures_total", pool="gpu-1") == 1
            assert d.metric("runfleet_hook_failures_total", hook="pre-job", reason="ecc") == 1
            wait(lambda: d.pools_state()["gpu-1"]["capacity"]["gpus_unhealthy"] == 8, 10,
                 "the node's 8 GPUs out of capacity", d)
            log = d.log()
            assert f"node {'cordoned' if action == 'cordon' else 'tainted'} after a failed GPU check" in log
            assert "GPU-unhealthy node marked on the cluster" in log

            # Later GPU jobs run, and only on the other node.
            later = [sim.add_job(GPU_JOB, duration=1) for _ in range(6)]
            wait(lambda: jobs_done(sim, later), 90, "the later jobs", d, lambda: unfinished(sim, later))
            for j in later:
                assert sim.job(j)["conclusion"] == "success", sim.job(j)
            first_pod = next(e.name for e in rec.events if runner_of(e) == job["runner_name"])
            bound = {e.name: e.node for e in rec.events if e.node}
            later_nodes = {n for name, n in bound.items() if name != first_pod}
            assert later_nodes == {other}, bound
            assert len(gpu_events(kube, bad)) == 1
            assert player.errors == []

            # The operator lifts the mark: the GPUs come back into capacity.
            lift(kube, bad, action)
            wait(lambda: d.pools_state()["gpu-1"]["capacity"]["gpus_unhealthy"] == 0, 20,
                 "the GPUs back in capacity", d)
            assert "GPU-unhealthy mark lifted; GPUs back in capacity" in d.log()
        assert rec.unschedulable() == [], rec.unschedulable()[:3]
    finally:
        finish(d, kube, ns, sim)
