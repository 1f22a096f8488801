"""The planner's one door to the simulator.

`PlanSimulator.latencies(device, load)`: these engines (each a fleet model with its
quantization and engine settings, a memory fraction, a tensor-parallel size, and the GPU it
runs on: a catalog GPU or a MIG slice from `catalog.mig.mig_gpu`), on one device shared this
way, at this rate and mix -> each engine's latency percentiles. No other planner code touches
the simulator, so a typed simulator API can replace the body of this module alone.
`PlanSimulator.record(latencies)`: the figures the plan uses came from these simulations; their
accuracy (calibration, band) is what the plan reports.

Today the body writes the device as a one-device fleet document, validates it like any fleet
file (`Fleet.model_validate` + `check_fleet`, against the catalog plus the MIG slices) and runs
`sim.run.simulate` on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from modelyard.catalog import Catalog, GpuSpec
from modelyard.fleet import Fleet, LoadedFleet, check_fleet
from modelyard.placement import SharingMode
from modelyard.plan.errors import PlanError
from modelyard.sim.perf import Calibration, calibration_for
from modelyard.sim.result import Accuracy
from modelyard.sim.run import SimOptions, simulate
from modelyard.sim.versions import resolve_engine_version
from modelyard.workload import LengthDist

MIN_REQUESTS = 400  # enough arrivals for a p99 from the tail, not the first few requests
REQUESTS_PER_RPS = 180  # about three simulated minutes of traffic at the tested rate
MAX_REQUESTS = 3000


@dataclass(frozen=True)
class SimEngine:
    """One engine: a fleet model (its quantization and engine settings) on `gpu`."""

    model: str
    memory_fraction: float
    gpu: str  # a catalog GPU, or a MIG slice named "<gpu>/<profile>"
    # the catalog GPU, or catalog.mig.mig_gpu(parent, profile); the name says which
    spec: GpuSpec = field(compare=False, hash=False)
    tensor_parallel_size: int = 1


@dataclass(frozen=True)
class SimDevice:
    """Engines on one device (one GPU, N GPUs with tensor parallelism, or one MIG GPU's
    slices) and how they share it: isolated (one engine), time-sliced, mps, or mig (each engine
    on its own slice)."""

    gpu: str  # the catalog GPU type
    sharing: SharingMode
    engines: tuple[SimEngine, ...]


@dataclass(frozen=True)
class SimLoad:
    rate_rps: float
    mix: dict[str, float]  # fleet model -> share of the requests
    input_tokens: int
    output_tokens: int
    seed: int = 0

    @property
    def requests(self) -> int:
        return int(min(max(MIN_REQUESTS, self.rate_rps * REQUESTS_PER_RPS), MAX_REQUESTS))


@dataclass(frozen=True)
class EngineLatency:
    """One model's outcome on the device. Latencies are p99s in milliseconds."""

    model: str
    requests: int
    completed: int
    rejected: int
    ttft_p99_ms: float
    tpot_p99_ms: float
    e2e_p99_ms: float
    e2e_mean_ms: float
    accuracy: Accuracy | None = None  # how sure this simulation's figures are


@dataclass
class PlanSimulator:
    """Runs the planner's simulations and counts them."""

    loaded: LoadedFleet
    calibrations: tuple[Calibration, ...] = ()
    simulations: int = 0
    # how sure the simulated figures are, by model@GPU (each simulation's own Accuracy)
    accuracy: dict[str, Accuracy] = field(default_factory=dict)
    _fleets: dict[SimDevice, tuple[LoadedFleet, tuple[Calibration, ...]]] = field(
        default_factory=dict
    )

    def latencies(self, device: SimDevice, load: SimLoad) -> list[EngineLatency]:
        """Each engine's p99 latencies at `load` (raises sim errors, e.g. out of memory)."""
        fleet, calibrations = self._fleet(device)
        self.simulations += 1
        result = simulate(
            fleet,
            SimOptions(
                placement="fleet",
                rate=load.rate_rps,
                requests=load.requests,
                input_tokens=LengthDist(mean=load.input_tokens),
                output_tokens=LengthDist(mean=load.output_tokens),
                mix={m: s for m, s in load.mix.items() if s > 0},
                seed=load.seed,
                calibrations=calibrations,
            ),
        )
        return [
            EngineLatency(
                m.name,
                m.requests,
                m.completed,
                m.rejected,
                m.ttft_ms["p99"],
                m.tpot_ms["p99"],
                m.e2e_ms["p99"],
                m.e2e_ms["mean"],
                m.accuracy,
            )
            for m in result.models
        ]

    def record(self, answer: list[EngineLatency]) -> None:
        """Take the accuracy of a simulation whose figures the plan uses (a capacity search's
        answer, not its probes above the SLO: their steps may reach the host-bound regime the
        answer never does); per model@GPU the widest recorded."""
        for m in answer:
            if m.accuracy is None:
                continue
            key = f"{m.model}@{m.accuracy.gpu}"
            if key not in self.accuracy or m.accuracy.band > self.accuracy[key].band:
                self.accuracy[key] = m.accuracy

    @property
    def band(self) -> float:
        """The widest relative error band of the figures simulated so far (0: none)."""
        return max((a.band for a in self.accuracy.values()), default=0.0)

    def band_of(self, engines: Iterable[tuple[str, str]]) -> float:
        """The widest band recorded for these (model, GPU) engines, a GPU's MIG slices
        included; where none was recorded, the widest of all (0: nothing simulated)."""
        keys = [f"{model}@{gpu}" for model, gpu in engines]
        found = [
            accuracy.band
            for key, accuracy in self.accuracy.items()
            if any(key == k or key.startswith(f"{k}/") for k in keys)
        ]
        return max(found) if found else self.band

    def may_flip(
        self,
        cheaper_usd: float,
        dearer_usd: float,
        cheaper_band: float | None = None,
        dearer_band: float | None = None,
    ) -> bool:
        """Whether two options' costs could swap order within their bands (each the widest
        recorded where not given): a cost scales as 1 / capacity, so with capacities within
        +-band the cheaper one may cost up to 1 / (1 - band) times as much and the dearer one
        as little as 1 / (1 + band)."""
        low = self.band if cheaper_band is None else cheaper_band
        high = self.band if dearer_band is None else dearer_band
        if low <= 0 and high <= 0:
            return False
        return low >= 1 or cheaper_usd / (1 - low) >= dearer_usd / (1 + high)

    def accuracy_notes(self) -> list[str]:
        """One line per calibration the simulated capacities used, with its band."""
        by_calibration: dict[tuple[str, str, bool, float], list[str]] = {}
        for accuracy in self.accuracy.values():
            key = (
                accuracy.calibration,
                accuracy.engine_version,
                accuracy.measured_on_gpu,
                accuracy.band,
            )
            by_calibration.setdefault(key, [])
            if accuracy.gpu not in by_calibration[key]:
                by_calibration[key].append(accuracy.gpu)
        return [
            f"simulated with calibration {name} ({version}) on {', '.join(gpus)}: "
            f"{'measured' if measured else 'not measured'} there, figures +-{band:.0%}"
            for (name, version, measured, band), gpus in sorted(by_calibration.items())
        ]

    def _fleet(self, device: SimDevice) -> tuple[LoadedFleet, tuple[Calibration, ...]]:
        if device not in self._fleets:
            self._fleets[device] = self._build(device)
        return self._fleets[device]

    def _build(self, device: SimDevice) -> tuple[LoadedFleet, tuple[Calibration, ...]]:
        base = self.loaded.fleet
        models: dict[str, Any] = {}
        for engine in device.engines:
            entry = base.models[engine.model].model_dump()
            entry.update(
                gpu=engine.gpu,
                replicas=1,
                endpoints=[],
                gpu_memory_utilization=engine.memory_fraction,
                tensor_parallel_size=engine.tensor_parallel_size,
            )
            models[engine.model] = entry
        placement: Any = "isolated"
        if device.sharing in ("time-sliced", "mps") and len(device.engines) > 1:
            fractions = {e.model: e.memory_fraction for e in device.engines}
            group = {
                "gpu": device.gpu,
                "models": list(fractions),
                "sharing": device.sharing,
                "memory_limit": min(sum(fractions.values()), 1.0),
                "memory_fractions": fractions,
            }
            placement = {"shared": [group]}
        fleet = Fleet.model_validate({"name": base.name, "models": models, "placement": placement})
        slices = {e.gpu: e.spec for e in device.engines if e.gpu not in self.loaded.catalog.gpus}
        catalog = self.loaded.catalog
        if slices:
            catalog = Catalog(
                models=catalog.models,
                gpus={**catalog.gpus, **slices},
                quants=catalog.quants,
                aliases=catalog.aliases,
                sources=[*catalog.sources, "MIG slices (catalog.mig.mig_gpu)"],
            )
        problems = check_fleet(fleet, catalog)
        if problems:  # the planner built something no fleet file could say: a bug
            raise PlanError(f"planner built an invalid device {device}: {problems}")
        derived = tuple(
            self._slice_calibration(device.gpu, e.gpu, base.models[e.model].engine, version)
            for e in device.engines
            if e.gpu in slices
            for version in [base.models[e.model].engine_version]
        )
        loaded = LoadedFleet(fleet=fleet, catalog=catalog, path=self.loaded.path)
        return loaded, (*self.calibrations, *derived)

    def _slice_calibration(
        self, parent_gpu: str, slice_gpu: str, engine: str, engine_version: str | None
    ) -> Calibration:
        """The parent GPU's calibration for this engine version, applied to one MIG slice
        (unmeasured there)."""
        version = resolve_engine_version(engine, engine_version)
        parent = calibration_for(
            parent_gpu, list(self.calibrations), version.engine, version.version
        )
        return parent.model_copy(update={"devices": [slice_gpu], "measured_on": []})
