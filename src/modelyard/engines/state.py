"""The state file `modelyard up` writes (and `sim serve --state`): which engine processes run,
where they listen, their logs and cold starts. `status`, `down`, `gateway --state-dir` and
`bench --fleet` read it; one format for all of them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from modelyard.engines.errors import EngineError

STATE_NAME = "state.json"


@dataclass
class EngineProcess:
    """One engine `up` started. Times are seconds; `started_at` is wall-clock epoch."""

    name: str
    model: str
    engine: str
    pid: int
    port: int
    url: str
    log: str
    command: list[str]
    cpus: list[int]
    gpu_devices: list[int]
    started_at: float
    cold_start_s: float | None = None


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_NAME


def read_state(state_dir: Path) -> list[EngineProcess]:
    path = state_path(state_dir)
    if not path.exists():
        return []
    try:
        return [EngineProcess(**row) for row in json.loads(path.read_text())["engines"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"{path}: unreadable state file ({exc}); remove it by hand") from exc


def write_state(state_dir: Path, fleet_name: str, engines: list[EngineProcess]) -> None:
    write_state_file(state_path(state_dir), fleet_name, engines)


def write_state_file(path: Path, fleet_name: str, engines: list[EngineProcess]) -> None:
    """Written whole, then renamed: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(
        json.dumps({"fleet": fleet_name, "engines": [asdict(e) for e in engines]}, indent=2)
    )
    partial.replace(path)
