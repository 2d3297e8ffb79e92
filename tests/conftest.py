"""Shared pytest fixtures: the GitHub simulator, an App key pair, the fake runner."""

from __future__ import annotations

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.sim.github import Simulator  # noqa: E402
from tests.sim.github.testing import SIM_DEFAULTS, AppKey  # noqa: E402,F401

FAKE_RUNNER = os.path.join(REPO_ROOT, "tests", "sim", "fake-runner", "run.sh")


@pytest.fixture(scope="session")
def app_key(tmp_path_factory) -> AppKey:
    return AppKey(str(tmp_path_factory.mktemp("app-key")))

@pytest.fixture
def github_sim(app_key):
    """A started Simulator (stopped at teardown). Fails the test if the
    simulator produced a response that does not match GitHub's description."""
    sim = Simulator(app_public_key_pem=app_key.public_pem, **SIM_DEFAULTS)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
    bad = sim.invalid_responses()
    assert not bad, f"simulator produced invalid responses: {bad}"


@pytest.fixture
def fake_runner_cmd() -> str:
    return FAKE_RUNNER
