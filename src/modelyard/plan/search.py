"""The searched options: per GPU type every planned model isolated, all of them sharing each
GPU, and MIG packing; with --optimize also mixed layouts — each group of models (one model
alone, or several sharing a GPU) on its own cheapest GPU type.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from modelyard.plan.capacity import Verdict
from modelyard.plan.cost import Option
from modelyard.plan.options import UnitBuilder
from modelyard.plan.units import UnitPlan

MAX_PARTITIONED_MODELS = 5  # beyond: only "each model alone" and "the rest shared"


def isolated_option(builder: UnitBuilder, gpu: str, models: list[str]) -> Option:
    units = [builder.best_isolated(m, gpu) for m in models]
    return Option(f"isolated {gpu}", "isolated", units)


def _group_tensor_parallel(builder: UnitBuilder, gpu: str, members: list[str]) -> int | Verdict:
    """A shared group spans the same GPUs: the largest of the members' smallest TP sizes."""
    sizes = {m: builder.tensor_parallel(m, gpu) for m in members}
    missing = [m for m, found in sizes.items() if not found]
    if missing:
        return Verdict("memory", f"{', '.join(missing)} cannot fit on {gpu} at any TP size")
    return max(found[0] for found in sizes.values())


def shared_unit(builder: UnitBuilder, gpu: str, members: list[str]) -> UnitPlan:
    tensor_parallel = _group_tensor_parallel(builder, gpu, members)
    if isinstance(tensor_parallel, Verdict):
        return builder.shared(members, gpu, "time-sliced", tensor_parallel, 1)
    fractions = builder.planner_fractions(members, gpu, tensor_parallel)
    return builder.shared(members, gpu, "time-sliced", fractions, tensor_parallel)


def shared_option(builder: UnitBuilder, gpu: str, models: list[str]) -> Option:
    return Option(f"shared {gpu}", "shared", [shared_unit(builder, gpu, models)])


def mig_option(builder: UnitBuilder, gpu: str, models: list[str]) -> Option | None:
    """Slices (and whole GPUs) of one GPU type packed to the fewest GPUs; None without MIG."""
    if not builder.loaded.catalog.gpu(gpu).mig_profiles:
        return None
    units, packing = builder.packed(gpu, models)
    name = f"mig {gpu}"
    if packing is None:
        served = {o.model for o in builder.slice_options(gpu, models)}
        missing = [m for m in models if m not in served]
        reason = f"{', '.join(missing)}: no MIG slice of {gpu} (nor the whole GPU) fits and "
        return Option(name, "mig", [], Verdict("memory", reason + "meets the SLO"))
    option = Option(name, "mig", units)
    if not packing.exhausted:
        option.notes.append("packing search stopped at its node budget: fewest GPUs found")
    return option


def _partitions(items: list[str]) -> Iterator[list[list[str]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _partitions(rest):
        yield [[first], *partition]
        for index in range(len(partition)):
            yield [*partition[:index], [first, *partition[index]], *partition[index + 1 :]]


def _cost(unit: UnitPlan, builder: UnitBuilder) -> float:
    price = builder.inputs.pricing.per_gpu_hour(builder.loaded.catalog, unit.gpu)
    if not unit.verdict.feasible or price is None:
        return math.inf
    return unit.gpus * price


def mixed_option(builder: UnitBuilder, gpus: list[str], models: list[str]) -> Option | None:
    """Each group of models on its cheapest GPU type; the cheapest grouping. A group shares a
    GPU only where one GPU costs less than its members alone (the bound: a shared GPU serves
    each member at most what the member serves alone)."""
    alone: dict[str, UnitPlan] = {}
    for model in models:
        choices = [builder.best_isolated(model, gpu) for gpu in gpus]
        alone[model] = min(choices, key=lambda u: _cost(u, builder))
    if len(models) <= MAX_PARTITIONED_MODELS:
        partitions = list(_partitions(models))
    else:
        primary, rest = models[0], models[1:]
        partitions = [[[m] for m in models], [[primary], rest]]
    groups: dict[tuple[str, ...], UnitPlan | None] = {}
    best: tuple[float, list[UnitPlan]] | None = None
    for partition in partitions:
        units: list[UnitPlan] = []
        for block in partition:
            if len(block) == 1:
                units.append(alone[block[0]])
                continue
            key = tuple(block)
            if key not in groups:
                groups[key] = _cheapest_group(builder, gpus, block, alone)
            group = groups[key]
            if group is None:
                break
            units.append(group)
        else:
            total = sum(_cost(u, builder) for u in units)
            if best is None or total < best[0]:
                best = (total, units)
    if best is None or math.isinf(best[0]):
        return None
    shared = [u for u in best[1] if len(u.models) > 1]
    name = (
        "mixed: cheapest GPU per model"
        if not shared
        else "mixed: " + "; ".join(" + ".join(u.models) + f" on {u.gpu}" for u in best[1])
    )
    return Option(name, "mixed", best[1])


def _cheapest_group(
    builder: UnitBuilder, gpus: list[str], block: list[str], alone: dict[str, UnitPlan]
) -> UnitPlan | None:
    apart = sum(_cost(alone[m], builder) for m in block)
    found: UnitPlan | None = None
    for gpu in gpus:
        price = builder.inputs.pricing.per_gpu_hour(builder.loaded.catalog, gpu)
        if price is None or _lower_bound_gpus(builder, gpu, block) * price >= apart:
            continue  # cannot beat its members alone: not simulated
        unit = shared_unit(builder, gpu, block)
        if _cost(unit, builder) < (_cost(found, builder) if found else apart):
            found = unit
    return found


def _lower_bound_gpus(builder: UnitBuilder, gpu: str, block: list[str]) -> int:
    models = builder.inputs.models
    minimum = max(builder.inputs.min_replicas.get(m, 0) for m in block)
    mix = models.shares(block)
    total = sum(models.models[m].rps for m in block)
    ceilings = []
    for member in block:
        whole = builder.whole_gpu(member, gpu)
        if whole is None:
            return 10**9  # does not fit alone: cannot share either
        if mix[member] > 0:
            ceilings.append(whole[0] / mix[member])
    most = min(ceilings, default=math.inf)
    return max(minimum, math.ceil(total / most - 1e-9) if total > 0 else 0)
