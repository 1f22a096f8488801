"""Commands about the fleet file and the catalog: validate, schema, catalog, fit, quant."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from modelyard.catalog import Catalog
from modelyard.cli.common import (
    NEGATIVE_EXIT,
    CatalogOption,
    JsonOption,
    app,
    console,
    device_for,
    exit_negative,
    print_json,
)
from modelyard.errors import ModelyardError
from modelyard.fleet import fleet_json_schema, load_fleet
from modelyard.memory import FitSettings, fit, fit_fleet
from modelyard.quant import profile_options, render_recipe
from modelyard.report import tables
from modelyard.sim.perf import (
    Calibration,
    builtin_calibrations,
)


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
    print_json(fleet_json_schema())


@app.command("catalog")
def catalog_command(catalog: CatalogOption = None, as_json: JsonOption = False) -> None:
    """List the catalog: models, GPUs, quantization profiles, aliases and the simulator's
    engine calibrations."""
    loaded = Catalog.load(catalog)
    calibrations = builtin_calibrations()
    if as_json:
        print_json(
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
            print_json(
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
            exit_negative("not everything fits where the fleet places it (see the reasons above)")
        return
    if model is None:
        raise typer.BadParameter("give a fleet file or --model", param_hint="--model")
    loaded = Catalog.load(catalog)
    device, _ = device_for(loaded, gpu)
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
        print_json(single.to_json())
    else:
        console.print(tables.fit_table([single]))
        console.print(single.reason)
    if not single.fits:
        exit_negative(f"{slug} does not fit: {single.reason}")


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
    device, capability = device_for(loaded, gpu)
    settings = FitSettings(
        max_model_len=min(max_model_len or 8192, loaded.models[slug].max_context)
    )
    options = profile_options(loaded, slug, device, capability, engine, settings)
    if profile is not None:
        loaded.quant(profile)
        options = [o for o in options if o.profile == profile]
    if as_json:
        print_json(
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
