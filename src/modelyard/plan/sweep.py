"""`plan --sweep`: the cheapest option of each kind as one traffic parameter varies, and its
plot. Capacities are cached across points, so a sweep costs little more than one plan."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.plan.cost import Option, OptionKind
from modelyard.plan.demand import Demand, FleetDemand
from modelyard.plan.errors import PlanError

SWEEPABLE = ("daily_active_users", "requests_per_user", "peak_factor", "fallback_rate")
SWEPT_KINDS: tuple[OptionKind, ...] = ("fleet layout", "isolated", "shared", "mig", "mixed")
LOG_POINTS = 13
LINEAR_POINTS = 11


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """`daily_active_users=1e3..1e6` (log-spaced, 13 points) or `name=a,b,c`."""
    if "=" not in text:
        raise PlanError(f"--sweep {text}: expected NAME=LOW..HIGH or NAME=A,B,C")
    name, values = text.split("=", 1)
    name = name.strip().replace("-", "_")
    if name not in SWEEPABLE:
        raise PlanError(f"--sweep: cannot sweep '{name}' (choose one of {', '.join(SWEEPABLE)})")
    try:
        if ".." in values:
            low, high = (float(v) for v in values.split(".."))
            if not 0 < low < high:
                raise PlanError(f"--sweep {text}: need 0 < LOW < HIGH")
            if name == "fallback_rate":
                return name, [float(v) for v in np.linspace(low, high, LINEAR_POINTS)]
            return name, [float(v) for v in np.geomspace(low, high, LOG_POINTS)]
        return name, [float(v) for v in values.split(",")]
    except ValueError as exc:
        raise PlanError(f"--sweep {text}: not numbers ({exc})") from exc


Run = Callable[[Demand], tuple[FleetDemand, list[Option], Option | None, str]]


def sweep_rows(run: Run, demand: Demand, name: str, points: list[float]) -> list[dict[str, Any]]:
    rows = []
    for value in points:
        _, options, chosen, _ = run(demand.replace(**{name: value}))
        cheapest: dict[str, float | None] = {}
        for kind in SWEPT_KINDS:
            costs = [o.monthly_usd for o in options if o.kind == kind and o.feasible]
            cheapest[kind] = min(costs) if costs else None
        rows.append(
            {
                "value": value,
                "cheapest_usd_by_kind": cheapest,
                "recommended": chosen.name if chosen else None,
                "gpus": chosen.gpus if chosen else None,
                "monthly_usd": chosen.monthly_usd if chosen else None,
            }
        )
    return rows


def sweep_png(result: dict[str, Any], path: Path) -> Path:
    """Cost vs the swept parameter, one line per kind of option (log-log for counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = result["sweep"]
    name = sweep["parameter"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for kind, style in zip(SWEPT_KINDS, ("D-", "o-", "s-", "^-", "v-"), strict=True):
        points = [
            (p["value"], p["cheapest_usd_by_kind"][kind])
            for p in sweep["points"]
            if p["cheapest_usd_by_kind"].get(kind) is not None
        ]
        if points:
            ax.plot(*zip(*points, strict=True), style, label=kind, markersize=4)
    if name in ("daily_active_users", "requests_per_user"):
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(name.replace("_", " "))
    ax.set_ylabel("cheapest $/month meeting the SLO")
    ax.set_title(f"{result['fleet']}: cost vs {name.replace('_', ' ')}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def fmt_money(value: float | None) -> str:
    return "—" if value is None or math.isinf(value) else f"${value:,.0f}"
