"""runfleetd's watches across kube-apiserver restarts, mid-burst, end to end
(the daemon, the GitHub simulator, kube-scheduler and kwok, as in
test_kube_e2e.py).

Twice during one burst the apiserver is stopped and started again. The
first time it comes back as it was: every watch breaks, and resumes from
the resourceVersion it last saw. The second time, while it is down, etcd's
history is compacted past every resourceVersion anyone holds
(KubeCluster.expire_resource_versions): the test apiserver has no watch
cache, so each watch that resumes is answered 410 Gone and runfleetd must
relist, deliver only what changed while it was blind, and go on. Both are
checked from /metrics and the log; a run in which the 410 did not happen
fails. Through both: every job ran once, on a runner of its own; no runner
name or JIT config had two pods; the scheduler never left a pod
Unschedulable (runfleetd asked for no more than was free); GPUs were never
overcommitted; nothing is left afterwards; GitHub saw no invalid request.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

from kube_e2e import (BURST_POOLS, SELECTOR, KubeDaemon, RunnerPlayer, assert_cleaned_up, assert_ran_once,
                      burst, finish, jobs_done, max_pods_at_once, runner_ns, sim, unfinished,
                      wait)  # noqa: F401  (fixtures)
from tests.test_runfleetd import app_key_files  # noqa: F401  (fixture)

# The daemon's three watches: Nodes, and two of Pods (the fleet's runner
# pods, and every bound pod of the cluster for what others request).
WATCHES = {"nodes": 1, "pods": 2}
RELISTED = re.compile(r'ts=(\S+) .*msg="watch relisted" resource=(\w+) objects=(\d+) '
                      r'added=(\d+) modified=(\d+) deleted=(\d+) ms=(\d+)')


def kube_counters(d: KubeDaemon) -> dict[str, float]:
    """The runfleet_kube_* counter samples, by 'name{labels}'."""
    return {k: v for k, v in d.metrics().items() if k.startswith("runfleet_kube_") and "_total" in k}


def per_resource(d: KubeDaemon, name: str, **labels: str) -> dict[str, float]:
    return {r: d.metric(name, resource=r, **labels) for r in WATCHES}


def done_count(sim, ids: list[int]) -> int:
    return sum(sim.job(j)["status"] == "completed" for j in ids)


def restart(kube, d: KubeDaemon, sim, ids: list[int], expire: bool) -> dict:
    """Restarts the apiserver (expiring every resourceVersion while it is
    down if expire) and says when, and how the burst stood."""
    remaining = len(ids) - done_count(sim, ids)
    assert remaining > 0, "the burst was over before the restart"
    t0, wall = time.monotonic(), time.time()
    kube.restart_apiserver(while_down=kube.expire_resource_versions if expire else None)
    return {"down_at": t0, "up_at": time.monotonic(), "down_wall": wall, "up_wall": time.time(), "remaining": remaining}


def relist_lines(log: str, since_wall: float) -> list[dict]:
    out = []
    for m in RELISTED.finditer(log):
        at = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
        if at >= since_wall:
            out.append({"at": at, "resource": m.group(2), "objects": int(m.group(3)),
                        "added": int(m.group(4)), "modified": int(m.group(5)),
                        "deleted": int(m.group(6)), "ms": int(m.group(7))})
    return out


def test_apiserver_restarts_and_410_gone_mid_burst_lose_and_double_nothing(
        kwok_cluster, eks_nodes, runner_ns, sim, tmp_path):
    kube, ns = kwok_cluster, runner_ns
    njobs = 80
    d = KubeDaemon(tmp_path, sim, kube, ns, BURST_POOLS).start()
    try:
        with kube.record_pods(ns, SELECTOR) as rec, RunnerPlayer(kube, ns, tmp_path / "pods") as player:
            wait(lambda: "runner pods listed" in d.log(), 30, "the first pod list", d)
            ids = burst(sim, njobs, slower=3)

            # 1. A plain restart: the watches break and resume where they were.
            wait(lambda: done_count(sim, ids) >= 8, 100, "the burst to be under way", d,
                 lambda: unfinished(sim, ids))
            restarts0 = per_resource(d, "runfleet_kube_watch_restarts_total")
            plain = restart(kube, d, sim, ids, expire=False)
            wait(lambda: all(v > restarts0[r] for r, v in
                             per_resource(d, "runfleet_kube_watch_restarts_total").items()),
                 30, "every watch to be started again", d)
            done_at_plain = done_count(sim, ids)
            wait(lambda: done_count(sim, ids) >= done_at_plain + 5, 100,
                 "jobs to complete after the restart", d, lambda: unfinished(sim, ids))

            # 2. A restart that leaves every resourceVersion compacted away.
            gone0 = per_resource(d, "runfleet_kube_watch_restarts_total", reason="gone")
            relists0 = per_resource(d, "runfleet_kube_watch_relists_total")
            before = kube_counters(d)
            expired = restart(kube, d, sim, ids, expire=True)
            wait(lambda: all(v >= relists0[r] + WATCHES[r] for r, v in
                             per_resource(d, "runfleet_kube_watch_relists_total").items()),
                 60, "every watch to relist after 410 Gone", d)
            gone = per_resource(d, "runfleet_kube_watch_restarts_total", reason="gone")
            assert all(gone[r] >= gone0[r] + WATCHES[r] for r in WATCHES), (gone0, gone)
            assert d.metric("runfleet_kube_watch_events_total", type="ERROR") >= sum(WATCHES.values())
            after = kube_counters(d)

            wait(lambda: jobs_done(sim, ids), 150, f"{njobs} jobs to complete", d,
                 lambda: unfinished(sim, ids))
            assert_cleaned_up(kube, ns, d)
        # The fake kubelet's own calls failed only while the apiserver was down.
        windows = [(r["down_at"], r["up_at"] + 5) for r in (plain, expired)]
        stray = [e for e, at in zip(player.errors, player.errors_at)
                 if not any(lo <= at <= hi for lo, hi in windows)]
        assert stray == [], stray

        assert_ran_once(sim, ids)
        assert rec.unschedulable() == [], rec.unschedulable()[:3]
        assert rec.gpu_overcommits() == [], rec.gpu_overcommits()[:5]
        # A pod create whose answer the restart swallowed keeps its runner's
        # place until the pod is gone, so no pool is ever over max_runners;
        # except when the pod was made and deleted before runfleetd's watch
        # saw it (then the delete's answer is all it knows, and the pod
        # may still be terminating: KUBERNETES.md, "Restarts of the API
        # server"), logged apart.
        log = d.log()
        for pool, limit in (("cpu", 10), ("gpu-1", 10), ("gpu-4", 4), ("gpu-8", 2)):
            unseen = len(re.findall(
                rf'msg="unanswered pod create: deleted before the watch saw it" runner=rf-{re.escape(pool)}-', log))
            assert max_pods_at_once(rec, pool) <= limit + unseen, (pool, unseen)
        # One pod per runner, and one per JIT config, ever.
        uids: dict[str, set[str]] = {}
        for e in rec.events:
            uids.setdefault(e.pod["metadata"]["annotations"]["runfleet.dev/runner-name"],
                            set()).add(e.pod["metadata"]["uid"])
        assert all(len(u) == 1 for u in uids.values()), {r: u for r, u in uids.items() if len(u) > 1}
        assert len(set(player.jit_configs.values())) == len(player.jit_configs)
        assert all(sim.job(j)["runner_name"] in uids for j in ids)
        log = d.log()
        relists = relist_lines(log, expired["down_wall"])
        assert {r["resource"] for r in relists} == set(WATCHES), relists
    finally:
        finish(d, kube, ns, sim)

    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    print(f"\nplain restart: apiserver down {plain['up_at'] - plain['down_at']:.1f}s, "
          f"{plain['remaining']} of {njobs} jobs left")
    print(f"410 restart: apiserver down {expired['up_at'] - expired['down_at']:.1f}s, "
          f"{expired['remaining']} jobs left; the last watch relisted "
          f"{max(r['at'] for r in relists) - expired['up_wall']:+.2f}s from its /readyz")
    for r in relists:
        print(f"  relisted {r['resource']}: {r['objects']} objects, +{r['added']} ~{r['modified']} "
              f"-{r['deleted']}, {r['ms']} ms from the 410")
    print("  runfleet_kube_* counters over the 410 restart: "
          + ", ".join(f"{k}={v:g}" for k, v in sorted(delta.items())))
    print("  runfleet_kube_requests_total over the run: "
          + ", ".join(f"{k.partition('{')[2][:-1]}={v:g}" for k, v in sorted(after.items())
                      if k.startswith("runfleet_kube_requests_total")))
