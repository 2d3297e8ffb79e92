"""The Dockerfiles under images/, checked with BuildKit's own parser and
linter (tests/deploy/dockerfile-check, the checks `docker build --check`
runs; no Docker daemon is needed): no lint warning, pinned bases, a
non-root runtime user, runfleet-hook built from this repo and wired in as
the runner's job hooks, actions/runner pinned by version and checksum."""

import json
import re
import shlex
import subprocess
from functools import lru_cache

import kubeharness
import pytest
from deploylib import REPO, just_bin, run

IMAGES = ("runner-base", "runner-gpu", "runfleetd")
RUNNERS = ("runner-base", "runner-gpu")
NAMED_CONTEXTS = {"docker.io/library/runfleet-src:latest"}


@lru_cache(maxsize=None)
def check(image: str) -> dict:
    out = run([kubeharness.tool("dockerfile-check"), f"images/{image}/Dockerfile"]).stdout
    return json.loads(out)


def final_stage(image: str) -> dict:
    return check(image)["stages"][-1]


def instructions(stage: dict, cmd: str) -> list[dict]:
    return [i for i in stage["instructions"] if i["cmd"] == cmd]


def env_of(stage: dict) -> dict:
    env = {}
    for i in instructions(stage, "ENV"):
        env.update(i["env"])
    return env


def arg_defaults(stage: dict) -> dict:
    out = {}
    for i in instructions(stage, "ARG"):
        for a in i["args"]:
            k, _, v = a.partition("=")
            out[k] = v
    return out


@pytest.mark.parametrize("image", IMAGES)
def test_buildkit_lint_is_clean(image):
    result = check(image)
    assert not result.get("error"), result["error"]
    assert result["warnings"] == [], result["warnings"]


def test_the_linter_has_teeth(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu as build\nRUN echo $UNDEFINED_THING\nCMD echo hi\n")
    out = json.loads(run([kubeharness.tool("dockerfile-check"), bad]).stdout)
    rules = {w["rule"] for w in out["warnings"]}
    assert {"FromAsCasing", "JSONArgsRecommended"} <= rules, rules


@pytest.mark.parametrize("image", IMAGES)
def test_base_images_are_pinned(image):
    bases = set(check(image)["base_images"]) - NAMED_CONTEXTS
    assert bases, "no base image"
    for ref in bases:
        name, _, digest = ref.partition("@")
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{image}: {ref} is not pinned"
        # A digest, or a tag naming an exact release: dated (noble-20250619)
        # or a full x.y.z version (12.8.1-...).
        assert digest.startswith("sha256:") or re.search(r"\d{8}|\d+\.\d+\.\d+", tag), \
            f"{image}: {ref} is a moving tag"
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), ref


def test_gpu_image_is_on_a_digest_pinned_cuda_base():
    (base,) = set(check("runner-gpu")["base_images"]) - NAMED_CONTEXTS
    assert re.fullmatch(r"docker\.io/nvidia/cuda:\d+\.\d+\.\d+-[a-z-]+-ubuntu\d+\.\d+@sha256:[0-9a-f]{64}", base), base


@pytest.mark.parametrize("image", IMAGES)
def test_runtime_user_is_not_root(image):
    stage = final_stage(image)
    users = instructions(stage, "USER")
    assert users, f"{image}: no USER in the final stage"
    user = users[-1]["user"].split(":")[0]
    assert user not in ("root", "0", ""), user


@pytest.mark.parametrize("image", RUNNERS)
def test_runner_hooks_are_wired(image):
    stage = final_stage(image)
    env = env_of(stage)
    assert env["ACTIONS_RUNNER_HOOK_JOB_STARTED"] == "/opt/runfleet/hooks/pre-job.sh"
    assert env["ACTIONS_RUNNER_HOOK_JOB_COMPLETED"] == "/opt/runfleet/hooks/post-job.sh"
    assert env["CCACHE_DIR"].startswith("/var/cache/runfleet/")
    copies = [" ".join(i["args"]) for i in instructions(stage, "COPY")]
    assert any("/usr/local/bin/runfleet-hook" in c for c in copies), copies
    assert any(c.endswith("/opt/runfleet/hooks/") for c in copies), copies
    assert all("--from=hook-build" in i["flags"] for i in instructions(stage, "COPY"))
    assert stage["instructions"][-1]["cmd"] == "CMD"
    assert json.loads(stage["instructions"][-1]["original"].split(None, 1)[1]) == ["/home/runner/run.sh"]
    runs = " ".join(i["original"] for i in instructions(stage, "RUN"))
    for path in ("/home/runner/_work", "/var/cache/runfleet"):
        assert path in runs, f"{image}: {path} is not created"
    for tool in ("git", "ccache", "build-essential", "cmake"):
        assert re.search(rf"\b{tool}\b", runs), f"{image}: {tool} not installed"


@pytest.mark.parametrize("image", RUNNERS)
def test_actions_runner_is_pinned_by_version_and_checksum(image):
    stage = final_stage(image)
    args = arg_defaults(stage)
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["RUNNER_VERSION"]), args
    assert re.fullmatch(r"[0-9a-f]{64}", args["RUNNER_SHA256"]), args
    runs = " ".join(i["original"] for i in instructions(stage, "RUN"))
    assert "actions-runner-linux-x64-${RUNNER_VERSION}.tar.gz" in runs
    assert re.search(r'echo "\$\{RUNNER_SHA256\}  [^"]+" \| sha256sum -c -', runs), "checksum not verified"
    assert "useradd --uid \"${RUNNER_UID}\"" in runs


def test_both_runner_images_pin_the_same_runner():
    a = arg_defaults(final_stage("runner-base"))
    b = arg_defaults(final_stage("runner-gpu"))
    assert (a["RUNNER_VERSION"], a["RUNNER_SHA256"]) == (b["RUNNER_VERSION"], b["RUNNER_SHA256"])


def test_gpu_image_environment():
    env = env_of(final_stage("runner-gpu"))
    # GPUs only when the device plugin assigned some (it overrides "void").
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert set(env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) >= {"compute", "utility"}
    assert "/usr/local/cuda/bin" in env["PATH"].split(":")


def dev_packages() -> set[str]:
    """The -dev packages scripts/dev.sh installs for the C build (not the
    test-only ones: cmocka, and clang's libFuzzer runtime)."""
    text = (REPO / "scripts/dev.sh").read_text()
    block = re.search(r"DEB_PACKAGES=\((.*?)\)", text, re.S).group(1)
    words = {w for w in shlex.split(block, comments=True)}
    test_only = {"libcmocka-dev", "libclang-rt-14-dev"}
    return {w for w in words if w.endswith("-dev") and w not in test_only}


@pytest.mark.parametrize("image", IMAGES)
def test_build_stage_uses_the_repo_build(image):
    build = check(image)["stages"][0]
    runs = " ".join(i["original"] for i in instructions(build, "RUN"))
    installed = set(re.findall(r"\b[a-z0-9.+-]+-dev\b", runs))
    assert dev_packages() <= installed, f"{image}: missing {dev_packages() - installed}"
    assert "cmake -S . -B build" in runs
    target = "runfleet-hook" if image in RUNNERS else "runfleetd"
    assert re.search(rf"cmake --build build --target [^&]*\b{target}\b", runs), runs
    copies = instructions(build, "COPY")
    assert any("--from=runfleet-src" in c["flags"] for c in copies)
    # Runtime libraries are derived from what the binary links.
    assert "ldd" in runs and "dpkg -S" in runs


@pytest.mark.parametrize("image", IMAGES)
def test_dockerignore_keeps_the_context_to_the_dockerfile(image):
    ignore = (REPO / f"images/{image}/.dockerignore").read_text().split("\n")
    rules = [ln.strip() for ln in ignore if ln.strip() and not ln.startswith("#")]
    assert rules[0] == "*" and "!Dockerfile" in rules


def test_docker_build_recipe_stages_the_sources(tmp_path):
    """`just docker-build` hands the Dockerfiles a context with CMakeLists.txt,
    manager/ and hooks/ (the named context runfleet-src)."""
    just = just_bin()
    cp = subprocess.run([str(just), "--dry-run", "docker-build", "runner-gpu"], cwd=REPO,
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    assert "--build-context runfleet-src=build/image-src" in cp.stderr
    assert "images/runner-gpu" in cp.stderr


def test_staged_sources_build_runfleet_hook(tmp_path):
    """What the images' build stage does, on the sources `just stage-src`
    hands it: configure the staged tree and build runfleet-hook (and its
    shims), here with this machine's copies of the same -dev packages."""
    just = just_bin()
    run([just, "stage-src"])
    src = REPO / "build/image-src"
    run(["cmake", "-S", src, "-B", tmp_path / "build", "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release"])
    run(["cmake", "--build", tmp_path / "build", "--target", "runfleet-hook"])
    hook = tmp_path / "build/bin/runfleet-hook"
    assert hook.is_file()
    for shim in ("pre-job.sh", "post-job.sh"):
        found = list((src / "hooks").rglob(shim))
        assert found, f"hooks/ has no {shim} for the images to install"
        assert "runfleet-hook" in found[0].read_text()
    assert (REPO / "build/ami/runfleet-src.tar.gz").is_file()
