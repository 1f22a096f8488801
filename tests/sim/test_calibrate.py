from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from modelyard.catalog import Catalog
from modelyard.sim.calibrate import fit_calibration, load_results
from modelyard.sim.errors import CalibrationError
from modelyard.sim.perf import calibration_for
from tests.conftest import ROOT

RESULTS = ROOT / "benchmarks" / "results" / "gpu_calibrate_h200_2026-11-28.json"


def test_fit_recovers_known_factors(catalog: Catalog) -> None:
    """Synthetic measurements made by the model itself must be fitted back (within the grid)."""
    data: dict[str, Any] = copy.deepcopy(load_results(RESULTS))
    truth = calibration_for("h200", engine="harness", version="1")  # the harness measurement
    from modelyard.sim.perf import Hardware, StepModel

    hardware = Hardware.for_gpu("h200", catalog.gpu("h200"), "bf16", truth)
    for name, runs in data["models"].items():
        model = StepModel(catalog.model(name), catalog.quant("bf16"), hardware, truth, 2.0)
        for row in runs["decode"]:
            row["seconds"] = model.decode_step_time(row["batch"], row["batch"] * row["context"])
        for row in runs["prefill"]:
            row["seconds"] = model.prefill_time(row["tokens"])
    fitted = fit_calibration(data, "h200", catalog, {2, 8}, {128}, "synthetic")
    assert max(abs(p.error) for p in fitted.predictions) < 0.01
    assert fitted.calibration.mfu == pytest.approx(truth.mfu, abs=0.021)
    assert fitted.calibration.bandwidth_efficiency == pytest.approx(
        truth.bandwidth_efficiency, abs=0.011
    )


def test_h200_measurement_held_out_errors(catalog: Catalog) -> None:
    fitted = fit_calibration(
        load_results(RESULTS), "h200", catalog, {2, 8, 32, 128}, {128, 512, 2048}, str(RESULTS)
    )
    held = [p for p in fitted.predictions if p.point.held_out]
    decode = [abs(p.error) for p in held if p.point.kind == "decode"]
    prefill = [abs(p.error) for p in held if p.point.kind == "prefill" and p.point.context >= 512]
    assert max(decode) < 0.10  # docs/simulator.md reports these
    assert max(prefill) < 0.10
    assert min(fitted.contention_ratios) > 1.5 and max(fitted.contention_ratios) < 2.2


def test_shipped_h200_calibration_matches_fit(catalog: Catalog) -> None:
    fitted = fit_calibration(
        load_results(RESULTS), "h200", catalog, {2, 8, 32, 128}, {128, 512, 2048}, str(RESULTS)
    )
    shipped = calibration_for("h200", engine="harness", version="1")  # harness-h200.yaml
    assert shipped.mfu == fitted.calibration.mfu
    assert shipped.bandwidth_efficiency == fitted.calibration.bandwidth_efficiency
    assert shipped.contention_slowdown == fitted.calibration.contention_slowdown


def test_bad_results_file(tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text("{}")
    with pytest.raises(CalibrationError, match=r"not a benchmarks/gpu_calibrate\.py result"):
        load_results(bad)
