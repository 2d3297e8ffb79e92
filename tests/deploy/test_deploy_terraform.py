"""Terraform/OpenTofu, as deep as offline allows.

`tofu validate` needs the AWS provider, which cannot be installed without its
registry; so instead:
- `tofu fmt -check` over terraform/;
- every module is parsed (python-hcl2) and its wiring checked statically:
  variables, locals, outputs, module calls and resource references exist;
- the modules' variable validation rules are run by the real `tofu` against
  each environment's actual node-group values (a provider-free root module
  made of the module's variables.tf), and shown to reject a broken group.
"""

import copy
import json
import os
import re
import shutil
from pathlib import Path

import kubeharness
import pytest
from deploylib import ENVIRONMENTS, REF_RE, REPO, hcl, hcl_blocks, run, terraform_eks_args

MODULES = ("vpc", "eks")
ROOTS = [f"terraform/modules/{m}" for m in MODULES] + [f"terraform/environments/{e}" for e in ENVIRONMENTS]


def tofu_env(tmp: Path) -> dict:
    cfg = tmp / "tofurc"
    cfg.write_text("")
    return {**os.environ, "TF_CLI_CONFIG_FILE": str(cfg), "TF_IN_AUTOMATION": "1",
            "CHECKPOINT_DISABLE": "1", "TF_DATA_DIR": str(tmp / ".terraform")}


def test_tofu_fmt_check(tmp_path):
    out = run([kubeharness.tool("tofu"), "fmt", "-check", "-recursive", "-diff", "terraform"],
              env=tofu_env(tmp_path))
    assert out.stdout == "", out.stdout


@pytest.mark.parametrize("root", ROOTS)
def test_layout(root):
    for f in ("main.tf", "variables.tf", "outputs.tf"):
        assert (REPO / root / f).is_file(), f"{root}/{f}"


def load_dir(root: str) -> dict:
    docs = {}
    for f in sorted((REPO / root).glob("*.tf")):
        doc = hcl(str(f.relative_to(REPO)))
        for kind, entries in doc.items():
            if isinstance(entries, list):
                docs.setdefault(kind, []).extend(entries)
    return docs


def declared(doc, kind):
    return hcl_blocks(doc, kind)


def locals_of(doc):
    out = {}
    for entry in doc.get("locals", []):
        out.update(entry)
    return out


def resources_of(doc, kind="resource"):
    names = set()
    for entry in doc.get(kind, []):
        for rtype, body in entry.items():
            for rname in body:
                names.add((rtype, rname))
    return names


@pytest.mark.parametrize("root", ROOTS)
def test_references_resolve(root):
    doc = load_dir(root)
    text = "\n".join(p.read_text() for p in sorted((REPO / root).glob("*.tf")))
    variables = declared(doc, "variable")
    locals_ = locals_of(doc)
    modules = declared(doc, "module")
    resources = resources_of(doc)
    data = resources_of(doc, "data")
    for kind, name, attr in REF_RE.findall(text):
        if kind == "var":
            assert name in variables, f"{root}: var.{name} is not declared"
        elif kind == "local":
            assert name in locals_, f"{root}: local.{name} is not declared"
        elif kind == "module":
            assert name in modules, f"{root}: module.{name} is not declared"
            src = (REPO / root / modules[name]["source"]).resolve().relative_to(REPO)
            outputs = declared(load_dir(str(src)), "output")
            assert attr in outputs, f"{root}: module.{name}.{attr}: no such output in {src}"
    for rtype, rname in re.findall(r"(?<![\w.])((?:aws|tls)_[a-z0-9_]+)\.([a-z_][a-z0-9_]*)", text):
        if f'"{rtype}"' in text and f'resource "{rtype}" "{rname}"' not in text:
            continue  # a block header or a type name in a string, not a reference
        assert (rtype, rname) in resources, f"{root}: {rtype}.{rname} is not declared"
    for dtype, dname in re.findall(r"\bdata\.([a-z0-9_]+)\.([a-z_][a-z0-9_]*)", text):
        assert (dtype, dname) in data, f"{root}: data.{dtype}.{dname} is not declared"
    for name, v in variables.items():
        assert v.get("description"), f"{root}: variable {name} has no description"
        assert "type" in v, f"{root}: variable {name} has no type"
    for name, o in declared(doc, "output").items():
        assert o.get("description"), f"{root}: output {name} has no description"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_module_calls_match_module_variables(env):
    doc = load_dir(f"terraform/environments/{env}")
    for name, call in declared(doc, "module").items():
        src = (REPO / f"terraform/environments/{env}" / call["source"]).resolve().relative_to(REPO)
        variables = declared(load_dir(str(src)), "variable")
        args = set(call) - {"source", "version", "providers", "depends_on", "count", "for_each"}
        assert args <= set(variables), f"{env}: module {name} passes unknown {args - set(variables)}"
        required = {v for v, body in variables.items() if "default" not in body}
        assert required <= args, f"{env}: module {name} misses {required - args}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_backend_and_providers(env):
    main = hcl(f"terraform/environments/{env}/main.tf")
    tf = main["terraform"][0]
    assert "s3" in tf["backend"][0]
    providers = tf["required_providers"][0]
    assert providers["aws"]["source"] == "hashicorp/aws"
    backend = (REPO / f"terraform/environments/{env}/backend.hcl").read_text()
    assert f'key          = "{env}/terraform.tfstate"' in backend
    assert "use_lockfile = true" in backend


def _env_default(env: str, name: str):
    variables = declared(load_dir(f"terraform/environments/{env}"), "variable")
    return variables[name]["default"]


def _resolve(env: str, value):
    """Replaces "${var.x}" with the environment's default for x."""
    if isinstance(value, dict):
        return {k: _resolve(env, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(env, v) for v in value]
    if isinstance(value, str):
        m = re.fullmatch(r"\$\{var\.([a-z0-9_]+)\}", value)
        if m:
            return _env_default(env, m.group(1))
    return value


def eks_inputs(env: str) -> dict:
    args = terraform_eks_args(env)
    return {
        "cluster_name": f"runfleet-{env}",
        "subnet_ids": ["subnet-a", "subnet-b"],
        "private_subnets_by_az": {az: f"subnet-{az}" for az in _env_default(env, "availability_zones")},
        "kubernetes_version": _env_default(env, "kubernetes_version"),
        "cpu_node_group": _resolve(env, args["cpu_node_group"]),
        "gpu_node_groups": _resolve(env, args["gpu_node_groups"]),
    }


def tofu_check_variables(tmp: Path, module: str, inputs: dict) -> "subprocess.CompletedProcess":
    """Runs the module's variable declarations and validations with `inputs`
    through tofu: a root module of just its variables.tf needs no provider."""
    root = tmp / "root"
    root.mkdir(exist_ok=True)
    shutil.copy(REPO / f"terraform/modules/{module}/variables.tf", root / "variables.tf")
    (root / "inputs.tfvars.json").write_text(json.dumps(inputs))
    tofu = kubeharness.tool("tofu")
    env = tofu_env(tmp)
    run([tofu, "init", "-input=false", "-backend=false"], cwd=root, env=env)
    return kubeharness.subprocess.run(
        [str(tofu), "plan", "-no-color", "-input=false", "-lock=false", "-refresh=false",
         "-var-file=inputs.tfvars.json"], cwd=root, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_eks_validations_accept_the_environment(tmp_path, env):
    cp = tofu_check_variables(tmp_path, "eks", eks_inputs(env))
    assert cp.returncode == 0, cp.stderr + cp.stdout
    assert "No changes" in cp.stdout, cp.stdout


@pytest.mark.parametrize("breakage", ["no-accelerator-label", "no-gpu-taint", "bad-effect",
                                      "wrong-node-group-label"])
def test_eks_validations_reject_a_broken_gpu_group(tmp_path, breakage):
    inputs = eks_inputs("production")
    g = copy.deepcopy(inputs["gpu_node_groups"]["gpu-h100"])
    if breakage == "no-accelerator-label":
        del g["labels"]["runfleet.dev/accelerator"]
    elif breakage == "no-gpu-taint":
        g["taints"] = []
    elif breakage == "bad-effect":
        g["taints"][0]["effect"] = "NoSchedule"  # the Kubernetes spelling, not the EKS API's
    else:
        g["labels"]["runfleet.dev/node-group"] = "gpu-a100"
    inputs["gpu_node_groups"]["gpu-h100"] = g
    cp = tofu_check_variables(tmp_path, "eks", inputs)
    assert cp.returncode != 0, cp.stdout
    assert "Invalid value for variable" in cp.stderr, cp.stderr


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_vpc_validations_accept_the_environment(tmp_path, env):
    call = declared(load_dir(f"terraform/environments/{env}"), "module")["vpc"]
    inputs = {k: _resolve(env, v) for k, v in call.items()
              if k not in ("source", "tags") and not str(v).startswith("${local.")}
    inputs.update(name=f"runfleet-{env}", cluster_name=f"runfleet-{env}")
    cp = tofu_check_variables(tmp_path, "vpc", inputs)
    assert cp.returncode == 0, cp.stderr + cp.stdout
    bad = dict(inputs, availability_zones=inputs["availability_zones"][:1])
    cp = tofu_check_variables(tmp_path, "vpc", bad)
    assert cp.returncode != 0 and "two availability zones" in cp.stderr, cp.stderr
