"""runfleetd end to end on the Kubernetes backend: the real daemon (ASan
build), the GitHub simulator, kube-apiserver with kube-scheduler binding the
runner pods to kwok's fake EKS nodes (tests/kube/kubeharness.py).

No container runs on a kwok node, so the test plays the runner's part: when
a runner pod is Running, RunnerPlayer starts the fake runner
(tests/sim/fake-runner/fake_runner.py) here, with the JIT config and hook
token from the pod's Secret and the pod's plain environment; it takes one
job from the simulator as actions/runner would, and when it exits its exit
code is written on the pod (runfleet.dev/test-exit-code), which kwok turns
into the pod's Succeeded/Failed. A pod deleted while its fake runner lives
stops it as the kubelet would (SIGTERM), or kills it (SIGKILL) when the
pod's node is gone.
"""

from __future__ import annotations

import signal
import time

import pytest

import kubeharness
from kube_e2e import (BURST_POOLS, POOL_GROUPS, SELECTOR, KubeDaemon, RunnerPlayer, assert_cleaned_up,
                      assert_ran_once, burst, finish, fleet_items, jobs_done, kube_pool, max_pods_at_once,
                      node_group, runner_ns, sim, unfinished, wait)  # noqa: F401  (fixtures)
from tests.test_runfleetd import app_key_files  # noqa: F401  (fixture)


@pytest.mark.parametrize("njobs", [30, 100])
def test_burst_is_bound_to_the_right_nodes_without_overcommit(
        kwok_cluster, eks_nodes, runner_ns, sim, tmp_path, njobs):
    kube, ns = kwok_cluster, runner_ns
    d = KubeDaemon(tmp_path, sim, kube, ns, BURST_POOLS).start()
    try:
        with kube.record_pods(ns, SELECTOR) as rec, RunnerPlayer(kube, ns, tmp_path / "pods") as player:
            wait(lambda: "runner pods listed" in d.log(), 30, "the first pod list", d)
            ids = burst(sim, njobs)
            wait(lambda: jobs_done(sim, ids), 100, f"{njobs} jobs to complete", d,
                 lambda: unfinished(sim, ids))
            assert_cleaned_up(kube, ns, d)
        assert player.errors == []
        assert_ran_once(sim, ids)
        assert rec.unschedulable() == [], rec.unschedulable()[:3]
        assert rec.gpu_overcommits() == [], rec.gpu_overcommits()[:5]
        groups: dict[str, str] = {}
        bound = {}
        for e in rec.events:
            if e.node:
                bound[e.name] = (e.pod["metadata"]["labels"]["runfleet.dev/pool"], e.node)
        for name, (pool, node) in bound.items():
            assert node_group(kube, node, groups) in POOL_GROUPS[pool], (name, pool, node)
        assert {p for p, _n in bound.values()} == set(POOL_GROUPS)
        # Every job was taken by a runner of one of these pods.
        runner_of = {e.pod["metadata"]["annotations"]["runfleet.dev/runner-name"]: e.name
                     for e in rec.events}
        assert all(sim.job(j)["runner_name"] in runner_of for j in ids)
        for pool in ("gpu-4", "gpu-8"):
            assert max_pods_at_once(rec, pool) <= {"gpu-4": 4, "gpu-8": 2}[pool]
    finally:
        finish(d, kube, ns, sim)


def test_unpullable_image_is_replaced_then_the_pool_is_blocked(
        kwok_cluster, eks_nodes, runner_ns, sim, tmp_path):
    kube, ns = kwok_cluster, runner_ns
    pools = [kube_pool("broken", ["linux", "cpu"], 1, "runfleet.dev/node-group: cpu",
                       min_idle=1, idle_timeout="300s",
                       image=f"{kubeharness.UNPULLABLE_REGISTRY}/runfleet/runner:test",
                       kubernetes="pending_timeout: 10s, image_pull_failures: 2")]
    d = KubeDaemon(tmp_path, sim, kube, ns, pools).start()
    try:
        with kube.record_pods(ns, SELECTOR) as rec:
            first = rec.wait("a pod that cannot pull its image", lambda e: any(
                (c.get("state") or {}).get("waiting", {}).get("reason") in ("ErrImagePull", "ImagePullBackOff")
                for c in (e.pod.get("status") or {}).get("containerStatuses") or []), timeout=30)
            t0 = first.at
            gone = rec.wait("the first pod to be deleted",
                            lambda e: e.name == first.name and e.type == "DELETED", timeout=30)
            assert gone.at - t0 <= 10 + 5, "deleted past its pending_timeout"
            second = rec.wait("its replacement", lambda e: e.name != first.name and e.node, timeout=40)
            assert second.node == "cpu-0"
            wait(lambda: d.metric("runfleet_kube_pool_blocked", pool="broken") == 1, 40,
                 "the pool to be blocked", d)
            assert d.metric("runfleet_pods_pending_seconds_count", pool="broken", outcome="timeout") >= 2
            log = d.log()
            assert "runner pod did not start in time; replacing it" in log
            assert "ErrImagePull" in log or "ImagePullBackOff" in log
            assert "the pool's image does not pull" in log
            wait(lambda: not fleet_items(kube, ns, "pods"), 30, "the last pod to go", d)
            # Blocked: no pod comes any more, though min_idle asks for one.
            time.sleep(3)
            names = {e.name for e in rec.events}
            assert len(names) == 2, names
            assert fleet_items(kube, ns, "pods") == []
    finally:
        finish(d, kube, ns, sim)


def test_a_node_deleted_mid_job_loses_its_runner_and_the_demand_moves(
        kwok_cluster, eks_nodes, runner_ns, sim, tmp_path):
    kube, ns = kwok_cluster, runner_ns
    pools = [kube_pool("gpu-8", ["linux", "gpu-8"], 1, "runfleet.dev/node-group: gpu-a100",
                       gpus=8, cpus=32, memory="256Gi")]
    d = KubeDaemon(tmp_path, sim, kube, ns, pools).start()
    lost_node = None
    try:
        with kube.record_pods(ns, SELECTOR) as rec, RunnerPlayer(kube, ns, tmp_path / "pods") as player:
            wait(lambda: "runner pods listed" in d.log(), 30, "the first pod list", d)
            long_job = sim.add_job(["self-hosted", "linux", "gpu-8"], duration=120)
            wait(lambda: sim.job(long_job)["status"] == "in_progress", 40, "the long job to run", d)
            # The pool's one runner is busy: this job waits in runfleetd's queue.
            next_job = sim.add_job(["self-hosted", "linux", "gpu-8"], duration=1)
            runner = sim.job(long_job)["runner_name"]
            pod = next(e for e in rec.events if e.node and
                       e.pod["metadata"]["annotations"]["runfleet.dev/runner-name"] == runner)
            lost_node = pod.node
            time.sleep(1)
            assert sim.job(next_job)["status"] == "queued"
            kube.delete_node(lost_node, pod_gc=True)
            wait(lambda: "backend lost a runner" in d.log(), 20, "the runner to be reported lost", d)
            wait(lambda: jobs_done(sim, [long_job, next_job]), 60, "both jobs to end", d)
            lost = sim.job(long_job)
            assert lost["lost"] and lost["conclusion"] == "failure", lost
            served = sim.job(next_job)
            assert served["conclusion"] == "success", served
            served_pod = next(e for e in rec.events if e.node and
                              e.pod["metadata"]["annotations"]["runfleet.dev/runner-name"]
                              == served["runner_name"])
            assert served_pod.node != lost_node
            assert served_pod.node.startswith("gpu-a100-")
            assert not [e for e in rec.events if e.node == lost_node and e.name != pod.name]
            assert_cleaned_up(kube, ns, d)
        assert player.exits[pod.name] == -signal.SIGKILL
        assert rec.unschedulable() == []
        assert rec.gpu_overcommits() == []
        assert "node of a runner is gone" in d.log()
    finally:
        finish(d, kube, ns, sim)
        if lost_node is not None:
            assert kube.pods_on_node(lost_node) == []


def test_killed_daemon_adopts_its_pods_and_doubles_none(
        kwok_cluster, eks_nodes, runner_ns, sim, tmp_path):
    kube, ns = kwok_cluster, runner_ns
    d = KubeDaemon(tmp_path, sim, kube, ns, BURST_POOLS).start()
    try:
        with kube.record_pods(ns, SELECTOR) as rec, RunnerPlayer(kube, ns, tmp_path / "pods") as player:
            wait(lambda: "runner pods listed" in d.log(), 30, "the first pod list", d)
            ids = [sim.add_job(labels, duration=8) for labels in
                   [["self-hosted", "linux", "cpu"]] * 6 + [["self-hosted", "linux", "gpu-1"]] * 6
                   + [["self-hosted", "linux", "gpu-8"]] * 2]
            wait(lambda: sum(sim.job(j)["status"] == "in_progress" for j in ids) >= 6, 60,
                 "jobs running", d)
            d.kill()
            at_kill = {p["metadata"]["name"] for p in fleet_items(kube, ns, "pods")
                       if not p["metadata"].get("deletionTimestamp")}
            busy = {sim.job(j)["runner_name"] for j in ids if sim.job(j)["status"] == "in_progress"}
            time.sleep(1)
            d.start()
            wait(lambda: "adopted runners of an earlier run" in d.log(), 30, "adoption", d)
            # More work once it is back (webhooks sent while it was down are
            # not redelivered: runfleetd does not read the deliveries API yet).
            ids += burst(sim, 12)
            wait(lambda: jobs_done(sim, ids), 100, "every job to complete", d,
                 lambda: unfinished(sim, ids))
            assert_cleaned_up(kube, ns, d)
        assert player.errors == []
        assert_ran_once(sim, ids)
        assert rec.unschedulable() == []
        assert rec.gpu_overcommits() == []
        # The pods of busy runners lived on to the end of their jobs: each
        # ended with its fake runner's exit code 0, not a delete (143).
        runner_pod = {e.pod["metadata"]["annotations"]["runfleet.dev/runner-name"]: e.name
                      for e in rec.events}
        log = d.log()
        for r in busy:
            assert runner_pod[r] in at_kill
            assert f'msg="runner adopted" runner={r} ' in log, r
            assert player.exits[runner_pod[r]] == 0, (r, player.exits)
        for pool, limit in (("cpu", 10), ("gpu-1", 10), ("gpu-4", 4), ("gpu-8", 2)):
            assert max_pods_at_once(rec, pool) <= limit, pool
        # One pod per runner name, never two.
        names = [e.pod["metadata"]["annotations"]["runfleet.dev/runner-name"]
                 for e in rec.events if e.type == "ADDED"]
        assert len(names) == len(set(names))
    finally:
        finish(d, kube, ns, sim)
