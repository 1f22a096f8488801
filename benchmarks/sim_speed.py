"""How fast `sim run` simulates: one million requests, one core.

Target (issues: simulator, simulator accuracy): >= 1M requests in <= 60 s on one core, open and
closed loop. Prints a table with the wall time and the simulated requests per wall-second for
each scenario.

    python benchmarks/sim_speed.py [--requests 1000000]
    python benchmarks/sim_speed.py --requests 150000 --against ../before/src [--rounds 2]

With --against, each scenario runs in a fresh process on this tree's `src` and on the other
one's, alternated (A B A B ...), and the table gives both CPU times and their ratio: a change's
cost measured side by side on one noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelyard.fleet import LoadedFleet, load_fleet
from modelyard.sim.result import SimResult
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


def _one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _timed(
    loaded: LoadedFleet, options: SimOptions, requests: int
) -> tuple[SimResult, float, float]:
    """One scenario at `requests`: its result, wall seconds and CPU seconds."""
    start, cpu_start = time.perf_counter(), time.process_time()
    result = simulate(loaded, SimOptions(**{**options.__dict__, "requests": requests}))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    completed = sum(m.completed for m in result.models)
    assert completed == requests, (completed, requests)
    return result, wall, cpu


def _child(index: int, requests: int) -> None:
    """One scenario in this process: print its CPU seconds as JSON."""
    _one_core()
    _, _, cpu = _timed(load_fleet(ROOT / "examples" / "fleet.yaml"), SCENARIOS[index][1], requests)
    print(json.dumps({"cpu_s": cpu}))


def _against(other_src: Path, requests: int, rounds: int) -> None:
    table = Table(
        title=f"sim run CPU s, {requests:,} requests, this tree vs {other_src}, "
        f"{rounds} alternated rounds",
        title_justify="left",
    )
    for column in ("scenario", "this tree CPU s", "other CPU s", "this / other"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for index, (name, _) in enumerate(SCENARIOS):
        times: dict[str, list[float]] = {"this": [], "other": []}
        for _ in range(rounds):
            for tree, src in (("this", ROOT / "src"), ("other", other_src.resolve())):
                done = subprocess.run(
                    [sys.executable, __file__, "--child", str(index), "--requests", str(requests)],
                    env={**os.environ, "PYTHONPATH": str(src)},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                times[tree].append(json.loads(done.stdout.strip().splitlines()[-1])["cpu_s"])
        mine, theirs = min(times["this"]), min(times["other"])
        table.add_row(
            name,
            " / ".join(f"{t:.2f}" for t in times["this"]),
            " / ".join(f"{t:.2f}" for t in times["other"]),
            f"{mine / theirs:.2f} (minima)",
        )
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--against", type=Path, help="another checkout's src, side by side")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, args.requests)
        return
    if args.against is not None:
        _against(args.against, args.requests, args.rounds)
        return
    _one_core()
    loaded = load_fleet(ROOT / "examples" / "fleet.yaml")
    table = Table(
        title=f"sim run speed, {args.requests:,} requests, one core", title_justify="left"
    )
    # CPU seconds too: on a shared machine the process's own CPU time is what the code costs
    columns = ("scenario", "wall s", "CPU s", "requests / wall s", "simulated s", "target <= 60 s")
    for column in columns:
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for name, options in SCENARIOS:
        result, wall, cpu = _timed(loaded, options, args.requests)
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
