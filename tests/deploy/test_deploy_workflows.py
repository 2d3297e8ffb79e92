"""The example workflows in docs/examples pass actionlint (with the labels of
the shipped pools as the known self-hosted labels), and every job's runs-on
is served by a pool of some environment."""

import kubeharness
import pytest
import yaml
from deploylib import ENVIRONMENTS, REPO, overlay_config, run

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
