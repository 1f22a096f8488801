"""How fast `sim run` simulates: one million requests, one core.

Target (issues: simulator, simulator accuracy): >= 1M requests in <= 60 s on one core, open and
closed loop. Prints a table with the wall time and the simulated requests per wall-second for
each scenario.

    python benchmarks/sim_speed.py [--requests 1000000]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelyard.fleet import load_fleet
from modelyard.sim.run import SimOptions, simulate

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = [
    ("example fleet, isolated H100s, 20 req/s", SimOptions(gpu="h100-sxm", rate=20.0)),
    (
        "example fleet, shared H100, 10 req/s",
        SimOptions(gpu="h100-sxm", rate=10.0, placement="shared"),
    ),
    (
        "example fleet, isolated H100s, closed loop, 64 users",
        SimOptions(gpu="h100-sxm", concurrency=64),
    ),
    (
        "example fleet, shared H100, closed loop, 32 users",
        SimOptions(gpu="h100-sxm", concurrency=32, placement="shared"),
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    loaded = load_fleet(ROOT / "examples" / "fleet.yaml")
    table = Table(
        title=f"sim run speed, {args.requests:,} requests, one core", title_justify="left"
    )
    # CPU seconds too: on a shared machine the process's own CPU time is what the code costs
    columns = ("scenario", "wall s", "CPU s", "requests / wall s", "simulated s", "target <= 60 s")
    for column in columns:
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for name, options in SCENARIOS:
        start, cpu_start = time.perf_counter(), time.process_time()
        options = SimOptions(**{**options.__dict__, "requests": args.requests})
        result = simulate(loaded, options)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        completed = sum(m.completed for m in result.models)
        assert completed == args.requests, (completed, args.requests)
        table.add_row(
            name,
            f"{wall:.1f}",
            f"{cpu:.1f}",
            f"{args.requests / wall:,.0f}",
            f"{result.duration_s:,.0f}",
            "met" if wall <= 60 else ("MISSED" if cpu > 60 else "missed (wall; CPU met)"),
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
