"""Where each model's pods run: an isolated GPU, or the shared group's GPU in exactly the mode the
fleet names (`sharing: time-sliced | mps | mig`), with the node configuration that mode needs.
Memory fractions come from modelyard.placement, the one rule every capability reads.

The fleet's choice is rendered as written and never swapped for another; where another mode
would suit the group better, a suggestion says so. Facts about the NVIDIA device plugin used
here (k8s-device-plugin v0.20.0, read 2026-12-01):
- a node picks its sharing config by the label `nvidia.com/device-plugin.config=<key>`, so a
  per-pool key changes only the nodes labelled with it (a `default`/`any` key changes all);
- with time-slicing or MPS, GPU Feature Discovery renames the product label `<product>-SHARED`
  and adds `nvidia.com/gpu.replicas` and `nvidia.com/gpu.sharing-strategy` (internal/lm);
- MPS caps each client at 1/replicas of the GPU's memory and of its threads
  (cmd/mps-control-daemon/mps/daemon.go), whatever the engine asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import yaml

from modelyard.catalog import GpuSpec
from modelyard.catalog.mig import fits_on_one_gpu, mig_memory_gb, mig_slices
from modelyard.deploy.errors import DeployError
from modelyard.deploy.k8s.objects import Doc, k8s_name
from modelyard.deploy.k8s.options import RenderOptions
from modelyard.fleet import LoadedFleet, SharedGroup
from modelyard.memory import Device, fit_model
from modelyard.placement import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    group_fractions,
    isolated_fraction,
)

Mode = Literal["isolated", "time-sliced", "mps", "mig"]
GPU_RESOURCE = "nvidia.com/gpu"
CONFIG_LABEL = "nvidia.com/device-plugin.config"
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
STRATEGY = {"time-sliced": "time-slicing", "mps": "mps"}  # nvidia.com/gpu.sharing-strategy


@dataclass(frozen=True)
class Slot:
    """One model's place: GPU, device-plugin resource, memory share, and the node labels and
    neighbours its pods must have."""

    gpu_name: str
    gpu: GpuSpec
    mode: Mode
    resource: str  # nvidia.com/gpu or nvidia.com/mig-<profile>
    memory_utilization: float
    node_labels: tuple[tuple[str, str], ...] = ()  # required beyond the GPU type
    shared_product: bool = False  # GFD labels the product `<product>-SHARED`
    leader: str | None = None  # the group member whose node this one's pods must join
    group_members: tuple[str, ...] = ()


@dataclass
class SharingPlan:
    slots: dict[str, Slot] = field(default_factory=dict)
    device_plugin_configs: dict[str, str] = field(default_factory=dict)  # node label -> config
    mig_layouts: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> profiles
    warnings: list[str] = field(default_factory=list)

    def node_config(self, options: RenderOptions) -> dict[str, list[Doc]]:
        """The cluster admin's part, by file: the device plugin's and MIG manager's configs,
        one key per shared group, in the GPU operator's namespace."""
        files: dict[str, list[Doc]] = {}
        where = options.gpu_operator_namespace
        if self.device_plugin_configs:
            meta = {"name": options.device_plugin_config, "namespace": where}
            data = dict(self.device_plugin_configs)
            files["device-plugin-config.yaml"] = [_config_map(meta, data)]
        if self.mig_layouts:
            configs = {
                key: [{"devices": "all", "mig-enabled": True, "mig-devices": counts}]
                for key, counts in self.mig_layouts.items()
            }
            parted = yaml.safe_dump({"version": "v1", "mig-configs": configs}, sort_keys=False)
            meta = {"name": options.mig_config, "namespace": where}
            files["mig-config.yaml"] = [_config_map(meta, {"config.yaml": parted})]
        return files


def _config_map(meta: Doc, data: dict[str, str]) -> Doc:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _fits(loaded: LoadedFleet, name: str, memory_bytes: float, utilization: float) -> str:
    """'' when `name` fits in `memory_bytes` at `utilization`, else why not."""
    result = fit_model(loaded, name, Device("slot", memory_bytes, True), utilization)
    return "" if result.fits else result.reason


def pick_mig_profiles(
    loaded: LoadedFleet, group: SharedGroup, gpu: GpuSpec
) -> dict[str, str] | None:
    """The group's MIG profiles: those it gives, and for each other member the smallest
    profile `modelyard fit` finds room in at the default memory limit; None when some member
    fits no profile or the slices do not fit on one GPU together."""
    by_size = sorted(gpu.mig_profiles, key=lambda p: (mig_memory_gb(p), mig_slices(gpu, p)))
    layout: dict[str, str] = {}
    for name in group.models:
        given = group.mig_profiles.get(name)
        chosen = given or next(
            (
                p
                for p in by_size
                if not _fits(loaded, name, mig_memory_gb(p) * 1e9, DEFAULT_GPU_MEMORY_UTILIZATION)
            ),
            None,
        )
        if chosen is None:
            return None
        layout[name] = chosen
    return layout if fits_on_one_gpu(gpu, list(layout.values())) else None


def _config_key(fleet_name: str, index: int) -> str:
    return f"modelyard-{k8s_name(fleet_name, 40)}-{index}"


def _device_plugin_config(mode: Mode, replicas: int) -> str:
    replicated = {
        "renameByDefault": False,
        "failRequestsGreaterThanOne": True,
        "resources": [{"name": GPU_RESOURCE, "replicas": replicas}],
    }
    sharing = {"timeSlicing" if mode == "time-sliced" else "mps": replicated}
    config = {"version": "v1", "flags": {"migStrategy": "none"}, "sharing": sharing}
    return yaml.safe_dump(config, sort_keys=False)


def _leader(loaded: LoadedFleet, group: SharedGroup) -> str:
    """The member with the most replicas: the others' pods join its nodes."""
    models = loaded.fleet.models
    return max(group.models, key=lambda m: (models[m].replicas, -group.models.index(m)))


def _replicated(
    loaded: LoadedFleet, group: SharedGroup, index: int, gpu: GpuSpec, plan: SharingPlan
) -> dict[str, float]:
    """Time-sliced or MPS: N replicas of each GPU on a node pool of one-GPU nodes, each member
    capped at its memory fraction. Returns the fractions."""
    assert group.gpu is not None
    fleet = loaded.fleet
    fractions = group_fractions(loaded, group)
    replicas = len(group.models)
    key = _config_key(fleet.name, index)
    members = ", ".join(group.models)
    shares = ", ".join(f"{m}={fractions[m]:g}" for m in group.models)
    if group.sharing == "mps":
        over = {m: f for m, f in fractions.items() if f > 1 / replicas + 1e-9}
        if over:
            raise DeployError(
                f"placement.shared.{index}: sharing mps: the NVIDIA device plugin caps each of "
                f"the {replicas} MPS clients at 1/{replicas} of {group.gpu}'s memory, but "
                + ", ".join(f"{m} asks for {f:g}" for m, f in over.items())
                + f"; give memory_fractions of at most {1 / replicas:.2f} or use sharing: "
                "time-sliced"
            )
    leader = _leader(loaded, group)
    labels = (
        (CONFIG_LABEL, key),
        ("nvidia.com/gpu.count", "1"),
        ("nvidia.com/gpu.replicas", str(replicas)),
        ("nvidia.com/gpu.sharing-strategy", STRATEGY[group.sharing]),
    )
    for name in group.models:
        plan.slots[name] = Slot(
            group.gpu,
            gpu,
            group.sharing,
            GPU_RESOURCE,
            fractions[name],
            labels,
            shared_product=True,
            leader=None if name == leader else leader,
            group_members=tuple(group.models),
        )
        problem = _fits(loaded, name, gpu.memory_bytes, fractions[name])
        if problem:
            plan.warnings.append(
                f"{name}: modelyard fit finds no room at memory fraction {fractions[name]:g} of "
                f"{group.gpu}: {problem}"
            )
    plan.device_plugin_configs[key] = _device_plugin_config(group.sharing, replicas)
    mode = "time-sliced" if group.sharing == "time-sliced" else "MPS-shared"
    plan.warnings.append(
        f"shared group {index} ({members}) renders {mode} on {group.gpu} as the fleet says: "
        f"{replicas} replicas per GPU, each engine capped by --gpu-memory-utilization ({shares})"
        + (
            "; no memory or fault isolation between the models"
            if group.sharing == "time-sliced"
            else f"; the device plugin limits each engine to 1/{replicas} of the GPU's memory "
            f"and threads"
        )
        + f". Label the node pool {CONFIG_LABEL}={key} (one GPU per node, so both members "
        f"share it) and merge key {key} of node-config/device-plugin-config.yaml into the "
        "device plugin's ConfigMap"
    )
    return fractions


def _mig(
    loaded: LoadedFleet, group: SharedGroup, index: int, gpu: GpuSpec, plan: SharingPlan
) -> None:
    assert group.gpu is not None
    layout = pick_mig_profiles(loaded, group, gpu)
    where = f"placement.shared.{index}"
    if layout is None:
        raise DeployError(
            f"{where}: sharing mig: no MIG profiles of {group.gpu} fit "
            + ", ".join(group.models)
            + " on one GPU together"
            + (f" with the given {group.mig_profiles}" if group.mig_profiles else "")
            + "; give mig_profiles that fit, or use sharing: time-sliced"
        )
    key = _config_key(loaded.fleet.name, index)
    for name, profile in layout.items():
        plan.slots[name] = Slot(
            group.gpu,
            gpu,
            "mig",
            f"nvidia.com/mig-{profile}",
            DEFAULT_GPU_MEMORY_UTILIZATION,
            ((MIG_CONFIG_LABEL, key),),
            group_members=tuple(group.models),
        )
        problem = _fits(loaded, name, mig_memory_gb(profile) * 1e9, DEFAULT_GPU_MEMORY_UTILIZATION)
        if problem:
            plan.warnings.append(f"{name}: modelyard fit finds no room in MIG {profile}: {problem}")
    counts: dict[str, int] = {}
    for profile in layout.values():
        counts[profile] = counts.get(profile, 0) + 1
    plan.mig_layouts[key] = counts
    picked = [m for m in group.models if m not in group.mig_profiles]
    chosen = ", ".join(f"{m}={p}" for m, p in layout.items())
    plan.warnings.append(
        f"shared group {index} ({', '.join(group.models)}) renders as MIG slices on "
        f"{group.gpu}: {chosen}"
        + (
            f" (picked for {', '.join(picked)}: the smallest profile modelyard fit finds room in)"
            if picked
            else ""
        )
        + f"; label the nodes {MIG_CONFIG_LABEL}={key} (node-config/mig-config.yaml) and run the "
        "device plugin with the mixed MIG strategy"
    )


def _suggest(loaded: LoadedFleet, group: SharedGroup, index: int, gpu: GpuSpec) -> str | None:
    if group.sharing == "mig" or not gpu.mig_profiles:
        return None
    layout = pick_mig_profiles(loaded, group, gpu)
    if layout is None:
        return None
    profiles = ", ".join(f"{m}: {p}" for m, p in layout.items())
    return (
        f"suggestion: shared group {index} could use sharing: mig on {group.gpu} (mig_profiles: "
        f"{{{profiles}}}), which isolates the models' memory, faults and compute; rendered "
        f"{group.sharing} as the fleet says"
    )


def plan_sharing(loaded: LoadedFleet, options: RenderOptions) -> SharingPlan:
    """Every model's Slot, the node configuration shared groups need, and what to tell the
    user (including suggestions)."""
    fleet = loaded.fleet
    plan = SharingPlan()
    for name, entry in fleet.models.items():
        if fleet.group_of(name) is not None:
            continue
        gpu = loaded.gpu(name)
        if gpu is None or entry.gpu is None:
            raise DeployError(
                f"models.{name}: no `gpu:`; Kubernetes manifests are rendered for GPU "
                "engines (run CPU engines locally with `modelyard up`)"
            )
        utilization = isolated_fraction(loaded, name)
        plan.slots[name] = Slot(entry.gpu, gpu, "isolated", GPU_RESOURCE, utilization)
    for index, group in enumerate(fleet.shared_groups()):
        gpu = loaded.gpu(group.models[0])
        if gpu is None or group.gpu is None:
            raise DeployError(
                f"placement.shared.{index}: no `gpu:`; a shared group on CPU cores has no "
                "Kubernetes equivalent (run it locally with `modelyard up`)"
            )
        if options.node_label != "nvidia":
            raise DeployError(
                f"placement.shared.{index}: shared groups render for the NVIDIA device plugin's "
                "labels (--node-label nvidia); GKE configures GPU sharing on the node pool "
                "itself (gke-gpu-sharing-strategy)"
            )
        parallel = [m for m in group.models if fleet.models[m].tensor_parallel_size > 1]
        if parallel:
            raise DeployError(
                f"placement.shared.{index}: {', '.join(parallel)} uses tensor parallelism, "
                "which the rendered GPU sharing cannot pair (one shared GPU per node); place "
                "tensor-parallel models isolated"
            )
        if group.sharing == "mig":
            _mig(loaded, group, index, gpu, plan)
        else:
            _replicated(loaded, group, index, gpu, plan)
        suggestion = _suggest(loaded, group, index, gpu)
        if suggestion:
            plan.warnings.append(suggestion)
    return plan
