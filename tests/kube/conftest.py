"""Fixtures for tests that need a real Kubernetes API server, and for those
that need Pods scheduled and run on fake EKS Nodes."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kubeharness  # noqa: E402


@pytest.fixture(scope="session")
def kube():
    """etcd + kube-apiserver on loopback, shared by the session, always stopped."""
    cluster = kubeharness.shared_cluster()
    try:
        yield cluster
    finally:
        kubeharness.release()


@pytest.fixture(scope="session")
def kwok_cluster(kube):
    """The session's cluster with kube-scheduler and kwok running too (they
    stop with it)."""
    kube.start_scheduler()
    kube.start_kwok()
    return kube


@pytest.fixture
def eks_nodes(kwok_cluster):
    """The default EKS node groups (kubeharness.DEFAULT_NODES), Ready; deleted
    after the test with their Pods."""
    names = kwok_cluster.eks_nodes()
    try:
        yield names
    finally:
        kwok_cluster.delete_nodes(names, pod_gc=True)


@pytest.fixture
def pod_ns(kwok_cluster, request):
    """A fresh namespace for the test's Pods, emptied afterwards."""
    ns = f"t-{request.node.name.split('[')[0][-40:].replace('_', '-').strip('-')}-{os.urandom(3).hex()}"
    kwok_cluster.create_namespace(ns)
    try:
        yield ns
    finally:
        kwok_cluster.delete_pods(ns)
