"""How precisely does `modelyard bench` time what a server does?

`sim serve --timing-debug` stamps every chunk with the time.monotonic() at which the simulated
engine produced it; the load generator (on the other core, same clock) records when each chunk
arrived. The difference is the client's timing error for TTFT and ITL. Also reports the
schedule delay of the open-loop sender. Targets (issue: measure): TTFT and TPOT within 1 ms
(p50 and p99) at 500 req/s on one core; schedule delay p99 < 1 ms at 1,000 req/s.

    python benchmarks/bench_accuracy.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uvloop
from rich.console import Console
from rich.table import Table

from modelyard.bench.loadgen import LoadOptions, Target, run_load
from modelyard.bench.workload import ArrivalProcess, LengthDist, Workload, generate

PORT = 18961


def run(rate: float, requests: int, output_tokens: int) -> dict[str, float]:
    workload = Workload(
        arrivals=ArrivalProcess("poisson", rate),
        input_tokens=LengthDist(mean=64),
        output_tokens=LengthDist(mean=output_tokens),
        mix={"q": 1.0},
    )
    plan = generate(workload, requests, seed=1)
    targets = {"q": Target("q", f"http://127.0.0.1:{PORT}", "q")}
    records, _ = uvloop.run(run_load(plan, targets, LoadOptions(capture_due=True)))
    first, gaps, delay = [], [], []
    for r in records:
        delay.append(r.sent - r.scheduled)
        if r.error or not r.due_times or len(r.due_times) != len(r.chunk_times):
            continue
        first.append(r.chunk_times[0] - r.due_times[0])
        measured = np.diff(r.chunk_times)
        true = np.diff(r.due_times)
        gaps.extend((measured - true).tolist())
    ms = 1000.0
    return {
        "requests": len(records),
        "ok": sum(1 for r in records if r.error is None),
        "ttft_err_p50": float(np.percentile(first, 50)) * ms,
        "ttft_err_p99": float(np.percentile(first, 99)) * ms,
        "itl_err_p50": float(np.percentile(np.abs(gaps), 50)) * ms if gaps else float("nan"),
        "itl_err_p99": float(np.percentile(np.abs(gaps), 99)) * ms if gaps else float("nan"),
        "delay_p50": float(np.percentile(delay, 50)) * ms,
        "delay_p99": float(np.percentile(delay, 99)) * ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-tokens", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "state.json"
        server = subprocess.Popen(
            [
                "taskset",
                "-c",
                str(cores[0]),
                sys.executable,
                "-m",
                "modelyard",
                "sim",
                "serve",
                "--model",
                "qwen2.5-7b",
                "--gpu",
                "h200",
                "--served-model-name",
                "q",
                "--port",
                str(PORT),
                "--cold-start-s",
                "0",
                "--timing-debug",
                "--state",
                str(state),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not state.exists():
                time.sleep(0.05)
            time.sleep(0.5)
            os.sched_setaffinity(0, {cores[-1]})
            rows = [
                (rate, run(rate, int(rate * args.seconds), args.output_tokens))
                for rate in (100, 500, 1000)
            ]
        finally:
            server.terminate()
            server.wait(timeout=10)
    table = Table(
        title=f"bench timing error vs the simulation's own clock ({args.output_tokens} "
        "output tokens, server and client on one core each)",
        title_justify="left",
    )
    for column in (
        "req/s",
        "ok",
        "TTFT err p50 ms",
        "TTFT err p99 ms",
        "|ITL err| p50 ms",
        "|ITL err| p99 ms",
        "sched. delay p50 ms",
        "sched. delay p99 ms",
    ):
        table.add_column(column, justify="right")
    for rate, r in rows:
        table.add_row(
            f"{rate:g}",
            f"{r['ok']}/{r['requests']}",
            f"{r['ttft_err_p50']:.2f}",
            f"{r['ttft_err_p99']:.2f}",
            f"{r['itl_err_p50']:.2f}",
            f"{r['itl_err_p99']:.2f}",
            f"{r['delay_p50']:.2f}",
            f"{r['delay_p99']:.2f}",
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
