"""Cold start of local engines: process start to first successful completion, median of N.

python benchmarks/cold_start.py examples/local-llamacpp.yaml --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelyard.engines import launcher
from modelyard.fleet import load_fleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fleet", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    loaded = load_fleet(args.fleet)
    samples: dict[str, list[float]] = {}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as state:
            try:
                for process in launcher.up(loaded, Path(state), timeout_s=args.timeout):
                    assert process.cold_start_s is not None
                    samples.setdefault(f"{process.name} ({process.engine})", []).append(
                        process.cold_start_s
                    )
            finally:
                launcher.down(Path(state))
    table = Table(title=f"cold start, {args.fleet}, {args.runs} runs", title_justify="left")
    for column in ("engine", "runs (s)", "median s"):
        table.add_column(column)
    for name, values in samples.items():
        table.add_row(
            name, ", ".join(f"{v:.1f}" for v in values), f"{statistics.median(values):.1f}"
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
