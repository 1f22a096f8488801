"""Benchmark results as versioned JSON (schema in docs/metrics.md), read by plan and report."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from modelyard.errors import ModelyardError

SCHEMA = "modelyard.bench/1"
REQUIRED = ("schema", "config", "duration_s", "models", "all")


class ResultsError(ModelyardError):
    """A results file that cannot be read or is not a modelyard bench result."""


def build(
    config: dict[str, Any], duration_s: float, models: dict[str, Any], overall: dict[str, Any]
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": config,
        "duration_s": duration_s,
        "models": models,
        "all": overall,
    }


def write(path: Path, results: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps(results, indent=2, allow_nan=True))
        partial.replace(path)
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc}") from exc


def read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read results: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultsError(f"{path}: not a {SCHEMA} results file")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ResultsError(f"{path}: missing {', '.join(missing)}")
    return data
