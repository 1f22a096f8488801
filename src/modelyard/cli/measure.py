"""Measuring: bench, compare, report."""

from __future__ import annotations

import functools
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from modelyard import compare
from modelyard import results as result_documents
from modelyard.bench import datasets
from modelyard.bench import run as bench_run
from modelyard.bench.loadgen import LoadOptions, Target
from modelyard.bench.metrics import Slo
from modelyard.bench.run import BenchOptions
from modelyard.cli.common import (
    DEFAULT_STATE_DIR,
    CatalogOption,
    app,
    console,
    err_console,
    exit_negative,
    length_distribution,
    parse_levels,
    parse_mix,
    run_async_value,
)
from modelyard.engines import adapter_for
from modelyard.fleet import load_fleet
from modelyard.gateway import server as gateway_server
from modelyard.report import tables
from modelyard.signals import stop_on_signals
from modelyard.sim.run import default_mix
from modelyard.workload import ArrivalProcess, Workload


def _advance(progress: Progress, task: TaskID, done: int) -> None:
    progress.update(task, completed=done)


def _targets(specs: list[str], model: str | None) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    for spec in specs:
        name, _, url = spec.rpartition("=") if "=" in spec.split("://")[0] else ("", "", spec)
        if not url.startswith(("http://", "https://")):
            raise typer.BadParameter(f"'{spec}' is not URL or NAME=URL", param_hint="--target")
        key = name or model or f"target{len(targets)}"
        targets[key] = Target(name=key, url=url.rstrip("/"), model=model or name or None)
    return targets


@app.command("bench")
def bench_command(
    results: Annotated[Path, typer.Option(help="Write the results JSON here.")],
    target: Annotated[list[str] | None, typer.Option(help="URL or NAME=URL (repeatable).")] = None,
    fleet: Annotated[
        Path | None, typer.Option(help="Targets = the fleet's models (endpoints or `up` state).")
    ] = None,
    state_dir: Annotated[Path | None, typer.Option(help="With --fleet: an `up` state dir.")] = None,
    model: Annotated[str | None, typer.Option(help="`model` sent in requests.")] = None,
    rate: Annotated[
        str | None, typer.Option(help="Open loop: requests/s; a list (1,2,4) sweeps.")
    ] = None,
    concurrency: Annotated[
        str | None, typer.Option(help="Closed loop: requests in flight; a list sweeps.")
    ] = None,
    requests: Annotated[int, typer.Option(min=1, help="Measured requests.")] = 100,
    warmup: Annotated[int, typer.Option(min=0, help="Requests sent first and not measured.")] = 0,
    input_tokens: Annotated[int, typer.Option(min=1, help="Prompt tokens (mean).")] = 128,
    output_tokens: Annotated[int, typer.Option(min=1, help="Output tokens (mean).")] = 64,
    length_dist: Annotated[str, typer.Option(help="fixed, normal, lognormal, uniform.")] = "fixed",
    length_std: Annotated[float, typer.Option(help="Std as a fraction of the mean.")] = 0.0,
    arrival: Annotated[str, typer.Option(help="constant, poisson or gamma.")] = "poisson",
    burstiness: Annotated[float, typer.Option(help="Gamma shape (1 = Poisson).")] = 1.0,
    mix: Annotated[str | None, typer.Option(help="Shares per target, e.g. a=95,b=5.")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Stream responses.")] = True,
    slo_ttft_ms: Annotated[float | None, typer.Option(help="TTFT SLO for goodput.")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(help="TPOT SLO for goodput.")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Per-request timeout, s.")] = 600,
    engine: Annotated[
        str | None, typer.Option(help="Sample the targets' /metrics as this engine (vllm, ...).")
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option(help='JSONL prompts: {"prompt": ..., "max_tokens": N} a line.')
    ] = None,
    sharegpt: Annotated[Path | None, typer.Option(help="ShareGPT-format JSON file.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    max_error_rate: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Exit 3 when more than this share of requests fail (always when all fail).",
        ),
    ] = None,
) -> None:
    """Benchmark OpenAI-compatible endpoints: TTFT, TPOT, ITL, E2E, throughput, goodput."""
    if (rate is None) == (concurrency is None):
        raise typer.BadParameter("give exactly one of --rate or --concurrency", param_hint="--rate")
    if arrival not in ("constant", "poisson", "gamma"):
        raise typer.BadParameter("must be constant, poisson or gamma", param_hint="--arrival")
    fleet_mix: dict[str, float] | None = None
    if fleet is not None:
        if target:
            raise typer.BadParameter("give --target or --fleet, not both", param_hint="--fleet")
        loaded = load_fleet(fleet)
        if state_dir is None and DEFAULT_STATE_DIR.exists():
            state_dir = DEFAULT_STATE_DIR
        endpoints = gateway_server.endpoints_for(loaded, state_dir)
        targets = {
            name: Target(name, urls[0].rstrip("/"), name) for name, urls in endpoints.items()
        }
        fleet_mix = default_mix(loaded)
    elif target:
        targets = _targets(target, model)
    else:
        raise typer.BadParameter("give --target URL or --fleet FLEET", param_hint="--target")
    if engine is not None:
        adapter_for(engine)
    if prompts is not None and sharegpt is not None:
        raise typer.BadParameter("give --prompts or --sharegpt, not both", param_hint="--prompts")
    dataset = (
        datasets.load_jsonl(prompts)
        if prompts
        else datasets.load_sharegpt(sharegpt)
        if sharegpt
        else None
    )
    shares = parse_mix(mix) or fleet_mix or dict.fromkeys(targets, 1.0)
    unknown = set(shares) - set(targets)
    if unknown:
        raise typer.BadParameter(
            f"no target named {', '.join(sorted(unknown))}", param_hint="--mix"
        )
    workload = Workload(
        arrivals=ArrivalProcess(arrival, 1.0, burstiness),  # type: ignore[arg-type]
        input_tokens=length_distribution(length_dist, input_tokens, length_std),
        output_tokens=length_distribution(length_dist, output_tokens, length_std),
        mix=shares,
    )
    slo = Slo(
        ttft_s=slo_ttft_ms / 1000 if slo_ttft_ms else None,
        tpot_s=slo_tpot_ms / 1000 if slo_tpot_ms else None,
    )
    levels = parse_levels(
        rate if rate is not None else concurrency, "--rate" if rate else "--concurrency"
    )
    options = BenchOptions(requests=requests, warmup=warmup, seed=seed)
    outcomes: list[tuple[float, result_documents.TargetSummary]] = []
    for level in levels:
        if rate is not None:
            workload = replace(workload, arrivals=replace(workload.arrivals, rate=level))
        load = LoadOptions(
            stream=stream,
            timeout_s=timeout,
            concurrency=int(level) if concurrency is not None else None,
        )
        path = (
            results
            if len(levels) == 1
            else results.with_name(
                f"{results.stem}-{'rate' if rate is not None else 'c'}{level:g}{results.suffix}"
            )
        )
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"requests at {level:g}", total=requests + warmup)
            document = run_async_value(
                bench_run.bench(
                    workload,
                    targets,
                    load,
                    options,
                    slo,
                    functools.partial(_advance, progress, task),
                    dict.fromkeys(targets, engine) if engine else None,
                    dataset,
                )
            )
        result_documents.write(path, document)
        console.print(tables.bench_table(document))
        sys.stdout.write(f"results: {path}\n")
        outcomes.append((level, document.all))
    for level, overall in outcomes:
        failed = overall.failed / max(overall.requests, 1)
        if overall.completed == 0 or (max_error_rate is not None and failed > max_error_rate):
            exit_negative(
                f"{overall.failed} of {overall.requests} requests failed at {level:g}"
                + (f" (more than --max-error-rate {max_error_rate:g})" if overall.completed else "")
            )


@app.command("compare")
def compare_command(
    fleet: Annotated[Path, typer.Argument(help="Fleet file.")],
    placements: Annotated[
        str, typer.Option(help="Comma-separated: shared,isolated.")
    ] = "shared,isolated",
    sim: Annotated[bool, typer.Option("--sim", help="Compare in the simulator.")] = False,
    gpu: Annotated[str | None, typer.Option(help="With --sim: GPU to simulate.")] = None,
    requests: Annotated[int, typer.Option(min=1, help="Measured requests per placement.")] = 100,
    rate: Annotated[float, typer.Option(min=0.001, help="Requests/s (Poisson).")] = 1.0,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="With --sim: closed loop with N users, not --rate.")
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="With --sim: every request at t=0, not --rate.")
    ] = False,
    input_tokens: Annotated[int, typer.Option(min=1)] = 128,
    output_tokens: Annotated[int, typer.Option(min=1)] = 32,
    seed: Annotated[int, typer.Option()] = 0,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write JSON here.")] = None,
    catalog: CatalogOption = None,
) -> None:
    """Run the same workload on the fleet placed shared and isolated; print the comparison."""
    chosen = tuple(p.strip() for p in placements.split(",") if p.strip())
    if not chosen or any(p not in compare.PLACEMENTS for p in chosen):
        raise typer.BadParameter("use shared and/or isolated", param_hint="--placements")
    loaded = load_fleet(fleet, catalog)
    options = compare.CompareOptions(
        placements=chosen,
        requests=requests,
        rate=rate,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        seed=seed,
        sim=sim,
        gpu=gpu,
        concurrency=concurrency,
        offline=offline,
    )
    if concurrency is not None and not sim:
        raise typer.BadParameter("--concurrency needs --sim", param_hint="--concurrency")
    if offline and not sim:
        raise typer.BadParameter("--offline needs --sim", param_hint="--offline")
    if offline and concurrency is not None:
        raise typer.BadParameter(
            "give --offline or --concurrency, not both", param_hint="--offline"
        )
    if sim:
        outcome = compare.compare_sim(loaded, options)
        title = f"{loaded.fleet.name}: shared vs isolated (simulated{', ' + gpu if gpu else ''})"
    else:
        with stop_on_signals():
            outcome = run_async_value(
                compare.compare_real(loaded, options, lambda text: console.print(f"[dim]{text}[/]"))
            )
        title = f"{loaded.fleet.name}: shared vs isolated (measured on this machine)"
    console.print(tables.compare_table(outcome, title))
    for result in outcome:
        cost = result.monthly_usd(loaded.catalog)
        used = ", ".join(f"{n}x {g}" for g, n in result.gpus.items()) or "no GPUs (CPU engines)"
        money = f", ${cost:,.0f}/month at the catalog's cheapest prices" if cost else ""
        console.print(f"{result.placement}: {used}{money}", highlight=False)
        for warning in result.warnings:
            err_console.print(f"[yellow]warning:[/] {result.placement}: {warning}", markup=True)
    if output is not None:
        result_documents.write(output, compare.document(loaded, options, outcome))


@app.command("report")
def report_command(
    results: Annotated[list[Path], typer.Argument(help="bench and compare result JSON files.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file.")] = Path(
        "report.html"
    ),
) -> None:
    """Write one self-contained HTML report (and PNGs beside it) from results files."""
    from modelyard.report.html import write_report

    for path in write_report(results, output):
        sys.stdout.write(f"wrote {path}\n")
