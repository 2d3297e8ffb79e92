"""GPU developer servers (docs/DEVSERVERS.md). What runfleetd does with them
today: the devservers: section is checked like the rest of the
configuration. The SSH end-to-end tests come with the local backend's dev
servers."""
from __future__ import annotations

import hashlib
import subprocess

from tests.runfleetd import bin_dir

TOKEN_SHA = hashlib.sha256(b"alice-token").hexdigest()


def base_config(tmp_path) -> str:
    (tmp_path / "pat").write_text("ghp_x\n")
    (tmp_path / "secret").write_text("s3cret\n")
    return (
        "github:\n"
        f"  pat_file: {tmp_path}/pat\n"
        f"  webhook_secret_file: {tmp_path}/secret\n"
        "  org: acme\n"
        f"state_dir: {tmp_path}/state\n"
        "backend:\n"
        "  type: local\n"
        f"  local: {{gpus: [0, 1, 2, 3], work_root: {tmp_path}/work}}\n"
        "pools:\n"
        "  - {name: cpu, labels: [linux], max_runners: 1, runner: {command: /bin/true}}\n"
    )


def check_config(path) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir() / "runfleetd"), "--check-config", str(path)],
                          capture_output=True, text=True)


def test_check_config_takes_a_devservers_section(tmp_path):
    p = tmp_path / "good.yaml"
    p.write_text(base_config(tmp_path) + (
        "devservers:\n"
        "  ci_min_gpus: 1\n"
        "  keys_url: http://127.0.0.1:1/{user}.keys\n"
        "  flavors:\n"
        "    - {name: gpu-1, gpus: 1, max_hours: 4}\n"
        "    - {name: gpu-2, gpus: 2, max_hours: 2, max_extend_hours: 1}\n"
        "  users:\n"
        f"    - {{name: alice, github_user: alice, token_sha256: {TOKEN_SHA}}}\n"))
    r = check_config(p)
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_config_reports_devservers_problems_at_their_lines(tmp_path):
    p = tmp_path / "bad.yaml"
    # Lines 1-10 are the base config; the section starts at line 11.
    p.write_text(base_config(tmp_path) + (
        "devservers:\n"
        "  warnings: [5m, 30m]\n"
        "  flavors:\n"
        "    - {name: gpu-8, gpus: 8}\n"
        "    - {name: gpu-1, gpus: 1, max_hours: 500}\n"
        "  users:\n"
        "    - {name: alice, github_user: alice, token_sha256: nothex}\n"))
    r = check_config(p)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    expect = [
        ":12: devservers.warnings[1]: warnings must be listed from the earliest",
        ":14: devservers.flavors[0].gpus: flavor needs 8 GPUs but backend.local.gpus lists 4",
        ":15: devservers.flavors[1].max_hours: 500 is out of range (1 to 168)",
        ":17: devservers.users[0].token_sha256: must be 64 hex digits",
    ]
    for e in expect:
        assert f"{p}{e}" in out, (e, out)
