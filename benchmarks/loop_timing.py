"""How late does an asyncio (uvloop) program wake up for a deadline?

Compares the event loop's own timer (`asyncio.sleep` to the deadline) with what `sim serve` and
the load generator do (`modelyard.http.pacing.until`): sleep to 2 ms before, then yield the loop
with `sleep(0)` and the core with `sched_yield` until the deadline. Prints wake-up error
percentiles for random deadlines 1-20 ms ahead; run it pinned to one core to see the server's
situation:

    taskset -c 0 python benchmarks/loop_timing.py [--samples 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import numpy as np
import uvloop
from rich.console import Console
from rich.table import Table

from modelyard.http import pacing


async def timer(due: float) -> None:
    await asyncio.sleep(due - time.monotonic())


async def spin(due: float) -> None:
    await pacing.until(due)


async def measure(samples: int) -> dict[str, np.ndarray]:
    rng = random.Random(1)
    errors: dict[str, list[float]] = {"event-loop timer": [], "2 ms early, then yield": []}
    for _ in range(samples):
        for name, wait in zip(errors, (timer, spin), strict=True):
            due = time.monotonic() + rng.uniform(0.001, 0.02)
            await wait(due)
            errors[name].append((time.monotonic() - due) * 1000)
    return {name: np.array(values) for name, values in errors.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    results = uvloop.run(measure(args.samples))
    table = Table(title="wake-up error (woken - due), ms; negative = early", title_justify="left")
    for column in ("method", "p1", "p50", "p99", "max"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, values in results.items():
        p1, p50, p99 = np.percentile(values, [1, 50, 99])
        table.add_row(name, f"{p1:.3f}", f"{p50:.3f}", f"{p99:.3f}", f"{values.max():.3f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
