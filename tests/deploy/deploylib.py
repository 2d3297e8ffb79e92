"""Helpers shared by the deployment tests: render the Kustomize overlays and
the Helm chart with the pinned tools, read runfleetd configs, parse HCL."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kube"))

import kubeharness  # noqa: E402

REPO = kubeharness.REPO
ENVIRONMENTS = ("staging", "production")
# The registry placeholder every shipped image reference uses; the just
# recipes replace it with the operator's registry.
PLACEHOLDER_REGISTRY = "registry.invalid"
CONTROL_NS = "runfleet-system"
RUNNER_NS = "runfleet-runners"


def just_bin() -> Path:
    """The native `just` of rust-just's per-platform package, as scripts/dev.sh
    runs it: the package's Node wrapper (node_modules/.bin/just) needs a newer
    Node than Debian bookworm's."""
    for b in sorted(REPO.glob("node_modules/rust-just-linux-*/bin/just")):
        if os.access(b, os.X_OK) and subprocess.run([b, "--version"], capture_output=True).returncode == 0:
            return b
    return REPO / "node_modules/.bin/just"


def run(argv, **kw) -> subprocess.CompletedProcess:
    """Runs a tool; fails the test with its output when it exits non-zero."""
    kw.setdefault("cwd", REPO)
    cp = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if cp.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} exited {cp.returncode}:\n{cp.stderr}\n{cp.stdout}")
    return cp


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@functools.lru_cache(maxsize=None)
def kustomize_text(env: str) -> str:
    return run([kubeharness.tool("kustomize"), "build", f"kubernetes/overlays/{env}"]).stdout


@functools.lru_cache(maxsize=None)
def helm_text(env: str, *extra: str) -> str:
    args = [kubeharness.tool("helm"), "template", "runfleet", "helm/runfleet",
            "--namespace", CONTROL_NS, "--set", f"registry={PLACEHOLDER_REGISTRY}"]
    if env != "default":
        args += ["-f", f"helm/runfleet/values-{env}.yaml"]
    return run(args + list(extra)).stdout


def kustomize_objects(env: str) -> list[dict]:
    return load_all(kustomize_text(env))


def helm_objects(env: str, *extra: str) -> list[dict]:
    return load_all(helm_text(env, *extra))


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict], kind: str, name: str) -> dict:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def runfleetd_config(objs: list[dict]) -> dict:
    """The runfleetd.yaml inside the rendered runfleetd-config ConfigMap."""
    cms = [o for o in find(objs, "ConfigMap") if o["metadata"]["name"].startswith("runfleetd-config")]
    assert len(cms) == 1, [c["metadata"]["name"] for c in cms]
    return yaml.safe_load(cms[0]["data"]["runfleetd.yaml"])


def overlay_config(env: str) -> dict:
    return runfleetd_config(kustomize_objects(env))


def helm_config(env: str) -> dict:
    return runfleetd_config(helm_objects(env))


# -- HCL ---------------------------------------------------------------------
def _unquote(v):
    if isinstance(v, str) and len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1]
    return v


def _norm(v):
    if isinstance(v, dict):
        return {_unquote(k): _norm(x) for k, x in v.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return _unquote(v)


@functools.lru_cache(maxsize=None)
def hcl(path: str) -> dict:
    """An HCL file as plain data (python-hcl2, quotes stripped)."""
    import hcl2

    with open(REPO / path) as fh:
        return _norm(hcl2.load(fh))


def hcl_blocks(doc: dict, kind: str) -> dict:
    """{name: body} of the `kind` blocks (module, variable, output, ...)."""
    out = {}
    for entry in doc.get(kind, []):
        for name, body in entry.items():
            out[name] = body
    return out


def terraform_eks_args(env: str) -> dict:
    """Arguments of module "eks" in terraform/environments/<env>/main.tf."""
    return hcl_blocks(hcl(f"terraform/environments/{env}/main.tf"), "module")["eks"]


REF_RE = re.compile(r"\b(var|local|module)\.([A-Za-z_][A-Za-z0-9_-]*)(?:\.([A-Za-z_][A-Za-z0-9_-]*))?")
