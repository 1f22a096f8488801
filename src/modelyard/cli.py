"""The `modelyard` command. One thin command per capability; the logic lives in the package."""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from modelyard import __version__, compare
from modelyard import results as result_documents
from modelyard.bench import datasets
from modelyard.bench import run as bench_run
from modelyard.bench.loadgen import LoadOptions, Target
from modelyard.bench.metrics import Slo
from modelyard.bench.run import BenchOptions
from modelyard.catalog import Catalog
from modelyard.engines import adapter_for, launcher
from modelyard.engines import models as engine_models
from modelyard.engines.state import EngineProcess
from modelyard.errors import ConfigError, ModelyardError, UnknownNameError
from modelyard.fleet import fleet_json_schema, load_fleet, single_model_fleet
from modelyard.gateway import peers as gateway_peers
from modelyard.gateway import server as gateway_server
from modelyard.gateway import workers as gateway_workers
from modelyard.memory import Device, FitSettings, fit, fit_fleet
from modelyard.quant import profile_options, render_recipe
from modelyard.report import tables
from modelyard.signals import Stopped, stop_on_signals
from modelyard.sim import verdicts
from modelyard.sim.calibrate import fit_calibration, load_results
from modelyard.sim.faults import load_fault_file
from modelyard.sim.fit_bench import METRICS as BENCH_METRICS
from modelyard.sim.fit_bench import BenchFit, bench_fleet, fit_bench, is_bench_results, load_sweep
from modelyard.sim.perf import (
    Calibration,
    builtin_calibrations,
    choose_calibration,
    load_calibration,
)
from modelyard.sim.result import Accuracy
from modelyard.sim.run import SimOptions, default_mix, simulate_levels
from modelyard.sim.server import Endpoint, ServeOptions, serve
from modelyard.sim.versions import resolve_engine_version
from modelyard.workload import ArrivalProcess, LengthDist, Workload

app = typer.Typer(
    name="modelyard",
    help="Measure, simulate, plan, deploy and route a fleet of co-located LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
# Tables are wide; when stdout is not a terminal (CI logs, pipes) rich would wrap at 80.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

CatalogOption = Annotated[
    list[Path] | None,
    typer.Option("--catalog", help="Extra catalog YAML adding or replacing entries (repeatable)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """The one asyncio.run of a command, on uvloop."""
    import uvloop

    uvloop.run(main)


def run_async_value(main: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run on uvloop, returning the coroutine's value."""
    import uvloop

    return uvloop.run(main)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"modelyard {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Measure, simulate, plan, deploy and route a fleet of co-located LLMs."""


@app.command()
def validate(
    fleet: Annotated[Path, typer.Argument(help="Fleet file (YAML).")],
    catalog: CatalogOption = None,
) -> None:
    """Check a fleet file; print OK or every problem with file:line (exit 1)."""
    loaded = load_fleet(fleet, catalog)
    models = len(loaded.fleet.models)
    sys.stdout.write(f"OK {fleet}: fleet '{loaded.fleet.name}', {models} models\n")


@app.command()
def schema() -> None:
    """Print the fleet file's JSON Schema (for editor completion)."""
    _print_json(fleet_json_schema())


@app.command("catalog")
def catalog_command(catalog: CatalogOption = None, as_json: JsonOption = False) -> None:
    """List the catalog: models, GPUs, quantization profiles, aliases and the simulator's
    engine calibrations."""
    loaded = Catalog.load(catalog)
    calibrations = builtin_calibrations()
    if as_json:
        _print_json(
            {
                "models": {k: v.model_dump(mode="json") for k, v in loaded.models.items()},
                "gpus": {k: v.model_dump(mode="json") for k, v in loaded.gpus.items()},
                "quants": {k: v.model_dump(mode="json") for k, v in loaded.quants.items()},
                "aliases": {k: v.model_dump(mode="json") for k, v in loaded.aliases.items()},
                "calibrations": [c.model_dump(mode="json") for c in calibrations],
            }
        )
        return
    for table in tables.catalog_tables(loaded):
        console.print(table)
    console.print(_calibrations_table(calibrations))


def _calibrations_table(calibrations: list[Calibration]) -> Table:
    table = Table(title="Simulator calibrations (engine profiles)", title_justify="left")
    for column in ("name", "engine", "versions", "devices", "measured on", "band", "source"):
        table.add_column(column)
    for c in calibrations:
        table.add_row(
            c.name,
            c.engine,
            c.versions,
            ", ".join(c.devices),
            ", ".join(c.measured_on) or "-",
            f"+-{c.error_band:.0%} / +-{c.unmeasured_error_band:.0%}",
            c.provenance.source,
        )
    return table


def _device(catalog: Catalog, gpu: str | None) -> tuple[Device, str | None]:
    if gpu is None:
        return Device.host(), None
    spec = catalog.gpu(gpu)
    return Device.from_gpu(gpu, spec), spec.compute_capability


@app.command("fit")
def fit_command(
    fleet: Annotated[Path | None, typer.Argument(help="Fleet file; or use --model/--gpu.")] = None,
    model: Annotated[str | None, typer.Option(help="Catalog model name.")] = None,
    gpu: Annotated[str | None, typer.Option(help="GPU name (omit for host RAM / CPU).")] = None,
    quant: Annotated[str, typer.Option(help="Quantization profile.")] = "bf16",
    max_model_len: Annotated[int | None, typer.Option(min=1, help="Context length.")] = None,
    gpu_memory_utilization: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Fraction of GPU memory the engine may use.")
    ] = 0.9,
    max_num_batched_tokens: Annotated[
        int | None, typer.Option(min=1, help="Tokens per step (sizes the activation peak).")
    ] = None,
    max_num_seqs: Annotated[int | None, typer.Option(min=1, help="Sequences per step.")] = None,
    kv_cache_dtype: Annotated[str, typer.Option(help="auto or fp8.")] = "auto",
    catalog: CatalogOption = None,
    as_json: JsonOption = False,
) -> None:
    """Memory: weights, KV bytes per token, KV-cache capacity, and whether it fits."""
    if kv_cache_dtype not in ("auto", "fp8"):
        raise typer.BadParameter("must be auto or fp8", param_hint="--kv-cache-dtype")
    if fleet is not None:
        if model is not None:
            raise typer.BadParameter("give a fleet file or --model, not both", param_hint="--model")
        overrides = FitSettings(
            max_model_len=max_model_len,
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
        )
        result = fit_fleet(load_fleet(fleet, catalog), overrides)
        if as_json:
            _print_json(
                {
                    "models": [m.to_json() for m in result.models],
                    "groups": [g.to_json() for g in result.groups],
                    "fits": result.fits,
                }
            )
            if not result.fits:
                raise SystemExit(NEGATIVE_EXIT)
            return
        for table in tables.fleet_fit_tables(result):
            console.print(table)
        if not result.fits:
            _negative("not everything fits where the fleet places it (see the reasons above)")
        return
    if model is None:
        raise typer.BadParameter("give a fleet file or --model", param_hint="--model")
    loaded = Catalog.load(catalog)
    device, _ = _device(loaded, gpu)
    settings = FitSettings(
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        kv_cache_dtype="fp8" if kv_cache_dtype == "fp8" else "auto",
    )
    slug = loaded.resolve_model_name(model)
    spec = loaded.models[slug]
    if max_model_len is not None and max_model_len > spec.max_context:
        raise ModelyardError(
            f"--max-model-len {max_model_len} exceeds {slug}'s maximum context {spec.max_context}"
        )
    single = fit(slug, spec, quant, loaded.quant(quant), device, settings)
    if as_json:
        _print_json(single.to_json())
    else:
        console.print(tables.fit_table([single]))
        console.print(single.reason)
    if not single.fits:
        _negative(f"{slug} does not fit: {single.reason}")


@app.command("quant")
def quant_command(
    model: Annotated[str, typer.Argument(help="Catalog model name.")],
    gpu: Annotated[str | None, typer.Option(help="GPU to judge memory on.")] = None,
    engine: Annotated[str, typer.Option(help="Engine whose arguments to show.")] = "vllm",
    max_model_len: Annotated[int | None, typer.Option(min=1)] = 8192,
    profile: Annotated[str | None, typer.Option(help="One profile (with --recipe).")] = None,
    recipe: Annotated[
        bool, typer.Option(help="Write the llm-compressor recipe for --profile.")
    ] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Recipe file.")] = None,
    catalog: CatalogOption = None,
    as_json: JsonOption = False,
) -> None:
    """Quantization profiles that suit a model (and GPU); llm-compressor recipes."""
    loaded = Catalog.load(catalog)
    slug = loaded.resolve_model_name(model)
    if recipe:
        if profile is None:
            raise typer.BadParameter("--recipe needs --profile", param_hint="--profile")
        text = render_recipe(loaded, slug, profile)
        target = output or Path(f"recipe-{slug}-{profile}.yaml")
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ModelyardError(f"cannot write {target}: {exc}") from exc
        sys.stdout.write(f"wrote {target}\n")
        return
    device, capability = _device(loaded, gpu)
    settings = FitSettings(
        max_model_len=min(max_model_len or 8192, loaded.models[slug].max_context)
    )
    options = profile_options(loaded, slug, device, capability, engine, settings)
    if profile is not None:
        loaded.quant(profile)
        options = [o for o in options if o.profile == profile]
    if as_json:
        _print_json(
            [
                {
                    "profile": o.profile,
                    "weights_bytes": o.weights_bytes,
                    "engine_args": o.engine_args,
                    "usable": o.supported,
                    "why_not": o.why_not,
                    "kv_cache_tokens": o.fit.kv_cache_tokens,
                }
                for o in options
            ]
        )
        return
    where = gpu or "host RAM"
    console.print(tables.quant_table(options, f"{slug} on {where} ({engine})"))


sim_app = typer.Typer(
    help="Simulate a fleet offline (run) or serve simulated engines in real time (serve).",
    no_args_is_help=True,
)
app.add_typer(sim_app, name="sim")


def _length(kind: str, mean: int, std_fraction: float) -> LengthDist:
    """Token lengths for --length-dist: std as a fraction of the mean; uniform spans 1..2x."""
    if kind not in ("fixed", "normal", "lognormal", "uniform"):
        raise typer.BadParameter(
            "must be fixed, normal, lognormal or uniform", param_hint="--length-dist"
        )
    high = 2 * mean if kind == "uniform" else None
    return LengthDist(kind=kind, mean=mean, std=std_fraction * mean, high=high)  # type: ignore[arg-type]


def _mix(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise typer.BadParameter(f"'{part}' is not name=weight", param_hint="--mix") from None
    return mix


@sim_app.command("run")
def sim_run(
    fleet: Annotated[Path, typer.Argument(help="Fleet file.")],
    placement: Annotated[str, typer.Option(help="fleet, shared or isolated.")] = "fleet",
    gpu: Annotated[str | None, typer.Option(help="Simulate every model on this GPU type.")] = None,
    requests: Annotated[int, typer.Option(min=1, help="Requests to simulate.")] = 10_000,
    rate: Annotated[
        str | None,
        typer.Option(help="Open loop: requests/s (default: the fleet's peak); a list sweeps."),
    ] = None,
    concurrency: Annotated[
        str | None,
        typer.Option(help="Closed loop: users, each with one request in flight; a list sweeps."),
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Every request at t=0 (maximum throughput).")
    ] = False,
    arrival: Annotated[str, typer.Option(help="constant, poisson or gamma.")] = "poisson",
    burstiness: Annotated[float, typer.Option(help="Gamma shape (1 = Poisson).")] = 1.0,
    input_tokens: Annotated[int | None, typer.Option(min=1, help="Mean prompt tokens.")] = None,
    output_tokens: Annotated[int | None, typer.Option(min=1, help="Mean output tokens.")] = None,
    length_dist: Annotated[str, typer.Option(help="fixed, normal, lognormal, uniform.")] = "fixed",
    length_std: Annotated[float, typer.Option(help="Std as a fraction of the mean.")] = 0.0,
    mix: Annotated[
        str | None, typer.Option(help="Traffic shares, e.g. llama-8b=95,mistral-7b=5.")
    ] = None,
    engine_version: Annotated[
        str | None,
        typer.Option(help="Engine release for every model, e.g. 0.6.3 or 'sglang 0.3.0'."),
    ] = None,
    sharing: Annotated[
        str | None, typer.Option(help="Shared groups' mode: time-sliced, mps or mig.")
    ] = None,
    mps_compute_share: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="With MPS: SM share of each engine.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    calibration: Annotated[
        list[Path] | None, typer.Option(help="Calibration YAML taking precedence (repeatable).")
    ] = None,
    catalog: CatalogOption = None,
    as_json: JsonOption = False,
) -> None:
    """Simulate the fleet offline: latency percentiles, throughput, goodput, KV use, GPUs."""
    if placement not in ("fleet", "shared", "isolated"):
        raise typer.BadParameter("must be fleet, shared or isolated", param_hint="--placement")
    if arrival not in ("constant", "poisson", "gamma"):
        raise typer.BadParameter("must be constant, poisson or gamma", param_hint="--arrival")
    if sharing not in (None, "time-sliced", "mps", "mig"):
        raise typer.BadParameter("must be time-sliced, mps or mig", param_hint="--sharing")
    if (rate is not None) + (concurrency is not None) + offline > 1:
        raise typer.BadParameter(
            "give one of --rate, --concurrency, --offline", param_hint="--rate"
        )
    loaded = load_fleet(fleet, catalog)
    if gpu is not None:
        loaded.catalog.gpu(gpu)
    traffic = loaded.fleet.traffic
    mean_in = input_tokens or traffic.input_tokens
    mean_out = output_tokens or traffic.output_tokens
    options = SimOptions(
        placement=placement,  # type: ignore[arg-type]
        gpu=gpu,
        requests=requests,
        arrival=arrival,  # type: ignore[arg-type]
        burstiness=burstiness,
        input_tokens=_length(length_dist, mean_in, length_std),
        output_tokens=_length(length_dist, mean_out, length_std),
        mix=_mix(mix),
        seed=seed,
        calibrations=tuple(load_calibration(p) for p in calibration or []),
        offline=offline,
        engine_version=engine_version,
        sharing=sharing,  # type: ignore[arg-type]
        mps_compute_share=mps_compute_share,
    )
    outcome = simulate_levels(
        loaded,
        options,
        rates=_levels(rate, "--rate") if rate else None,
        concurrencies=[int(c) for c in _levels(concurrency, "--concurrency")]
        if concurrency
        else None,
    )
    if as_json:
        docs = [result.to_json() for result in outcome]
        _print_json(docs[0] if len(docs) == 1 else docs)
        return
    for result in outcome:
        console.print(tables.sim_table(result))
        load = ", ".join(f"{k} {v}" for k, v in result.load.items())
        console.print(f"[dim]load: {load}; simulated in {result.wall_s:.2f} s wall time[/]")
        offered = verdicts.offered_rps(result)
        if offered:
            rates = ", ".join(f"{name} {rps:.2f}" for name, rps in offered.items())
            console.print(f"offered req/s: {rates} (req/s above: completions over the run)")
        for warning in verdicts.warnings(result):
            err_console.print(f"[yellow]warning:[/] {warning}", markup=True)
        for model in result.models:
            if model.accuracy is not None:
                line = _accuracy_line(model.name, model.accuracy)
                console.print(f"[dim]{line}[/]", highlight=False)


def _accuracy_line(name: str, accuracy: Accuracy) -> str:
    measured = "measured on" if accuracy.measured_on_gpu else "not measured on"
    notes = f" ({'; '.join(accuracy.notes)})" if accuracy.notes else ""
    return (
        f"{name}: calibration {accuracy.calibration} for {accuracy.engine_version}, {measured} "
        f"{accuracy.gpu}: figures +-{accuracy.band:.0%}{notes}"
    )


def _bench_fit_table(fitted: BenchFit) -> Table:
    c = fitted.calibration
    table = Table(
        title=f"Calibration {c.name}: mfu {c.mfu:.3f}, bandwidth efficiency "
        f"{c.bandwidth_efficiency:.3f}, step {c.step_overhead_ms:.2f} ms + "
        f"{c.per_seq_overhead_ms:.3f} ms/sequence, request path {c.request_latency_ms:.1f} ms",
        title_justify="left",
    )
    for column in ("bench file", "load", "metric", "measured", "simulated", "error"):
        numeric = column in ("measured", "simulated", "error")
        table.add_column(column, justify="right" if numeric else "left")
    for level in fitted.levels:
        point = level.level
        load = f"c={point.concurrency}" if point.concurrency else f"{point.rate:g}/s"
        for metric in BENCH_METRICS:
            table.add_row(
                Path(point.path).name,
                load,
                metric,
                f"{point.measured[metric]:,.2f}",
                f"{level.simulated[metric]:,.2f}",
                f"{level.error(metric):+.1%}",
            )
    return table


def _int_set(text: str, hint: str) -> set[int]:
    try:
        return {int(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise typer.BadParameter("must be comma-separated integers", param_hint=hint) from None


@sim_app.command("calibrate")
def sim_calibrate(
    results: Annotated[
        list[Path],
        typer.Argument(
            help="JSON from benchmarks/gpu_calibrate.py or engine_steps.py, or the result files "
            "of one `modelyard bench` sweep."
        ),
    ],
    gpu: Annotated[str, typer.Option(help="Catalog GPU the results were measured on.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Calibration YAML.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Bench results: the catalog model that was served.")
    ] = None,
    quant: Annotated[str, typer.Option(help="Bench results: its quantization.")] = "bf16",
    engine_version: Annotated[
        str | None, typer.Option(help="Bench results: the engine release, e.g. 'vllm 0.32.0'.")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(min=1, help="Bench results: the engine's max_model_len.")
    ] = None,
    hold_batches: Annotated[str, typer.Option(help="Decode batch sizes held out.")] = "2,8,32,128",
    hold_prompts: Annotated[str, typer.Option(help="Prompt lengths held out.")] = "128,512,2048",
    calibration: Annotated[
        list[Path] | None, typer.Option(help="Bench results: calibration to start from.")
    ] = None,
    catalog: CatalogOption = None,
) -> None:
    """Fit a calibration to measurements: step times, or your own bench sweep of an engine."""
    loaded = Catalog.load(catalog)
    loaded.gpu(gpu)
    if is_bench_results(results[0]):
        if model is None:
            raise typer.BadParameter("bench results need --model (the catalog model served)")
        fleet = bench_fleet(model, gpu, quant, engine_version, max_model_len, catalog)
        levels = load_sweep(results)
        version = resolve_engine_version("sim", engine_version)
        start = choose_calibration(
            gpu,
            [load_calibration(p) for p in calibration or []],
            version.engine,
            version.version,
        ).calibration
        bench_fit = fit_bench(fleet, levels, start, gpu)
        console.print(_bench_fit_table(bench_fit))
        body = bench_fit.calibration.model_dump(mode="json", exclude_none=True)
    else:
        if len(results) != 1:
            raise typer.BadParameter("give one step-time results file", param_hint="RESULTS")
        fitted = fit_calibration(
            load_results(results[0]),
            gpu,
            loaded,
            _int_set(hold_batches, "--hold-batches"),
            _int_set(hold_prompts, "--hold-prompts"),
            source=str(results[0]),
        )
        console.print(tables.calibration_table(fitted))
        body = fitted.calibration.model_dump(mode="json")
    if output is not None:
        output.write_text(yaml.safe_dump(body, sort_keys=False))
        sys.stdout.write(f"wrote {output}\n")


@sim_app.command("serve")
def sim_serve(
    fleet: Annotated[Path | None, typer.Argument(help="Fleet file; or --model and --gpu.")] = None,
    model: Annotated[str | None, typer.Option(help="Catalog model to serve alone.")] = None,
    gpu: Annotated[
        str | None, typer.Option(help="GPU to simulate (with --model, or override).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="First port; one per engine.")] = 8100,
    speed: Annotated[
        float, typer.Option(min=0.001, help="Run K times faster than real time.")
    ] = 1.0,
    placement: Annotated[str, typer.Option(help="fleet, shared or isolated.")] = "fleet",
    max_model_len: Annotated[int | None, typer.Option(min=16, help="With --model.")] = None,
    quant: Annotated[
        str | None, typer.Option(help="With --model: quantization profile (default bf16).")
    ] = None,
    kv_cache_dtype: Annotated[str, typer.Option(help="With --model: auto or fp8.")] = "auto",
    gpu_memory_utilization: Annotated[
        float | None,
        typer.Option(min=0.01, max=1.0, help="With --model: the engine's share of GPU memory."),
    ] = None,
    max_num_seqs: Annotated[int | None, typer.Option(min=1, help="With --model.")] = None,
    max_num_batched_tokens: Annotated[int | None, typer.Option(min=1, help="With --model.")] = None,
    tensor_parallel_size: Annotated[int | None, typer.Option(min=1, help="With --model.")] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="With --model: the name clients send (default: --model).")
    ] = None,
    default_max_tokens: Annotated[int, typer.Option(min=1, help="Chat max_tokens default.")] = 256,
    cold_start_s: Annotated[
        float | None, typer.Option(min=0, help="Override the simulated cold start (sim seconds).")
    ] = None,
    faults: Annotated[Path | None, typer.Option(help="YAML: model name -> faults.")] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            help="Write the endpoints here in `up`'s state format (e.g. .modelyard/state.json, "
            "which `gateway` reads); removed on exit."
        ),
    ] = None,
    timing_debug: Annotated[
        bool,
        typer.Option(
            help="Add each token's due time and write time (time.monotonic) to stream chunks."
        ),
    ] = False,
    fixed_ttft_ms: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Exact latencies instead of the engine model: first token this long after "
            "each request arrives (with --fixed-itl-ms; no batching or queueing).",
        ),
    ] = None,
    fixed_itl_ms: Annotated[
        float | None,
        typer.Option(min=0, help="With --fixed-ttft-ms: exactly this long between tokens."),
    ] = None,
    precise_timing: Annotated[
        bool | None,
        typer.Option(
            "--precise-timing/--coarse-timing",
            help="Spin (yielding) through the last 2 ms before each token is due, for "
            "sub-millisecond timing; default: on at --speed <= 1. Coarse timing trusts the "
            "event loop's millisecond timers and leaves the core idle.",
            show_default=False,
        ),
    ] = None,
    catalog: CatalogOption = None,
) -> None:
    """Serve simulated engines over an OpenAI-compatible API, with fault injection."""
    if fleet is None and model is None:
        raise typer.BadParameter("give a fleet file or --model and --gpu", param_hint="--model")
    if (fixed_ttft_ms is None) != (fixed_itl_ms is None):
        raise typer.BadParameter(
            "give both --fixed-ttft-ms and --fixed-itl-ms, or neither", param_hint="--fixed-itl-ms"
        )
    # the engine settings of a fleet entry, named as vLLM's flags (what `up` passes)
    settings = {
        "quant": quant,
        "kv_cache_dtype": None if kv_cache_dtype == "auto" else kv_cache_dtype,
        "gpu_memory_utilization": gpu_memory_utilization,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
        "tensor_parallel_size": tensor_parallel_size,
    }
    given = {name: value for name, value in settings.items() if value is not None}
    if fleet is not None:
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise typer.BadParameter(
                f"{flags}: with a fleet file, set these in the fleet", param_hint="--model"
            )
        loaded = load_fleet(fleet, catalog)
    else:
        assert model is not None
        if gpu is None:
            raise typer.BadParameter(
                "--model needs --gpu (the GPU to simulate)", param_hint="--gpu"
            )
        loaded = single_model_fleet(
            model, gpu, max_model_len, catalog, served_model_name, settings=given
        )
    options = ServeOptions(
        host=host,
        port=port,
        speed=speed,
        placement=placement,
        gpu=gpu if fleet is not None else None,
        faults=load_fault_file(faults) if faults else {},
        default_max_tokens=default_max_tokens,
        cold_start_s=cold_start_s,
        timing_debug=timing_debug,
        precise=precise_timing,
        fixed_latency_s=None
        if fixed_ttft_ms is None or fixed_itl_ms is None
        else (fixed_ttft_ms / 1000.0, fixed_itl_ms / 1000.0),
        state=state,
    )

    def ready(endpoints: list[Endpoint]) -> None:
        for endpoint in endpoints:
            sys.stdout.write(
                f"{endpoint.engine}  {endpoint.url}  (simulated {endpoint.gpu}, cold start "
                f"{endpoint.cold_start_s:.1f} s at speed {speed:g})\n"
            )
        sys.stdout.flush()

    signum = run_async_value(serve(loaded, options, ready))
    sys.stderr.write(f"sim serve stopped on {signal.Signals(signum).name}\n")


StateDirOption = Annotated[
    Path, typer.Option("--state-dir", help="Where `up` records what it started, and logs.")
]
DEFAULT_STATE_DIR = Path(".modelyard")


@app.command("up")
def up_command(
    fleet: Annotated[Path, typer.Argument(help="Fleet file.")],
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    host: Annotated[str, typer.Option(help="Address engines listen on.")] = "127.0.0.1",
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for each engine.")] = 600,
    catalog: CatalogOption = None,
) -> None:
    """Start the fleet's engines as local processes, placed as the fleet says."""
    loaded = load_fleet(fleet, catalog)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def event(kind: str, process: EngineProcess | None) -> None:
            assert process is not None
            if kind == "started":
                tasks[process.name] = progress.add_task(
                    f"{process.name} ({process.engine}) loading on port {process.port}"
                )
            else:
                progress.update(
                    tasks[process.name],
                    completed=1,
                    description=(f"{process.name} ready, cold start {process.cold_start_s:.1f} s"),
                )

        with stop_on_signals():
            started = launcher.up(loaded, state_dir, host, timeout, event)
    console.print(tables.engines_table(started))


@app.command("down")
def down_command(state_dir: StateDirOption = DEFAULT_STATE_DIR) -> None:
    """Stop everything the last `up` started (and nothing else)."""
    stopped = launcher.down(state_dir)
    sys.stdout.write(f"stopped {len(stopped)} engines\n" if stopped else "nothing to stop\n")


@app.command("status")
def status_command(
    state_dir: StateDirOption = DEFAULT_STATE_DIR, as_json: JsonOption = False
) -> None:
    """Show the engines `up` started: alive, healthy, where, cold start."""
    rows = launcher.status(state_dir)
    if as_json:
        _print_json([{**r.process.__dict__, "alive": r.alive, "health": r.health} for r in rows])
        return
    if not rows:
        sys.stdout.write(f"no engines recorded in {state_dir}\n")
        return
    console.print(tables.status_table(rows))


models_app = typer.Typer(help="Model files for local engines.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("prepare")
def models_prepare(
    model: Annotated[str, typer.Argument(help="Catalog model (gemma-3-270m).")],
    engine: Annotated[str, typer.Option(help="llamacpp, vllm or all.")] = "all",
    catalog: CatalogOption = None,
) -> None:
    """Build the files local engines load (GGUF; Hugging Face format for vLLM). No downloads."""
    if engine not in ("llamacpp", "vllm", "all"):
        raise typer.BadParameter("must be llamacpp, vllm or all", param_hint="--engine")
    slug = Catalog.load(catalog).resolve_model_name(model)
    engines = ("llamacpp", "vllm") if engine == "all" else (engine,)
    for kind, path in engine_models.prepare(slug, engines).items():
        sys.stdout.write(f"{kind}: {path}\n")


@app.command("gateway")
def gateway_command(
    fleet: Annotated[Path, typer.Argument(help="Fleet file.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8080,
    state_dir: Annotated[
        Path | None, typer.Option(help="Take endpoints from this `modelyard up` state dir.")
    ] = None,
    grace: Annotated[
        float, typer.Option(min=0, help="Seconds in-flight requests get on stop.")
    ] = 30,
    backlog: Annotated[
        int, typer.Option(min=1, help="Connections queued before they are accepted.")
    ] = gateway_server.DEFAULT_BACKLOG,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Processes sharing the port (default: gateway.workers, else one per core)."
        ),
    ] = None,
    worker_index: Annotated[int | None, typer.Option(hidden=True)] = None,
    shared_dir: Annotated[Path | None, typer.Option(hidden=True)] = None,
    catalog: CatalogOption = None,
) -> None:
    """Run the OpenAI-compatible gateway: routing, fallback, breakers, health, warm-up."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    loaded = load_fleet(fleet, catalog)
    if state_dir is None and DEFAULT_STATE_DIR.exists():
        state_dir = DEFAULT_STATE_DIR

    count = workers or loaded.fleet.gateway.workers or gateway_workers.cores_available()
    if worker_index is not None and shared_dir is not None:  # one of a supervisor's workers
        role = gateway_peers.WorkerRole(worker_index, count, shared_dir)
        serving = gateway_server.serve(
            loaded, fleet, host, port, state_dir, grace, gateway_workers.say_ready, backlog, role
        )
        run_async_value(serving)
        return

    def ready(url: str) -> None:
        many = f" ({count} workers)" if count > 1 else ""
        sys.stdout.write(f"gateway for '{loaded.fleet.name}' on {url}{many}\n")
        sys.stdout.flush()

    if count > 1:
        gateway_server.endpoints_for(loaded, state_dir)  # none: one line, before any worker
        extra = ["--state-dir", str(state_dir)] if state_dir else []
        for path in catalog or []:
            extra += ["--catalog", str(path)]
        command = gateway_workers.worker_command(fleet, host, grace, backlog, *extra)
        plan = gateway_workers.WorkersPlan(command, host, port, count, grace)
        signum = run_async_value(gateway_workers.supervise(plan, ready))
    else:
        signum = run_async_value(
            gateway_server.serve(loaded, fleet, host, port, state_dir, grace, ready, backlog)
        )
    # a server's normal end: drained cleanly, exit 0 (as Kubernetes and systemd expect)
    sys.stderr.write(f"gateway stopped on {signal.Signals(signum).name}, requests drained\n")


@app.command("hash-key")
def hash_key_command(
    key: Annotated[str, typer.Argument(help="An API key to store hashed.")],
) -> None:
    """Print the SHA-256 digest to put under gateway.api_key_hashes (never store the key)."""
    from modelyard.gateway.auth import hash_key

    sys.stdout.write(hash_key(key) + "\n")


def _advance(progress: Progress, task: TaskID, done: int) -> None:
    progress.update(task, completed=done)


def _levels(text: str | None, hint: str) -> list[float]:
    try:
        values = [float(v) for v in (text or "").split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(
            "must be a number or a comma-separated list", param_hint=hint
        ) from None
    if not values or any(v <= 0 for v in values):
        raise typer.BadParameter("must be positive", param_hint=hint)
    if hint == "--concurrency" and any(v != int(v) for v in values):
        raise typer.BadParameter("must be whole numbers", param_hint=hint)
    return values


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
    shares = _mix(mix) or fleet_mix or dict.fromkeys(targets, 1.0)
    unknown = set(shares) - set(targets)
    if unknown:
        raise typer.BadParameter(
            f"no target named {', '.join(sorted(unknown))}", param_hint="--mix"
        )
    workload = Workload(
        arrivals=ArrivalProcess(arrival, 1.0, burstiness),  # type: ignore[arg-type]
        input_tokens=_length(length_dist, input_tokens, length_std),
        output_tokens=_length(length_dist, output_tokens, length_std),
        mix=shares,
    )
    slo = Slo(
        ttft_s=slo_ttft_ms / 1000 if slo_ttft_ms else None,
        tpot_s=slo_tpot_ms / 1000 if slo_tpot_ms else None,
    )
    levels = _levels(
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
            _negative(
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


deploy_app = typer.Typer(
    help="Kubernetes manifests for the fleet, validated offline.", no_args_is_help=True
)
app.add_typer(deploy_app, name="deploy")
K8sVersionOption = Annotated[
    str, typer.Option("--k8s-version", help="Kubernetes version to validate against (1.29-1.33).")
]


def _print_findings(findings: list[Any]) -> None:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for finding in findings:
        err.print(f"[red]invalid:[/] {finding}", markup=True)


@deploy_app.command("k8s")
def deploy_k8s_command(
    fleet: Annotated[Path, typer.Argument(help="Fleet file.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Directory to write the manifests to.")
    ] = None,
    stdout: Annotated[
        bool, typer.Option("--stdout", help="Print what `kubectl apply -f -` takes instead.")
    ] = False,
    namespace: Annotated[
        str | None, typer.Option(help="Namespace of every object (default: the fleet's name).")
    ] = None,
    namespace_object: Annotated[
        bool,
        typer.Option(help="Render the Namespace (Pod Security restricted) as well."),
    ] = True,
    k8s_version: K8sVersionOption = "1.30",
    node_label: Annotated[
        str, typer.Option(help="GPU node label scheme: nvidia (gpu.product) or gke.")
    ] = "nvidia",
    workload: Annotated[
        str,
        typer.Option(help="auto (StatefulSet for replicas), deployment or statefulset."),
    ] = "auto",
    cache_access_mode: Annotated[
        str, typer.Option(help="Model cache volume: ReadWriteOnce or ReadWriteMany.")
    ] = "ReadWriteOnce",
    storage_class: Annotated[str | None, typer.Option(help="StorageClass of the cache.")] = None,
    load_bandwidth: Annotated[
        float, typer.Option(min=1, help="MB/s assumed for the first weights download.")
    ] = 100.0,
    image: Annotated[
        list[str] | None,
        typer.Option(help="ENGINE=IMAGE: another engine image, e.g. pinned by @sha256 digest."),
    ] = None,
    gateway_image: Annotated[
        str, typer.Option(help="Gateway container image (build it from the Dockerfile).")
    ] = f"modelyard:{__version__}",
    gateway_replicas: Annotated[int, typer.Option(min=1, help="Gateway replicas.")] = 2,
    hpa: Annotated[
        bool, typer.Option("--hpa", help="Scale the gateway on CPU (HorizontalPodAutoscaler).")
    ] = False,
    autoscale: Annotated[
        str, typer.Option(help="Engines: keda (ScaledObject from the plan) or none.")
    ] = "keda",
    capacity: Annotated[
        list[str] | None,
        typer.Option(help="MODEL=RPS per replica within the SLO, instead of simulating it."),
    ] = None,
    prometheus_url: Annotated[
        str, typer.Option(help="Prometheus the autoscaler queries.")
    ] = "http://prometheus-operated.monitoring.svc:9090",
    prometheus_namespace: Annotated[
        str, typer.Option(help="Namespace Prometheus scrapes from (NetworkPolicy).")
    ] = "monitoring",
    service_monitor: Annotated[
        bool, typer.Option("--service-monitor", help="Add Prometheus Operator ServiceMonitors.")
    ] = False,
    client_namespace: Annotated[
        list[str] | None,
        typer.Option(help="Namespace allowed to call the gateway (repeatable; default: any)."),
    ] = None,
    priority_class: Annotated[
        str | None,
        typer.Option(help="An existing PriorityClass (default: render <fleet>-serving)."),
    ] = None,
    gateway_api: Annotated[
        str | None,
        typer.Option(
            help="[NAMESPACE/]GATEWAY[:LISTENER]: add an HTTPRoute to it and InferencePools."
        ),
    ] = None,
    catalog: CatalogOption = None,
) -> None:
    """Render one runtime per model (shared groups exactly as the fleet's `sharing:` says),
    autoscalers sized from the plan, the gateway, network policies and a kustomization.yaml;
    every document is validated before anything is written."""
    from modelyard.deploy import k8s
    from modelyard.deploy.errors import DeployError
    from modelyard.deploy.validate import check_documents
    from modelyard.plan.replicas import size_replicas

    if (output is None) == (not stdout):
        raise ModelyardError("give exactly one of -o DIR or --stdout")
    choices = {
        "--node-label": (node_label, tuple(k8s.NODE_LABEL_KEYS)),
        "--workload": (workload, ("auto", "deployment", "statefulset")),
        "--cache-access-mode": (cache_access_mode, ("ReadWriteOnce", "ReadWriteMany")),
        "--autoscale": (autoscale, ("keda", "none")),
    }
    for flag, (value, allowed) in choices.items():
        if value not in allowed:
            raise ModelyardError(f"{flag} {value}: choose one of {', '.join(allowed)}")
    images: dict[str, str] = {}
    for item in image or []:
        engine, sep, ref = item.partition("=")
        if not sep or not engine or not ref:
            raise ModelyardError(f"--image {item}: expected ENGINE=IMAGE")
        images[engine] = ref
    parent = None
    if gateway_api is not None:
        where, _, section = gateway_api.partition(":")
        gw_namespace, _, gw_name = where.rpartition("/")
        if not gw_name:
            raise ModelyardError(f"--gateway-api {gateway_api}: expected [NAMESPACE/]GATEWAY")
        parent = k8s.ParentGateway(gw_name, gw_namespace or None, section or None)
    loaded = load_fleet(fleet, catalog)
    bounds: dict[str, k8s.ReplicaBounds] = {}
    notes: list[str] = []
    isolated = [m for m in loaded.fleet.models if loaded.fleet.group_of(m) is None]
    if autoscale == "keda" and isolated:
        sizing, notes = size_replicas(loaded, isolated, _key_values("--capacity", capacity))
        bounds = {
            m: k8s.ReplicaBounds(
                s.min_replicas,
                s.max_replicas,
                s.in_flight_per_replica,
                s.capacity.rps,
                s.capacity.source,
            )
            for m, s in sizing.items()
        }
    options = k8s.RenderOptions(
        namespace=namespace,
        namespace_object=namespace_object,
        pod_security_version=f"v{k8s_version}",
        node_label=node_label,  # type: ignore[arg-type]
        workload=workload,  # type: ignore[arg-type]
        cache_access_mode=cache_access_mode,  # type: ignore[arg-type]
        storage_class=storage_class,
        load_bandwidth_bytes_s=load_bandwidth * 1e6,
        engine_images=images,
        gateway_image=gateway_image,
        gateway_replicas=gateway_replicas,
        gateway_hpa=hpa,
        autoscaler=autoscale,  # type: ignore[arg-type]
        prometheus_url=prometheus_url,
        prometheus_namespace=prometheus_namespace,
        service_monitor=service_monitor,
        client_namespaces=tuple(client_namespace or ()),
        priority_class=priority_class,
        gateway_api=parent,
    )
    rendered = k8s.render(loaded, k8s.read_inputs(loaded, bounds, tuple(notes)), options)
    docs = [(f, d) for f, ds in rendered.all_files().items() for d in ds]
    findings = check_documents(docs, k8s_version)
    if findings:
        _print_findings(findings)
        raise DeployError(f"{len(findings)} rendered documents failed validation (a modelyard bug)")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for warning in rendered.warnings:
        err.print(f"[yellow]warning:[/] {warning}", markup=True)
    for name, b in bounds.items():
        capacity_text = f"{b.capacity_rps:.3g} req/s per replica within the SLO, {b.source}"
        if b.max_replicas > b.min_replicas:
            line = (
                f"autoscaling {name}: {b.min_replicas}-{b.max_replicas} replicas on "
                f"{b.in_flight_per_replica:.1f} requests in flight per replica ({capacity_text})"
            )
        else:
            line = (
                f"replicas {name}: {b.min_replicas}, no autoscaler: the peak needs no more "
                f"than the minimum ({capacity_text})"
            )
        err.print(line, markup=False)
    if stdout:
        stream = rendered.stream()
        sys.stdout.write(k8s.dump(stream))
        if rendered.node_config:
            err.print(
                "note: node-config/ (the GPU operator's configuration for shared groups) is "
                "not in this stream; write it with -o DIR",
                markup=False,
            )
        return
    assert output is not None
    for path in k8s.write(rendered, output):
        sys.stdout.write(f"wrote {path}\n")
    sys.stdout.write(
        f"{len(docs)} documents valid for Kubernetes {k8s_version} (strict, Pod Security "
        f"restricted); apply with: kubectl apply -k {output}\n"
    )


@deploy_app.command("validate")
def deploy_validate_command(
    directory: Annotated[Path, typer.Argument(help="Directory of manifests (recursively).")],
    k8s_version: K8sVersionOption = "1.30",
) -> None:
    """Validate manifests offline: official schemas (strict) plus LLM-serving checks."""
    from modelyard.deploy.errors import DeployError
    from modelyard.deploy.validate import check_directory, load_directory

    findings = check_directory(directory, k8s_version)
    if findings:
        _print_findings(findings)
        raise DeployError(f"{len(findings)} problems in {directory}")
    count = len(load_directory(directory))
    sys.stdout.write(f"{count} documents valid for Kubernetes {k8s_version} (strict)\n")


def _key_values(flag: str, items: list[str] | None, kind: type = float) -> dict[str, Any]:
    """`--flag NAME=VALUE` (repeatable) as a dict, one clear line for a bad item."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name.strip()] = kind(value)
        except ValueError:
            raise ModelyardError(f"{flag} {item}: expected NAME=NUMBER") from None
    return out


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
        mix=_key_values("--mix", mix.split(",")) if mix else None,
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
        pricing=Pricing(cloud, _key_values("--price", price), discount),
        min_replicas=_key_values("--min-replicas", min_replicas, int),
        optimize=optimize,
        gpus=tuple(gpu or ()),
        capacity=_key_values("--capacity", capacity),
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
        _negative("\n".join([result.why, *(f"  {d}" for d in result.diagnosis)]))
    if not as_json:
        console.print(f"why: {result.why}", highlight=False)


# exit codes: 0 done, 1 an error (one line per problem), 2 bad usage, 3 the command ran and its
# answer is "no" (something does not fit, too many requests failed), so CI can gate on it
NEGATIVE_EXIT = 3


def _negative(message: str) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]no:[/] {message}")
    raise SystemExit(NEGATIVE_EXIT)


def _fail(message: str) -> NoReturn:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for line in message.splitlines() or [message]:
        err.print(f"[red]error:[/] {line}" if not line.startswith(" ") else line, markup=True)
    raise SystemExit(1)


def main() -> None:
    """Entry point: turns modelyard errors into one line each and exit code 1."""
    try:
        app()
    except ConfigError as exc:
        _fail("\n".join(exc.problems))
    except UnknownNameError as exc:
        _fail(str(exc))
    except ModelyardError as exc:
        _fail(str(exc))
    except Stopped as exc:
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
