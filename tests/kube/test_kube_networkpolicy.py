"""The runner namespace's NetworkPolicy, as the chart and each overlay
render it, on the real kube-apiserver: accepted with strict server-side
validation, and read back with exactly the rendered rules."""

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))

from deploylib import RUNNER_NS, kustomize_objects  # noqa: E402
from netpol import NAME, RENDERINGS, expected_spec, rendered  # noqa: E402

PATH = f"/apis/networking.k8s.io/v1/namespaces/{RUNNER_NS}/networkpolicies/{NAME}"


@pytest.fixture(scope="module")
def cluster(kube):
    namespaces = [o for o in kustomize_objects("production") if o["kind"] == "Namespace"]
    kube.kubectl("apply", "--server-side", "--field-manager=runfleet-tests", "-f", "-",
                 input=yaml.safe_dump_all(namespaces))
    yield kube
    # The shared cluster serves later tests that apply the same manifests
    # with field managers of their own: leave no policy owned by these.
    kube.kubectl("delete", "networkpolicy", NAME, "-n", RUNNER_NS, "--ignore-not-found")


def apply(kube, obj, check=True):
    return kube.kubectl("apply", "--server-side", "--validate=strict", "--force-conflicts",
                        f"--field-manager=runfleet-netpol-{id(obj)}", "-f", "-",
                        input=yaml.safe_dump(obj), check=check)


@pytest.mark.parametrize("source,env", RENDERINGS)
def test_policy_is_stored_with_the_rendered_rules(cluster, source, env):
    pol = rendered(source, env)
    cluster.kubectl("delete", "networkpolicy", NAME, "-n", RUNNER_NS, "--ignore-not-found")
    apply(cluster, pol)
    got = cluster.api("GET", PATH)
    assert got["spec"] == pol["spec"] == expected_spec(env)
    assert got["metadata"]["labels"] == pol["metadata"]["labels"]


@pytest.mark.parametrize("breakage", ["except-outside-cidr", "bad-port", "bad-protocol"])
def test_apiserver_rejects_a_broken_policy(cluster, breakage):
    """The server really validates these objects: a broken rule is refused."""
    pol = rendered("kustomize", "staging")
    egress = pol["spec"]["egress"]
    if breakage == "except-outside-cidr":
        egress[2]["to"][1]["ipBlock"]["except"] = ["169.254.169.254/32"]  # an IPv4 in ::/0
    elif breakage == "bad-port":
        egress[1]["ports"][0]["port"] = 90900
    else:
        egress[0]["ports"][0]["protocol"] = "ICMP"
    cp = apply(cluster, pol, check=False)
    assert cp.returncode != 0 and "is invalid" in cp.stderr and "spec.egress" in cp.stderr, cp.stderr
