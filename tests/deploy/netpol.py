"""The runner namespace's NetworkPolicy as the chart and every overlay must
render it: shared by tests/deploy (rendered objects) and tests/kube (the
same objects on the real apiserver)."""

from deploylib import (CONTROL_NS, RUNNER_NS, find, hcl, hcl_blocks, helm_objects, kustomize_objects,
                       terraform_eks_args)

NAME = "runfleet-runners"
# The instance metadata service and the EKS Pod Identity agent, IPv4 and
# IPv6 (Nitro).
METADATA_V4 = ["169.254.169.254/32", "169.254.170.23/32"]
METADATA_V6 = ["fd00:ec2::254/128", "fd00:ec2::23/128"]
ADMIN_PORT = 9090


def terraform_cidrs(env: str) -> tuple[str, str]:
    """The environment's VPC CIDR and its EKS Service CIDR, as the shipped
    Terraform sets them: module "vpc"'s cidr_block, and module "eks"'s
    service_ipv4_cidr or else that variable's default in modules/eks."""
    vpc = hcl_blocks(hcl(f"terraform/environments/{env}/main.tf"), "module")["vpc"]["cidr_block"]
    svc = terraform_eks_args(env).get("service_ipv4_cidr")
    if svc is None:
        svc = hcl_blocks(hcl("terraform/modules/eks/variables.tf"), "variable")["service_ipv4_cidr"]["default"]
    return vpc, svc


def cluster_cidrs(env: str) -> list[str]:
    return [] if env == "default" else list(terraform_cidrs(env))


def expected_spec(env: str) -> dict:
    """Exactly these rules: DNS to kube-dns, runfleetd's admin port, and
    the internet less the metadata service and the cluster's networks."""
    return {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "egress": [
            {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                     "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
             "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": CONTROL_NS}},
                     "podSelector": {"matchLabels": {"app.kubernetes.io/name": "runfleetd"}}}],
             "ports": [{"protocol": "TCP", "port": ADMIN_PORT}]},
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [*METADATA_V4, *cluster_cidrs(env)]}},
                    {"ipBlock": {"cidr": "::/0", "except": METADATA_V6}}]},
        ],
    }


def rendered(source: str, env: str) -> dict:
    objs = helm_objects(env) if source == "helm" else kustomize_objects(env)
    (pol,) = find(objs, "NetworkPolicy")
    assert pol["metadata"]["name"] == NAME and pol["metadata"]["namespace"] == RUNNER_NS
    return pol


# (source, env) pairs: the chart with default values and per environment,
# and each overlay.
RENDERINGS = [("helm", "default"), ("helm", "staging"), ("helm", "production"),
              ("kustomize", "staging"), ("kustomize", "production")]
