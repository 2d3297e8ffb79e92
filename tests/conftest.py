"""Shared pytest fixtures: the GitHub simulator, an App key pair, the fake runner."""

from __future__ import annotations

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.sim.github import Simulator  # noqa: E402
from tests.sim.github.testing import SIM_DEFAULTS, AppKey, assert_clean  # noqa: E402,F401

FAKE_RUNNER = os.path.join(REPO_ROOT, "tests", "sim", "fake-runner", "run.sh")

# The one list of tests allowed to skip, each with why. Any other skip (or
# xfail) fails the run: a skipped test is not a passed one.
EXPECTED_SKIPS = {
    "tests/test_hooks_workspace.py::test_read_only_tree_as_unprivileged_user":
        "drops to another user, which needs root; CI runs as root",
    "tests/test_journal.py::test_full_disk_answers_503_and_never_200_for_what_was_not_written":
        "mounts a small tmpfs as the full disk, which needs root; CI runs as root",
}

_skipped: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def _unexpected_skips() -> list[tuple[str, str]]:
    return [(n, r) for n, r in _skipped if n.split("[")[0] not in EXPECTED_SKIPS]


def pytest_terminal_summary(terminalreporter):
    bad = _unexpected_skips()
    if bad:
        terminalreporter.section("unexpected skips (not in tests/conftest.py EXPECTED_SKIPS)")
        for nodeid, reason in bad:
            terminalreporter.line(f"{nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips() and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def app_key(tmp_path_factory) -> AppKey:
    return AppKey(str(tmp_path_factory.mktemp("app-key")))

@pytest.fixture
def github_sim(app_key):
    """A started Simulator (stopped at teardown). Fails the test if a
    request did not conform, a response did not match GitHub's description
    or a request ignored a Retry-After (see `testing.assert_clean`)."""
    sim = Simulator(app_public_key_pem=app_key.public_pem, **SIM_DEFAULTS)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
    assert_clean(sim)


@pytest.fixture
def fake_runner_cmd() -> str:
    return FAKE_RUNNER
