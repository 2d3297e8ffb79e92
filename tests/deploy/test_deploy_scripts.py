"""shellcheck on every shell script in the repository (tracked or new),
including the AMI provisioners and the tool builder."""

import subprocess

import pytest
from deploylib import REPO, run


def shell_scripts() -> list[str]:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    out = []
    for f in files:
        p = REPO / f
        if not p.is_file():
            continue
        if f.endswith(".sh"):
            out.append(f)
            continue
        with open(p, "rb") as fh:
            first = fh.readline(200)
        if first.startswith(b"#!") and (b"bash" in first or first.rstrip().endswith(b"/sh")):
            out.append(f)
    return sorted(out)


SCRIPTS = shell_scripts()


def test_the_deployment_scripts_are_found():
    for f in ("tests/kube/build-tools.sh", "scripts/ami/install-nvidia.sh", "scripts/dev.sh"):
        assert f in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck(script):
    run(["shellcheck", "--external-sources", script])
