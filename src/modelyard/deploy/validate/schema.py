"""Schema validation, offline and strict: core kinds against the official Kubernetes JSON
schemas (kubernetes-validate), custom resources against their projects' published CRDs
(vendored in deploy/schemas with version, source and checksum in SOURCES.yaml).

A CRD's openAPIV3Schema becomes a JSON schema the way the API server reads it under strict
field validation (kubectl's default since 1.27): unknown fields are errors unless the schema
preserves them, `x-kubernetes-int-or-string` takes either, `nullable` admits null. Not
evaluated offline: CEL rules (`x-kubernetes-validations`), which only the API server runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from modelyard.deploy.errors import DeployError
from modelyard.deploy.validate.documents import Doc

_DROPPED = {"description", "default", "example", "format", "nullable"}
# the ObjectMeta fields a manifest may set, strictly (the API server fills in the rest)
_OBJECT_META: Doc = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
            "maxLength": 253,
        },
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class CustomSchema:
    project: str
    version: str
    schema: Doc


def strict_schema(node: Doc) -> Doc:
    """A CRD openAPIV3Schema node as a strict JSON schema."""
    out: Doc = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict_schema(sub) for sub in value]
        elif key not in _DROPPED and not key.startswith("x-kubernetes-"):
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    open_ended = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
    if "properties" in node and not open_ended:
        out["additionalProperties"] = False
    return out


@functools.cache
def custom_schemas() -> dict[tuple[str, str], CustomSchema]:
    """(apiVersion, kind) -> schema, for every served version of every vendored CRD."""
    folder = resources.files("modelyard.deploy").joinpath("schemas")
    sources = yaml.safe_load(folder.joinpath("SOURCES.yaml").read_text())
    out: dict[tuple[str, str], CustomSchema] = {}
    for source in sources:
        crd = yaml.safe_load(folder.joinpath(source["file"]).read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            schema = strict_schema(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = _OBJECT_META
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
            api_version = f"{spec['group']}/{version['name']}"
            key = (api_version, spec["names"]["kind"])
            out[key] = CustomSchema(source["project"], str(source["version"]), schema)
    return out


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(document)"


def schema_findings(doc: Doc, version: str) -> list[str]:
    """What the schema of `doc`'s kind rejects; a kind with no known schema is a finding."""
    custom = custom_schemas().get((str(doc.get("apiVersion")), str(doc.get("kind"))))
    if custom is not None:
        validator = jsonschema.Draft202012Validator(custom.schema)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        return [
            f"schema ({custom.project} {custom.version}, strict): "
            f"{_where(e.absolute_path)}: {e.message}"
            for e in errors[:1]
        ]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [
            f"schema (Kubernetes {version}, strict): {_where(exc.absolute_path)}: {exc.message}"
        ]
    except kubernetes_validate.SchemaNotFoundError:
        known = ", ".join(sorted(f"{k} ({a})" for a, k in custom_schemas()))
        return [
            f"schema: no {doc.get('kind')} in apiVersion {doc.get('apiVersion')} for "
            f"Kubernetes {version} nor among the vendored custom resources ({known})"
        ]
    except kubernetes_validate.VersionNotSupportedError as exc:
        raise DeployError(f"Kubernetes version {version}: no schemas ({exc.message})") from exc
    return []
