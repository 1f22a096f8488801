"""The step-level numbers behind `plan examples/fleet.yaml`'s shared-A10G answer, time-sliced
and with MPS (issue 17, item 7).

Prints, for Llama-3.1-8B and Mistral-7B (AWQ) on an A10G: each engine's KV cache at its own GPU
(0.9) and at the fractions the planner gives them on one shared A10G, a 512-token prefill and a
decode step alone and while the other engine is busy, then the planner's capacity at the SLO for
Llama alone and for the pair at the fleet's 95/5 mix, time-sliced and with MPS.

    python benchmarks/sim_shared_a10g.py
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelyard.fleet import load_fleet
from modelyard.memory import Device, fit_model
from modelyard.plan.capacity import CapacityModel
from modelyard.plan.fits import MemoryFits
from modelyard.plan.simulator import PlanSimulator
from modelyard.sim.perf import Hardware, StepModel, calibration_for

ROOT = Path(__file__).resolve().parents[1]
GPU = "a10g"
SHARED = {"llama-8b": 0.562, "mistral-7b": 0.338}  # the planner's fractions (plan --json)
MIX = {"llama-8b": 0.95, "mistral-7b": 0.05}


def main() -> None:
    loaded = load_fleet(ROOT / "examples" / "fleet.yaml")
    fleet, catalog = loaded.fleet, loaded.catalog
    spec, cal = catalog.gpu(GPU), calibration_for(GPU)
    traffic = fleet.traffic
    context = traffic.input_tokens + traffic.output_tokens // 2  # mid-answer
    steps = Table(
        title=f"{GPU}, calibration {cal.name}: time-sliced x{1 + cal.contention_slowdown:.3f} "
        f"and MPS x{1 + cal.mps_slowdown:.3f} per step while the other engine is busy",
        title_justify="left",
    )
    for column in (
        "engine",
        "fraction",
        "KV tokens",
        f"requests of {context} tokens",
        f"prefill {traffic.input_tokens} ms",
        "decode step ms (8 seqs)",
        "time-sliced",
        "MPS",
    ):
        steps.add_column(column, justify="left" if column == "engine" else "right")
    for name, shared in SHARED.items():
        entry = fleet.models[name]
        hardware = Hardware.for_gpu(GPU, spec, entry.quant_name, cal)
        quant = loaded.quant(name)
        step = StepModel(loaded.model_spec(name), quant, hardware, cal, quant.kv_cache_bytes)
        decode = step.decode_step_time(8, 8.0 * context) * 1000
        for fraction in (0.9, shared):
            result = fit_model(loaded, name, Device.from_gpu(GPU, spec), fraction)
            steps.add_row(
                name,
                f"{fraction:g}",
                f"{result.kv_cache_tokens:,}",
                f"{result.kv_cache_tokens // context:,}",
                f"{step.prefill_time(traffic.input_tokens) * 1000:.1f}",
                f"{decode:.2f}",
                f"{decode * (1 + cal.contention_slowdown):.2f}",
                f"{decode * (1 + cal.mps_slowdown):.2f}",
            )
    capacity = CapacityModel(
        loaded,
        fleet.slo,
        traffic.input_tokens,
        traffic.output_tokens,
        PlanSimulator(loaded),
        MemoryFits(loaded),
    )
    caps = Table(
        title=f"capacity at the SLO (TTFT p99 {(fleet.slo.ttft_p99 or 0) * 1000:.0f} ms, "
        f"TPOT p99 {(fleet.slo.tpot_p99 or 0) * 1000:.0f} ms)",
        title_justify="left",
    )
    for column in ("unit", "req/s", "TTFT p99 ms", "TPOT p99 ms"):
        caps.add_column(column, justify="left" if column == "unit" else "right")
    alone = capacity.isolated("llama-8b", GPU, 1)
    rows = [("llama-8b alone (0.9)", alone)]
    for mode in ("time-sliced", "mps"):
        rows.append((f"both, {mode}, 95/5 mix", capacity.shared(GPU, mode, SHARED, MIX, 1)))
    # the same with the MPS factors measured on the H200 (two bf16 7-8B vLLM engines, both
    # decoding: x1.85 per decode step, x1.15 per prefill step) instead of the published A100 case
    h200 = calibration_for("h200")
    measured_mps = cal.model_copy(
        update={
            "name": f"{cal.name}+h200-mps",
            "devices": [GPU],
            "mps_slowdown": h200.mps_slowdown,
            "mps_prefill_slowdown": h200.mps_prefill_slowdown,
        }
    )
    with_h200_mps = CapacityModel(
        loaded,
        fleet.slo,
        traffic.input_tokens,
        traffic.output_tokens,
        PlanSimulator(loaded, calibrations=(measured_mps,)),
        MemoryFits(loaded),
    )
    rows.append(
        (
            "both, MPS with the H200's measured factors, 95/5 mix",
            with_h200_mps.shared(GPU, "mps", SHARED, MIX, 1),
        )
    )
    for label, cap in rows:
        caps.add_row(
            label,
            f"{cap.rps:.2f}",
            f"{cap.ttft_p99_ms or 0:.0f}",
            f"{cap.tpot_p99_ms or 0:.1f}",
        )
    console = Console(width=140)
    console.print(steps)
    console.print(caps)


if __name__ == "__main__":
    main()
