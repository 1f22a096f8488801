"""The simulator against independent published measurements (src/modelyard/catalog/validation.yaml).

Replays every case with the shipped calibrations and prints, per case, each published figure,
the simulated one and the error, then mean and max |error| per metric on the fit set and on the
held-out set (sources in the held-out set were never used to fit anything).

    python benchmarks/sim_validation.py [--markdown] [--set fit|held-out]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

from rich.console import Console
from rich.table import Table

from modelyard.sim.validation import METRICS, Replay, load_validation_set, replay_all

LABELS = {
    "ttft_median_ms": "TTFT p50",
    "tpot_median_ms": "TPOT p50",
    "output_tokens_per_s": "out tok/s",
    "batch_latency_ms": "batch latency",
    "decode_tokens_per_s": "decode tok/s",
}


def summary(replays: list[Replay]) -> dict[str, tuple[int, float, float]]:
    """metric -> (figures, mean |error|, max |error|), plus 'all'."""
    errors: dict[str, list[float]] = defaultdict(list)
    for item in replays:
        for comparison in item.comparisons:
            errors[comparison.metric].append(abs(comparison.error))
            errors["all"].append(abs(comparison.error))
    return {m: (len(e), statistics.fmean(e), max(e)) for m, e in errors.items()}


def _cases_table(title: str, replays: list[Replay]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("case", "GPU", "engine", "load", "metric", "published", "simulated", "error"):
        table.add_column(
            column, justify="right" if column in ("published", "simulated", "error") else "left"
        )
    for item in replays:
        case = item.case
        load = case.load.kind + (
            f" c={case.load.concurrency}"
            if case.load.concurrency
            else f" {case.load.rate:g}/s"
            if case.load.rate
            else ""
        )
        for comparison in item.comparisons:
            table.add_row(
                case.id,
                case.gpu,
                case.engine_version,
                load,
                LABELS[comparison.metric],
                f"{comparison.published:,.2f}",
                f"{comparison.simulated:,.2f}",
                f"{comparison.error:+.1%}",
            )
    return table


def _summary_table(results: dict[str, list[Replay]]) -> Table:
    table = Table(title="mean / max |error| by metric", title_justify="left")
    table.add_column("set")
    table.add_column("cases", justify="right")
    for metric in (*METRICS, "all"):
        table.add_column(LABELS.get(metric, metric), justify="right")
    for name, replays in results.items():
        stats = summary(replays)
        cells = [
            f"{stats[m][1]:.1%} / {stats[m][2]:.1%} (n={stats[m][0]})" if m in stats else "-"
            for m in (*METRICS, "all")
        ]
        table.add_row(name, str(len(replays)), *cells)
    return table


def _markdown(results: dict[str, list[Replay]]) -> str:
    lines = [
        "| set | case | GPU | engine | load | metric | published | simulated | error |",
        "|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for name, replays in results.items():
        for item in replays:
            case = item.case
            load = case.load.kind + (f" c={case.load.concurrency}" if case.load.concurrency else "")
            for c in item.comparisons:
                link = f"[{case.id}]({case.url})"
                lines.append(
                    f"| {name} | {link} | {case.gpu} | {case.engine_version} | {load} "
                    f"| {LABELS[c.metric]} | {c.published:,.2f} | {c.simulated:,.2f} "
                    f"| {c.error:+.1%} |"
                )
    lines += [
        "",
        "| set | metric | figures | mean \\|error\\| | max \\|error\\| |",
        "|---|---|---:|---:|---:|",
    ]
    for name, replays in results.items():
        stats = summary(replays)
        for metric in (*METRICS, "all"):
            if metric in stats:
                count, mean, worst = stats[metric]
                label = LABELS.get(metric, metric)
                lines.append(f"| {name} | {label} | {count} | {mean:.1%} | {worst:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=("fit", "held-out"), default=None)
    parser.add_argument("--markdown", action="store_true", help="print the docs table")
    args = parser.parse_args()
    validation = load_validation_set()
    results: dict[str, list[Replay]] = {}
    problems: list[str] = []
    for which in ("fit", "held-out"):
        if args.set in (None, which):
            replays, failed = replay_all(validation.split(which))  # type: ignore[arg-type]
            results[which] = replays
            problems += failed
    if args.markdown:
        sys.stdout.write(_markdown(results) + "\n")
    else:
        console = Console(width=170)
        for which, replays in results.items():
            console.print(_cases_table(f"{which} set: per case", replays))
        console.print(_summary_table(results))
    for line in problems:
        sys.stdout.write(f"could not replay {line}\n")


if __name__ == "__main__":
    main()
