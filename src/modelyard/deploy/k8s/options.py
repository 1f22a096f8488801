"""What a render is asked for (options) and what it is given (inputs read at the edge)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from modelyard import __version__

NodeLabelScheme = Literal["nvidia", "gke"]
Workload = Literal["auto", "deployment", "statefulset"]
AccessMode = Literal["ReadWriteOnce", "ReadWriteMany"]
Autoscaler = Literal["keda", "none"]

# label key of each node-label scheme (catalog gpus.yaml `node_labels`)
NODE_LABEL_KEYS: dict[str, str] = {
    "nvidia": "nvidia.com/gpu.product",  # NVIDIA GPU Feature Discovery
    "gke": "cloud.google.com/gke-accelerator",
}


@dataclass(frozen=True)
class ParentGateway:
    """The Gateway API `Gateway` the rendered HTTPRoute attaches to."""

    name: str
    namespace: str | None = None
    section: str | None = None


@dataclass(frozen=True)
class RenderOptions:
    namespace: str | None = None  # default: the fleet's name
    namespace_object: bool = True  # a Namespace document enforcing Pod Security "restricted"
    pod_security_version: str = "v1.30"  # the profile version the Namespace pins
    node_label: NodeLabelScheme = "nvidia"
    workload: Workload = "auto"
    cache_access_mode: AccessMode = "ReadWriteOnce"
    storage_class: str | None = None
    hf_token_secret: str = "hf-token"
    # first start downloads the weights into the cache volume: 100 MB/s is a cautious hub rate
    load_bandwidth_bytes_s: float = 100e6
    init_seconds: float = 180.0  # CUDA context, profiling run, CUDA graph capture
    startup_margin: float = 2.0
    shm_size_gib: int = 2
    # preStop sleep: time for the pod to leave Service endpoints and DNS before SIGTERM
    drain_seconds: int = 10
    engine_images: dict[str, str] = field(default_factory=dict)  # engine -> image reference
    gateway_image: str = f"modelyard:{__version__}"
    gateway_replicas: int = 2
    gateway_hpa: bool = False
    autoscaler: Autoscaler = "keda"
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    prometheus_namespace: str = "monitoring"
    service_monitor: bool = False
    client_namespaces: tuple[str, ...] = ()  # who may call the gateway; () = any
    priority_class: str | None = None  # an existing PriorityClass; None renders our own
    gateway_api: ParentGateway | None = None  # HTTPRoute + InferencePools
    gpu_operator_namespace: str = "gpu-operator"
    device_plugin_config: str = "device-plugin-config"  # ClusterPolicy devicePlugin.config.name
    mig_config: str = "custom-mig-config"  # ClusterPolicy migManager.config.name


@dataclass(frozen=True)
class ReplicaBounds:
    """What the autoscaler of one model gets: replicas from the availability rule to the peak,
    and the in-flight requests (running + waiting) one replica serves within the SLO."""

    min_replicas: int
    max_replicas: int
    in_flight_per_replica: float
    capacity_rps: float
    source: str  # where the capacity came from (simulated, measured, given)


@dataclass(frozen=True)
class RenderInputs:
    """What the renderer needs from files, read once at the edge: the fleet file as written
    (the gateway's copy keeps it), the extra catalog files beside it, and the sizing."""

    fleet_data: dict[str, Any]
    # the fleet's `catalog:` files in order, by the key they get in the gateway's ConfigMap
    catalog_files: dict[str, str] = field(default_factory=dict)
    bounds: dict[str, ReplicaBounds] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # why a model has no autoscaler, said by the sizing
