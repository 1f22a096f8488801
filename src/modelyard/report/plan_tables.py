"""`modelyard plan` in the terminal: the options (the fleet as written first), the units of the
fleet as written and of the recommendation, the sweep. Reads the plan's JSON document."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from modelyard.plan.sweep import SWEPT_KINDS, fmt_money
from modelyard.report.tables import _new_table


def demand_line(result: dict[str, Any]) -> str:
    demand = result["demand"]
    shares = ", ".join(
        f"{name} {m['share']:.0%} ({m['demand_rps']:.2f} req/s)"
        if not m["standby"]
        else f"{name} standby"
        for name, m in result["models"].items()
    )
    return (
        f"{result['fleet']}: {demand['daily_active_users']:,.0f} users x "
        f"{demand['requests_per_user']:g} req/day = {demand['average_rps']:.2f} req/s average, "
        f"{demand['peak_rps']:.2f} at peak (x{demand['peak_factor']:g})"
        + (" + failover" if demand["failover"] else "")
        + f"; {shares}"
    )


def ranked_options(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The fleet as written first, then feasible options cheapest first, then the rest (less
    the options not simulated because their floor costs more: plan_notes lists those)."""
    written = [o for o in result["options"] if o["kind"] == "as written"]
    others = sorted(
        (o for o in result["options"] if o["kind"] != "as written" and not _dominated(o)),
        key=lambda o: (not o["feasible"], o["monthly_usd"] or math.inf, o["name"]),
    )
    return written + others


def _dominated(option: dict[str, Any]) -> bool:
    return bool(option["verdict"]["blocked_by"] == "dominated")


def status(option: dict[str, Any]) -> str:
    verdict = option["verdict"]
    if option["feasible"]:
        return "ok"
    return f"{verdict['blocked_by']}: {verdict['reason']}"


def option_cells(option: dict[str, Any]) -> list[str]:
    """GPUs, $/month, $/1M output tokens, GPU utilisation, headroom: for an option that meets
    the SLO, and for the fleet as written (what it costs and how loaded it is, met or not)."""
    if not option["units"] or not (option["feasible"] or option["kind"] == "as written"):
        return ["—"] * 5
    per_million = option["usd_per_million_output_tokens"]
    return [
        str(option["gpus"]),
        fmt_money(option["monthly_usd"]),
        f"{per_million:.2f}" if per_million is not None else "—",
        f"{option['gpu_utilization']:.0%}",
        f"{option['headroom']:.0%}",
    ]


def capacity_cell(unit: dict[str, Any]) -> str:
    """Per replica within the SLO; a unit of several models gives each model's part."""
    capacity = unit["capacity_rps"]
    if len(capacity) == 1:
        return f"{next(iter(capacity.values())):.2f}"
    return ", ".join(f"{model} {rps:.2f}" for model, rps in capacity.items())


def plan_tables(result: dict[str, Any]) -> list[Table]:
    """Every option, then the units of the fleet as written and of the recommendation."""
    columns = ("option", "GPUs", "$/month", "$/1M out tok", "GPU util", "headroom")
    table = _new_table(
        demand_line(result),
        (*columns, "sized by", "status"),
        left=("option", "sized by", "status"),
    )
    for option in ranked_options(result):
        mark = "★ " if option["name"] == result["recommended"] else ""
        table.add_row(
            mark + option["name"],
            *option_cells(option),
            ", ".join(option["sized_by"]),
            status(option),
        )
    tables = [table]
    written = next((o for o in result["options"] if o["kind"] == "as written"), None)
    best = next((o for o in result["options"] if o["name"] == result["recommended"]), None)
    if written is not None and written["units"]:
        tables.append(units_table(written, "the fleet as written"))
    if best is not None and best is not written:
        tables.append(units_table(best, f"recommended: {best['name']}"))
    if result.get("sweep"):
        tables.append(sweep_table(result["sweep"]))
    return tables


def unit_status(unit: dict[str, Any]) -> str:
    """ok, the unit's own verdict, or (the fleet as written) too few replicas for a model."""
    verdict = unit["verdict"]
    if verdict["blocked_by"] is not None:
        return f"{verdict['blocked_by']}: {verdict['reason']}"
    short = [
        f"{model} needs {math.ceil(demand / unit['capacity_rps'][model] - 1e-9)}"
        for model, demand in unit["demand_rps"].items()
        if unit["capacity_rps"].get(model, 0.0) > 0
        and demand > unit["capacity_rps"][model] * unit["replicas"] + 1e-9
    ]
    return "short: " + ", ".join(short) if short else "ok"


def units_table(option: dict[str, Any], title: str) -> Table:
    table = _new_table(
        title,
        (
            "models",
            "device",
            "replicas",
            "GPUs",
            "capacity req/s",
            "demand req/s",
            "source",
            "sized by",
            "status",
        ),
        left=("models", "device", "source", "sized by", "status"),
    )
    for unit in option["units"]:
        table.add_row(
            " + ".join(dict.fromkeys(e["model"] for e in unit["engines"])),
            unit["label"],
            str(unit["replicas"]),
            str(unit["gpus"]),
            capacity_cell(unit),
            f"{sum(unit['demand_rps'].values()):.2f}",
            unit["source"],
            ", ".join(unit["sized_by"]),
            unit_status(unit),
        )
    return table


def sweep_table(sweep: dict[str, Any]) -> Table:
    table = _new_table(
        f"cheapest $/month vs {sweep['parameter']}",
        (sweep["parameter"], *SWEPT_KINDS, "recommended"),
        left=("recommended",),
    )
    for point in sweep["points"]:
        value = point["value"]
        cheapest = point["cheapest_usd_by_kind"]
        table.add_row(
            f"{value:,.0f}" if value >= 100 else f"{value:.3g}",
            *(fmt_money(cheapest[kind]) for kind in SWEPT_KINDS),
            f"{point['recommended']} ({point['gpus']} GPUs)" if point["recommended"] else "—",
        )
    return table


def plan_notes(result: dict[str, Any]) -> list[str]:
    """Notes, and where the capacities came from, as plain lines."""
    notes = [f"note: {note}" for note in result["notes"]]
    dominated = [o for o in result["options"] if _dominated(o)]
    if dominated:
        floors = ", ".join(
            f"{o['name']} >= {fmt_money(o['cost_floor_usd'])}"
            for o in sorted(dominated, key=lambda o: o["cost_floor_usd"])
        )
        notes.append(
            f"not simulated: {len(dominated)} options whose replica minimums alone cost more "
            f"than {result['recommended']} ({floors}); --sweep searches them all"
        )
    for option in result["options"]:
        notes += [f"note: {option['name']}: {note}" for note in option["notes"]]
    notes.append(
        f"capacity: {result['simulations']} simulations, {result['memory_fits']} memory fits "
        "(simulated capacity = the highest Poisson rate whose p99s meet the SLO); "
        "$/month at 730 h; GPU util = the demand's work in whole GPUs / GPUs provisioned"
    )
    return list(dict.fromkeys(notes))
