"""`sim run`: simulate a fleet offline, as fast as possible.

Builds one simulated engine per model replica where the placement puts it (`sim/devices.py`),
drives it with a seeded workload as open-loop arrivals, closed-loop users or an offline batch
(`sim/load.py`), and reports per model latency percentiles, throughput, goodput at the fleet's
SLO, KV usage, preemptions and the calibration behind the figures (`sim/result.py`).
"""

from __future__ import annotations

import time as wallclock
from dataclasses import dataclass, replace
from typing import Literal

from modelyard.fleet import LoadedFleet, Sharing
from modelyard.sim.calibration import Calibration
from modelyard.sim.devices import DeviceRequest, Placement, PlannedDevice, host_bound_accuracy
from modelyard.sim.devices import plan_devices as _plan_devices
from modelyard.sim.engine import Engine
from modelyard.sim.errors import SimError
from modelyard.sim.gpu import SharedDevice, StartedEngine, start_engine
from modelyard.sim.load import (
    ClosedLoad,
    ClosedLoopUsers,
    Feed,
    Load,
    OfflineLoad,
    OpenLoad,
    RequestPath,
)
from modelyard.sim.loop import EventLoop
from modelyard.sim.result import (
    Accuracy,
    Collector,
    EngineTotals,
    ModelResult,
    SimResult,
    Slo,
    model_results,
)
from modelyard.traffic import model_shares, peak_rate_rps
from modelyard.workload import ArrivalProcess, LengthDist, Requests, Workload, generate

__all__ = [
    "ModelResult",
    "PlannedDevice",
    "SimOptions",
    "SimResult",
    "default_mix",
    "fleet_peak_rate",
    "plan_devices",
    "simulate",
    "simulate_levels",
]


@dataclass(frozen=True)
class SimOptions:
    """One simulation. Load: open loop at `rate` (default: the fleet's peak), or closed loop
    with `concurrency` users, or `offline` (everything at t = 0)."""

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
    concurrency: int | None = None
    offline: bool = False
    engine_version: str | None = None  # overrides every model's engine_version
    sharing: Sharing | None = None  # overrides every shared group's sharing mode
    mps_compute_share: float = 1.0  # with MPS: the share of SMs each engine may use
    per_step: bool = False  # every engine step its own event (slow; checks chained spans)

    def load(self, loaded: LoadedFleet) -> Load:
        if self.offline and self.concurrency is not None:
            raise SimError("give --offline or --concurrency, not both")
        if self.offline:
            return OfflineLoad()
        if self.concurrency is not None:
            if self.concurrency < 1:
                raise SimError(f"concurrency must be at least 1, got {self.concurrency}")
            return ClosedLoad(self.concurrency)
        rate = self.rate if self.rate is not None else fleet_peak_rate(loaded)
        if rate <= 0:
            raise SimError("no request rate: pass --rate or set traffic in the fleet file")
        return OpenLoad(rate, self.arrival, self.burstiness)

    def devices(self) -> DeviceRequest:
        return DeviceRequest(
            self.placement,
            self.gpu,
            self.calibrations,
            self.engine_version,
            self.sharing,
            self.mps_compute_share,
        )


def fleet_peak_rate(loaded: LoadedFleet) -> float:
    """Requests per second at the daily peak (modelyard.traffic's rule)."""
    return peak_rate_rps(loaded.fleet.traffic)


def default_mix(loaded: LoadedFleet) -> dict[str, float]:
    """Each model's share of the requests (modelyard.traffic's rule)."""
    return model_shares(loaded.fleet)


def plan_devices(loaded: LoadedFleet, options: SimOptions) -> list[PlannedDevice]:
    """Devices and the engines on each, as the placement (or its override) puts them."""
    return _plan_devices(loaded, options.devices())


def _requests(loaded: LoadedFleet, options: SimOptions, load: Load) -> Requests:
    traffic = loaded.fleet.traffic
    mix = options.mix or default_mix(loaded)
    for name in mix:
        if name not in loaded.fleet.models:
            raise SimError(f"mix names '{name}', which is not a model of the fleet")
    arrivals = (
        ArrivalProcess(load.arrival, load.rate, load.burstiness)
        if isinstance(load, OpenLoad)
        else ArrivalProcess("constant", 1.0)  # unused: the load decides when requests go
    )
    workload = Workload(
        arrivals=arrivals,
        input_tokens=options.input_tokens or LengthDist(mean=traffic.input_tokens),
        output_tokens=options.output_tokens or LengthDist(mean=traffic.output_tokens),
        mix=mix,
    )
    return generate(workload, options.requests, options.seed)


def simulate(loaded: LoadedFleet, options: SimOptions) -> SimResult:
    """Run the fleet's simulation to completion and summarise it."""
    started_wall = wallclock.perf_counter()
    load = options.load(loaded)
    requests = _requests(loaded, options, load)
    collector = Collector()
    by_model: dict[str, list[StartedEngine]] = {}
    accuracy: dict[str, Accuracy] = {}
    gpus: dict[str, int] = {}
    loop = EventLoop()
    for device in plan_devices(loaded, options):
        gpus[device.gpu_name] = gpus.get(device.gpu_name, 0) + device.gpu_count
        shared = SharedDevice(device.gpu_name, device.slowdown, device.prefill_slowdown)
        for spec in device.engines:
            started = start_engine(
                spec, collector, shared, max_span_steps=1 if options.per_step else 1 << 20
            )
            by_model.setdefault(spec.name.split("/")[0], []).append(started)
        for name, model_accuracy in device.accuracy.items():
            accuracy.setdefault(name, model_accuracy)

    feeds = _feeds(loaded, loop, requests, by_model, load)
    if isinstance(load, ClosedLoad):
        users = ClosedLoopUsers(loop, requests, feeds, load.concurrency)
        collector.on_done = users.later
        for feed in feeds.values():
            feed.on_rejected = users.later
        users.start()
    loop.run()

    fleet = loaded.fleet
    start = float(requests.arrival_s[0]) if isinstance(load, OpenLoad) and len(requests) else 0.0
    end = max(collector.finished_at, default=start)
    duration = max(end - start, 1e-9)
    names = list(fleet.models)
    requested = {
        name: int((requests.target_index == requests.targets.index(name)).sum())
        for name in names
        if name in requests.targets
    }
    result = SimResult(
        fleet=fleet.name,
        placement=options.placement,
        gpus=gpus,
        duration_s=duration,
        requests=len(requests),
        slo={
            "ttft_p99_s": fleet.slo.ttft_p99,
            "tpot_p99_s": fleet.slo.tpot_p99,
            "e2e_p99_s": fleet.slo.e2e_p99,
        },
        load=load.describe(),
    )
    totals = {name: _totals(started) for name, started in by_model.items()}
    for name, total in totals.items():
        if name in accuracy:  # the model's engines share one calibration
            calibration = by_model[name][0].engine.model.calibration
            accuracy[name] = host_bound_accuracy(accuracy[name], calibration, total.batch_max)
    result.models = model_results(
        names,
        requested,
        {name: feed.rejected for name, feed in feeds.items()},
        totals,
        accuracy,
        collector,
        Slo(fleet.slo.ttft_p99, fleet.slo.tpot_p99, fleet.slo.e2e_p99),
        duration,
    )
    result.wall_s = wallclock.perf_counter() - started_wall
    return result


def _feeds(
    loaded: LoadedFleet,
    loop: EventLoop,
    requests: Requests,
    by_model: dict[str, list[StartedEngine]],
    load: Load,
) -> dict[str, Feed]:
    model_index = {name: i for i, name in enumerate(loaded.fleet.models)}
    feeds: dict[str, Feed] = {}
    for target in requests.targets:
        if target not in by_model:
            continue
        started = by_model[target]
        engines: list[Engine] = [s.engine for s in started]
        feed = Feed(
            loop,
            requests,
            engines,
            RequestPath.of(started[0].engine.model.calibration),
            model_index[target],
            started[0].fit.max_model_len,
        )
        feeds[target] = feed
        if isinstance(load, ClosedLoad):
            continue
        indices = [
            int(i) for i in (requests.target_index == requests.targets.index(target)).nonzero()[0]
        ]
        if isinstance(load, OpenLoad):
            arrivals = [float(requests.arrival_s[i]) for i in indices]
        else:
            arrivals = [0.0] * len(indices)
        feed.preload(arrivals, indices)
    return feeds


def _totals(started: list[StartedEngine]) -> EngineTotals:
    engines = [s.engine for s in started]
    return EngineTotals(
        engines=len(engines),
        busy_s=sum(e.stats.busy_s for e in engines),
        kv_block_seconds_per_block=sum(e.stats.kv_block_seconds / e.kv_blocks for e in engines),
        kv_usage_max=max(e.stats.kv_blocks_max / e.kv_blocks for e in engines),
        queue_seconds=sum(e.stats.queue_seconds for e in engines),
        preemptions=sum(e.stats.preemptions for e in engines),
        cold_start_s=max(s.cold_start_s for s in started),
        kv_cache_tokens=started[0].fit.kv_cache_tokens,
        batch_max=max(e.stats.batch_max for e in engines),
    )


def simulate_levels(
    loaded: LoadedFleet,
    options: SimOptions,
    rates: list[float] | None = None,
    concurrencies: list[int] | None = None,
) -> list[SimResult]:
    """A sweep: one simulation per rate (open loop) or per concurrency (closed loop)."""
    if rates and concurrencies:
        raise SimError("sweep rates or concurrencies, not both")
    if concurrencies:
        return [simulate(loaded, replace(options, concurrency=c)) for c in concurrencies]
    if rates:
        return [simulate(loaded, replace(options, rate=r)) for r in rates]
    return [simulate(loaded, options)]
