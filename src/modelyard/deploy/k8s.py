"""Render a fleet as Kubernetes manifests: one isolated runtime per model, plus the gateway.

Pure functions from a validated fleet to plain dicts (one list of documents per file). What each
choice protects against is in docs/deploy.md; `validate.py` checks the result.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from modelyard import __version__
from modelyard.catalog import GpuSpec
from modelyard.catalog.mig import fits_on_one_gpu, mig_memory_gb, mig_slices
from modelyard.deploy.errors import DeployError
from modelyard.deploy.validate import ENGINE_SERVICE_NAMES
from modelyard.engines import adapter_for
from modelyard.engines.base import EngineAdapter, LaunchSpec
from modelyard.fleet import LoadedFleet, SharedGroup
from modelyard.memory import Device, FitSettings, fit, fit_model
from modelyard.yamlsource import load_yaml

Doc = dict[str, Any]
GIB = 1024**3

# label key of each node-label scheme (catalog gpus.yaml `node_labels`)
NODE_LABEL_KEYS = {
    "nvidia": "nvidia.com/gpu.product",  # NVIDIA GPU Feature Discovery
    "gke": "cloud.google.com/gke-accelerator",
}
GATEWAY_PORT = 8080
CONFIG_DIR = "/etc/modelyard"


@dataclass(frozen=True)
class RenderOptions:
    namespace: str | None = None
    node_label: Literal["nvidia", "gke"] = "nvidia"
    workload: Literal["auto", "deployment", "statefulset"] = "auto"
    cache_access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = "ReadWriteOnce"
    storage_class: str | None = None
    hf_token_secret: str = "hf-token"
    # first start downloads the weights into the cache volume: 100 MB/s is a cautious hub rate
    load_bandwidth_bytes_s: float = 100e6
    init_seconds: float = 180.0  # CUDA context, profiling run, CUDA graph capture
    startup_margin: float = 2.0
    shm_size_gib: int = 2
    drain_seconds: int = 10
    gateway_image: str = f"modelyard:{__version__}"
    gateway_replicas: int = 2
    gateway_hpa: bool = False


@dataclass
class Rendered:
    files: dict[str, list[Doc]] = field(default_factory=dict)  # in kustomization.yaml
    node_config: dict[str, list[Doc]] = field(default_factory=dict)  # cluster admin's part
    warnings: list[str] = field(default_factory=list)
    endpoints: dict[str, list[str]] = field(default_factory=dict)

    def all_files(self) -> dict[str, list[Doc]]:
        return {**self.files, **{f"node-config/{k}": v for k, v in self.node_config.items()}}


@dataclass(frozen=True)
class Slot:
    """Where one model's pods run: which GPU resource, on which nodes, with what memory share."""

    gpu_name: str
    gpu: GpuSpec
    resource: str  # nvidia.com/gpu or nvidia.com/mig-<profile>
    memory_utilization: float
    extra_affinity: tuple[tuple[str, str], ...] = ()


def k8s_name(text: str, limit: int = 63) -> str:
    """An RFC 1035 label from a fleet name: lower case, '-' for anything else, starts with a
    letter, at most `limit` characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"m-{name}"
    return name[:limit].rstrip("-")


def label_value(text: str) -> str:
    """A valid label value: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return value.strip("-_.") or "unknown"


def quantity_gib(value: float) -> str:
    return f"{max(math.ceil(value), 1)}Gi"


def _model_fits(loaded: LoadedFleet, name: str, memory_bytes: float, utilization: float) -> bool:
    device = Device(name="mig", memory_bytes=memory_bytes, is_gpu=True)
    return fit_model(loaded, name, device, utilization).fits


def mig_layout(loaded: LoadedFleet, group: SharedGroup, gpu: GpuSpec) -> dict[str, str] | None:
    """The smallest MIG profile each member fits in, if all of them fit on one GPU together."""
    if not gpu.mig_profiles:
        return None
    by_size = sorted(gpu.mig_profiles, key=lambda p: (mig_memory_gb(p), mig_slices(gpu, p)))
    layout: dict[str, str] = {}
    for name in group.models:
        chosen = next(
            (p for p in by_size if _model_fits(loaded, name, mig_memory_gb(p) * 1e9, 0.9)), None
        )
        if chosen is None:
            return None
        layout[name] = chosen
    return layout if fits_on_one_gpu(gpu, list(layout.values())) else None


def _slots(loaded: LoadedFleet, rendered: Rendered) -> dict[str, Slot]:
    fleet = loaded.fleet
    slots: dict[str, Slot] = {}
    for name, entry in fleet.models.items():
        if fleet.group_of(name) is None:
            gpu = loaded.gpu(name)
            if gpu is None or entry.gpu is None:
                raise DeployError(
                    f"models.{name}: no `gpu:`; Kubernetes manifests are rendered for GPU "
                    "engines (run CPU engines locally with `modelyard up`)"
                )
            utilization = entry.gpu_memory_utilization or 0.9
            slots[name] = Slot(entry.gpu, gpu, "nvidia.com/gpu", utilization)
    for index, group in enumerate(fleet.shared_groups()):
        gpu = loaded.gpu(group.models[0])
        if gpu is None or group.gpu is None:
            raise DeployError(
                f"placement.shared.{index}: no `gpu:`; a shared group on CPU cores has no "
                "Kubernetes equivalent (run it locally with `modelyard up`)"
            )
        layout = mig_layout(loaded, group, gpu)
        config = f"modelyard-{k8s_name(fleet.name)}-{index}"
        if layout is not None:
            for name, profile in layout.items():
                slots[name] = Slot(group.gpu, gpu, f"nvidia.com/mig-{profile}", 0.9)
            counts: dict[str, int] = {}
            for profile in layout.values():
                counts[profile] = counts.get(profile, 0) + 1
            rendered.node_config[f"mig-{index}.yaml"] = [_mig_config(config, counts)]
            rendered.warnings.append(
                f"shared group {index} ({', '.join(group.models)}) renders as MIG slices on "
                f"{group.gpu}: {', '.join(f'{m}={p}' for m, p in layout.items())}; label the "
                f"nodes nvidia.com/mig.config={config} (node-config/mig-{index}.yaml) and run the "
                "device plugin with the mixed MIG strategy"
            )
            continue
        fractions = loaded.memory_fractions(group)
        replicas = len(group.models)
        for name in group.models:
            slots[name] = Slot(
                group.gpu,
                gpu,
                "nvidia.com/gpu",
                fractions[name],
                (("nvidia.com/gpu.replicas", str(replicas)),),
            )
        rendered.node_config[f"time-slicing-{index}.yaml"] = [_time_slicing_config(replicas)]
        why = "it has no MIG" if not gpu.mig_profiles else "its members do not fit MIG slices"
        rendered.warnings.append(
            f"shared group {index} ({', '.join(group.models)}) on {group.gpu} renders as "
            f"time-sliced GPU sharing because {why}: no memory or fault isolation between the "
            "models (each engine is capped by --gpu-memory-utilization = its memory fraction, "
            f"{', '.join(f'{m}={fractions[m]:g}' for m in group.models)}), and the device "
            f"plugin must advertise {replicas} replicas per GPU "
            f"(node-config/time-slicing-{index}.yaml)"
        )
    return slots


def _mig_config(config: str, counts: dict[str, int]) -> Doc:
    parted = {
        "version": "v1",
        "mig-configs": {
            config: [{"devices": "all", "mig-enabled": True, "mig-devices": counts}],
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "custom-mig-config", "namespace": "gpu-operator"},
        "data": {"config.yaml": yaml.safe_dump(parted, sort_keys=False)},
    }


def _time_slicing_config(replicas: int) -> Doc:
    config = {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": "nvidia.com/gpu", "replicas": replicas}],
            }
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "time-slicing-config", "namespace": "gpu-operator"},
        "data": {"any": yaml.safe_dump(config, sort_keys=False)},
    }


def _labels(fleet_name: str, name: str, component: str, version: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": k8s_name(f"{fleet_name}-{name}"),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": k8s_name(fleet_name),
        "app.kubernetes.io/managed-by": "modelyard",
        "app.kubernetes.io/version": label_value(version),
    }


def _selector(labels: dict[str, str]) -> dict[str, str]:
    return {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}


def _metadata(name: str, labels: dict[str, str], options: RenderOptions) -> Doc:
    meta: Doc = {"name": name, "labels": labels}
    if options.namespace:
        meta["namespace"] = options.namespace
    return meta


def _image_tag(image: str) -> str:
    return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"


def _affinity(slot: Slot, options: RenderOptions) -> Doc:
    value = slot.gpu.node_labels.get(options.node_label)
    if not value:
        raise DeployError(
            f"GPU '{slot.gpu_name}' has no '{options.node_label}' node label value in the "
            f"catalog (not offered there?); choose another --node-label "
            f"(known: {', '.join(k for k, v in slot.gpu.node_labels.items() if v) or 'none'})"
        )
    expressions = [
        {"key": NODE_LABEL_KEYS[options.node_label], "operator": "In", "values": [value]},
        *({"key": k, "operator": "In", "values": [v]} for k, v in slot.extra_affinity),
    ]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def startup_failure_threshold(
    weights_bytes: float, options: RenderOptions, period_s: int = 10
) -> int:
    """Probes a loading engine gets before the kubelet restarts it: download + init, times the
    margin, in probe periods."""
    seconds = (weights_bytes / options.load_bandwidth_bytes_s + options.init_seconds) * (
        options.startup_margin
    )
    return max(math.ceil(seconds / period_s), 3)


def _weights(loaded: LoadedFleet, name: str, rendered: Rendered) -> str:
    entry = loaded.fleet.models[name]
    spec = loaded.model_spec(name)
    quant = loaded.quant(name)
    if entry.weights:
        if entry.weights.startswith("/"):
            rendered.warnings.append(
                f"{name}: weights '{entry.weights}' is a path: it must exist in the pod (in the "
                "model cache volume)"
            )
        return entry.weights
    if entry.engine == "llamacpp":
        raise DeployError(
            f"models.{name}: llama.cpp needs a GGUF repository; set `weights:` to its hub id "
            "(e.g. ggml-org/gemma-3-270m-GGUF) or a path in the cache volume"
        )
    prequantized = quant.bits_per_weight < 16 and entry.quant_name != "fp8"
    if prequantized:
        rendered.warnings.append(
            f"{name}: quant {entry.quant_name} needs a pre-quantized checkpoint but `weights:` "
            f"is not set, so the pod would load the base model {spec.hf_id}; set `weights:` to "
            "the quantized checkpoint's hub id (`modelyard quant --recipe` writes its recipe)"
        )
    return spec.hf_id


def _engine_docs(
    loaded: LoadedFleet, name: str, slot: Slot, options: RenderOptions, rendered: Rendered
) -> list[Doc]:
    fleet = loaded.fleet
    entry = fleet.models[name]
    adapter: EngineAdapter = adapter_for(entry.engine)
    weights = _weights(loaded, name, rendered)
    model = loaded.model_spec(name)
    spec = LaunchSpec(
        name=name,
        catalog_model=loaded.catalog.resolve_model_name(entry.catalog),
        model=model,
        quant_name=entry.quant_name,
        quant=loaded.quant(name),
        weights=weights,
        host="0.0.0.0",
        port=adapter.container_port,
        gpu=slot.gpu_name,
        max_model_len=entry.max_model_len,
        gpu_memory_utilization=slot.memory_utilization,
        max_num_seqs=entry.max_num_seqs,
        max_num_batched_tokens=entry.max_num_batched_tokens,
        kv_cache_dtype=entry.kv_cache_dtype,
        extra_args=tuple(entry.engine_args),
    )
    argv = adapter.container_command(spec)
    image = adapter.gpu_image or adapter.image
    served_bytes = fit(
        spec.catalog_model,
        model,
        entry.quant_name,
        spec.quant,
        Device.from_gpu(slot.gpu_name, slot.gpu),
        FitSettings(max_model_len=entry.max_model_len),
    ).weights_bytes
    # what sits on disk: the checkpoint, which is bf16 when fp8 is applied at load time
    disk_bytes = model.params * 2 if entry.quant_name in ("bf16", "fp8") else served_bytes
    svc = k8s_name(name)
    if svc in ENGINE_SERVICE_NAMES:
        svc = f"{svc}-model"  # a Service named `vllm` injects VLLM_PORT (see validate.py)
    labels = _labels(fleet.name, name, "engine", _image_tag(image))
    labels["modelyard.dev/engine"] = entry.engine
    selector = _selector(labels)
    replicas = entry.replicas
    rwo = options.cache_access_mode == "ReadWriteOnce"
    kind = options.workload
    if kind == "auto":
        kind = "statefulset" if rwo and replicas > 1 else "deployment"
    if kind == "deployment" and rwo and replicas > 1:
        raise DeployError(
            f"models.{name}: {replicas} replicas of a Deployment cannot share a ReadWriteOnce "
            "cache volume (Multi-Attach); use --workload statefulset or "
            "--cache-access-mode ReadWriteMany"
        )
    shm_gib = options.shm_size_gib
    host_memory = served_bytes * 1.2 / GIB + 8 + shm_gib  # loading buffers + runtime + shm
    period = 10
    cache_volume = "model-cache"
    port_name = "http"
    health = adapter.health_path
    container: Doc = {
        "name": "engine",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": argv[:1],
        "args": argv[1:],
        "ports": [{"name": port_name, "containerPort": adapter.container_port}],
        "env": [
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": options.hf_token_secret,
                        "key": "token",
                        "optional": True,
                    }
                },
            },
            {"name": "HF_HOME", "value": adapter.cache_path},
            *(
                [{"name": "LLAMA_CACHE", "value": adapter.cache_path}]
                if entry.engine == "llamacpp"
                else []
            ),
        ],
        "resources": {
            "requests": {"cpu": "4", "memory": quantity_gib(host_memory), slot.resource: "1"},
            "limits": {"cpu": "8", "memory": quantity_gib(host_memory), slot.resource: "1"},
        },
        "startupProbe": {
            "httpGet": {"path": health, "port": port_name},
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": startup_failure_threshold(disk_bytes, options, period),
        },
        "readinessProbe": {
            "httpGet": {"path": health, "port": port_name},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": health, "port": port_name},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(options.drain_seconds)]}}},
        "volumeMounts": [
            {"name": cache_volume, "mountPath": adapter.cache_path},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    grace = options.drain_seconds + int(min(fleet.policy.timeouts.total, 300))
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(adapter.container_port),
    }
    if adapter.metrics_path:
        annotations["prometheus.io/path"] = adapter.metrics_path
    else:
        annotations["prometheus.io/scrape"] = "false"
    volumes: list[Doc] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gib}Gi"}},
    ]
    pod: Doc = {
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": {
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": grace,
            "affinity": _affinity(slot, options),
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "containers": [container],
            "volumes": volumes,
        },
    }
    storage = quantity_gib(disk_bytes * 1.2 / GIB + 10)
    claim_spec: Doc = {
        "accessModes": [options.cache_access_mode],
        "resources": {"requests": {"storage": storage}},
    }
    if options.storage_class:
        claim_spec["storageClassName"] = options.storage_class
    docs: list[Doc] = []
    service: Doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(svc, labels, options),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": port_name, "port": adapter.container_port, "targetPort": port_name}],
        },
    }
    if kind == "statefulset":
        headless = f"{svc}-pods"
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": _metadata(svc, labels, options),
                "spec": {
                    "serviceName": headless,
                    "replicas": replicas,
                    "podManagementPolicy": "Parallel",
                    "selector": {"matchLabels": selector},
                    "template": pod,
                    "volumeClaimTemplates": [
                        {"metadata": {"name": cache_volume}, "spec": claim_spec}
                    ],
                },
            }
        )
        docs.append(service)
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _metadata(headless, labels, options),
                "spec": {
                    "clusterIP": "None",
                    "selector": selector,
                    "ports": [
                        {"name": port_name, "port": adapter.container_port, "targetPort": port_name}
                    ],
                },
            }
        )
        rendered.endpoints[name] = [
            f"http://{svc}-{i}.{headless}:{adapter.container_port}" for i in range(replicas)
        ]
    else:
        claim = f"{svc}-cache"
        volumes.append({"name": cache_volume, "persistentVolumeClaim": {"claimName": claim}})
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": _metadata(claim, labels, options),
                "spec": claim_spec,
            }
        )
        strategy: Doc = (
            {"type": "Recreate"}
            if rwo
            else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        )
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": _metadata(svc, labels, options),
                "spec": {
                    "replicas": replicas,
                    "strategy": strategy,
                    "selector": {"matchLabels": selector},
                    "template": pod,
                },
            }
        )
        docs.append(service)
        rendered.endpoints[name] = [f"http://{svc}:{adapter.container_port}"]
    return docs


def _gateway_fleet(loaded: LoadedFleet, endpoints: dict[str, list[str]]) -> dict[str, str]:
    """The fleet file the gateway reads in the cluster: the user's own, with each model's
    endpoints pointing at its Service, and extra catalogs beside it."""
    data = copy.deepcopy(load_yaml(loaded.path).data)
    files: dict[str, str] = {}
    for name, urls in endpoints.items():
        data["models"][name]["endpoints"] = urls
    extra = []
    for index, path in enumerate(data.get("catalog") or []):
        source = loaded.path.parent / path
        key = f"catalog-{index}-{Path(path).name}"
        files[key] = source.read_text()
        extra.append(key)
    if extra:
        data["catalog"] = extra
    header = (
        f"# Rendered by modelyard {__version__} from {loaded.path.name}: endpoints point at the "
        "model Services.\n"
    )
    files["fleet.yaml"] = header + yaml.safe_dump(data, sort_keys=False)
    return files


def _gateway_docs(loaded: LoadedFleet, options: RenderOptions, rendered: Rendered) -> list[Doc]:
    fleet = loaded.fleet
    name = k8s_name(f"{fleet.name}-gateway")
    labels = _labels(fleet.name, "gateway", "gateway", __version__)
    selector = _selector(labels)
    config_files = _gateway_fleet(loaded, rendered.endpoints)
    digest = hashlib.sha256(
        "\n".join(f"{k}\n{v}" for k, v in sorted(config_files.items())).encode()
    ).hexdigest()[:16]
    port_name = "http"
    probe = {"httpGet": {"path": "/health", "port": port_name}, "timeoutSeconds": 2}
    container: Doc = {
        "name": "gateway",
        "image": options.gateway_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["modelyard"],
        "args": [
            "gateway",
            f"{CONFIG_DIR}/fleet.yaml",
            "--host",
            "0.0.0.0",
            "--port",
            str(GATEWAY_PORT),
            "--grace",
            str(options.drain_seconds * 2),
        ],
        "ports": [{"name": port_name, "containerPort": GATEWAY_PORT}],
        "env": [
            {
                "name": fleet.gateway.api_key_hashes_env,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": k8s_name(f"{fleet.name}-api-keys"),
                        "key": "hashes",
                        "optional": True,
                    }
                },
            }
        ],
        "resources": {
            "requests": {"cpu": "1", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(options.drain_seconds)]}}},
        "volumeMounts": [{"name": "fleet", "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    pod: Doc = {
        "metadata": {
            "labels": labels,
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(GATEWAY_PORT),
                "prometheus.io/path": "/metrics",
                "modelyard.dev/config-sha256": digest,  # a new fleet file rolls the pods
            },
        },
        "spec": {
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": options.drain_seconds * 3,
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": selector},
                            },
                        }
                    ]
                }
            },
            "containers": [container],
            "volumes": [{"name": "fleet", "configMap": {"name": name}}],
        },
    }
    docs: list[Doc] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(name, labels, options),
            "data": config_files,
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(name, labels, options),
            "spec": {
                "replicas": options.gateway_replicas,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "selector": {"matchLabels": selector},
                "template": pod,
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(name, labels, options),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": port_name, "port": GATEWAY_PORT, "targetPort": port_name}],
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _metadata(name, labels, options),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}},
        },
    ]
    if options.gateway_hpa:
        docs.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": _metadata(name, labels, options),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": options.gateway_replicas,
                    "maxReplicas": options.gateway_replicas * 5,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {"type": "Utilization", "averageUtilization": 70},
                            },
                        }
                    ],
                },
            }
        )
    return docs


def render(loaded: LoadedFleet, options: RenderOptions | None = None) -> Rendered:
    """Every manifest of the fleet, by file name, plus kustomization.yaml."""
    options = options or RenderOptions()
    rendered = Rendered()
    slots = _slots(loaded, rendered)
    for name in loaded.fleet.models:
        rendered.files[f"{k8s_name(name)}.yaml"] = _engine_docs(
            loaded, name, slots[name], options, rendered
        )
    rendered.files["gateway.yaml"] = _gateway_docs(loaded, options, rendered)
    kustomization: Doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
    }
    if options.namespace:
        kustomization["namespace"] = options.namespace
    kustomization["resources"] = sorted(rendered.files)
    rendered.files["kustomization.yaml"] = [kustomization]
    return rendered


class _Dumper(yaml.SafeDumper):
    """No anchors/aliases: each manifest reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # multi-line strings (files in ConfigMaps) as literal blocks, readable in the manifest
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _text)


def dump(docs: list[Doc]) -> str:
    return "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, width=100) for d in docs)


def write(rendered: Rendered, directory: Path) -> list[Path]:
    """Write every file (node configuration under node-config/); returns the paths."""
    written = []
    for name, docs in rendered.all_files().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(dump(docs))
        partial.replace(path)
        written.append(path)
    return written
