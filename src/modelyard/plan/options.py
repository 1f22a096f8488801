"""Sized units for every placement the planner considers: a model alone on its GPU(s), models
sharing a GPU, MIG GPUs packed with slices — and their capacity at the SLO.

Memory fractions for a shared GPU the planner composes: each member's smallest fit plus the
rest of the default 0.9 split by traffic share (at least 0.1 of the weight each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelyard.catalog.mig import mig_gpu, mig_slices
from modelyard.fleet import LoadedFleet
from modelyard.placement import DEFAULT_GPU_MEMORY_UTILIZATION, SharingMode, isolated_fraction
from modelyard.plan.capacity import Capacity, CapacityModel, Verdict
from modelyard.plan.cost import Pricing
from modelyard.plan.demand import Demand, FleetDemand
from modelyard.plan.mig import GpuLayout, Packing, SliceOption, pack
from modelyard.plan.units import Binding, EnginePlan, UnitPlan, size

MIN_SHARE_WEIGHT = 0.1  # a standby member still gets some of the spare memory


@dataclass(frozen=True)
class PlanInputs:
    demand: Demand
    models: FleetDemand
    min_replicas: dict[str, int]
    pricing: Pricing


@dataclass
class UnitBuilder:
    """Builds sized units from capacities; remembers whole-GPU capacities for utilisation."""

    capacity: CapacityModel
    inputs: PlanInputs
    _whole: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)

    @property
    def loaded(self) -> LoadedFleet:
        return self.capacity.loaded

    # --- one model alone ---

    def tensor_parallel(self, model: str, gpu: str) -> list[int]:
        spec = self.loaded.catalog.gpu(gpu)
        return self.capacity.fits.tensor_parallel_sizes(model, gpu, spec)

    def isolated(self, model: str, gpu: str, tensor_parallel: int) -> UnitPlan:
        demand = self.inputs.models.models[model]
        cap = self.capacity.isolated(model, gpu, tensor_parallel, self._guess(model, gpu))
        if cap.feasible:
            self._whole.setdefault((model, gpu), (cap.rps, tensor_parallel))
        label = gpu if tensor_parallel == 1 else f"{gpu} x{tensor_parallel} (TP)"
        fraction = isolated_fraction(self.loaded, model)
        unit = UnitPlan(
            label,
            gpu,
            "isolated",
            [EnginePlan(model, fraction, tensor_parallel)],
            tensor_parallel,
            0,
            {model: cap.rps},
            {model: demand.rps},
            cap.source,
            verdict=cap.verdict,
        )
        if cap.feasible:
            failover = [(demand.need_rps, cap.rps)] if demand.failover_rps > 0 else []
            minimum = self.inputs.min_replicas.get(model, 0)
            unit.replicas, unit.sized_by = size(demand.rps, cap.rps, minimum, failover)
        return self._finish(unit)

    def best_isolated(self, model: str, gpu: str, sizes: list[int] | None = None) -> UnitPlan:
        """Alone on `gpu`: the fewest GPUs among the fleet's TP size (where it fits) and the
        smallest that fits."""
        fitting = self.tensor_parallel(model, gpu) if sizes is None else sizes
        if not fitting:
            stated = self.loaded.fleet.models[model].tensor_parallel_size
            return self.isolated(model, gpu, stated)  # its verdict says why it does not fit
        stated = self.loaded.fleet.models[model].tensor_parallel_size
        candidates = sorted({fitting[0], *([stated] if stated in fitting else [])})
        units = [self.isolated(model, gpu, tp) for tp in candidates]
        return min(units, key=lambda u: (not u.verdict.feasible, u.gpus, u.gpus_per_replica))

    # --- models sharing one GPU ---

    def planner_fractions(
        self, members: list[str], gpu: str, tensor_parallel: int
    ) -> dict[str, float] | Verdict:
        spec = self.loaded.catalog.gpu(gpu)
        needs = {
            m: self.capacity.fits.need_fraction(m, gpu, spec, tensor_parallel) for m in members
        }
        missing = [m for m, need in needs.items() if need is None]
        if missing:
            return Verdict("memory", f"{', '.join(missing)} cannot fit on {gpu} at all")
        found = {m: float(need or 0.0) for m, need in needs.items()}
        spare = DEFAULT_GPU_MEMORY_UTILIZATION - sum(found.values())
        if spare < 0:
            listed = ", ".join(f"{m} {f:.2f}" for m, f in found.items())
            return Verdict(
                "memory",
                f"{' + '.join(members)} need fractions {sum(found.values()):.2f} of {gpu} "
                f"({listed}) > {DEFAULT_GPU_MEMORY_UTILIZATION:g}",
            )
        shares = self.inputs.models.shares(members)
        weights = {m: max(shares[m], MIN_SHARE_WEIGHT) for m in members}
        total = sum(weights.values())
        return {m: round(found[m] + spare * weights[m] / total, 3) for m in members}

    def shared(
        self,
        members: list[str],
        gpu: str,
        sharing: SharingMode,
        fractions: dict[str, float] | Verdict,
        tensor_parallel: int,
    ) -> UnitPlan:
        models = self.inputs.models.models
        mix = self.inputs.models.shares(members)
        label = f"{gpu} {sharing}"
        if tensor_parallel > 1:
            label = f"{gpu} x{tensor_parallel} (TP) {sharing}"
        if isinstance(fractions, Verdict):
            cap = Capacity(0.0, "memory", fractions)
            fractions = {}
        else:
            guess = self._shared_guess(members, gpu, mix)
            cap = self.capacity.shared(gpu, sharing, fractions, mix, tensor_parallel, guess)
            label += " (" + ", ".join(f"{m} {f:.2f}" for m, f in fractions.items()) + ")"
        unit = UnitPlan(
            label,
            gpu,
            sharing,
            [EnginePlan(m, fractions.get(m, 0.0), tensor_parallel) for m in members],
            tensor_parallel,
            0,
            {m: cap.rps * mix[m] for m in members},
            {m: models[m].rps for m in members},
            cap.source,
            verdict=cap.verdict,
        )
        if not cap.feasible:
            return self._finish(unit)
        failover = []
        for member in members:
            if models[member].failover_rps > 0:
                alone = self.capacity.shared(
                    gpu, sharing, fractions, {member: 1.0}, tensor_parallel, cap.rps
                )
                if not alone.feasible:
                    unit.verdict = alone.verdict
                    return self._finish(unit)
                failover.append((models[member].need_rps, alone.rps))
                unit.failover_capacity_rps[member] = alone.rps
        minimum = max(self.inputs.min_replicas.get(m, 0) for m in members)
        total = sum(models[m].rps for m in members)
        unit.replicas, unit.sized_by = size(total, cap.rps, minimum, failover)
        return self._finish(unit)

    # --- MIG ---

    def slice_options(self, gpu: str, models: list[str]) -> list[SliceOption]:
        """Every (model, profile) that fits and meets the SLO on `gpu`, plus whole GPUs."""
        spec = self.loaded.catalog.gpu(gpu)
        options = []
        for model in models:
            whole = self.isolated(model, gpu, 1)
            whole_rps = whole.capacity_rps[model] if whole.verdict.feasible else 0.0
            if whole_rps > 0:
                options.append(SliceOption(model, None, 7, 8, whole_rps))
            for profile in spec.mig_profiles:
                compute, memory = mig_slices(spec, profile)
                if compute >= 7:
                    continue  # the whole GPU serves at least what its 7g slice serves
                name = f"{gpu}/{profile}"
                fraction = isolated_fraction(self.loaded, model)
                if not self.capacity.fits.fit(model, name, mig_gpu(spec, profile), fraction).fits:
                    continue
                guess = whole_rps * min(compute / 7, memory / 8)
                cap = self.capacity.mig_slice(model, gpu, profile, guess)
                if cap.feasible:
                    options.append(SliceOption(model, profile, compute, memory, cap.rps))
        return options

    def packed(self, gpu: str, models: list[str]) -> tuple[list[UnitPlan], Packing | None]:
        demand = self.inputs.models.models
        need = {m: demand[m].need_rps for m in models}
        least = {m: self.inputs.min_replicas.get(m, 0) for m in models}
        options = self.slice_options(gpu, models)
        packing = pack(options, need, least)
        if packing is None:
            return [], None
        offered = {m: sum(g.rps(m) * c for g, c in packing.layouts) for m in models}
        units = [self._layout_unit(gpu, g, c, offered) for g, c in packing.layouts]
        return units, packing

    def _layout_unit(
        self, gpu: str, layout: GpuLayout, count: int, offered: dict[str, float]
    ) -> UnitPlan:
        models = self.inputs.models.models
        engines: dict[tuple[str, str | None], int] = {}
        for item in layout.slices:
            engines[(item.model, item.profile)] = engines.get((item.model, item.profile), 0) + 1
        plans = [
            EnginePlan(m, isolated_fraction(self.loaded, m), 1, p, n)
            for (m, p), n in engines.items()
        ]
        held = list(dict.fromkeys(s.model for s in layout.slices))
        if layout.whole:
            label = f"{gpu} (whole GPU)"
        else:
            parts = [f"{n}x{p} {m}" if n > 1 else f"{p} {m}" for (m, p), n in engines.items()]
            label = f"{gpu} MIG [{' + '.join(parts)}]"
        demand = {
            m: models[m].rps * layout.rps(m) * count / offered[m] if offered[m] > 0 else 0.0
            for m in held
        }
        if any(d > 0 for d in demand.values()):
            sized_by: list[Binding] = ["SLO"]
        elif any(models[m].failover_rps > 0 for m in held):
            sized_by = ["failover"]
        else:
            sized_by = ["availability"]
        unit = UnitPlan(
            label,
            gpu,
            "isolated" if layout.whole else "mig",
            plans,
            1,
            count,
            {m: layout.rps(m) for m in held},
            demand,
            "simulated",
            sized_by=sized_by,
        )
        return self._finish(unit)

    # --- shared bookkeeping ---

    def whole_gpu(self, model: str, gpu: str) -> tuple[float, int] | None:
        """What one replica of `model` alone serves on `gpu` (and over how many GPUs)."""
        if (model, gpu) not in self._whole:
            sizes = self.tensor_parallel(model, gpu)
            if sizes:
                self.isolated(model, gpu, sizes[0])
        return self._whole.get((model, gpu))

    def _finish(self, unit: UnitPlan) -> UnitPlan:
        """The unit's work in whole GPUs (each model's demand over what one replica of it
        alone on this GPU type serves, times that replica's GPUs), for GPU utilisation."""
        if unit.gpus == 0:
            return unit
        work = 0.0
        rest = 0.0
        for model, rps in unit.demand_rps.items():
            whole = self.whole_gpu(model, unit.gpu) if rps > 0 else None
            if whole is not None:
                work += rps / whole[0] * whole[1]
            else:
                rest += rps
        offered = sum(unit.capacity_rps.values())
        if rest > 0 and offered > 0:  # a model that fits no GPU alone: its unit's own capacity
            work += rest / offered * unit.gpus_per_replica
        unit.gpu_equivalents = work
        return unit

    def _guess(self, model: str, gpu: str) -> float:
        """A warm start for the rate search: this model's capacity on a GPU already searched,
        scaled by memory bandwidth (decode is bandwidth-bound)."""
        spec = self.loaded.catalog.gpu(gpu)
        for (known, other), (rps, tp) in self._whole.items():
            if known == model and tp == 1:
                scale = (
                    spec.memory_bandwidth_gbps
                    / self.loaded.catalog.gpu(other).memory_bandwidth_gbps
                )
                return rps * scale
        return 0.0

    def _shared_guess(self, members: list[str], gpu: str, mix: dict[str, float]) -> float:
        rates = []
        for member in members:
            alone = self._whole.get((member, gpu))
            if mix[member] > 0 and alone is not None:
                rates.append(alone[0] / mix[member])
        return min(rates) / 2 if rates else 0.0
