"""`modelyard bench`: generate the workload, drive the load, summarise, write results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from modelyard.bench import gpu
from modelyard.bench.datasets import Prompt
from modelyard.bench.loadgen import LoadOptions, Target, run_load
from modelyard.bench.metrics import RequestRecord, Slo, summarise
from modelyard.bench.server_metrics import sample
from modelyard.results import BenchDocument
from modelyard.workload import Workload, WorkloadError, generate


@dataclass(frozen=True)
class BenchOptions:
    requests: int
    warmup: int = 0
    seed: int = 0


async def bench(
    workload: Workload,
    targets: dict[str, Target],
    load: LoadOptions,
    options: BenchOptions,
    slo: Slo,
    on_progress: Callable[[int], None] | None = None,
    engines: dict[str, str] | None = None,
    prompts: list[Prompt] | None = None,
) -> BenchDocument:
    """Run the benchmark and return the results document (not yet written).

    `engines` maps target names to engine kinds whose /metrics are sampled during the run."""
    if options.requests < 1:
        raise WorkloadError("--requests must be at least 1")
    total = options.requests + options.warmup
    requests = generate(workload, total, options.seed)
    wall_start = time.monotonic()
    gpu_before = gpu.read()
    stop = asyncio.Event()
    scraper = None
    if engines:
        urls = {
            name: (targets[name].url, engine) for name, engine in engines.items() if name in targets
        }
        scraper = asyncio.create_task(sample(urls, stop))
    try:
        records, start = await run_load(requests, targets, load, on_progress, prompts)
    finally:
        stop.set()
    server = {name: s.summary() for name, s in (await scraper).items()} if scraper else {}
    measured = records[options.warmup :]
    window_start = min((r.scheduled for r in measured), default=start)
    window_end = max((r.end or r.sent for r in measured), default=start)
    duration = max(window_end - window_start, 1e-9)
    by_target: dict[str, list[RequestRecord]] = {}
    for record in measured:
        by_target.setdefault(record.target, []).append(record)
    # every target, those the mix sends nothing to included (with zero requests)
    models = {name: summarise(by_target.get(name, []), duration, slo) for name in targets}
    for name, view in server.items():
        if name in models:
            models[name].server = view
    config = {
        "targets": {name: asdict(t) for name, t in targets.items()},
        "workload": {
            "arrivals": asdict(workload.arrivals),
            "input_tokens": asdict(workload.input_tokens),
            "output_tokens": asdict(workload.output_tokens),
            "mix": workload.mix,
        },
        "load": asdict(load),
        "requests": options.requests,
        "warmup": options.warmup,
        "seed": options.seed,
        "prompts_from_file": len(prompts) if prompts else 0,
        "slo": asdict(slo),
        "gpu_memory": {"before": gpu_before, "after": gpu.read()},
        "wall_s": time.monotonic() - wall_start,
    }
    return BenchDocument(
        config=config, duration_s=duration, models=models, all=summarise(measured, duration, slo)
    )
