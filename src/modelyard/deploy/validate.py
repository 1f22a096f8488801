"""Check manifests offline: the official Kubernetes JSON schemas (kubernetes-validate, strict),
then what the schemas cannot see — the mistakes that break LLM engines on Kubernetes.

Each check says what goes wrong in a cluster; docs/deploy.md links the reports behind them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from modelyard.deploy.errors import DeployError

Doc = dict[str, Any]

DEFAULT_VERSION = "1.30"
SUPPORTED_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33")
# the resource names GPU device plugins advertise
GPU_RESOURCE = re.compile(
    r"^(nvidia\.com/gpu(\.shared)?|nvidia\.com/mig-\d+g\.\d+gb(\+me)?|amd\.com/gpu|gpu\.intel\.com/(i915|xe))$"
)
VENDOR_DOMAINS = ("nvidia.com/", "amd.com/", "gpu.intel.com/")
# k8s.io/apimachinery resource.Quantity's grammar
QUANTITY = re.compile(
    r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?(\d+(\.\d*)?|\.\d+))?$"
)
# Service names whose service-link variables an engine reads as its own settings
ENGINE_SERVICE_NAMES = {
    "vllm": "VLLM_PORT",
    "sglang": "SGLANG_PORT",
    "tgi": "TGI_PORT",
    "text-generation-inference": "TEXT_GENERATION_INFERENCE_PORT",
    "ollama": "OLLAMA_PORT",
    "llamacpp": "LLAMACPP_PORT",
    "llama-cpp": "LLAMA_CPP_PORT",
}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


@dataclass(frozen=True)
class Finding:
    file: str
    kind: str
    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.kind}/{self.name}: {self.message}"


def _name(doc: Doc) -> str:
    return str((doc.get("metadata") or {}).get("name", "?"))


def _schema(doc: Doc, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(document)"
        message = exc.message
        return [f"schema (Kubernetes {version}, strict): {where}: {message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [
            f"schema: no {doc.get('kind')} in apiVersion {doc.get('apiVersion')} for "
            f"Kubernetes {version}"
        ]
    return []


def _pod_template(doc: Doc) -> Doc | None:
    if doc.get("kind") not in WORKLOADS:
        return None
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Job":
        return spec.get("template")
    return spec.get("template")


def _containers(pod_spec: Doc) -> Iterator[Doc]:
    yield from pod_spec.get("initContainers") or []
    yield from pod_spec.get("containers") or []


def _gpu_keys(resources: Doc) -> set[str]:
    keys: set[str] = set()
    for part in ("requests", "limits"):
        keys |= {k for k in (resources.get(part) or {}) if k.startswith(VENDOR_DOMAINS)}
    return keys


def _quantities(where: str, values: Doc | None) -> list[str]:
    out = []
    for key, value in (values or {}).items():
        if not QUANTITY.match(str(value)):
            out.append(f"{where}.{key}: '{value}' is not a Kubernetes quantity")
    return out


def _check_container(container: Doc, volumes: dict[str, Doc]) -> list[str]:
    out: list[str] = []
    name = container.get("name", "?")
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    out += _quantities(f"container {name} requests", requests)
    out += _quantities(f"container {name} limits", limits)
    gpu_keys = _gpu_keys(resources)
    for key in sorted(gpu_keys):
        if not GPU_RESOURCE.match(key):
            out.append(
                f"container {name}: '{key}' is not a resource any device plugin advertises; "
                "request nvidia.com/gpu (or nvidia.com/mig-<profile>, amd.com/gpu) and choose "
                "the GPU type with node affinity on nvidia.com/gpu.product"
            )
        if key not in limits:
            out.append(f"container {name}: GPU resource {key} must be set in limits")
        elif key in requests and str(requests[key]) != str(limits[key]):
            out.append(
                f"container {name}: GPU resource {key}: requests ({requests[key]}) must equal "
                f"limits ({limits[key]}); extended resources cannot be overcommitted"
            )
    ports = container.get("ports") or []
    numbers = {p.get("containerPort") for p in ports}
    names = {p.get("name") for p in ports if p.get("name")}
    for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(probe_kind) or {}
        for handler in ("httpGet", "tcpSocket", "grpc"):
            port = (probe.get(handler) or {}).get("port")
            if port is None:
                continue
            known = port in names if isinstance(port, str) else port in numbers
            if not known:
                out.append(
                    f"container {name}: {probe_kind} uses port {port!r}, which the container "
                    f"does not declare (ports: {sorted(map(str, numbers | names)) or 'none'})"
                )
    if gpu_keys:
        if not container.get("startupProbe"):
            out.append(
                f"container {name}: a GPU engine needs a startupProbe sized to its load time; "
                "without one the liveness probe kills the pod while the model loads"
            )
        shm = next(
            (
                m
                for m in container.get("volumeMounts") or []
                if m.get("mountPath") == "/dev/shm"
                and (volumes.get(m.get("name", "")) or {}).get("emptyDir", {}).get("medium")
                == "Memory"
            ),
            None,
        )
        if shm is None:
            out.append(
                f"container {name}: no memory-backed /dev/shm (emptyDir medium Memory); the "
                "container runtime's 64 MB default breaks the engine's shared-memory IPC/NCCL"
            )
    return out


def _rwo_claims(docs: list[tuple[str, Doc]]) -> set[str]:
    return {
        _name(d)
        for _, d in docs
        if d.get("kind") == "PersistentVolumeClaim"
        and {"ReadWriteOnce", "ReadWriteOncePod"}
        & set((d.get("spec") or {}).get("accessModes") or [])
    }


def _check_workload(doc: Doc, rwo: set[str]) -> list[str]:
    out: list[str] = []
    spec = doc.get("spec") or {}
    template = _pod_template(doc) or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    if doc.get("kind") != "Job":
        wrong = {k: v for k, v in match.items() if labels.get(k) != v}
        if wrong or not match:
            out.append(
                f"selector {match} does not match the pod template's labels {labels}"
                if match
                else "selector.matchLabels is empty"
            )
    pod_spec = template.get("spec") or {}
    volumes = {v.get("name", ""): v for v in pod_spec.get("volumes") or []}
    for volume in volumes.values():
        limit = (volume.get("emptyDir") or {}).get("sizeLimit")
        if limit is not None and not QUANTITY.match(str(limit)):
            out.append(f"volume {volume.get('name')}: sizeLimit '{limit}' is not a quantity")
    for container in _containers(pod_spec):
        out += _check_container(container, volumes)
    for template_claim in spec.get("volumeClaimTemplates") or []:
        storage = ((template_claim.get("spec") or {}).get("resources") or {}).get("requests")
        out += _quantities("volumeClaimTemplates requests", storage)
    if doc.get("kind") == "Deployment":
        claims = {
            str((v.get("persistentVolumeClaim") or {}).get("claimName")) for v in volumes.values()
        } & rwo
        strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
        if claims and strategy != "Recreate":
            out.append(
                f"mounts ReadWriteOnce volume {sorted(claims)[0]} with a {strategy} update: the "
                "new pod cannot attach it while the old one runs (Multi-Attach error); use "
                "strategy Recreate or a StatefulSet"
            )
        if claims and int(spec.get("replicas", 1)) > 1:
            out.append(
                f"{spec.get('replicas')} replicas share ReadWriteOnce volume {sorted(claims)[0]}:"
                " pods on other nodes fail with Multi-Attach; use a StatefulSet with "
                "volumeClaimTemplates or a ReadWriteMany volume"
            )
    return out


def _selects(selector: Doc, docs: list[tuple[str, Doc]]) -> bool:
    for _, doc in docs:
        template = _pod_template(doc)
        if template is None:
            continue
        labels = (template.get("metadata") or {}).get("labels") or {}
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            return True
    return False


def check_documents(docs: list[tuple[str, Doc]], version: str = DEFAULT_VERSION) -> list[Finding]:
    """Schema and semantic findings for (file, document) pairs; empty when all is well."""
    if version not in SUPPORTED_VERSIONS:
        raise DeployError(
            f"Kubernetes version {version} is not supported (supported: "
            f"{', '.join(SUPPORTED_VERSIONS)})"
        )
    findings: list[Finding] = []
    rwo = _rwo_claims(docs)
    has_workloads = any(_pod_template(d) is not None for _, d in docs)
    for file, doc in docs:
        kind, name = str(doc.get("kind", "?")), _name(doc)

        def add(message: str, file: str = file, kind: str = kind, name: str = name) -> None:
            findings.append(Finding(file, kind, name, message))

        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            add("not a Kubernetes object (apiVersion and kind are required)")
            continue
        if kind == "Kustomization":
            continue  # checked against the directory by check_directory
        for message in _schema(doc, version):
            add(message)
        if _pod_template(doc) is not None:
            for message in _check_workload(doc, rwo):
                add(message)
        if kind == "Service":
            if name in ENGINE_SERVICE_NAMES:
                add(
                    f"a Service named '{name}' makes Kubernetes inject "
                    f"{ENGINE_SERVICE_NAMES[name]}=tcp://<ip>:<port> into every pod of the "
                    "namespace, which the engine reads as its own setting and fails to start; "
                    "rename the Service (and set enableServiceLinks: false)"
                )
            selector = (doc.get("spec") or {}).get("selector") or {}
            if selector and has_workloads and not _selects(selector, docs):
                add(f"selector {selector} matches no pod template in these manifests")
        if kind == "PodDisruptionBudget":
            selector = ((doc.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if has_workloads and not _selects(selector, docs):
                add(f"selector {selector} matches no pod template in these manifests")
        if kind == "PersistentVolumeClaim":
            requests = ((doc.get("spec") or {}).get("resources") or {}).get("requests")
            for message in _quantities("requests", requests):
                add(message)
    return findings


def load_directory(directory: Path) -> list[tuple[str, Doc]]:
    """Every YAML document under `directory` (recursively), with its relative file name."""
    if not directory.is_dir():
        raise DeployError(f"{directory}: not a directory")
    out: list[tuple[str, Doc]] = []
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        raise DeployError(f"{directory}: no .yaml files")
    for path in files:
        relative = str(path.relative_to(directory))
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise DeployError(f"{relative}: not valid YAML ({exc})") from exc
        out += [(relative, d) for d in documents if d is not None]
    return out


def check_directory(directory: Path, version: str = DEFAULT_VERSION) -> list[Finding]:
    docs = load_directory(directory)
    findings = check_documents(docs, version)
    for file, doc in docs:
        if doc.get("kind") != "Kustomization":
            continue
        base = (directory / file).parent
        for resource in doc.get("resources") or []:
            if not (base / resource).exists():
                findings.append(
                    Finding(file, "Kustomization", "-", f"resource {resource} does not exist")
                )
    return findings
