"""The Packer templates under ami/: `packer fmt -check`, and `packer validate`
with the Amazon plugin installed (built from source), which runs the
amazon-ebs builder's own configuration checks offline. What needs AWS (the
source AMI lookup, the build itself) is in docs/DEPLOYMENT-VALIDATION.md."""

import os
import subprocess
import tarfile

import kubeharness
import pytest
from deploylib import REPO, hcl, run

TEMPLATES = sorted(p.relative_to(REPO) for p in (REPO / "ami").glob("*/packer.pkr.hcl"))


@pytest.fixture(scope="module")
def packer_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packer")
    src = tmp / "runfleet-src.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        tar.add(REPO / "CMakeLists.txt", arcname="CMakeLists.txt")
    env = {**os.environ, "PACKER_PLUGIN_PATH": str(kubeharness.tool("packer-plugins")),
           "PACKER_CONFIG_DIR": str(tmp / "config"), "PACKER_CACHE_DIR": str(tmp / "cache"),
           "CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"}
    return env, src


def test_both_amis_exist():
    assert {str(t) for t in TEMPLATES} == {"ami/eks-base/packer.pkr.hcl", "ami/eks-gpu/packer.pkr.hcl"}


@pytest.mark.parametrize("template", TEMPLATES, ids=str)
def test_packer_fmt_check(packer_env, template):
    env, _ = packer_env
    run([kubeharness.tool("packer"), "fmt", "-check", "-diff", template], env=env)


def validate(env, src, template, *extra):
    return subprocess.run(
        [str(kubeharness.tool("packer")), "validate", "-var", f"runfleet_source={src}", *extra,
         str(template)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("template", TEMPLATES, ids=str)
def test_packer_validate(packer_env, template):
    env, src = packer_env
    cp = validate(env, src, template)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "The configuration is valid." in cp.stdout
    cp = validate(env, src, template, "-var", "runner_images=[\"r.example/runfleet/runner-gpu:0.1.0\"]")
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_packer_validate_runs_the_amazon_builders_checks(packer_env, tmp_path):
    """A value only the amazon-ebs builder knows is wrong is rejected: the
    plugin really ran."""
    env, src = packer_env
    bad = tmp_path / "eks-gpu"
    bad.mkdir()
    text = (REPO / "ami/eks-gpu/packer.pkr.hcl").read_text().replace(
        'imds_support = "v2.0"', 'imds_support = "v3.0"')
    (bad / "packer.pkr.hcl").write_text(text.replace("${path.root}/../../", f"{REPO}/"))
    cp = validate(env, src, bad / "packer.pkr.hcl")
    assert cp.returncode != 0
    assert "imds_support" in cp.stdout + cp.stderr, cp.stdout + cp.stderr


@pytest.mark.parametrize("template", TEMPLATES, ids=str)
def test_provisioner_scripts_exist(template):
    doc = hcl(str(template))
    build = doc["build"][0]
    scripts = []
    for prov in build["provisioner"]:
        for kind, body in prov.items():
            if kind == "shell":
                scripts += body.get("scripts", []) + ([body["script"]] if "script" in body else [])
    assert scripts
    for s in scripts:
        path = (REPO / template).parent / s.replace("${path.root}/", "")
        assert path.resolve().is_file(), s


def test_gpu_ami_installs_driver_toolkit_and_checks_them():
    nvidia = (REPO / "scripts/ami/install-nvidia.sh").read_text()
    for what in ("nvidia-driver:", "nvidia-fabric", "nvidia-container-toolkit",
                 "nvidia-ctk runtime configure --runtime=containerd --set-as-default"):
        assert what in nvidia, what
    gpu = (REPO / "ami/eks-gpu/packer.pkr.hcl").read_text()
    assert '"nvidia-smi"' in gpu
    for template in TEMPLATES:
        text = (REPO / template).read_text()
        assert "amazon-eks-node-al2023-x86_64-standard-${var.kubernetes_version}-v*" in text
        assert "install-runfleet-hook.sh" in text and "prepull-images.sh" in text
