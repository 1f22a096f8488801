"""`modelyard compare`: the same workload against the same fleet placed shared and isolated.

Real engines: each placement is brought up with the launcher, measured (cold start, resident
memory of the engine processes), loaded with the identical workload through each model's
endpoint, and torn down. `--sim` runs the same comparison in the simulator for GPUs you do not
own. The table is the seed article's, with measured numbers and the % difference.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modelyard.bench.loadgen import LoadOptions, Target
from modelyard.bench.metrics import Slo
from modelyard.bench.run import BenchOptions, bench
from modelyard.catalog import Catalog
from modelyard.engines import launcher
from modelyard.fleet import LoadedFleet
from modelyard.placement import Layout, PlacementOverride, device_plans
from modelyard.results import ComparedModel, CompareDocument, ComparedPlacement, Percentiles
from modelyard.sim.run import SimOptions, default_mix, simulate
from modelyard.units import HOURS_PER_MONTH
from modelyard.workload import ArrivalProcess, LengthDist, Workload

PLACEMENTS = ("shared", "isolated")


@dataclass(frozen=True)
class CompareOptions:
    placements: tuple[str, ...] = PLACEMENTS
    requests: int = 100
    warmup: int = 5
    rate: float = 1.0
    input_tokens: int = 128
    output_tokens: int = 32
    seed: int = 0
    sim: bool = False
    gpu: str | None = None
    concurrency: int | None = None  # with sim: closed loop instead of `rate`
    offline: bool = False  # with sim: every request at t = 0 (maximum throughput)


@dataclass
class PlacementResult:
    placement: str
    models: dict[str, ComparedModel] = field(default_factory=dict)
    gpus: dict[str, int] = field(default_factory=dict)  # GPU type -> count this placement used

    def monthly_usd(self, catalog: Catalog) -> float | None:
        """GPU cost of the placement at the catalog's cheapest listed prices, 730 h a month
        (the planner's rule); None without GPUs or prices."""
        if not self.gpus:
            return None
        total = 0.0
        for gpu, count in self.gpus.items():
            price = catalog.gpu(gpu).price(None)
            if price is None:
                return None
            total += count * price.usd_per_gpu_hour * HOURS_PER_MONTH
        return total


def _gpu_counts(loaded: LoadedFleet, layout: Layout) -> dict[str, int]:
    """GPUs a placement uses, by type: one per device plan that has a GPU."""
    counts: dict[str, int] = {}
    for device in device_plans(loaded, PlacementOverride(layout=layout)):
        if device.gpu is not None:
            counts[device.gpu] = counts.get(device.gpu, 0) + 1
    return counts


def _workload(loaded: LoadedFleet, options: CompareOptions) -> Workload:
    return Workload(
        arrivals=ArrivalProcess("poisson", options.rate),
        input_tokens=LengthDist(mean=options.input_tokens),
        output_tokens=LengthDist(mean=options.output_tokens),
        mix=default_mix(loaded),
    )


def _rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (vLLM runs an engine-core child)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            pids.append(int(child))
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


async def compare_real(
    loaded: LoadedFleet, options: CompareOptions, say: Callable[[str], None]
) -> list[PlacementResult]:
    slo = Slo(ttft_s=loaded.fleet.slo.ttft_p99, tpot_s=loaded.fleet.slo.tpot_p99)
    results = []
    for placement in options.placements:
        layout = _layout(placement)
        with tempfile.TemporaryDirectory() as state:
            say(f"{placement}: starting engines")
            started = launcher.up(loaded, Path(state), override=PlacementOverride(layout=layout))
            try:
                memory = {p.model: _rss_mib(p.pid) for p in started}
                targets = {p.model: Target(p.model, p.url, p.model) for p in started}
                say(f"{placement}: {options.requests} requests at {options.rate:g}/s")
                document = await bench(
                    _workload(loaded, options),
                    targets,
                    LoadOptions(),
                    BenchOptions(options.requests, options.warmup, options.seed),
                    slo,
                    engines={p.model: p.engine for p in started},
                )
            finally:
                launcher.down(Path(state))
        result = PlacementResult(placement, gpus=_gpu_counts(loaded, layout))
        for process in started:
            summary = document.models[process.model]
            server = summary.server
            result.models[process.model] = ComparedModel(
                **summary.model_dump(exclude={"server"}),
                server=server,
                cold_start_s=process.cold_start_s,
                memory_mib=memory[process.model],
                preemptions=server.preemptions if server is not None else None,
            )
        results.append(result)
    return results


def _layout(placement: str) -> Layout:
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}")
    return "shared" if placement == "shared" else "isolated"


def compare_sim(loaded: LoadedFleet, options: CompareOptions) -> list[PlacementResult]:
    results = []
    for placement in options.placements:
        sim = simulate(
            loaded,
            SimOptions(
                placement=_layout(placement),
                gpu=options.gpu,
                requests=options.requests,
                rate=options.rate,
                concurrency=options.concurrency,
                offline=options.offline,
                input_tokens=LengthDist(mean=options.input_tokens),
                output_tokens=LengthDist(mean=options.output_tokens),
                seed=options.seed,
            ),
        )
        result = PlacementResult(placement, gpus=dict(sim.gpus))
        for model in sim.models:
            result.models[model.name] = ComparedModel(
                requests=model.requests,
                completed=model.completed,
                errors={"oom": 0, "http_4xx": model.rejected},
                ttft_ms=Percentiles(**model.ttft_ms),
                tpot_ms=Percentiles(**model.tpot_ms),
                e2e_ms=Percentiles(**model.e2e_ms),
                throughput_rps=model.throughput_rps,
                goodput_rps=model.goodput_rps,
                cold_start_s=model.cold_start_s,
                preemptions=model.preemptions,
            )
        results.append(result)
    return results


COMPARED = (
    "cold start s",
    "memory MiB",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "E2E p99 ms",
    "TPOT p99 ms",
    "req/s",
    "goodput",
    "errors /10k",
    "OOMs /10k",
)


def per_10k(summary: ComparedModel, kind: str | None) -> float:
    """Errors (all, or of one class) per 10,000 requests."""
    requests = float(max(summary.requests, 1))
    errors = summary.errors
    count = sum(errors.values()) if kind is None else errors.get(kind, 0)
    return float(count) / requests * 10_000


def compared_values(summary: ComparedModel) -> list[float | None]:
    """The comparison table's columns (COMPARED) for one model in one placement."""
    return [
        summary.cold_start_s,
        summary.memory_mib,
        summary.ttft_ms.p50,
        summary.ttft_ms.p99,
        summary.e2e_ms.p99,
        summary.tpot_ms.p99,
        summary.throughput_rps,
        summary.goodput_rps,
        per_10k(summary, None),
        per_10k(summary, "oom"),
    ]


def document(
    loaded: LoadedFleet, options: CompareOptions, outcome: list[PlacementResult]
) -> CompareDocument:
    """The comparison as a result document (`compare -o`, read by `report`)."""
    return CompareDocument(
        fleet=loaded.fleet.name,
        simulated=options.sim,
        options=asdict(options),
        placements=[
            ComparedPlacement(
                placement=r.placement,
                models=r.models,
                gpus=r.gpus,
                monthly_usd=r.monthly_usd(loaded.catalog),
            )
            for r in outcome
        ],
    )


def difference(shared: float | None, isolated: float | None) -> str:
    if shared is None or isolated is None or isolated == 0:
        return "-"
    change = round((shared / isolated - 1) * 100)
    return f"{change:+d}%" if change else "+0%"
