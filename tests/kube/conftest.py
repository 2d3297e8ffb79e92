"""Fixtures for tests that need a real Kubernetes API server."""

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
