"""The example workflows in docs/examples pass actionlint (with the labels of
the shipped pools as the known self-hosted labels), every job's runs-on is
served by a pool of some environment, and the design's `runs-on: gpu` is
used by an example and goes to a one-GPU pool in every shipped config."""

import kubeharness
import pytest
import yaml
from deploylib import ENVIRONMENTS, REPO, helm_config, overlay_config, run

EXAMPLES = sorted((REPO / "docs/examples").glob("*.yml"))


def pool_labels() -> dict[str, list[tuple[str, str]]]:
    """label set -> [(env, pool)]"""
    out = {}
    for env in ENVIRONMENTS:
        for pool in overlay_config(env)["pools"]:
            out.setdefault(frozenset(pool["labels"]), []).append((env, pool["name"]))
    return out


def test_there_are_examples_for_cpu_and_gpu_pools():
    assert len(EXAMPLES) >= 3, EXAMPLES


def test_actionlint(tmp_path):
    labels = sorted({label for s in pool_labels() for label in s} - {"self-hosted", "linux", "x64"})
    config = tmp_path / "actionlint.yaml"
    config.write_text(yaml.safe_dump({"self-hosted-runner": {"labels": labels}}))
    run([kubeharness.tool("actionlint"), "-config-file", config, "-shellcheck=shellcheck",
         *EXAMPLES])


def test_actionlint_rejects_an_unknown_label(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  j:\n    runs-on: [self-hosted, gpu-9000]\n"
                   "    steps:\n      - run: echo hi\n")
    config = tmp_path / "actionlint.yaml"
    config.write_text(yaml.safe_dump({"self-hosted-runner": {"labels": ["gpu"]}}))
    cp = kubeharness.subprocess.run(
        [str(kubeharness.tool("actionlint")), "-config-file", str(config), str(bad)],
        capture_output=True, text=True)
    assert cp.returncode != 0 and "gpu-9000" in cp.stdout


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_job_is_served_by_a_pool(example):
    wf = yaml.safe_load(example.read_text())
    pools = pool_labels()
    for name, job in wf["jobs"].items():
        want = job["runs-on"]
        want = {want} if isinstance(want, str) else set(want)
        served = [p for labels, ps in pools.items() if want <= labels for p in ps]
        assert served, f"{example.name}: job {name} runs-on {sorted(want)}: no pool has those labels"


def routed_pool(pools: list[dict], runs_on: set[str]) -> dict | None:
    """The pool runfleetd gives a job of these labels (sched_match_pool in
    manager/src/scheduler.c): of the pools having every label but
    self-hosted, the one with the fewest labels, the first on a tie."""
    best = None
    for pool in pools:
        have = {label.lower() for label in pool["labels"]} | {"self-hosted"}
        if {label.lower() for label in runs_on} <= have and (
                best is None or len(pool["labels"]) < len(best["labels"])):
            best = pool
    return best


def test_an_example_says_runs_on_gpu():
    said = [(e.name, name) for e in EXAMPLES
            for name, job in yaml.safe_load(e.read_text())["jobs"].items() if job["runs-on"] == "gpu"]
    assert said, "no example workflow says runs-on: gpu (the design's first example)"


CONFIGS = [(f"overlay {env}", lambda env=env: overlay_config(env)["pools"]) for env in ENVIRONMENTS] + \
    [(f"helm {env}", lambda env=env: helm_config(env)["pools"]) for env in ENVIRONMENTS] + \
    [("local example", lambda: yaml.safe_load((REPO / "manager/examples/local.yaml").read_text())["pools"])]


@pytest.mark.parametrize("pools", [c[1] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_runs_on_gpu_goes_to_a_one_gpu_pool(pools):
    pool = routed_pool(pools(), {"gpu"})
    assert pool is not None, "no pool has the label gpu"
    assert pool["resources"]["gpus"] == 1, pool
    # A CPU job never lands there, nor a gpu job on a CPU pool.
    assert routed_pool(pools(), {"self-hosted", "linux", "cpu"})["resources"].get("gpus", 0) == 0


def test_routing_mirror_takes_the_fewest_labels_then_the_first():
    pools = [{"name": "x8", "labels": ["linux", "gpu", "a100", "gpu-8"]},
             {"name": "one", "labels": ["linux", "gpu", "gpu-1"]},
             {"name": "one-b", "labels": ["linux", "gpu", "gpu-1b"]}]
    assert routed_pool(pools, {"gpu"})["name"] == "one"
    assert routed_pool(pools, {"self-hosted", "GPU", "gpu-8"})["name"] == "x8"
    assert routed_pool(pools, {"gpu", "t4"}) is None
