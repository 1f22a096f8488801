"""report/plan_tables.py: the plan in the terminal — the fleet as written first, MIG units
with their GPU counts, options not simulated listed with their cost floors."""

from __future__ import annotations

from rich.console import Console

from modelyard.fleet import load_fleet
from modelyard.plan.demand import demand_from_fleet
from modelyard.plan.planner import PlanResult
from modelyard.plan.recommend import recommend
from modelyard.plan.search import options_for
from modelyard.report.plan_tables import plan_notes, plan_tables, ranked_options, units_table
from tests.plan.helpers import EXAMPLE, builder, table_capacity

TABLE = {
    ("isolated", "llama-8b", "a10g"): 2.5,
    ("isolated", "mistral-7b", "a10g"): 2.5,
    ("isolated", "llama-8b", "a100-80gb"): 12.0,
    ("isolated", "mistral-7b", "a100-80gb"): 12.0,
    ("mig", "llama-8b", "a100-80gb", "2g.20gb"): 2.0,
    ("mig", "mistral-7b", "a100-80gb", "1g.10gb"): 1.0,
}


def _render(prune: bool) -> tuple[dict[str, object], str]:
    loaded = load_fleet(EXAMPLE)
    build = builder(table_capacity(loaded, TABLE), demand_from_fleet(loaded.fleet))
    gpus = ["h200", "a100-80gb", "a10g"] if prune else ["a100-80gb"]
    options = options_for(build, gpus, optimize=True, prune=prune)
    best, why = recommend(options)
    result = PlanResult(
        loaded.fleet.name,
        build.inputs.demand,
        build.inputs.models,
        loaded.fleet.slo,
        options,
        best,
        why,
        [],
        0,
        0,
    ).to_json()
    console = Console(width=250, record=True)
    for table in plan_tables(result):
        console.print(table)
    for line in plan_notes(result):
        console.print(line)
    return result, console.export_text()


def test_the_fleet_as_written_comes_first_and_mig_units_count_gpus() -> None:
    result, text = _render(prune=False)
    assert ranked_options(result)[0]["name"] == "as written"  # type: ignore[arg-type]
    assert text.index("as written") < text.index("mig a100-80gb")
    assert "the fleet as written" in text and "capacity: " in text
    mig = next(o for o in result["options"] if o["name"] == "mig a100-80gb")  # type: ignore[attr-defined]
    console = Console(width=250, record=True)
    console.print(units_table(mig, "mig"))
    rows = [line for line in console.export_text().splitlines() if "a100-80gb" in line]
    assert len(rows) == len(mig["units"]) == 2
    for row, unit in zip(rows, mig["units"], strict=True):
        cells = [c.strip() for c in row.split("│")]
        assert cells[3] == str(unit["replicas"]) and cells[4] == str(unit["gpus"])  # not "shared"
        assert unit["gpus"] == unit["replicas"] >= 1


def test_options_not_simulated_are_one_note_with_their_floors() -> None:
    result, text = _render(prune=True)
    dominated = [o for o in result["options"] if o["verdict"]["blocked_by"] == "dominated"]  # type: ignore[attr-defined,index]
    assert dominated  # H200s cost more at their minimum than the A10G or A100 answers
    assert "dominated" not in text.split("the fleet as written")[0]  # not rows of the table
    assert f"not simulated: {len(dominated)} options whose replica minimums alone cost more" in text
    assert "isolated h200 >= $" in text
