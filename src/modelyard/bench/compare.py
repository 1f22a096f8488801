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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.bench.loadgen import LoadOptions, Target
from modelyard.bench.metrics import Slo
from modelyard.bench.run import BenchOptions, bench
from modelyard.bench.workload import ArrivalProcess, LengthDist, Workload
from modelyard.engines import launcher
from modelyard.fleet import LoadedFleet, SharedGroup, SharedPlacement
from modelyard.sim.run import SimOptions, default_mix, simulate

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


@dataclass
class PlacementResult:
    placement: str
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    gpus: dict[str, int] = field(default_factory=dict)  # GPU type -> count this placement used

    def monthly_usd(self, catalog: Any) -> float | None:
        """GPU cost of the placement at the catalog's cheapest listed prices, 730 h a month
        (the planner's rule); None without GPUs or prices."""
        from modelyard.plan.cost import HOURS_PER_MONTH

        if not self.gpus:
            return None
        total = 0.0
        for gpu, count in self.gpus.items():
            price = catalog.gpu(gpu).price(None)
            if price is None:
                return None
            total += count * price.usd_per_gpu_hour * HOURS_PER_MONTH
        return total


def placed(loaded: LoadedFleet, placement: str) -> LoadedFleet:
    """The fleet with every model isolated, or all of them in one shared group."""
    fleet = loaded.fleet
    if placement == "isolated":
        variant = fleet.model_copy(update={"placement": "isolated"})
    else:
        gpus = {m.gpu for m in fleet.models.values()}
        group = SharedGroup(gpu=gpus.pop() if len(gpus) == 1 else None, models=list(fleet.models))
        variant = fleet.model_copy(update={"placement": SharedPlacement(shared=[group])})
    return LoadedFleet(fleet=variant, catalog=loaded.catalog, path=loaded.path)


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
        variant = placed(loaded, placement)
        with tempfile.TemporaryDirectory() as state:
            say(f"{placement}: starting engines")
            started = launcher.up(variant, Path(state))
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
        gpus: dict[str, int] = {}
        for name in {p.model for p in started}:
            gpu = variant.gpu_name(name)
            if gpu is not None:
                units = 1 if variant.fleet.group_of(name) else variant.fleet.models[name].replicas
                gpus[gpu] = gpus.get(gpu, 0) + units
        if placement == "shared":
            gpus = dict.fromkeys(gpus, 1)
        result = PlacementResult(placement, gpus=gpus)
        for process in started:
            summary = document["models"].get(process.model, {})
            result.models[process.model] = {
                **summary,
                "cold_start_s": process.cold_start_s,
                "memory_mib": memory[process.model],
            }
        results.append(result)
    return results


def compare_sim(loaded: LoadedFleet, options: CompareOptions) -> list[PlacementResult]:
    results = []
    for placement in options.placements:
        sim = simulate(
            loaded,
            SimOptions(
                placement=placement,  # type: ignore[arg-type]
                gpu=options.gpu,
                requests=options.requests,
                rate=options.rate,
                concurrency=options.concurrency,
                input_tokens=LengthDist(mean=options.input_tokens),
                output_tokens=LengthDist(mean=options.output_tokens),
                seed=options.seed,
            ),
        )
        result = PlacementResult(placement, gpus=dict(sim.gpus))
        for model in sim.models:
            result.models[model.name] = {
                "requests": model.requests,
                "completed": model.completed,
                "errors": {"oom": 0, "http_4xx": model.rejected},
                "ttft_ms": model.ttft_ms,
                "tpot_ms": model.tpot_ms,
                "e2e_ms": model.e2e_ms,
                "throughput_rps": model.throughput_rps,
                "goodput_rps": model.goodput_rps,
                "cold_start_s": model.cold_start_s,
                "memory_mib": None,
                "preemptions": model.preemptions,
            }
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


def per_10k(summary: dict[str, Any], kind: str | None) -> float:
    """Errors (all, or of one class) per 10,000 requests."""
    requests = float(max(summary.get("requests", 0), 1))
    errors = summary.get("errors", {})
    count = sum(errors.values()) if kind is None else errors.get(kind, 0)
    return float(count) / requests * 10_000


def compared_values(summary: dict[str, Any]) -> list[float | None]:
    """The comparison table's columns (COMPARED) for one model in one placement."""
    return [
        summary.get("cold_start_s"),
        summary.get("memory_mib"),
        summary["ttft_ms"]["p50"],
        summary["ttft_ms"]["p99"],
        summary["e2e_ms"]["p99"],
        summary["tpot_ms"]["p99"],
        summary["throughput_rps"],
        summary["goodput_rps"],
        per_10k(summary, None),
        per_10k(summary, "oom"),
    ]


def difference(shared: float | None, isolated: float | None) -> str:
    if shared is None or isolated is None or isolated == 0:
        return "-"
    change = round((shared / isolated - 1) * 100)
    return f"{change:+d}%" if change else "+0%"
