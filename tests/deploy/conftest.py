"""Fixtures for the deployment validation tests (tests/deploy)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kube"))

import kubeharness  # noqa: E402

REPO = kubeharness.REPO


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def kube():
    """etcd + kube-apiserver on loopback, shared by the session, always stopped."""
    cluster = kubeharness.shared_cluster()
    try:
        yield cluster
    finally:
        kubeharness.release()

