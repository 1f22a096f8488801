"""What every command shares: the app, consoles, option types, exit codes, parsers."""

from __future__ import annotations

import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from modelyard import __version__
from modelyard.catalog import Catalog
from modelyard.errors import ModelyardError
from modelyard.memory import Device
from modelyard.workload import LengthDist

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


def print_json(value: Any) -> None:
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


def device_for(catalog: Catalog, gpu: str | None) -> tuple[Device, str | None]:
    if gpu is None:
        return Device.host(), None
    spec = catalog.gpu(gpu)
    return Device.from_gpu(gpu, spec), spec.compute_capability


def length_distribution(kind: str, mean: int, std_fraction: float) -> LengthDist:
    """Token lengths for --length-dist: std as a fraction of the mean; uniform spans 1..2x."""
    if kind not in ("fixed", "normal", "lognormal", "uniform"):
        raise typer.BadParameter(
            "must be fixed, normal, lognormal or uniform", param_hint="--length-dist"
        )
    high = 2 * mean if kind == "uniform" else None
    return LengthDist(kind=kind, mean=mean, std=std_fraction * mean, high=high)  # type: ignore[arg-type]


def parse_mix(text: str | None) -> dict[str, float] | None:
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


StateDirOption = Annotated[
    Path, typer.Option("--state-dir", help="Where `up` records what it started, and logs.")
]
DEFAULT_STATE_DIR = Path(".modelyard")


def parse_levels(text: str | None, hint: str) -> list[float]:
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


K8sVersionOption = Annotated[
    str, typer.Option("--k8s-version", help="Kubernetes version to validate against (1.29-1.33).")
]


def parse_key_values(flag: str, items: list[str] | None, kind: type = float) -> dict[str, Any]:
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


# exit codes: 0 done, 1 an error (one line per problem), 2 bad usage, 3 the command ran and its
# answer is "no" (something does not fit, too many requests failed), so CI can gate on it
NEGATIVE_EXIT = 3


def exit_negative(message: str) -> NoReturn:
    err_console.print(f"[red]no:[/] {message}")
    raise SystemExit(NEGATIVE_EXIT)


def fail(message: str) -> NoReturn:
    for line in message.splitlines() or [message]:
        err_console.print(
            f"[red]error:[/] {line}" if not line.startswith(" ") else line, markup=True
        )
    raise SystemExit(1)
