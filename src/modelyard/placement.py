"""Where a fleet's engines run: THE placement rule, read by the simulator, the launcher, the
deployer, the memory fit and the planner.

A fleet (plus an optional override: everything shared or isolated, another GPU, fractions the
planner chose) becomes a list of device plans. Each plan is one device (a GPU, or a set of CPU
cores) with the engine replicas on it, each with its memory fraction, and how they share it:

- isolated: one engine replica on the device;
- time-sliced, mps, mig: a shared group's members, one replica of each, on one GPU;
- cpu-shared: a shared group without a GPU (the members share the same cores).

Replica r of every member of a shared group lands on the group's device r; a model with fewer
replicas than its group's largest is absent from the later devices. A device of a model with
tensor_parallel_size N is N GPUs of one node (`gpu_count`); a group's members span the same N.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from modelyard.errors import PlacementError
from modelyard.fleet import DEFAULT_MEMORY_LIMIT, LoadedFleet, SharedGroup

# The fraction of GPU memory an engine may take when the fleet does not say: vLLM's own default.
DEFAULT_GPU_MEMORY_UTILIZATION = DEFAULT_MEMORY_LIMIT

SharingMode = Literal["isolated", "time-sliced", "mps", "mig", "cpu-shared"]
Layout = Literal["fleet", "shared", "isolated"]


@dataclass(frozen=True)
class PlacementOverride:
    """What-if changes to the fleet's placement (`sim run --placement`, the planner's layouts).

    `layout`: fleet (as written), shared (every model in one group), isolated (no groups).
    `gpu`: every device becomes this GPU type. `fractions`: memory fractions by model, replacing
    the fleet's. `sharing`: the mode of every shared device."""

    layout: Layout = "fleet"
    gpu: str | None = None
    fractions: dict[str, float] = field(default_factory=dict)
    sharing: SharingMode | None = None


@dataclass(frozen=True)
class PlacedEngine:
    """One engine replica on a device."""

    model: str  # the fleet's model name
    replica: int
    memory_fraction: float
    mig_profile: str | None = None

    @property
    def name(self) -> str:
        return f"{self.model}/{self.replica}"


@dataclass(frozen=True)
class DevicePlan:
    """One device and the engines placed on it. `gpu` is a catalog GPU name (None: CPU)."""

    index: int
    gpu: str | None
    sharing: SharingMode
    engines: tuple[PlacedEngine, ...]
    gpu_count: int = 1  # GPUs of one node the engines span (tensor parallelism); 0 on CPU

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(e.model for e in self.engines)

    @property
    def shared(self) -> bool:
        return len(self.engines) > 1


def isolated_fraction(loaded: LoadedFleet, model: str) -> float:
    """A model's memory fraction when it has a device of its own."""
    stated = loaded.fleet.models[model].gpu_memory_utilization
    return stated if stated is not None else DEFAULT_GPU_MEMORY_UTILIZATION


def group_fractions(loaded: LoadedFleet, group: SharedGroup) -> dict[str, float]:
    """Each member's share of the group's GPU memory: stated in the group, else the model's own
    gpu_memory_utilization, else an equal split of what the group's memory_limit leaves."""
    return loaded.memory_fractions(group)


def _groups(loaded: LoadedFleet, layout: Layout) -> list[tuple[list[str], SharedGroup | None]]:
    fleet = loaded.fleet
    if layout == "isolated":
        return [([name], None) for name in fleet.models]
    if layout == "shared":
        if len(fleet.models) == 1:
            return [(list(fleet.models), None)]
        whole = SharedGroup(models=list(fleet.models))
        return [(list(fleet.models), whole)]
    groups: list[tuple[list[str], SharedGroup | None]] = [
        (list(g.models), g) for g in fleet.shared_groups()
    ]
    grouped = {m for g in fleet.shared_groups() for m in g.models}
    groups += [([name], None) for name in fleet.models if name not in grouped]
    return groups


def device_plans(
    loaded: LoadedFleet, override: PlacementOverride | None = None
) -> list[DevicePlan]:
    """Every device of the fleet (as written, or as the override changes it) with its engines."""
    override = override or PlacementOverride()
    fleet = loaded.fleet
    plans: list[DevicePlan] = []
    for members, group in _groups(loaded, override.layout):
        gpus = {override.gpu or loaded.gpu_name(m) for m in members}
        if len(gpus) > 1:
            named = ", ".join(sorted(g or "cpu" for g in gpus))
            raise PlacementError(
                f"models {', '.join(members)} cannot share one device: they name {named} "
                "(give them one GPU type)"
            )
        gpu = gpus.pop()
        if group is None:
            fractions = {m: isolated_fraction(loaded, m) for m in members}
        elif override.layout == "shared":
            share = DEFAULT_MEMORY_LIMIT / len(members)
            fractions = {m: fleet.models[m].gpu_memory_utilization or share for m in members}
        else:
            fractions = group_fractions(loaded, group)
        fractions.update({m: f for m, f in override.fractions.items() if m in fractions})
        sharing: SharingMode
        if group is None:
            sharing = "isolated"
        elif gpu is None:
            sharing = "cpu-shared"
        else:
            sharing = override.sharing or group.sharing
        profiles = group.mig_profiles if group is not None and sharing == "mig" else {}
        replicas = max(fleet.models[m].replicas for m in members)
        for replica in range(replicas):
            engines = tuple(
                PlacedEngine(m, replica, fractions[m], profiles.get(m))
                for m in members
                if replica < fleet.models[m].replicas
            )
            one = len(engines) == 1
            count = fleet.models[members[0]].tensor_parallel_size if gpu is not None else 0
            plans.append(
                DevicePlan(len(plans), gpu, "isolated" if one else sharing, engines, count)
            )
    return plans


def memory_fraction(loaded: LoadedFleet, model: str) -> float:
    """The memory fraction the fleet as written gives `model` (every replica has the same)."""
    for plan in device_plans(loaded):
        for engine in plan.engines:
            if engine.model == model:
                return engine.memory_fraction
    raise KeyError(model)
