"""`sim run`: simulate a fleet offline, as fast as possible.

Builds one simulated engine per model replica where the placement puts it (isolated: a device
each; shared: the group's members on one device), feeds it a seeded workload, and reports per
model latency percentiles, throughput, goodput at the fleet's SLO, KV usage and preemptions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from modelyard.fleet import LoadedFleet
from modelyard.memory import fleet_settings
from modelyard.placement import PlacementOverride, device_plans
from modelyard.sim.engine import Engine, SimRequest
from modelyard.sim.errors import SimError
from modelyard.sim.gpu import EngineSpec, SharedDevice, StartedEngine, start_engine
from modelyard.sim.loop import PRIORITY_ARRIVAL, Event, EventLoop
from modelyard.sim.perf import Calibration, calibration_for
from modelyard.traffic import model_shares, peak_rate_rps
from modelyard.workload import ArrivalProcess, LengthDist, Requests, Workload, generate

Placement = Literal["fleet", "shared", "isolated"]
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class SimOptions:
    placement: Placement = "fleet"
    gpu: str | None = None
    requests: int = 10_000
    rate: float | None = None
    arrival: Literal["constant", "poisson", "gamma"] = "poisson"
    burstiness: float = 1.0
    input_tokens: LengthDist | None = None
    output_tokens: LengthDist | None = None
    mix: dict[str, float] | None = None
    seed: int = 0
    calibrations: tuple[Calibration, ...] = ()


def fleet_peak_rate(loaded: LoadedFleet) -> float:
    """Requests per second at the daily peak (modelyard.traffic's rule)."""
    return peak_rate_rps(loaded.fleet.traffic)


def default_mix(loaded: LoadedFleet) -> dict[str, float]:
    """Each model's share of the requests (modelyard.traffic's rule)."""
    return model_shares(loaded.fleet)


@dataclass(frozen=True)
class PlannedDevice:
    gpu_name: str
    engines: list[EngineSpec]
    gpu_count: int = 1  # GPUs the device's engines span (tensor parallelism)


def plan_devices(loaded: LoadedFleet, options: SimOptions) -> list[PlannedDevice]:
    """Devices and the engines on each, as the placement (or its override) puts them."""
    fleet = loaded.fleet
    catalog = loaded.catalog
    override = PlacementOverride(layout=options.placement, gpu=options.gpu)
    devices: list[PlannedDevice] = []
    for device in device_plans(loaded, override):
        if device.gpu is None:
            name = device.engines[0].model
            raise SimError(f"model '{name}' has no GPU to simulate: give it one or pass --gpu")
        calibration = calibration_for(device.gpu, list(options.calibrations))
        specs = [
            EngineSpec(
                name=placed.name,
                model_name=catalog.resolve_model_name(fleet.models[placed.model].catalog),
                model=loaded.model_spec(placed.model),
                quant_name=fleet.models[placed.model].quant_name,
                quant=loaded.quant(placed.model),
                gpu_name=device.gpu,
                gpu=catalog.gpu(device.gpu),
                calibration=calibration,
                settings=fleet_settings(loaded, placed.model, placed.memory_fraction),
            )
            for placed in device.engines
        ]
        devices.append(PlannedDevice(device.gpu, specs, device.gpu_count))
    return devices


class _Collector:
    """Per-request outcomes, as columns."""

    def __init__(self) -> None:
        self.model: list[int] = []
        self.ttft: list[float] = []
        self.e2e: list[float] = []
        self.tpot: list[float] = []
        self.queue: list[float] = []
        self.output_tokens: list[int] = []
        self.finished_at: list[float] = []

    def on_first_token(self, request: SimRequest, time: float) -> None:
        return None

    def on_tokens(self, requests: Iterable[SimRequest], time: float) -> None:
        return None

    def on_finished(self, request: SimRequest, time: float) -> None:
        self.model.append(request.payload)
        ttft = request.first_token - request.arrival
        self.ttft.append(ttft)
        e2e = time - request.arrival
        self.e2e.append(e2e)
        out = request.output_tokens
        self.tpot.append((e2e - ttft) / (out - 1) if out > 1 else math.nan)
        self.queue.append(request.first_scheduled - request.arrival)
        self.output_tokens.append(out)
        self.finished_at.append(time)


def _percentiles(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": math.nan, **{f"p{p}": math.nan for p in PERCENTILES}}
    out = {"mean": float(finite.mean())}
    for p, v in zip(PERCENTILES, np.percentile(finite, PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    return out


@dataclass
class ModelResult:
    name: str
    requests: int
    completed: int
    rejected: int
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    e2e_ms: dict[str, float]
    queue_ms: dict[str, float]
    throughput_rps: float
    output_tokens_per_s: float
    goodput_rps: float
    kv_usage_mean: float
    kv_usage_max: float
    queue_mean: float
    preemptions: int
    engines: int
    cold_start_s: float
    kv_cache_tokens: int


@dataclass
class SimResult:
    fleet: str
    placement: str
    gpus: dict[str, int]
    duration_s: float
    requests: int
    slo: dict[str, float | None]
    models: list[ModelResult] = field(default_factory=list)
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _route(engines: list[Engine]) -> Engine:
    if len(engines) == 1:
        return engines[0]
    return min(engines, key=lambda e: e.running + len(e.waiting))


def simulate(loaded: LoadedFleet, options: SimOptions) -> SimResult:
    """Run the fleet's simulation to completion and summarise it."""
    import time as wallclock

    started_wall = wallclock.perf_counter()
    traffic = loaded.fleet.traffic
    rate = options.rate if options.rate is not None else fleet_peak_rate(loaded)
    if rate <= 0:
        raise SimError("no request rate: pass --rate or set traffic in the fleet file")
    mix = options.mix or default_mix(loaded)
    for name in mix:
        if name not in loaded.fleet.models:
            raise SimError(f"mix names '{name}', which is not a model of the fleet")
    workload = Workload(
        arrivals=ArrivalProcess(options.arrival, rate, options.burstiness),
        input_tokens=options.input_tokens or LengthDist(mean=traffic.input_tokens),
        output_tokens=options.output_tokens or LengthDist(mean=traffic.output_tokens),
        mix=mix,
    )
    requests = generate(workload, options.requests, options.seed)

    collector = _Collector()
    devices = plan_devices(loaded, options)
    by_model: dict[str, list[StartedEngine]] = {}
    gpus: dict[str, int] = {}
    for device in devices:
        gpus[device.gpu_name] = gpus.get(device.gpu_name, 0) + device.gpu_count
        shared = SharedDevice(device.gpu_name, device.engines[0].calibration.contention_slowdown)
        for spec in device.engines:
            started = start_engine(spec, collector, shared)
            by_model.setdefault(spec.name.split("/")[0], []).append(started)

    loop = EventLoop()
    model_index = {name: i for i, name in enumerate(loaded.fleet.models)}
    rejected = dict.fromkeys(loaded.fleet.models, 0)
    for target in requests.targets:
        if target not in by_model:
            continue
        stream = requests.for_target(target)
        engines = [s.engine for s in by_model[target]]
        max_len = by_model[target][0].fit.max_model_len
        loop.schedule(
            _arrival_stream(stream, engines, model_index[target], max_len, rejected, target)
        )
    loop.run()
    return _summarise(
        loaded,
        options,
        requests,
        collector,
        by_model,
        gpus,
        rejected,
        wallclock.perf_counter() - started_wall,
    )


def _arrival_stream(
    stream: Requests,
    engines: list[Engine],
    model_id: int,
    max_len: int,
    rejected: dict[str, int],
    target: str,
) -> list[Event]:
    arrivals = stream.arrival_s
    inputs = stream.input_tokens
    outputs = stream.output_tokens
    count = len(stream)
    position = [0]

    def horizon() -> float:
        return float(arrivals[position[0]]) if position[0] < count else math.inf

    for engine in engines:
        engine.horizon = horizon

    def on_arrival(time: float, index: int) -> list[Event]:
        position[0] = index + 1
        events: list[Event] = []
        prompt, output = int(inputs[index]), int(outputs[index])
        if prompt + output > max_len:
            rejected[target] += 1  # vLLM answers 400: context length exceeded
        else:
            request = SimRequest(
                rid=index,
                arrival=time,
                prompt_tokens=prompt,
                output_tokens=output,
                payload=model_id,
            )
            events.extend(_route(engines).submit(time, request))
        if index + 1 < count:
            events.append((float(arrivals[index + 1]), PRIORITY_ARRIVAL, on_arrival, index + 1))
        return events

    return [(float(arrivals[0]), PRIORITY_ARRIVAL, on_arrival, 0)] if count else []


def _summarise(
    loaded: LoadedFleet,
    options: SimOptions,
    requests: Requests,
    collector: _Collector,
    by_model: dict[str, list[StartedEngine]],
    gpus: dict[str, int],
    rejected: dict[str, int],
    wall_s: float,
) -> SimResult:
    slo = loaded.fleet.slo
    model_ids = np.asarray(collector.model, dtype=np.int64)
    ttft = np.asarray(collector.ttft)
    tpot = np.asarray(collector.tpot)
    e2e = np.asarray(collector.e2e)
    queue = np.asarray(collector.queue)
    out_tokens = np.asarray(collector.output_tokens)
    finished = np.asarray(collector.finished_at)
    start = float(requests.arrival_s[0]) if len(requests) else 0.0
    end = float(finished.max()) if finished.size else start
    duration = max(end - start, 1e-9)
    result = SimResult(
        fleet=loaded.fleet.name,
        placement=options.placement,
        gpus=gpus,
        duration_s=duration,
        requests=len(requests),
        slo={"ttft_p99_s": slo.ttft_p99, "tpot_p99_s": slo.tpot_p99, "e2e_p99_s": slo.e2e_p99},
        wall_s=wall_s,
    )
    for index, name in enumerate(loaded.fleet.models):
        if name not in by_model:
            continue
        mask = model_ids == index
        good = mask.copy()
        if slo.ttft_p99 is not None:
            good &= ttft <= slo.ttft_p99
        if slo.tpot_p99 is not None:
            good &= ~(tpot > slo.tpot_p99)  # single-token outputs have no TPOT
        if slo.e2e_p99 is not None:
            good &= e2e <= slo.e2e_p99
        started = by_model[name]
        engines = [s.engine for s in started]
        busy = sum(e.stats.busy_s for e in engines)
        kv_mean = sum(e.stats.kv_block_seconds / e.kv_blocks for e in engines) / max(busy, 1e-12)
        result.models.append(
            ModelResult(
                name=name,
                requests=int(
                    np.count_nonzero(requests.target_index == requests.targets.index(name))
                )
                if name in requests.targets
                else 0,
                completed=int(mask.sum()),
                rejected=rejected.get(name, 0),
                ttft_ms=_scaled(_percentiles(ttft[mask])),
                tpot_ms=_scaled(_percentiles(tpot[mask])),
                e2e_ms=_scaled(_percentiles(e2e[mask])),
                queue_ms=_scaled(_percentiles(queue[mask])),
                throughput_rps=float(mask.sum()) / duration,
                output_tokens_per_s=float(out_tokens[mask].sum()) / duration,
                goodput_rps=float(good.sum()) / duration,
                kv_usage_mean=kv_mean,
                kv_usage_max=max(e.stats.kv_blocks_max / e.kv_blocks for e in engines),
                queue_mean=sum(e.stats.queue_seconds for e in engines) / max(busy, 1e-12),
                preemptions=sum(e.stats.preemptions for e in engines),
                engines=len(engines),
                cold_start_s=max(s.cold_start_s for s in started),
                kv_cache_tokens=started[0].fit.kv_cache_tokens,
            )
        )
    return result


def _scaled(values: dict[str, float]) -> dict[str, float]:
    return {k: v * 1000.0 for k, v in values.items()}
