"""Capacities and token lengths read from `modelyard bench` result files (`plan --measured`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from modelyard import results
from modelyard.fleet import Slo
from modelyard.plan.errors import PlanError


def measured_capacities(paths: list[Path], slo: Slo) -> dict[str, tuple[float, str]]:
    """Per model: the highest measured throughput among runs whose p99s met the SLO with no
    errors (a rate sweep gives one file per level), and where it came from."""
    best: dict[str, tuple[float, str]] = {}
    for path in paths:
        data = results.read_bench(path).model_dump(by_alias=True)
        for model, summary in data["models"].items():
            errors = sum((summary.get("errors") or {}).values())
            ok = errors == 0 and summary.get("completed", 0) > 0
            for key, limit in (
                ("ttft_ms", slo.ttft_p99),
                ("tpot_ms", slo.tpot_p99),
                ("e2e_ms", slo.e2e_p99),
            ):
                if limit is not None:
                    p99 = (summary.get(key) or {}).get("p99", math.inf)
                    ok = ok and p99 is not None and p99 <= limit * 1000
            rps = float(summary.get("throughput_rps", 0.0))
            if ok and rps > best.get(model, (0.0, ""))[0]:
                best[model] = (rps, f"measured ({path.name})")
    return best


def measured_token_means(path: Path) -> tuple[int, int]:
    """Mean prompt and output tokens of a bench run's workload (uniform: the middle)."""
    data = results.read_bench(path).model_dump(by_alias=True)

    def mean(dist: dict[str, Any]) -> int:
        if dist.get("kind") == "uniform" and dist.get("high") is not None:
            return max(round((float(dist["low"]) + float(dist["high"])) / 2), 1)
        return max(round(float(dist["mean"])), 1)

    try:
        workload = data["config"]["workload"]
        return mean(workload["input_tokens"]), mean(workload["output_tokens"])
    except (KeyError, TypeError) as exc:
        raise PlanError(f"{path}: no workload token lengths in its config ({exc})") from exc
