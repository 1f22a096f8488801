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
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils as kv_utils

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
        # libyaml: the HTTPRoute CRD alone is 430 kB
        crd = yaml.load(folder.joinpath(source["file"]).read_text(), Loader=yaml.CSafeLoader)
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


def _first_error(validator: jsonschema.Draft202012Validator, doc: Doc) -> str | None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return f"{_where(errors[0].absolute_path)}: {errors[0].message}" if errors else None


def schema_findings(doc: Doc, version: str) -> list[str]:
    """What the schema of `doc`'s kind rejects (the first error); a kind with no known schema
    is a finding."""
    custom = custom_schemas().get((str(doc.get("apiVersion")), str(doc.get("kind"))))
    if custom is not None:
        error = _first_error(jsonschema.Draft202012Validator(custom.schema), doc)
        where = f"{custom.project} {custom.version}"
    else:
        try:
            validator = _core_validator(version, str(doc.get("apiVersion")), str(doc.get("kind")))
        except FileNotFoundError:
            known = ", ".join(sorted(f"{k} ({a})" for a, k in custom_schemas()))
            return [
                f"schema: no {doc.get('kind')} in apiVersion {doc.get('apiVersion')} for "
                f"Kubernetes {version} nor among the vendored custom resources ({known})"
            ]
        error = _first_error(validator, doc)
        where = f"Kubernetes {version}"
    return [] if error is None else [f"schema ({where}, strict): {error}"]


@functools.cache
def _core_validator(version: str, api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    """kubernetes-validate's strict schema of one kind, loaded once (its own `validate` reads
    and parses the schema files on every call). Raises FileNotFoundError for unknown kinds."""
    # the file layout kubernetes-validate's own validate() reads
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    known = [v for v in kv_utils.all_versions() if kv_utils.major_minor(v) <= version]
    directory = f"kubernetes-json-schema/v{known[-1]}-local-strict"
    schema = kv_utils.schema_contents(f"{directory}/{kind.lower()}-{group}.json", version)
    definitions = kv_utils.schema_contents(f"{directory}/_definitions.json", version)
    registry = referencing.Resource.from_contents(definitions) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry()
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)
