"""Capacity at the SLO: the requests per second one replica of a unit serves with every p99
within the SLO — one model on its GPU(s), a shared GPU at its traffic mix, or one MIG slice.

The source is always stated: `given (--capacity)`, `measured (FILE)`, or `simulated` (the
highest Poisson rate on a fixed grid whose p99s meet the SLO). When a unit cannot serve the SLO
its verdict says why, as a typed constraint: memory (it does not fit), slo (even the lowest
rate, or zero load, misses it), placement (the simulator cannot place it, e.g. tensor
parallelism without an interconnect).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from modelyard.catalog.mig import mig_gpu
from modelyard.fleet import LoadedFleet, Slo
from modelyard.placement import SharingMode, isolated_fraction
from modelyard.plan.fits import MemoryFits
from modelyard.plan.simulator import EngineLatency, PlanSimulator, SimDevice, SimEngine, SimLoad
from modelyard.sim.errors import SimError

# The rate grid: 0.05 x 2^(i / 14) req/s for i = 0 .. 22 x 14 (one doubling = 14 steps, ~5%)
COARSE_BASE_RPS = 0.05
FINE_STEPS = 14
MAX_DOUBLINGS = 22
MAX_INDEX = MAX_DOUBLINGS * FINE_STEPS
ZERO_LOAD_RPS = 0.001
COLD_START_RPS = 1.0  # where a search with no better guess starts (one GPU serves ~0.1-100)

Constraint = Literal[
    "memory", "slo", "capacity", "availability", "price", "layout", "placement", "dominated"
]


@dataclass(frozen=True)
class Verdict:
    """Why something cannot meet the SLO (`blocked_by` None: it can)."""

    blocked_by: Constraint | None = None
    reason: str = ""

    @property
    def feasible(self) -> bool:
        return self.blocked_by is None


@dataclass(frozen=True)
class Capacity:
    """Requests per second one replica serves within the SLO (summed over a shared unit's
    models at its mix); 0 with a verdict that says why when it cannot."""

    rps: float
    source: str
    verdict: Verdict = field(default_factory=Verdict)
    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None
    e2e_mean_ms: float | None = None  # at `rps` (simulated): with it, the requests in flight

    @property
    def feasible(self) -> bool:
        return self.verdict.feasible and self.rps > 0


def rate_at(index: int) -> float:
    return float(COARSE_BASE_RPS * 2 ** (index / FINE_STEPS))


def index_near(rps: float) -> int:
    """The grid index closest to `rps` (a warm start for the search)."""
    if rps <= COARSE_BASE_RPS:
        return 0
    return min(round(FINE_STEPS * math.log2(rps / COARSE_BASE_RPS)), MAX_INDEX)


def highest_passing(passes: Callable[[float], bool], start: int = 0) -> float:
    """The highest grid rate that passes, 0 when the lowest fails. From `start` it steps a
    doubling at a time up (while passing) or down (while failing), then bisects the last
    doubling. For a monotone test every start gives the same answer, and a rate that passes a
    tighter SLO passes a looser one, so a tighter SLO never yields more capacity."""
    memo: dict[int, bool] = {}

    def ok(index: int) -> bool:
        if index not in memo:
            memo[index] = passes(rate_at(index))
        return memo[index]

    index = min(max(start, 0), MAX_INDEX)
    if ok(index):
        low, high = index, index + FINE_STEPS
        while high <= MAX_INDEX and ok(high):
            low, high = high, high + FINE_STEPS
        if high > MAX_INDEX:
            high = MAX_INDEX + 1
            if ok(MAX_INDEX):
                return rate_at(MAX_INDEX)
    else:
        low, high = index - FINE_STEPS, index
        while low >= 0 and not ok(low):
            low, high = low - FINE_STEPS, low
        if low < 0:
            if not ok(0):
                return 0.0
            low = 0
    while high - low > 1:
        middle = (low + high) // 2
        if ok(middle):
            low = middle
        else:
            high = middle
    return rate_at(low)


@dataclass
class CapacityModel:
    """Capacities of every unit the planner considers, each computed once."""

    loaded: LoadedFleet
    slo: Slo
    input_tokens: int
    output_tokens: int
    simulator: PlanSimulator
    fits: MemoryFits
    given: dict[str, float] = field(default_factory=dict)  # model or model@gpu -> rps
    measured: dict[str, tuple[float, str]] = field(default_factory=dict)
    seed: int = 0
    _cache: dict[object, Capacity] = field(default_factory=dict)

    # --- units ---

    def isolated(self, model: str, gpu: str, tensor_parallel: int, guess: float = 0.0) -> Capacity:
        """One replica of `model` alone on `tensor_parallel` GPUs of type `gpu`, at its own
        memory fraction (the fleet's gpu_memory_utilization, or the default)."""
        key = ("isolated", model, gpu, tensor_parallel)
        if key not in self._cache:
            self._cache[key] = self._isolated(model, gpu, tensor_parallel, guess)
        return self._cache[key]

    def shared(
        self,
        gpu: str,
        sharing: SharingMode,
        fractions: dict[str, float],
        mix: dict[str, float],
        tensor_parallel: int,
        guess: float = 0.0,
    ) -> Capacity:
        """Total requests per second one replica of a shared GPU (or TP group of GPUs) serves
        at `mix` (model -> share of the unit's requests), each model at its fraction."""
        key = (
            "shared",
            gpu,
            sharing,
            tuple(sorted((m, round(f, 4)) for m, f in fractions.items())),
            tuple(sorted((m, round(s, 6)) for m, s in mix.items())),
            tensor_parallel,
        )
        if key not in self._cache:
            spec = self.loaded.catalog.gpu(gpu)
            engines = tuple(
                SimEngine(m, f, gpu, spec, tensor_parallel) for m, f in fractions.items()
            )
            self._cache[key] = self._capacity(SimDevice(gpu, sharing, engines), mix, guess)
        return self._cache[key]

    def mig_slice(self, model: str, gpu: str, profile: str, guess: float = 0.0) -> Capacity:
        """One MIG slice of `gpu` with `model` alone on it, at its own memory fraction."""
        key = ("mig", model, gpu, profile)
        if key not in self._cache:
            spec = mig_gpu(self.loaded.catalog.gpu(gpu), profile)
            engine = SimEngine(
                model, isolated_fraction(self.loaded, model), f"{gpu}/{profile}", spec
            )
            device = SimDevice(gpu, "mig", (engine,))
            self._cache[key] = self._capacity(device, {model: 1.0}, guess)
        return self._cache[key]

    # --- sources ---

    def _isolated(self, model: str, gpu: str, tensor_parallel: int, guess: float) -> Capacity:
        spec = self.loaded.catalog.gpu(gpu)
        engine = SimEngine(model, isolated_fraction(self.loaded, model), gpu, spec, tensor_parallel)
        device = SimDevice(gpu, "isolated", (engine,))
        memory = self._memory(device)
        if memory is not None:
            return memory
        explicit = self._explicit(model, gpu, tensor_parallel)
        return explicit or self._capacity(device, {model: 1.0}, guess)

    def _explicit(self, model: str, gpu: str, tensor_parallel: int) -> Capacity | None:
        """--capacity and --measured describe the model as the fleet runs it: its own GPU type
        (or the one named), its TP size, alone at its own memory fraction."""
        if tensor_parallel != self.loaded.fleet.models[model].tensor_parallel_size:
            return None
        fleet_gpu = self.loaded.gpu_name(model)
        for key in (f"{model}@{gpu}", model):
            if key in self.given and (key != model or gpu == fleet_gpu):
                return Capacity(self.given[key], "given (--capacity)")
        if model in self.measured and gpu == fleet_gpu:
            rps, source = self.measured[model]
            return Capacity(rps, source)
        return None

    def _memory(self, device: SimDevice) -> Capacity | None:
        problems = []
        for engine in device.engines:
            result = self.fits.fit(
                engine.model,
                engine.gpu,
                engine.spec,
                engine.memory_fraction,
                engine.tensor_parallel_size,
            )
            if not result.fits:
                tp = engine.tensor_parallel_size
                over = f" x{tp}" if tp > 1 else ""
                problems.append(
                    f"{engine.model} on {engine.gpu}{over} at {engine.memory_fraction:.2f}: "
                    f"{result.reason}"
                )
        if not problems:
            return None
        return Capacity(0.0, "memory", Verdict("memory", "; ".join(problems)))

    def _capacity(self, device: SimDevice, mix: dict[str, float], guess: float) -> Capacity:
        memory = self._memory(device)
        if memory is not None:
            return memory
        results: dict[float, list[EngineLatency]] = {}

        def run(rate: float) -> list[EngineLatency]:
            if rate not in results:
                load = SimLoad(rate, mix, self.input_tokens, self.output_tokens, self.seed)
                results[rate] = self.simulator.latencies(device, load)
            return results[rate]

        try:
            start = index_near(guess if guess > 0 else COLD_START_RPS)
            rps = highest_passing(lambda rate: self._meets(run(rate), mix), start)
            if rps > 0:
                self.simulator.record(run(rps))
                worst = max(run(rps), key=lambda m: m.ttft_p99_ms if mix.get(m.model) else 0.0)
                return Capacity(
                    rps,
                    "simulated",
                    Verdict(),
                    worst.ttft_p99_ms,
                    worst.tpot_p99_ms,
                    worst.e2e_mean_ms,
                )
            floor = run(ZERO_LOAD_RPS)
            self.simulator.record(floor)
        except SimError as exc:
            return Capacity(0.0, "simulated", Verdict("placement", str(exc)))
        return Capacity(0.0, "simulated", Verdict("slo", self._floor_reason(floor, mix, device)))

    def _meets(self, latencies: list[EngineLatency], mix: dict[str, float]) -> bool:
        for model in latencies:
            if mix.get(model.model, 0.0) <= 0 or model.requests == 0:
                continue
            if model.rejected or model.completed < model.requests:
                return False
            for limit, p99 in self._limits(model):
                if limit is not None and not p99 <= limit * 1000:
                    return False
        return True

    def _limits(self, model: EngineLatency) -> list[tuple[float | None, float]]:
        return [
            (self.slo.ttft_p99, model.ttft_p99_ms),
            (self.slo.tpot_p99, model.tpot_p99_ms),
            (self.slo.e2e_p99, model.e2e_p99_ms),
        ]

    def _floor_reason(
        self, floor: list[EngineLatency], mix: dict[str, float], device: SimDevice
    ) -> str:
        problems = []
        for model in floor:
            if mix.get(model.model, 0.0) <= 0:
                continue
            for label, (limit, p99) in zip(
                ("TTFT", "TPOT", "E2E"), self._limits(model), strict=True
            ):
                if limit is not None and p99 > limit * 1000:
                    problems.append(
                        f"{model.model} {label} p99 is {p99:.0f} ms even at zero load on "
                        f"{device.engines[0].gpu} > SLO {limit * 1000:.0f} ms"
                    )
        if problems:
            return "SLO impossible: " + "; ".join(problems)
        where = " + ".join(e.model for e in device.engines)
        return f"{where} on {device.gpu}: below {COARSE_BASE_RPS} req/s within the SLO"
