"""`modelyard sim run | calibrate | serve`."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from modelyard.catalog import Catalog
from modelyard.cli.common import (
    CatalogOption,
    JsonOption,
    app,
    console,
    err_console,
    length_distribution,
    parse_levels,
    parse_mix,
    print_json,
    run_async_value,
)
from modelyard.fleet import load_fleet, single_model_fleet
from modelyard.report import tables
from modelyard.sim import verdicts
from modelyard.sim.calibrate import fit_calibration, load_results
from modelyard.sim.faults import load_fault_file
from modelyard.sim.fit_bench import METRICS as BENCH_METRICS
from modelyard.sim.fit_bench import BenchFit, bench_fleet, fit_bench, is_bench_results, load_sweep
from modelyard.sim.perf import (
    choose_calibration,
    load_calibration,
)
from modelyard.sim.result import Accuracy
from modelyard.sim.run import SimOptions, simulate_levels
from modelyard.sim.server import Endpoint, ServeOptions, serve
from modelyard.sim.versions import resolve_engine_version

sim_app = typer.Typer(
    help="Simulate a fleet offline (run) or serve simulated engines in real time (serve).",
    no_args_is_help=True,
)
app.add_typer(sim_app, name="sim")


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
        input_tokens=length_distribution(length_dist, mean_in, length_std),
        output_tokens=length_distribution(length_dist, mean_out, length_std),
        mix=parse_mix(mix),
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
        rates=parse_levels(rate, "--rate") if rate else None,
        concurrencies=[int(c) for c in parse_levels(concurrency, "--concurrency")]
        if concurrency
        else None,
    )
    if as_json:
        docs = [result.to_json() for result in outcome]
        print_json(docs[0] if len(docs) == 1 else docs)
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


def _engine_ports(text: str) -> dict[str, int]:
    """`--ports NAME=PORT,...` as a mapping."""
    ports: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, port = item.rpartition("=")
        if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise typer.BadParameter(f"'{item}' is not NAME=PORT", param_hint="--ports")
        ports[name] = int(port)
    if not ports:
        raise typer.BadParameter("give at least one NAME=PORT", param_hint="--ports")
    return ports


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
    ports: Annotated[
        str | None,
        typer.Option(
            help="With a fleet file: serve only these engines, each on its port "
            "(NAME=PORT,... with replica names as `status` shows them, e.g. llama-8b/0; every "
            "engine of a shared device). `up` starts one such process per shared group."
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
    if ports is not None and fleet is None:
        raise typer.BadParameter("--ports needs a fleet file", param_hint="--ports")
    options = ServeOptions(
        host=host,
        port=port,
        ports=None if ports is None else _engine_ports(ports),
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
