"""The searched options: per GPU type every planned model isolated, all of them sharing each
GPU, and MIG packing; with --optimize also mixed layouts — each group of models (one model
alone, or several sharing a GPU) on its own cheapest GPU type.

With pruning (--optimize without --sweep) the options are built cheapest floor first, and one
whose floor — the availability minimum's GPUs at the GPU's price, before any simulation —
costs more than the cheapest option found so far is listed as `dominated`, not simulated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from modelyard.plan.capacity import Verdict
from modelyard.plan.cost import Option, OptionKind, finish
from modelyard.plan.options import UnitBuilder
from modelyard.plan.units import UnitPlan
from modelyard.plan.written import fleet_options
from modelyard.units import HOURS_PER_MONTH

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
        if missing:
            reason = f"{', '.join(missing)}: no MIG slice of {gpu} (nor the whole GPU) fits and "
            return Option(name, "mig", [], Verdict("memory", reason + "meets the SLO"))
        reason = f"no packing of {gpu}'s MIG slices serves the demand"
        return Option(name, "mig", [], Verdict("capacity", reason))
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


def mixed_option(
    builder: UnitBuilder, gpus: list[str], models: list[str], prune: bool = False
) -> Option | None:
    """Each group of models on its cheapest GPU type; the cheapest grouping. A group shares a
    GPU only where one GPU costs less than its members alone (the bound: a shared GPU serves
    each member at most what the member serves alone)."""
    alone: dict[str, UnitPlan] = {}
    for model in models:
        alone[model] = _cheapest_alone(builder, gpus, model, prune)
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


def _cheapest_alone(builder: UnitBuilder, gpus: list[str], model: str, prune: bool) -> UnitPlan:
    """`model` alone on its cheapest GPU type; with pruning, GPU types whose availability
    minimum alone costs more than the cheapest found are not simulated."""
    catalog = builder.loaded.catalog
    priced = [(builder.inputs.pricing.per_gpu_hour(catalog, g), g) for g in gpus]
    order = sorted(priced, key=lambda item: math.inf if item[0] is None else item[0])
    best: UnitPlan | None = None
    for price, gpu in order:
        if prune and best is not None and price is not None:
            least = builder.inputs.min_replicas.get(model, 0)
            tp = (builder.tensor_parallel(model, gpu) or [1])[0]
            if least * tp * price > _cost(best, builder):
                continue
        unit = builder.best_isolated(model, gpu)
        if best is None or _cost(unit, builder) < _cost(best, builder):
            best = unit
    assert best is not None
    return best


def _cheapest_group(
    builder: UnitBuilder, gpus: list[str], block: list[str], alone: dict[str, UnitPlan]
) -> UnitPlan | None:
    apart = sum(_cost(alone[m], builder) for m in block)
    found: UnitPlan | None = None
    for gpu in gpus:
        price = builder.inputs.pricing.per_gpu_hour(builder.loaded.catalog, gpu)
        minimum = max(builder.inputs.min_replicas.get(m, 0) for m in block)
        if price is None or minimum * price >= apart:
            continue  # its availability minimum alone costs more than its members apart
        if _lower_bound_gpus(builder, gpu, block) * price >= apart:
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


BUILDERS: dict[OptionKind, Callable[[UnitBuilder, str, list[str]], Option | None]] = {
    "isolated": isolated_option,
    "shared": shared_option,
    "mig": mig_option,
}


def options_for(
    builder: UnitBuilder,
    gpu_types: list[str],
    optimize: bool,
    prune: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[Option]:
    """The fleet as written (and resized), then per GPU type isolated, shared and MIG, then
    (optimize) the cheapest mixed layout; each finished (verdict, cost), repeats dropped."""
    planned = builder.inputs.models.planned
    options = [_finished(builder, o) for o in fleet_options(builder)]
    kinds: list[tuple[float, OptionKind, str]] = []
    for gpu in gpu_types:
        kinds.append((_floor(builder, "isolated", gpu, planned), "isolated", gpu))
        if len(planned) > 1:
            kinds.append((_floor(builder, "shared", gpu, planned), "shared", gpu))
        if builder.loaded.catalog.gpu(gpu).mig_profiles:
            kinds.append((_floor(builder, "mig", gpu, planned), "mig", gpu))
    if prune:
        kinds.sort(key=lambda item: item[0])
    for floor, kind, gpu in kinds:
        best = min((o for o in options if o.feasible), key=lambda o: o.monthly_usd, default=None)
        if prune and best is not None and floor > best.monthly_usd:
            reason = (
                f"not simulated: its availability minimum alone costs ${floor:,.0f}/month, "
                f"more than {best.name} (${best.monthly_usd:,.0f})"
            )
            skipped = Option(f"{kind} {gpu}", kind, [], Verdict("dominated", reason))
            skipped.cost_floor_usd = floor
            options.append(skipped)
            continue
        if progress is not None:
            progress(f"{kind} {gpu}")
        built = BUILDERS[kind](builder, gpu, planned)
        if built is not None:
            options.append(_finished(builder, built))
    if optimize and len(gpu_types) > 1:
        mixed = mixed_option(builder, gpu_types, planned, prune)
        if mixed is not None:
            options.append(_finished(builder, mixed))
    return _dedupe(options)


def _finished(builder: UnitBuilder, option: Option) -> Option:
    inputs = builder.inputs
    return finish(option, inputs.demand, inputs.models, builder.loaded.catalog, inputs.pricing)


def _floor(builder: UnitBuilder, kind: OptionKind, gpu: str, models: list[str]) -> float:
    """$/month the option costs at least, from replica minimums and memory alone."""
    price = builder.inputs.pricing.per_gpu_hour(builder.loaded.catalog, gpu)
    if price is None:
        return 0.0  # built anyway: its verdict says there is no price
    minimum = builder.inputs.min_replicas
    smallest = {m: (builder.tensor_parallel(m, gpu) or [1])[0] for m in models}
    if kind == "isolated":
        gpus = sum(minimum.get(m, 0) * smallest[m] for m in models)
    elif kind == "shared":
        gpus = max(minimum.get(m, 0) for m in models) * max(smallest.values())
    else:
        gpus = max(minimum.get(m, 0) for m in models)
    return gpus * price * HOURS_PER_MONTH


def _dedupe(options: list[Option]) -> list[Option]:
    """The as written option always stays; later options that are the same fleet go."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for option in options:
        key = option.key()
        if option.kind == "as written" or key not in seen or not option.units:
            kept.append(option)
        seen.add(key)
    return kept
