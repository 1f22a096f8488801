"""`modelyard plan`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from modelyard import results as result_documents
from modelyard.cli.common import (
    CatalogOption,
    JsonOption,
    app,
    console,
    exit_negative,
    parse_key_values,
)
from modelyard.errors import ModelyardError
from modelyard.fleet import load_fleet
from modelyard.sim.perf import (
    load_calibration,
)


@app.command("plan")
def plan_command(
    fleet: Annotated[Path, typer.Argument(help="Fleet file.")],
    optimize: Annotated[
        bool,
        typer.Option("--optimize", help="Search every GPU type x placement, mixed layouts too."),
    ] = False,
    daily_active_users: Annotated[float | None, typer.Option(help="Override traffic.")] = None,
    requests_per_user: Annotated[float | None, typer.Option(help="Per user per day.")] = None,
    peak_factor: Annotated[float | None, typer.Option(help="Peak rate / average rate.")] = None,
    fallback_rate: Annotated[
        float | None, typer.Option(help="Share of each route its first fallback serves.")
    ] = None,
    mix: Annotated[
        str | None,
        typer.Option(help="Each model's share, e.g. llama-8b=0.7,coder=0.3 (replaces routes')."),
    ] = None,
    input_tokens: Annotated[int | None, typer.Option(help="Mean prompt tokens.")] = None,
    output_tokens: Annotated[int | None, typer.Option(help="Mean output tokens.")] = None,
    failover: Annotated[
        bool,
        typer.Option("--failover", help="Size each fallback to absorb its primary's traffic."),
    ] = False,
    slo_ttft_ms: Annotated[float | None, typer.Option(help="Override the TTFT p99 SLO.")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(help="Override the TPOT p99 SLO.")] = None,
    gpu: Annotated[list[str] | None, typer.Option("--gpu", help="GPU types to consider.")] = None,
    cloud: Annotated[
        str | None, typer.Option(help="Price on this cloud (default: cheapest).")
    ] = None,
    price: Annotated[
        list[str] | None, typer.Option("--price", help="GPU=USD per GPU-hour (repeatable).")
    ] = None,
    discount: Annotated[
        float, typer.Option(help="Reserved/spot discount off on-demand, e.g. 0.4.")
    ] = 0.0,
    min_replicas: Annotated[
        list[str] | None,
        typer.Option("--min-replicas", help="MODEL=N (default 2 for a primary, 1 else)."),
    ] = None,
    capacity: Annotated[
        list[str] | None,
        typer.Option("--capacity", help="MODEL[@GPU]=req/s per replica at the SLO (explicit)."),
    ] = None,
    measured: Annotated[
        list[Path] | None, typer.Option("--measured", help="bench results file(s) (a sweep).")
    ] = None,
    calibration: Annotated[
        list[Path] | None, typer.Option(help="Calibration YAML taking precedence (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the simulated workloads.")] = 0,
    sweep: Annotated[
        str | None, typer.Option(help="e.g. daily_active_users=1e3..1e6: cost vs traffic.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the plan JSON (report reads it).")
    ] = None,
    as_json: JsonOption = False,
    catalog: CatalogOption = None,
) -> None:
    """Does the fleet as written meet its SLO, and what does it cost; then GPUs and $/month
    for isolated, shared, MIG (and mixed) placements, and the cheapest that meets the SLO."""
    from modelyard.fleet import Slo as FleetSlo
    from modelyard.plan.cost import Pricing
    from modelyard.plan.demand import demand_from_fleet
    from modelyard.plan.measured import measured_token_means
    from modelyard.plan.planner import PlanRequest, plan
    from modelyard.plan.sweep import parse_sweep, sweep_png
    from modelyard.report.plan_tables import plan_notes, plan_tables

    loaded = load_fleet(fleet, catalog)
    if measured and input_tokens is None and output_tokens is None:
        input_tokens, output_tokens = measured_token_means(measured[0])
        sys.stderr.write(
            f"token lengths from {measured[0].name}: {input_tokens} in, {output_tokens} out\n"
        )
    demand = demand_from_fleet(
        loaded.fleet,
        failover=failover,
        mix=parse_key_values("--mix", mix.split(",")) if mix else None,
        daily_active_users=daily_active_users,
        requests_per_user=requests_per_user,
        peak_factor=peak_factor,
        fallback_rate=fallback_rate,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )
    slo = loaded.fleet.slo
    for flag, value in (("--slo-ttft-ms", slo_ttft_ms), ("--slo-tpot-ms", slo_tpot_ms)):
        if value is not None and value <= 0:
            raise ModelyardError(f"{flag} must be > 0, got {value:g}")
    slo = FleetSlo(
        ttft_p99=slo_ttft_ms / 1000 if slo_ttft_ms else slo.ttft_p99,
        tpot_p99=slo_tpot_ms / 1000 if slo_tpot_ms else slo.tpot_p99,
        e2e_p99=slo.e2e_p99,
    )
    request = PlanRequest(
        demand=demand,
        slo=slo,
        pricing=Pricing(cloud, parse_key_values("--price", price), discount),
        min_replicas=parse_key_values("--min-replicas", min_replicas, int),
        optimize=optimize,
        gpus=tuple(gpu or ()),
        capacity=parse_key_values("--capacity", capacity),
        measured=tuple(measured or ()),
        calibrations=tuple(load_calibration(p) for p in calibration or []),
        seed=seed,
        sweep=parse_sweep(sweep) if sweep else None,
    )
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=as_json or not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("planning", total=None)
        result = plan(
            loaded, request, lambda text: progress.update(task, description=f"planning: {text}")
        )
    data = result.to_json()
    if output is not None:
        result_documents.write(output, data)
    if result.sweep is not None:
        png = sweep_png(data, output.with_suffix(".png") if output else Path("plan-sweep.png"))
        sys.stderr.write(f"wrote {png}\n")
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        for table in plan_tables(data):
            console.print(table)
        for line in plan_notes(data):
            console.print(line, highlight=False)
    if result.recommended is None:
        exit_negative("\n".join([result.why, *(f"  {d}" for d in result.diagnosis)]))
    if not as_json:
        console.print(f"why: {result.why}", highlight=False)
