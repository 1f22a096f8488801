"""plan/simulator.py: the planner's one door to the simulator builds only validated
one-device fleets, carries the sharing mode, and simulates MIG slices as small GPUs."""

from __future__ import annotations

import pytest

from modelyard.catalog.mig import mig_gpu
from modelyard.fleet import load_fleet
from modelyard.plan.simulator import PlanSimulator, SimDevice, SimEngine, SimLoad
from modelyard.sim.perf import calibration_for
from tests.plan.helpers import EXAMPLE


def test_a_shared_device_keeps_its_sharing_mode_and_fractions() -> None:
    loaded = load_fleet(EXAMPLE)
    simulator = PlanSimulator(loaded)
    spec = loaded.catalog.gpu("a10g")
    device = SimDevice(
        "a10g",
        "mps",
        (SimEngine("llama-8b", 0.5, "a10g", spec), SimEngine("mistral-7b", 0.35, "a10g", spec)),
    )
    fleet, _ = simulator._fleet(device)
    (group,) = fleet.fleet.shared_groups()
    assert group.sharing == "mps" and group.memory_fractions == {
        "llama-8b": 0.5,
        "mistral-7b": 0.35,
    }
    assert fleet.fleet.models["llama-8b"].quant == "awq-w4-g128"  # the fleet's own settings
    assert fleet.fleet.routes == []
    assert simulator._fleet(device)[0] is fleet  # built once per device
    latencies = simulator.latencies(
        device, SimLoad(1.0, {"llama-8b": 0.9, "mistral-7b": 0.1}, 512, 64)
    )
    assert {m.model for m in latencies} == {"llama-8b", "mistral-7b"}
    assert all(m.completed == m.requests for m in latencies)
    assert simulator.simulations == 1


def test_a_mig_slice_is_simulated_as_a_small_gpu_with_its_parents_calibration() -> None:
    loaded = load_fleet(EXAMPLE)
    simulator = PlanSimulator(loaded)
    parent = loaded.catalog.gpu("h100-sxm")
    engine = SimEngine("llama-8b", 0.9, "h100-sxm/3g.40gb", mig_gpu(parent, "3g.40gb"))
    fleet, calibrations = simulator._fleet(SimDevice("h100-sxm", "mig", (engine,)))
    assert fleet.catalog.gpus["h100-sxm/3g.40gb"].bf16_tflops == parent.bf16_tflops * 3 / 7
    assert "h100-sxm/3g.40gb" not in loaded.catalog.gpus  # the fleet's own catalog is untouched
    assert calibrations[-1].devices == ["h100-sxm/3g.40gb"]
    assert calibrations[-1].name == calibration_for("h100-sxm").name  # the one H100s use
    assert calibrations[-1].measured_on == []  # applied to the slice, not measured there
    slice_load = SimLoad(2.0, {"llama-8b": 1.0}, 512, 64)
    whole = SimEngine("llama-8b", 0.9, "h100-sxm", parent)
    on_slice = simulator.latencies(SimDevice("h100-sxm", "mig", (engine,)), slice_load)[0]
    on_whole = simulator.latencies(SimDevice("h100-sxm", "isolated", (whole,)), slice_load)[0]
    assert on_slice.tpot_p99_ms > on_whole.tpot_p99_ms  # 4/8 of the bandwidth


def test_simulations_record_their_calibration_and_band() -> None:
    loaded = load_fleet(EXAMPLE)
    simulator = PlanSimulator(loaded)
    assert simulator.band == 0.0 and not simulator.may_flip(100.0, 101.0)
    spec = loaded.catalog.gpu("a10g")
    device = SimDevice("a10g", "isolated", (SimEngine("llama-8b", 0.9, "a10g", spec),))
    latencies = simulator.latencies(device, SimLoad(1.0, {"llama-8b": 1.0}, 512, 64))
    assert simulator.accuracy == {}  # a probe is not an answer
    simulator.record(latencies)
    accuracy = simulator.accuracy["llama-8b@a10g"]
    assert accuracy.calibration == calibration_for("a10g").name and not accuracy.measured_on_gpu
    assert simulator.band == accuracy.band == pytest.approx(0.25)
    (note,) = simulator.accuracy_notes()
    assert f"calibration {accuracy.calibration}" in note and "not measured there" in note
    assert "+-25%" in note
    # costs scale as 1 / capacity: within +-25%, $100 may really be $133 and $166 be $133
    assert simulator.may_flip(100.0, 166.0) and not simulator.may_flip(100.0, 168.0)


def test_a_plan_warns_when_its_ranking_is_inside_the_band() -> None:
    from modelyard.plan.cost import Option
    from modelyard.plan.planner import _ranking_warning

    loaded = load_fleet(EXAMPLE)
    simulator = PlanSimulator(loaded)
    spec = loaded.catalog.gpu("l4")
    device = SimDevice("l4", "isolated", (SimEngine("llama-8b", 0.9, "l4", spec),))
    simulator.record(simulator.latencies(device, SimLoad(0.5, {"llama-8b": 1.0}, 512, 64)))

    def option(name: str, usd: float) -> Option:
        return Option(name, "isolated", [], monthly_usd=usd)

    best, near, far = option("isolated l4", 1763.0), option("a10g", 2203.0), option("x", 9e3)
    (warning,) = _ranking_warning(simulator, [far, near, best], best)
    assert warning.startswith("the ranking may flip: isolated l4 ($1,763/month) and a10g")
    assert "+-25%" in warning
    assert _ranking_warning(simulator, [far, best], best) == []
    assert _ranking_warning(PlanSimulator(loaded), [near, best], best) == []  # nothing simulated


def test_the_band_is_the_widest_of_the_simulations_the_plan_used() -> None:
    loaded = load_fleet(EXAMPLE)
    shipped = calibration_for("a10g")
    host_bound = shipped.model_copy(
        update={"name": "host-bound", "host_bound_batch": 8, "host_bound_error_band": 0.9}
    )
    simulator = PlanSimulator(loaded, calibrations=(host_bound,))
    spec = loaded.catalog.gpu("a10g")
    device = SimDevice("a10g", "isolated", (SimEngine("llama-8b", 0.9, "a10g", spec),))
    quiet = simulator.latencies(device, SimLoad(0.05, {"llama-8b": 1.0}, 128, 32))
    busy = simulator.latencies(device, SimLoad(20.0, {"llama-8b": 1.0}, 128, 32))  # 8+ a step
    assert busy[0].accuracy is not None and busy[0].accuracy.band == 0.9
    simulator.record(quiet)
    assert simulator.band == shipped.unmeasured_error_band  # the busy probe was not used
    simulator.record(busy)
    simulator.record(quiet)
    assert simulator.band == 0.9  # a later, quieter answer does not narrow it
    assert "from 8 on, TPOT follows the host's CPU" in " ".join(
        simulator.accuracy["llama-8b@a10g"].notes
    )


def test_the_ranking_warning_weighs_each_option_by_its_own_band() -> None:
    """An L4 option simulated within +-10% is not flagged against a MIG option on H200
    slices simulated within +-10% and 30% dearer, though the whole H200's runs carry +-105%;
    against that whole H200 at the same price it is: each option's own band decides."""
    from modelyard.plan.cost import Option
    from modelyard.plan.planner import _ranking_warning
    from modelyard.plan.units import EnginePlan, UnitPlan
    from modelyard.sim.result import Accuracy

    loaded = load_fleet(EXAMPLE)
    simulator = PlanSimulator(loaded)
    simulator.accuracy["llama-8b@l4"] = Accuracy("c", "vllm 0.32.0", "l4", False, 0.1)
    simulator.accuracy["llama-8b@h200/3g.71gb"] = Accuracy("c", "vllm", "h200/3g.71gb", False, 0.1)
    simulator.accuracy["llama-8b@h200"] = Accuracy("c", "vllm 0.32.0", "h200", True, 1.05)

    def option(name: str, gpu: str, usd: float) -> Option:
        unit = UnitPlan(name, gpu, "isolated", [EnginePlan("llama-8b", 0.9)], 1, 1, {}, {}, "")
        return Option(name, "isolated", [unit], monthly_usd=usd)

    l4, mig = option("isolated l4", "l4", 1000.0), option("mig", "h200/3g.71gb", 1300.0)
    whole = option("isolated h200", "h200", 1300.0)
    assert simulator.band_of([("llama-8b", "h200")]) == 1.05  # its slices are not wider
    assert _ranking_warning(simulator, [mig, l4], l4) == []  # 1000 / 0.9 < 1300 / 1.1
    (warning,) = _ranking_warning(simulator, [whole, l4], l4)
    assert "within their simulated figures' +-10% and +-105%" in warning
