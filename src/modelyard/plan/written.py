"""The fleet as written: its own devices (`placement.device_plans`), each shared group with its
sharing mode and memory fractions, each isolated model on its GPU(s), at the replica counts the
file gives — checked against the demand like every other option — and the same layout resized
to the demand.
"""

from __future__ import annotations

import math
from dataclasses import replace

from modelyard.catalog.mig import fits_on_one_gpu, mig_gpu, mig_memory_gb, mig_slices
from modelyard.placement import DevicePlan, device_plans, isolated_fraction
from modelyard.plan.capacity import Verdict
from modelyard.plan.cost import PRECEDENCE, Option
from modelyard.plan.options import UnitBuilder
from modelyard.plan.units import Binding, EnginePlan, UnitPlan, size

EPSILON = 1e-9


def fleet_options(builder: UnitBuilder) -> list[Option]:
    """[as written, fleet layout resized] (only the first when the fleet uses CPU devices)."""
    plans = device_plans(builder.loaded)
    cpu = sorted({m for p in plans if p.gpu is None for m in p.models})
    if cpu:
        reason = f"{', '.join(cpu)} run on CPU cores; the planner sizes GPUs"
        return [Option("as written", "as written", [], Verdict("placement", reason))]
    counts: dict[tuple[object, ...], tuple[DevicePlan, int]] = {}
    for plan in plans:
        key = (
            plan.gpu,
            plan.sharing,
            plan.gpu_count,
            tuple((e.model, round(e.memory_fraction, 4), e.mig_profile) for e in plan.engines),
        )
        first, count = counts.get(key, (plan, 0))
        counts[key] = (first, count + 1)
    notes: list[str] = []
    sized = [(_unit(builder, plan, notes), count) for plan, count in counts.values()]
    written = [replace(unit, replicas=count, sized_by=["as written"]) for unit, count in sized]
    option = Option("as written", "as written", written, notes=notes)
    option.verdict = _check(builder, written, option.verdict)
    resized = Option("fleet layout, resized", "fleet layout", [u for u, _ in sized], notes=notes)
    return [option, resized]


def _unit(builder: UnitBuilder, plan: DevicePlan, notes: list[str]) -> UnitPlan:
    assert plan.gpu is not None
    fleet = builder.loaded.fleet
    if plan.sharing == "mig":
        return _mig_unit(builder, plan, notes)
    if plan.sharing == "isolated" and fleet.group_of(plan.engines[0].model) is None:
        return builder.isolated(plan.engines[0].model, plan.gpu, plan.gpu_count)
    # a shared group's device (or a group member's extra replica alone, at its group fraction)
    fractions = {e.model: e.memory_fraction for e in plan.engines}
    sharing = "time-sliced" if plan.sharing == "isolated" else plan.sharing
    return builder.shared(list(fractions), plan.gpu, sharing, fractions, plan.gpu_count)


def _mig_unit(builder: UnitBuilder, plan: DevicePlan, notes: list[str]) -> UnitPlan:
    """A MIG GPU with one slice per member: the group's profiles, or for a member without one
    the smallest profile it fits (a note says so)."""
    assert plan.gpu is not None
    gpu = plan.gpu
    spec = builder.loaded.catalog.gpu(gpu)
    profiles: dict[str, str | None] = {}
    for engine in plan.engines:
        profile = engine.mig_profile or _smallest_profile(builder, gpu, engine.model)
        if engine.mig_profile is None:
            chosen = f"{engine.model} {profile}" if profile else f"{engine.model} fits no slice"
            notes.append(f"MIG profile chosen by the planner (the group names none): {chosen}")
        profiles[engine.model] = profile
    members = [e.model for e in plan.engines]
    demand = {m: builder.inputs.models.models[m].rps for m in members}
    engines = [EnginePlan(e.model, e.memory_fraction, 1, profiles[e.model]) for e in plan.engines]
    label = f"{gpu} MIG [" + " + ".join(f"{profiles[m]} {m}" for m in members) + "]"
    capacity = dict.fromkeys(members, 0.0)
    unit = UnitPlan(label, gpu, "mig", engines, 1, 0, capacity, demand, "simulated")
    missing = [m for m, p in profiles.items() if p is None]
    if missing:
        unit.verdict = Verdict("memory", f"{', '.join(missing)} fit no MIG slice of {gpu}")
        return unit
    named = [p for p in profiles.values() if p is not None]
    if not fits_on_one_gpu(spec, named):
        unit.verdict = Verdict("layout", f"slices {', '.join(named)} exceed one {gpu} (7/8)")
        return unit
    replicas = 0
    sized_by: set[Binding] = set()
    for model, profile in profiles.items():
        assert profile is not None
        cap = builder.capacity.mig_slice(model, gpu, profile)
        if not cap.feasible:
            unit.verdict = cap.verdict
            return unit
        unit.capacity_rps[model] = cap.rps
        need = builder.inputs.models.models[model]
        failover = [(need.need_rps, cap.rps)] if need.failover_rps > 0 else []
        minimum = builder.inputs.min_replicas.get(model, 0)
        count, bindings = size(need.rps, cap.rps, minimum, failover)
        if count > replicas:
            replicas, sized_by = count, set(bindings)
        elif count == replicas:
            sized_by |= set(bindings)
    unit.replicas = replicas
    order: tuple[Binding, ...] = ("SLO", "availability", "failover")
    unit.sized_by = [b for b in order if b in sized_by]
    return unit


def _smallest_profile(builder: UnitBuilder, gpu: str, model: str) -> str | None:
    """The smallest MIG profile of `gpu` that `model` fits at its own memory fraction."""
    spec = builder.loaded.catalog.gpu(gpu)
    fraction = isolated_fraction(builder.loaded, model)
    by_size = sorted(spec.mig_profiles, key=lambda p: (mig_memory_gb(p), mig_slices(spec, p)))
    for profile in by_size:
        if builder.capacity.fits.fit(
            model, f"{gpu}/{profile}", mig_gpu(spec, profile), fraction
        ).fits:
            return profile
    return None


def _check(builder: UnitBuilder, units: list[UnitPlan], verdict: Verdict) -> Verdict:
    """Does the fleet as written serve each model's demand within the SLO, with at least its
    availability minimum of replicas?"""
    problems: list[Verdict] = [u.verdict for u in units if not u.verdict.feasible]
    for model, demand in builder.inputs.models.models.items():
        holding = [u for u in units if model in u.models]
        replicas = sum(u.replicas for u in holding)
        if not all(u.verdict.feasible for u in holding):
            continue
        for need, per_replica, what in (
            (demand.rps, [u.capacity_rps.get(model, 0.0) for u in holding], "at the peak"),
            (demand.need_rps, [u.takeover_rps(model) for u in holding], "with --failover"),
        ):
            offered = sum(c * u.replicas for c, u in zip(per_replica, holding, strict=True))
            if need > 0 and offered + EPSILON < need:
                each = offered / replicas if replicas else 0.0
                needed = f" ({math.ceil(need / each - EPSILON)} replicas)" if each > 0 else ""
                problems.append(
                    Verdict(
                        "capacity",
                        f"{model}: {replicas} replica(s) serve {offered:.2f} req/s within the "
                        f"SLO, {need:.2f} needed {what}{needed}",
                    )
                )
                break
        minimum = builder.inputs.min_replicas.get(model, 0)
        if replicas < minimum:
            problems.append(
                Verdict(
                    "availability",
                    f"{model}: {replicas} replica(s), the availability minimum is {minimum} "
                    f"(--min-replicas {model}={replicas} accepts it)",
                )
            )
    if not problems:
        return verdict
    first = min(problems, key=lambda v: PRECEDENCE.index(v.blocked_by or "price"))
    return Verdict(first.blocked_by, "; ".join(v.reason for v in problems))
