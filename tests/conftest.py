"""Shared pytest fixtures: the GitHub simulator, an App key pair, the fake runner."""

from __future__ import annotations

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.sim.github import Simulator  # noqa: E402

FAKE_RUNNER = os.path.join(REPO_ROOT, "tests", "sim", "fake-runner", "run.sh")


class AppKey:
    """An RSA 2048 key pair for a GitHub App, with PEM files on disk."""

    def __init__(self, directory: str):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_key = key
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.private_path = os.path.join(directory, "app-key.pem")
        self.public_path = os.path.join(directory, "app-key.pub.pem")
        with open(self.private_path, "wb") as f:
            f.write(self.private_pem)
        os.chmod(self.private_path, 0o600)
        with open(self.public_path, "wb") as f:
            f.write(self.public_pem)

    def jwt(self, app_id: int = 1, iat_offset: int = -60, exp_offset: int = 540, **claims) -> str:
        """An App JWT like GitHub documents (iat 60 s in the past, exp <= 10 min ahead)."""
        import time

        import jwt

        now = int(time.time())
        payload = {"iat": now + iat_offset, "exp": now + exp_offset, "iss": str(app_id)}
        payload.update(claims)
        return jwt.encode(payload, self.private_pem, algorithm="RS256")


@pytest.fixture(scope="session")
def app_key(tmp_path_factory) -> AppKey:
    return AppKey(str(tmp_path_factory.mktemp("app-key")))


SIM_DEFAULTS = dict(
    app_id=1,
    installation_id=42,
    org="acme",
    repos=["acme/widgets", "acme/gadgets"],
    webhook_secret=b"It's a Secret to Everybody",
    pat="ghp_simulatorPersonalAccessToken0001",
)


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
