"""Check manifests offline: strict schemas (Kubernetes and the vendored custom resources), Pod
Security "restricted", then what schemas cannot see — the mistakes that break LLM engines on
Kubernetes, rollouts that cut streams, replicas one drain takes down, engines open to all.

Each check says what goes wrong in a cluster; docs/deploy.md lists them and their sources.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from modelyard.deploy.errors import DeployError
from modelyard.deploy.validate.containers import check_workload, rwo_claims
from modelyard.deploy.validate.documents import (
    ENGINE_SERVICE_NAMES,
    Doc,
    Docs,
    Finding,
    name_of,
    pod_spec,
    pod_template,
    quantities,
)
from modelyard.deploy.validate.podsecurity import restricted_findings
from modelyard.deploy.validate.references import reference_findings, service_name_findings
from modelyard.deploy.validate.rollout import (
    AUTOSCALERS,
    availability_findings,
    dangling_autoscaler,
    drain_findings,
)
from modelyard.deploy.validate.schema import schema_findings

DEFAULT_VERSION = "1.30"
SUPPORTED_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33")

__all__ = [
    "DEFAULT_VERSION",
    "ENGINE_SERVICE_NAMES",
    "SUPPORTED_VERSIONS",
    "Finding",
    "check_directory",
    "check_documents",
    "load_directory",
]


def _document_findings(
    doc: Doc, docs: Docs, version: str, rwo: set[str], has_workloads: bool
) -> list[str]:
    kind = doc.get("kind")
    out = schema_findings(doc, version)
    if pod_template(doc) is not None:
        out += check_workload(doc, rwo)
        out += restricted_findings(pod_spec(doc))
        out += drain_findings(doc, docs)
        out += availability_findings(doc, docs)
    out += service_name_findings(doc)
    out += reference_findings(doc, docs, has_workloads)
    if kind in AUTOSCALERS and has_workloads:
        out += dangling_autoscaler(doc, docs)
    if kind == "PersistentVolumeClaim":
        out += quantities(
            "requests", ((doc.get("spec") or {}).get("resources") or {}).get("requests")
        )
    return out


def check_documents(docs: Docs, version: str = DEFAULT_VERSION) -> list[Finding]:
    """Every finding for (file, document) pairs; empty when all is well."""
    if version not in SUPPORTED_VERSIONS:
        raise DeployError(
            f"Kubernetes version {version} is not supported (supported: "
            f"{', '.join(SUPPORTED_VERSIONS)})"
        )
    findings: list[Finding] = []
    rwo = rwo_claims(docs)
    has_workloads = any(pod_template(d) is not None for _, d in docs)
    for file, doc in docs:
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            findings.append(
                Finding(
                    file, "?", "?", "not a Kubernetes object (apiVersion and kind are required)"
                )
            )
            continue
        if doc["kind"] == "Kustomization":
            continue  # checked against the directory by check_directory
        for message in _document_findings(doc, docs, version, rwo, has_workloads):
            findings.append(Finding(file, str(doc["kind"]), name_of(doc), message))
    return findings


def load_directory(directory: Path) -> Docs:
    """Every YAML document under `directory` (recursively), with its relative file name."""
    if not directory.is_dir():
        raise DeployError(f"{directory}: not a directory")
    out: Docs = []
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        raise DeployError(f"{directory}: no .yaml files")
    for path in files:
        relative = str(path.relative_to(directory))
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise DeployError(f"{relative}: not valid YAML ({exc})") from exc
        except OSError as exc:
            raise DeployError(f"{relative}: cannot read ({exc.strerror})") from exc
        out += [(relative, d) for d in documents if d is not None]
    return out


def check_directory(directory: Path, version: str = DEFAULT_VERSION) -> list[Finding]:
    docs = load_directory(directory)
    findings = check_documents(docs, version)
    for file, doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Kustomization":
            continue
        base = (directory / file).parent
        for resource in doc.get("resources") or []:
            if not (base / resource).exists():
                findings.append(
                    Finding(file, "Kustomization", "-", f"resource {resource} does not exist")
                )
    return findings
