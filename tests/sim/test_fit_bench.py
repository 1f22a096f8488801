"""`sim calibrate` from a bench sweep: the fit recovers a sweep made by a known calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelyard.results import Percentiles
from modelyard.sim.errors import CalibrationError
from modelyard.sim.fit_bench import (
    bench_fleet,
    fit_bench,
    is_bench_results,
    load_sweep,
    replay_level,
)
from modelyard.sim.perf import calibration_for
from tests.conftest import bench_file, target_summary

LEVELS = (1, 4, 16)


def _median(ms: float) -> Percentiles:
    return Percentiles(mean=ms, p50=ms, p90=ms, p99=ms)


def _sweep(tmp_path: Path, truth: object) -> list[Path]:
    """Bench result files as `modelyard bench --concurrency 1,4,16` writes them, with figures
    made by the simulator under `truth`."""
    from modelyard.sim.fit_bench import BenchLevel

    fleet = bench_fleet("llama-3.1-8b", "h100-sxm", "bf16", None, 4096)
    paths = []
    for c in LEVELS:
        level = BenchLevel("x", c, None, 60, 512, 64, {})
        figures = replay_level(fleet, level, truth)  # type: ignore[arg-type]
        summary = target_summary().model_copy(
            update={
                "ttft_ms": _median(figures["ttft_ms"]),
                "tpot_ms": _median(figures["tpot_ms"]),
                "output_tokens_per_s": figures["output_tokens_per_s"],
            }
        )
        config = {
            "workload": {
                "arrivals": {"kind": "poisson", "rate": 1.0, "burstiness": 1.0},
                "input_tokens": {"kind": "fixed", "mean": 512},
                "output_tokens": {"kind": "fixed", "mean": 64},
                "mix": {"m": 1.0},
            },
            "load": {"concurrency": c},
            "requests": 60,
        }
        path = tmp_path / f"sweep-c{c}.json"
        bench_file(path, {"m": summary}, config)
        paths.append(path)
    return paths


def test_fit_reproduces_a_sweep(tmp_path: Path) -> None:
    start = calibration_for("h100-sxm")
    truth = start.model_copy(
        update={
            "bandwidth_efficiency": start.bandwidth_efficiency * 0.8,
            "step_overhead_ms": start.step_overhead_ms + 2.0,
            "request_latency_ms": start.request_latency_ms + 25.0,
        }
    )
    paths = _sweep(tmp_path, truth)
    assert is_bench_results(paths[0])
    levels = load_sweep(paths)
    assert [level.concurrency for level in levels] == list(LEVELS)
    fleet = bench_fleet("llama-3.1-8b", "h100-sxm", "bf16", None, 4096)
    before = max(
        abs(replay_level(fleet, level, start)[m] / level.measured[m] - 1)
        for level in levels
        for m in level.measured
    )
    fitted = fit_bench(fleet, levels, start, "h100-sxm")
    assert before > 0.1  # the start calibration misses the sweep
    assert fitted.worst_error < 0.05
    assert fitted.calibration.measured_on == ["h100-sxm"]
    assert "sweep-c1.json" in fitted.calibration.provenance.source


def test_sweep_files_must_be_bench_results(tmp_path: Path) -> None:
    other = tmp_path / "steps.json"
    other.write_text(json.dumps({"models": {}}))
    assert not is_bench_results(other)
    with pytest.raises(CalibrationError, match="not a modelyard result file"):
        load_sweep([other])
