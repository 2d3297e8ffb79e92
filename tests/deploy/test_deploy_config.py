"""The runfleetd.yaml every overlay and values file ships is accepted by
runfleetd's own parser (`runfleetd --check-config`), and the files it names
are where the Deployment mounts the GitHub Secret."""

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from deploylib import ENVIRONMENTS, REPO, helm_config, kustomize_objects, one, overlay_config

SECRET_DIR = "/etc/runfleet/github"


def runfleetd() -> Path:
    candidates = [Path(os.environ["RUNFLEET_BIN_DIR"]) / "runfleetd"] if os.environ.get("RUNFLEET_BIN_DIR") else []
    candidates += [REPO / "build/asan/bin/runfleetd", REPO / "build/bin/runfleetd"]
    for c in candidates:
        if c.is_file():
            return c
    pytest.fail(f"runfleetd is not built (looked at {', '.join(map(str, candidates))}); run `just build`")


def check_config(cfg: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """--check-config with the Secret's files present (dummy contents) at a temp dir."""
    secrets = tmp_path / "github"
    secrets.mkdir(exist_ok=True)
    for name in ("private-key.pem", "webhook-secret", "pat"):
        (secrets / name).write_text("placeholder\n")
    text = yaml.safe_dump(cfg, sort_keys=False).replace(SECRET_DIR + "/", f"{secrets}/")
    path = tmp_path / "runfleetd.yaml"
    path.write_text(text)
    return subprocess.run([str(runfleetd()), "--check-config", str(path)],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("source", ["kustomize", "helm"])
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_runfleetd_accepts_the_shipped_config(tmp_path, env, source):
    cfg = overlay_config(env) if source == "kustomize" else helm_config(env)
    cp = check_config(cfg, tmp_path)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_check_config_has_teeth(tmp_path):
    cfg = overlay_config("production")
    cfg["pools"][1]["min_idle"] = cfg["pools"][1]["max_runners"] + 1
    cp = check_config(cfg, tmp_path)
    assert cp.returncode != 0, cp.stdout + cp.stderr


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_config_files_are_in_the_mounted_secret(env):
    gh = overlay_config(env)["github"]
    files = [gh["webhook_secret_file"], gh["app"]["private_key_file"]]
    for f in files:
        assert os.path.dirname(f) == SECRET_DIR, f
    dep = one(kustomize_objects(env), "Deployment", "runfleetd")
    mounts = {m["name"]: m["mountPath"] for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["github"] == SECRET_DIR
    # The Secret's keys are the file names; docs/QUICKSTART.md creates it with them.
    quickstart = (REPO / "docs/QUICKSTART.md").read_text()
    for f in files:
        assert f"--from-file={os.path.basename(f)}=" in quickstart, os.path.basename(f)
