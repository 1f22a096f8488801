"""One model's runtime: its workload (Deployment or StatefulSet), headless Service, cache volume
and disruption budget, from the fleet entry, its Slot and (when autoscaled) its bounds."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelyard.deploy.errors import DeployError
from modelyard.deploy.k8s import sizing
from modelyard.deploy.k8s.objects import (
    ENGINE_LABEL,
    Doc,
    ImageRef,
    k8s_name,
    labels,
    metadata,
    quantity_gib,
    selector,
)
from modelyard.deploy.k8s.options import NODE_LABEL_KEYS, RenderOptions, ReplicaBounds
from modelyard.deploy.k8s.security import (
    ENGINE_UID,
    HOME_DIR,
    container_security,
    pod_security,
    writable_scratch,
)
from modelyard.deploy.k8s.sharing import Slot
from modelyard.deploy.k8s.spread import disruption_budget, pod_spread
from modelyard.deploy.validate.documents import ENGINE_SERVICE_NAMES, flag_value
from modelyard.engines import adapter_for
from modelyard.engines.base import EngineAdapter, LaunchSpec
from modelyard.fleet import LoadedFleet
from modelyard.memory import Device, FitSettings, fit

PORT_NAME = "http"
CACHE_VOLUME = "model-cache"
SHM_VOLUME = "dshm"
SHUTDOWN_FLAG = "--shutdown-timeout"  # vLLM >= 0.18 drains in-flight requests on SIGTERM


@dataclass(frozen=True)
class Scope:
    """What every renderer of one fleet shares."""

    loaded: LoadedFleet
    options: RenderOptions
    namespace: str
    priority_class: str


@dataclass
class EngineRender:
    service: str  # the model's headless Service (and workload) name
    kind: str  # Deployment or StatefulSet
    adapter: EngineAdapter
    pod_labels: dict[str, str]
    endpoint: str  # what the gateway's fleet file lists for the model
    docs: list[Doc] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    autoscaled: bool = False  # an autoscaler owns the replica count


def service_name(model: str) -> str:
    svc = k8s_name(model)
    # a Service named `vllm` injects VLLM_PORT into every pod of the namespace (validate.py)
    return f"{svc}-model" if svc in ENGINE_SERVICE_NAMES else svc


def _weights(scope: Scope, name: str, warnings: list[str]) -> str:
    loaded = scope.loaded
    entry = loaded.fleet.models[name]
    spec = loaded.model_spec(name)
    if entry.weights:
        if entry.weights.startswith("/"):
            warnings.append(
                f"{name}: weights '{entry.weights}' is a path: it must exist in the pod (in the "
                "model cache volume)"
            )
        return entry.weights
    if entry.engine == "llamacpp":
        raise DeployError(
            f"models.{name}: llama.cpp needs a GGUF repository; set `weights:` to its hub id "
            "(e.g. ggml-org/gemma-3-270m-GGUF) or a path in the cache volume"
        )
    if loaded.quant(name).bits_per_weight < 16 and entry.quant_name != "fp8":
        warnings.append(
            f"{name}: quant {entry.quant_name} needs a pre-quantized checkpoint but `weights:` "
            f"is not set, so the pod would load the base model {spec.hf_id}; set `weights:` to "
            "the quantized checkpoint's hub id (`modelyard quant --recipe` writes its recipe)"
        )
    return spec.hf_id


def _image(scope: Scope, adapter: EngineAdapter, name: str) -> ImageRef:
    image = scope.options.engine_images.get(adapter.name) or adapter.gpu_image or adapter.image
    return ImageRef.parse(image, f"models.{name}: image for engine {adapter.name}")


def shutdown_timeout_s(args: list[str]) -> float | None:
    """The engine's own drain timeout when its arguments set one (`--shutdown-timeout N`)."""
    value = flag_value(args, SHUTDOWN_FLAG)
    try:
        return None if value is None else float(value)
    except ValueError as exc:
        raise DeployError(f"{SHUTDOWN_FLAG} {value}: not a number of seconds") from exc


def _affinity(scope: Scope, slot: Slot, pod_selector: dict[str, str], leader: Doc | None) -> Doc:
    options = scope.options
    product = slot.gpu.node_labels.get(options.node_label)
    if not product:
        raise DeployError(
            f"GPU '{slot.gpu_name}' has no '{options.node_label}' node label value in the "
            f"catalog (not offered there?); choose another --node-label "
            f"(known: {', '.join(k for k, v in slot.gpu.node_labels.items() if v) or 'none'})"
        )
    if slot.shared_product:
        product = f"{product}-SHARED"  # GPU Feature Discovery on time-sliced / MPS nodes
    pairs = [(NODE_LABEL_KEYS[options.node_label], product), *slot.node_labels]
    expressions = [{"key": k, "operator": "In", "values": [v]} for k, v in pairs]
    required = {"nodeSelectorTerms": [{"matchExpressions": expressions}]}
    affinity: Doc = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    if slot.group_members:
        # one pod of each member per (one-GPU) node, the followers beside the leader
        host = "kubernetes.io/hostname"
        alone = {"topologyKey": host, "labelSelector": {"matchLabels": pod_selector}}
        affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [alone]}
        if leader is not None and slot.mode != "mig":
            beside = {"topologyKey": host, "labelSelector": {"matchLabels": leader}}
            affinity["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [beside]}
    return affinity


def _container(
    scope: Scope,
    adapter: EngineAdapter,
    argv: list[str],
    image: str,
    resources: Doc,
    startup_failures: int,
) -> Doc:
    options = scope.options
    health = {"path": adapter.health_path, "port": PORT_NAME}
    env: list[Doc] = [
        {
            "name": "HF_TOKEN",
            "valueFrom": {
                "secretKeyRef": {"name": options.hf_token_secret, "key": "token", "optional": True}
            },
        },
        {"name": "HF_HOME", "value": adapter.cache_path},
        {"name": "HOME", "value": HOME_DIR},
    ]
    if adapter.name == "llamacpp":
        env.append({"name": "LLAMA_CACHE", "value": adapter.cache_path})
    _, scratch = writable_scratch(home=True)
    return {
        "name": "engine",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": argv[:1],
        "args": argv[1:],
        "ports": [{"name": PORT_NAME, "containerPort": adapter.container_port}],
        "env": env,
        "resources": resources,
        "startupProbe": {
            "httpGet": health,
            "periodSeconds": sizing.STARTUP_PERIOD_S,
            "timeoutSeconds": sizing.STARTUP_TIMEOUT_S,
            "failureThreshold": startup_failures,
        },
        "readinessProbe": {
            "httpGet": health,
            "periodSeconds": sizing.READINESS_PERIOD_S,
            "timeoutSeconds": sizing.READINESS_TIMEOUT_S,
            "failureThreshold": sizing.READINESS_FAILURES,
        },
        "livenessProbe": {
            "httpGet": health,
            "periodSeconds": sizing.LIVENESS_PERIOD_S,
            "timeoutSeconds": sizing.LIVENESS_TIMEOUT_S,
            "failureThreshold": sizing.LIVENESS_FAILURES,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(options.drain_seconds)]}}},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": CACHE_VOLUME, "mountPath": adapter.cache_path},
            {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
            *scratch,
        ],
    }


@dataclass(frozen=True)
class _Launch:
    adapter: EngineAdapter
    argv: list[str]
    image: ImageRef
    served_bytes: float  # weights in GPU memory, all ranks together
    checkpoint_bytes: float  # what the cache volume holds
    gpus: int  # tensor_parallel_size


def _launch(scope: Scope, name: str, slot: Slot, warnings: list[str]) -> _Launch:
    loaded = scope.loaded
    entry = loaded.fleet.models[name]
    adapter = adapter_for(entry.engine)
    model = loaded.model_spec(name)
    spec = LaunchSpec(
        name=name,
        catalog_model=loaded.catalog.resolve_model_name(entry.catalog),
        model=model,
        quant_name=entry.quant_name,
        quant=loaded.quant(name),
        weights=_weights(scope, name, warnings),
        host="0.0.0.0",
        port=adapter.container_port,
        gpu=slot.gpu_name,
        max_model_len=entry.max_model_len,
        gpu_memory_utilization=slot.memory_utilization,
        max_num_seqs=entry.max_num_seqs,
        max_num_batched_tokens=entry.max_num_batched_tokens,
        kv_cache_dtype=entry.kv_cache_dtype,
        tensor_parallel_size=entry.tensor_parallel_size,
        extra_args=tuple(entry.engine_args),
    )
    argv = adapter.container_command(spec)
    served = fit(
        spec.catalog_model,
        model,
        entry.quant_name,
        spec.quant,
        Device.from_gpu(slot.gpu_name, slot.gpu),
        FitSettings(max_model_len=entry.max_model_len),
    ).weights_bytes
    # on disk the checkpoint is bf16 when fp8 is applied at load time
    checkpoint = model.params * 2 if entry.quant_name in ("bf16", "fp8") else served
    image = _image(scope, adapter, name)
    return _Launch(adapter, argv, image, served, checkpoint, entry.tensor_parallel_size)


def _pod(
    scope: Scope,
    launch: _Launch,
    slot: Slot,
    pod_labels: dict[str, str],
    leader: Doc | None,
    spread: bool,
) -> Doc:
    options = scope.options
    adapter = launch.adapter
    memory = quantity_gib(sizing.engine_memory_gib(launch.served_bytes, options.shm_size_gib))
    gpus = str(launch.gpus)  # tensor parallelism: that many GPUs of one node
    resources = {
        "requests": {"cpu": sizing.ENGINE_CPU_REQUEST, "memory": memory, slot.resource: gpus},
        "limits": {"cpu": sizing.ENGINE_CPU_LIMIT, "memory": memory, slot.resource: gpus},
    }
    startup = sizing.startup_failure_threshold(
        launch.checkpoint_bytes,
        options.load_bandwidth_bytes_s,
        options.init_seconds,
        options.startup_margin,
    )
    container = _container(scope, adapter, launch.argv, str(launch.image), resources, startup)
    # the longest a request may take is the gateway's total timeout; an engine that drains on
    # SIGTERM (vLLM --shutdown-timeout) is given that, or its own timeout if longer
    timeouts = scope.loaded.fleet.policy.timeouts
    drain = max(timeouts.total, shutdown_timeout_s(launch.argv) or 0.0)
    annotations = {"prometheus.io/scrape": "false"}
    if adapter.metrics_path:
        annotations = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(adapter.container_port),
            "prometheus.io/path": adapter.metrics_path,
        }
    scratch, _ = writable_scratch(home=True)
    shm = {"medium": "Memory", "sizeLimit": f"{options.shm_size_gib}Gi"}
    pod_selector = selector(pod_labels)
    spec: Doc = {
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "priorityClassName": scope.priority_class,
        "terminationGracePeriodSeconds": sizing.termination_grace_s(options.drain_seconds, drain),
        "securityContext": pod_security(ENGINE_UID),
        "affinity": _affinity(scope, slot, pod_selector, leader),
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [container],
        "volumes": [{"name": SHM_VOLUME, "emptyDir": shm}, *scratch],
    }
    if spread:
        spec["topologySpreadConstraints"] = pod_spread(pod_selector, strict=True)
    return {"metadata": {"labels": pod_labels, "annotations": annotations}, "spec": spec}


def _workload_kind(scope: Scope, name: str, most_replicas: int) -> str:
    rwo = scope.options.cache_access_mode == "ReadWriteOnce"
    kind = scope.options.workload
    if kind == "auto":
        kind = "statefulset" if rwo and most_replicas > 1 else "deployment"
    if kind == "deployment" and rwo and most_replicas > 1:
        raise DeployError(
            f"models.{name}: {most_replicas} replicas of a Deployment cannot share a "
            "ReadWriteOnce cache volume (Multi-Attach); use --workload statefulset or "
            "--cache-access-mode ReadWriteMany"
        )
    return "StatefulSet" if kind == "statefulset" else "Deployment"


def _workload(scope: Scope, kind: str, meta: Doc, spec: Doc, claim: Doc) -> list[Doc]:
    """The StatefulSet (a cache volume per replica), or a Deployment and its one volume."""
    if kind == "StatefulSet":
        sts_spec = {
            "serviceName": meta["name"],
            "podManagementPolicy": "Parallel",
            # scaled-down replicas keep their cache, so a scale-up skips the download
            "persistentVolumeClaimRetentionPolicy": {
                "whenScaled": "Retain",
                "whenDeleted": "Retain",
            },
            **spec,
            "volumeClaimTemplates": [{"metadata": {"name": CACHE_VOLUME}, "spec": claim}],
        }
        return [{"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": sts_spec}]
    claim_name = f"{meta['name']}-cache"
    volume = {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": claim_name}}
    spec["template"]["spec"]["volumes"].append(volume)
    rwo = scope.options.cache_access_mode == "ReadWriteOnce"
    strategy: Doc = (
        {"type": "Recreate"}  # the new pod cannot attach the volume while the old one runs
        if rwo
        else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    )
    claim_meta = {**meta, "name": claim_name}
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": claim_meta,
            "spec": claim,
        },
        {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": meta,
            "spec": {"strategy": strategy, **spec},
        },
    ]


def engine_docs(
    scope: Scope, name: str, slot: Slot, bounds: ReplicaBounds | None, leader: Doc | None
) -> EngineRender:
    """Every document of one model's runtime. `bounds` set: an autoscaler owns the replica
    count (no `replicas:`); `leader`: the pod selector of the shared-group member whose node
    this model's pods join."""
    options = scope.options
    entry = scope.loaded.fleet.models[name]
    warnings: list[str] = []
    launch = _launch(scope, name, slot, warnings)
    svc = service_name(name)
    pod_labels = labels(scope.loaded.fleet.name, name, "engine", launch.image.version)
    pod_labels[ENGINE_LABEL] = entry.engine
    pod_selector = selector(pod_labels)
    # an autoscaler owns the count when the peak needs more than the minimum; otherwise the
    # count is fixed: the minimum the sizing gives, or the fleet's own without sizing
    autoscaled = bounds is not None and bounds.max_replicas > bounds.min_replicas
    fixed = bounds.min_replicas if bounds else entry.replicas
    most_replicas = bounds.max_replicas if bounds else entry.replicas
    kind = _workload_kind(scope, name, most_replicas)
    pod = _pod(scope, launch, slot, pod_labels, leader, spread=most_replicas > 1)
    storage = quantity_gib(sizing.cache_storage_gib(launch.checkpoint_bytes))
    claim: Doc = {
        "accessModes": [options.cache_access_mode],
        "resources": {"requests": {"storage": storage}},
    }
    if options.storage_class:
        claim["storageClassName"] = options.storage_class
    meta = metadata(svc, pod_labels, scope.namespace)
    spec: Doc = {"selector": {"matchLabels": pod_selector}, "template": pod}
    if not autoscaled:
        spec = {"replicas": fixed, **spec}
    docs = _workload(scope, kind, meta, spec, claim)
    port = launch.adapter.container_port
    # headless: DNS answers with the ready pods' addresses, so the gateway reaches every replica
    # an autoscaler adds without a re-render
    service_spec = {
        "clusterIP": "None",
        "selector": pod_selector,
        "ports": [{"name": PORT_NAME, "port": port, "targetPort": PORT_NAME}],
    }
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": service_spec})
    if most_replicas > 1:
        docs.append(disruption_budget(meta, pod_selector))
    endpoint = f"http://{svc}.{scope.namespace}.svc:{port}"
    return EngineRender(
        svc, kind, launch.adapter, pod_labels, endpoint, docs, warnings, autoscaled=autoscaled
    )
