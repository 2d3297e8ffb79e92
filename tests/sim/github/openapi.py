"""GitHub's published OpenAPI description, loaded once per process.

The REST document (`@octokit/openapi`, api.github.com) is OpenAPI 3.0: its
schemas are JSON Schema draft 4 plus `nullable`, and they may carry
`x-github-breaking-changes` patches for newer API versions. Schemas are
converted lazily, one component at a time, into plain draft-4 JSON Schema:

* `nullable: true` becomes `anyOf: [{type: null}, <schema>]` (so a `null`
  passes even when the schema also has an `enum` or an `allOf`);
* `$ref: #/components/schemas/X` becomes `urn:gh-rest:<version>:X`, resolved
  by a `referencing.Registry` whose retrieve function converts `X` on first
  use and memoizes it;
* for API version 2026-03-10 the breaking-change merge patches are applied.

Validators are compiled on first use per (operation, part, status, version)
and cached. The webhook document (`@octokit/openapi-webhooks`) is OpenAPI 3.1
(JSON Schema 2020-12) and is used as is.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jsonschema
import referencing
from referencing.jsonschema import DRAFT4, DRAFT202012

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
NODE_MODULES = os.environ.get("RUNFLEET_NODE_MODULES", os.path.join(REPO_ROOT, "node_modules"))
REST_DOC = os.path.join(NODE_MODULES, "@octokit", "openapi", "generated", "api.github.com.json")
WEBHOOKS_DOC = os.path.join(NODE_MODULES, "@octokit", "openapi-webhooks", "generated", "api.github.com.json")
WEBHOOK_EXAMPLES = os.path.join(NODE_MODULES, "@octokit", "webhooks-examples", "api.github.com", "index.json")

DEFAULT_API_VERSION = "2022-11-28"
SUPPORTED_API_VERSIONS = ("2022-11-28", "2026-03-10")

_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$")

FORMAT_CHECKER = jsonschema.FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time")
def _check_date_time(value: Any) -> bool:
    return not isinstance(value, str) or bool(_DATE_TIME.match(value))


@FORMAT_CHECKER.checks("uri")
def _check_uri(value: Any) -> bool:
    return not isinstance(value, str) or bool(_URI.match(value))


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (null deletes)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _version_key(version: str) -> str:
    return version  # ISO dates compare correctly as strings


@dataclass
class Operation:
    method: str
    template: str
    operation_id: str
    spec: dict
    params: list = field(default_factory=list)  # resolved parameter objects
    literal_segments: int = 0


class RestSpec:
    """The REST description: routing, request and response validation."""

    def __init__(self, path: str = REST_DOC):
        with open(path, "rb") as f:
            self.doc = json.load(f)
        self.schemas = self.doc["components"]["schemas"]
        self._routes: dict[int, list[tuple[list[str], dict]]] = {}
        for template, item in self.doc["paths"].items():
            segs = template.strip("/").split("/")
            self._routes.setdefault(len(segs), []).append((segs, item, template))
        for lst in self._routes.values():
            # Prefer templates with more literal segments (generate-jitconfig
            # before {runner_id}).
            lst.sort(key=lambda e: -sum(1 for s in e[0] if not s.startswith("{")))
        self._ops: dict[tuple[str, str], Operation] = {}
        self._validators: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        self._registries = {
            v: referencing.Registry(retrieve=self._make_retrieve(v)) for v in SUPPORTED_API_VERSIONS
        }

    # -- schema conversion -------------------------------------------------
    def _make_retrieve(self, version: str):
        @lru_cache(maxsize=None)
        def retrieve(uri: str) -> referencing.Resource:
            prefix = f"urn:gh-rest:{version}:"
            if not uri.startswith(prefix):
                raise referencing.exceptions.NoSuchResource(ref=uri)
            name = uri[len(prefix):]
            if name not in self.schemas:
                raise referencing.exceptions.NoSuchResource(ref=uri)
            return DRAFT4.create_resource(self.convert(self.schemas[name], version))

        return retrieve

    def convert(self, schema: Any, version: str = DEFAULT_API_VERSION) -> Any:
        """OpenAPI 3.0 schema object -> draft-4 JSON Schema (see module doc)."""
        if isinstance(schema, list):
            return [self.convert(s, version) for s in schema]
        if not isinstance(schema, dict):
            return schema
        ref = schema.get("$ref")
        if isinstance(ref, str):
            if ref.startswith("#/components/schemas/"):
                return {"$ref": f"urn:gh-rest:{version}:{ref.rsplit('/', 1)[1]}"}
            return {"$ref": ref}
        if version != DEFAULT_API_VERSION and "x-github-breaking-changes" in schema:
            for change in schema["x-github-breaking-changes"]:
                if (
                    isinstance(change.get("patch"), dict)
                    and _version_key(change.get("version", "")) <= _version_key(version)
                ):
                    schema = _merge_patch(schema, change["patch"])
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in ("nullable", "example", "examples", "discriminator", "xml", "externalDocs") or key.startswith("x-"):
                continue
            if key == "properties" and isinstance(value, dict):
                out[key] = {k: self.convert(v, version) for k, v in value.items()}
            elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
                out[key] = self.convert(value, version)
            elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
                out[key] = [self.convert(v, version) for v in value]
            else:
                out[key] = value
        if schema.get("nullable") is True:
            return {"anyOf": [{"type": "null"}, out]}
        return out

    def validator(self, key: tuple, schema: dict, version: str):
        with self._lock:
            v = self._validators.get(key)
        if v is None:
            v = jsonschema.Draft4Validator(
                self.convert(schema, version),
                registry=self._registries[version],
                format_checker=FORMAT_CHECKER,
            )
            with self._lock:
                self._validators[key] = v
        return v

    # -- routing -----------------------------------------------------------
    def resolve_param(self, p: dict) -> dict:
        while "$ref" in p:
            p = self._deref(p["$ref"])
        return p

    def _deref(self, ref: str) -> Any:
        node: Any = self.doc
        for part in ref.lstrip("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def match(self, method: str, path: str) -> tuple[Operation | None, dict, bool]:
        """Returns (operation, path params, path_exists)."""
        segs = path.strip("/").split("/")
        path_exists = False
        for tsegs, item, template in self._routes.get(len(segs), ()):
            params = {}
            ok = True
            for t, s in zip(tsegs, segs):
                if t.startswith("{") and t.endswith("}"):
                    if s == "":
                        ok = False
                        break
                    params[t[1:-1]] = s
                elif t != s:
                    ok = False
                    break
            if not ok:
                continue
            path_exists = True
            m = method.lower()
            if m not in item:
                continue
            return self.operation(template, m), params, True
        return None, {}, path_exists

    def operation(self, template: str, method: str) -> Operation:
        key = (template, method)
        op = self._ops.get(key)
        if op is None:
            item = self.doc["paths"][template]
            spec = item[method]
            params = [self.resolve_param(p) for p in item.get("parameters", [])]
            params += [self.resolve_param(p) for p in spec.get("parameters", [])]
            op = Operation(method.upper(), template, spec["operationId"], spec, params)
            self._ops[key] = op
        return op

    # -- request validation --------------------------------------------------
    def validate_request(
        self,
        op: Operation,
        path_params: dict[str, str],
        query: dict[str, list[str]],
        body: Any,
        has_body: bool,
        version: str = DEFAULT_API_VERSION,
    ) -> list[str]:
        """Returns a list of violations (empty when the request conforms)."""
        errors: list[str] = []
        known_query = set()
        for p in op.params:
            where, name = p["in"], p["name"]
            schema = p.get("schema", {})
            if where == "path":
                raw = path_params.get(name)
                if raw is None:
                    errors.append(f"path parameter {name!r} is missing")
                    continue
                value, err = _coerce(raw, schema)
                if err:
                    errors.append(f"path parameter {name!r}: {err}")
                    continue
                errors += self._check(("param", op.operation_id, name, version), schema, value, version, f"path parameter {name!r}")
            elif where == "query":
                known_query.add(name)
                if name not in query:
                    if p.get("required"):
                        errors.append(f"query parameter {name!r} is required")
                    continue
                values = query[name]
                if len(values) > 1 and schema.get("type") != "array":
                    errors.append(f"query parameter {name!r} given {len(values)} times")
                    continue
                value, err = _coerce(values[0] if schema.get("type") != "array" else values, schema)
                if err:
                    errors.append(f"query parameter {name!r}: {err}")
                    continue
                errors += self._check(("param", op.operation_id, name, version), schema, value, version, f"query parameter {name!r}")
        for name in query:
            if name not in known_query:
                errors.append(
                    f"query parameter {name!r} is not defined for {op.operation_id} "
                    f"(GitHub ignores it silently; the simulator rejects it)"
                )
        rb = op.spec.get("requestBody")
        if rb is None:
            if has_body and body not in (None, {}, ""):
                errors.append(f"{op.operation_id} takes no request body")
        else:
            content = rb.get("content", {})
            schema = (content.get("application/json") or {}).get("schema")
            if not has_body:
                if rb.get("required"):
                    errors.append("request body is required (application/json)")
            elif schema is not None:
                errors += self._check(("body", op.operation_id, version), schema, body, version, "request body")
        return errors

    def _check(self, key, schema, value, version, where) -> list[str]:
        v = self.validator(key, schema, version)
        out = []
        for e in sorted(v.iter_errors(value), key=lambda e: list(e.path)):
            loc = "/".join(str(p) for p in e.absolute_path)
            spath = "/".join(str(p) for p in e.absolute_schema_path)
            out.append(f"{where}{(' at ' + loc) if loc else ''}: {e.message} (schema: {spath})")
        return out

    def error_list(self, op: Operation, errs: list[str]) -> list | None:
        """The `errors` member of a 422 body in the shape this operation's
        422 response declares (strings or objects), or None."""
        resp = op.spec.get("responses", {}).get("422")
        ref = (resp or {}).get("$ref", "")
        if ref.endswith("/validation_failed_simple"):
            return list(errs)
        if ref.endswith("/validation_failed"):
            return [{"resource": op.operation_id, "code": "invalid", "message": e} for e in errs]
        return None

    # -- response validation -------------------------------------------------
    def validate_response(self, op: Operation, status: int, body: Any, version: str = DEFAULT_API_VERSION) -> list[str]:
        responses = op.spec.get("responses", {})
        resp = responses.get(str(status))
        if resp is None:
            if 200 <= status < 300:
                return [f"status {status} is not documented for {op.operation_id}"]
            return []  # GitHub answers undocumented error codes (401, 403, 5xx) everywhere
        while "$ref" in resp:
            resp = self._deref(resp["$ref"])
        content = resp.get("content")
        if not content:
            if body not in (None, b"", ""):
                return [f"status {status} of {op.operation_id} has no body in the description"]
            return []
        schema = (content.get("application/json") or {}).get("schema")
        if schema is None:
            return []
        return self._check(("resp", op.operation_id, status, version), schema, body, version, f"response {status}")


def _coerce(raw: Any, schema: dict) -> tuple[Any, str | None]:
    """Coerces a path/query string to the parameter schema's type."""
    t = schema.get("type")
    try:
        if t == "integer":
            if not re.fullmatch(r"-?\d+", raw):
                return None, f"{raw!r} is not an integer"
            return int(raw), None
        if t == "number":
            return float(raw), None
        if t == "boolean":
            if raw not in ("true", "false"):
                return None, f"{raw!r} is not a boolean (true/false)"
            return raw == "true", None
        if t == "array":
            vals = raw if isinstance(raw, list) else [raw]
            items: list = []
            for v in vals:
                items += v.split(",")
            return items, None
    except (TypeError, ValueError):
        return None, f"{raw!r} is not a {t}"
    return raw, None


class WebhookSpec:
    """The webhook description (OpenAPI 3.1, JSON Schema 2020-12)."""

    def __init__(self, path: str = WEBHOOKS_DOC):
        with open(path, "rb") as f:
            self.doc = json.load(f)
        self._registry = referencing.Registry().with_resource(
            "urn:gh-webhooks", DRAFT202012.create_resource(self.doc)
        )
        self._validators: dict[str, Any] = {}
        self._lock = threading.Lock()

    def key_for(self, event: str, action: str | None) -> str:
        key = event.replace("_", "-")
        if action:
            key += "-" + action.replace("_", "-")
        return key

    def validate(self, event: str, action: str | None, payload: Any) -> list[str]:
        key = self.key_for(event, action)
        with self._lock:
            v = self._validators.get(key)
        if v is None:
            hook = self.doc["webhooks"].get(key)
            if hook is None:
                return [f"no webhook {key!r} in the description"]
            ref = hook["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            v = jsonschema.Draft202012Validator(
                {"$ref": "urn:gh-webhooks" + ref}, registry=self._registry, format_checker=FORMAT_CHECKER
            )
            with self._lock:
                self._validators[key] = v
        out = []
        for e in v.iter_errors(payload):
            loc = "/".join(str(p) for p in e.absolute_path)
            out.append(f"{key} at {loc or '(root)'}: {e.message}")
        return out


_rest: RestSpec | None = None
_webhooks: WebhookSpec | None = None
_examples: list | None = None
_load_lock = threading.Lock()


def rest_spec() -> RestSpec:
    global _rest
    with _load_lock:
        if _rest is None:
            _rest = RestSpec()
        return _rest


def webhook_spec() -> WebhookSpec:
    global _webhooks
    with _load_lock:
        if _webhooks is None:
            _webhooks = WebhookSpec()
        return _webhooks


def webhook_examples() -> list:
    global _examples
    with _load_lock:
        if _examples is None:
            with open(WEBHOOK_EXAMPLES, "rb") as f:
                _examples = json.load(f)
        return _examples
