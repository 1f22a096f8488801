"""Local engines: up, down, status, models prepare."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from modelyard.catalog import Catalog
from modelyard.cli.common import (
    DEFAULT_STATE_DIR,
    CatalogOption,
    JsonOption,
    StateDirOption,
    app,
    console,
    print_json,
)
from modelyard.engines import launcher
from modelyard.engines import models as engine_models
from modelyard.engines.state import EngineProcess
from modelyard.fleet import load_fleet
from modelyard.report import tables
from modelyard.signals import stop_on_signals


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
        print_json([{**r.process.__dict__, "alive": r.alive, "health": r.health} for r in rows])
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
