"""Reading manifests: findings, the facts the checks compare against, and small accessors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]
Docs = list[tuple[str, Doc]]  # (file, document)

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
HOSTNAME = "kubernetes.io/hostname"


@dataclass(frozen=True)
class Finding:
    file: str
    kind: str
    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.kind}/{self.name}: {self.message}"


def name_of(doc: Doc) -> str:
    return str((doc.get("metadata") or {}).get("name", "?"))


def pod_template(doc: Doc) -> Doc | None:
    if doc.get("kind") not in WORKLOADS:
        return None
    template = (doc.get("spec") or {}).get("template")
    return template if isinstance(template, dict) else {}


def pod_spec(doc: Doc) -> Doc:
    return (pod_template(doc) or {}).get("spec") or {}


def pod_labels(doc: Doc) -> dict[str, str]:
    return ((pod_template(doc) or {}).get("metadata") or {}).get("labels") or {}


def containers(spec: Doc) -> Iterator[Doc]:
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def gpu_keys(resources: Doc) -> set[str]:
    keys: set[str] = set()
    for part in ("requests", "limits"):
        keys |= {k for k in (resources.get(part) or {}) if k.startswith(VENDOR_DOMAINS)}
    return keys


def uses_gpu(doc: Doc) -> bool:
    return any(gpu_keys(c.get("resources") or {}) for c in containers(pod_spec(doc)))


def quantities(where: str, values: Doc | None) -> list[str]:
    return [
        f"{where}.{key}: '{value}' is not a Kubernetes quantity"
        for key, value in (values or {}).items()
        if not QUANTITY.match(str(value))
    ]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def workloads(docs: Docs) -> Iterator[Doc]:
    for _, doc in docs:
        if pod_template(doc) is not None:
            yield doc


def selects_a_pod(selector: dict[str, str], docs: Docs) -> bool:
    return any(matches(selector, pod_labels(d)) for d in workloads(docs))


def find(docs: Docs, kind: str, name: str) -> Doc | None:
    return next((d for _, d in docs if d.get("kind") == kind and name_of(d) == name), None)


def pre_stop_sleep_s(container: Doc) -> int | None:
    """Seconds a `preStop: exec: sleep N` (or `preStop: sleep: {seconds: N}`) hook waits."""
    hook = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in hook:
        return int((hook["sleep"] or {}).get("seconds", 0))
    command = (hook.get("exec") or {}).get("command") or []
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep") and command[1].isdigit():
        return int(command[1])
    return None


def flag_value(args: list[str], flag: str) -> str | None:
    """The value of `--flag V` or `--flag=V` in a command line."""
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None
