"""The runner namespace's NetworkPolicy as the chart and every overlay must
render it: shared by tests/deploy (rendered objects) and tests/kube (the
same objects on the real apiserver)."""

from deploylib import CONTROL_NS, RUNNER_NS, find, helm_objects, kustomize_objects

NAME = "runfleet-runners"
METADATA_V4 = "169.254.169.254/32"
METADATA_V6 = "fd00:ec2::254/128"
ADMIN_PORT = 9090
# The EKS Service CIDR (terraform/modules/eks service_ipv4_cidr) and each
# environment's VPC (terraform/environments/<env>).
SERVICE_CIDR = "172.20.0.0/16"
VPC_CIDR = {"staging": "10.40.0.0/16", "production": "10.50.0.0/16"}


def cluster_cidrs(env: str) -> list[str]:
    return [] if env == "default" else [VPC_CIDR[env], SERVICE_CIDR]


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
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [METADATA_V4, *cluster_cidrs(env)]}},
                    {"ipBlock": {"cidr": "::/0", "except": [METADATA_V6]}}]},
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
