"""Runner pods run untrusted code: the chart and every overlay ship the
runner namespace's NetworkPolicy with exactly the agreed rules, and the
nodes' instance metadata needs IMDSv2 tokens with a hop limit of 1.
tests/kube/test_kube_networkpolicy.py applies the same objects to the real
apiserver."""

import pytest
from deploylib import find, hcl, helm_objects, helm_text, load_all
from netpol import ADMIN_PORT, METADATA_V4, METADATA_V6, RENDERINGS, expected_spec, rendered, terraform_cidrs


@pytest.mark.parametrize("source,env", RENDERINGS)
def test_policy_has_exactly_the_agreed_rules(source, env):
    assert rendered(source, env)["spec"] == expected_spec(env)


@pytest.mark.parametrize("source,env", RENDERINGS)
def test_policy_blocks_metadata_and_opens_only_the_admin_port(source, env):
    """The properties behind the rules, stated on their own."""
    spec = rendered(source, env)["spec"]
    assert "ingress" not in spec and "Ingress" in spec["policyTypes"]  # nothing connects in
    blocks = [p["ipBlock"] for r in spec["egress"] for p in r["to"] if "ipBlock" in p]
    assert {b["cidr"] for b in blocks} == {"0.0.0.0/0", "::/0"}
    excepts = {e for b in blocks for e in b["except"]}
    assert {*METADATA_V4, *METADATA_V6} <= excepts
    to_runfleetd = [r for r in spec["egress"]
                    if any(p.get("podSelector", {}).get("matchLabels", {}).get(
                        "app.kubernetes.io/name") == "runfleetd" for p in r["to"])]
    assert [r["ports"] for r in to_runfleetd] == [[{"protocol": "TCP", "port": ADMIN_PORT}]]


def test_helm_policy_can_be_disabled_and_adjusted():
    assert not find(helm_objects("default", "--set", "networkPolicy.enabled=false"), "NetworkPolicy")
    (pol,) = find(load_all(helm_text("default", "--set", "networkPolicy.clusterCIDRs={10.1.0.0/16,fd00:1::/64}",
                                     "--set", "config.backend.kubernetes.namespace=ci-runners")),
                  "NetworkPolicy")
    assert pol["metadata"]["namespace"] == "ci-runners"
    v4, v6 = (p["ipBlock"] for p in pol["spec"]["egress"][2]["to"])
    assert v4["except"] == [*METADATA_V4, "10.1.0.0/16"]
    assert v6["except"] == [*METADATA_V6, "fd00:1::/64"]


@pytest.mark.parametrize("env", ["staging", "production"])
def test_overlay_and_values_cidrs_are_terraforms(env):
    """The excepts an environment adds are its VPC and Service CIDRs as
    the shipped Terraform creates them (a VPC renumbered in Terraform and
    not here would open the VPC to runner pods)."""
    vpc, svc = terraform_cidrs(env)
    for source in ("helm", "kustomize"):
        v4 = rendered(source, env)["spec"]["egress"][2]["to"][0]["ipBlock"]
        assert v4["except"][len(METADATA_V4):] == [vpc, svc], (source, env)


def test_eks_launch_templates_require_imdsv2_with_one_hop():
    """Every node group's launch template: a pod (one hop further than the
    node) gets no IMDS answer, and no token-less IMDSv1 at all."""
    doc = hcl("terraform/modules/eks/main.tf")
    templates = [body for entry in doc["resource"] for rtype, bodies in entry.items()
                 if rtype == "aws_launch_template" for body in bodies.values()]
    assert templates
    for t in templates:
        (meta,) = t["metadata_options"]
        assert meta == {"http_endpoint": "enabled", "http_tokens": "required",
                        "http_put_response_hop_limit": 1}, meta
    groups = [body for entry in doc["resource"] for rtype, bodies in entry.items()
              if rtype == "aws_eks_node_group" for body in bodies.values()]
    assert groups and all("launch_template" in g for g in groups)


@pytest.mark.parametrize("template", ["ami/eks-base/packer.pkr.hcl", "ami/eks-gpu/packer.pkr.hcl"])
def test_packer_builders_use_imdsv2_with_one_hop(template):
    (src,) = hcl(template)["source"][0]["amazon-ebs"].values()
    assert src["imds_support"] == "v2.0"  # instances from the AMI default to IMDSv2
    (meta,) = src["metadata_options"]
    assert meta == {"http_endpoint": "enabled", "http_tokens": "required",
                    "http_put_response_hop_limit": 1}, meta
