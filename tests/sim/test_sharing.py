"""Sharing modes of a GPU: time-sliced, MPS and MIG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.catalog import Catalog
from modelyard.fleet import load_fleet
from modelyard.sim.calibration import Calibration
from modelyard.sim.errors import SimError
from modelyard.sim.gpu import SharedDevice, choose_mig_profiles, device_sharing
from modelyard.sim.perf import calibration_for
from modelyard.sim.result import Accuracy, SimResult
from modelyard.sim.run import SimOptions, simulate
from modelyard.workload import LengthDist

GROUP = """name: pair
models:
  a: {{catalog: llama-3.1-8b, engine: vllm, max_model_len: 4096}}
  b: {{catalog: mistral-7b-instruct-v0.2, engine: vllm, max_model_len: 4096}}
placement:
  shared:
    - {{gpu: a100-80gb, models: [a, b], sharing: {sharing}{extra}}}
"""


def _tpot(loaded_path: Path, **kw: object) -> float:
    result = simulate(
        load_fleet(loaded_path),
        SimOptions(
            requests=300,
            concurrency=8,
            input_tokens=LengthDist(mean=256),
            output_tokens=LengthDist(mean=128),
            mix={"a": 1, "b": 1},
            **kw,  # type: ignore[arg-type]
        ),
    )
    return result.models[0].tpot_ms["p50"]


def test_sharing_modes_order(write_fleet: Callable[[str], Path]) -> None:
    """Time-slicing costs the most, MPS less, MIG slices never contend (but are smaller)."""
    sliced = _tpot(write_fleet(GROUP.format(sharing="time-sliced", extra="")))
    mps = _tpot(write_fleet(GROUP.format(sharing="mps", extra="")))
    alone = _tpot(write_fleet(GROUP.format(sharing="time-sliced", extra="")), placement="isolated")
    assert alone < mps < sliced


def test_mps_slowdown_is_the_published_decode_penalty() -> None:
    cal = calibration_for("a100-80gb")
    sharing = device_sharing("mps", "a100-80gb", Catalog.load().gpu("a100-80gb"), ["a", "b"], cal)
    # vLLM on an A100-80GB, two processes under MPS: TPOT median +19.5% (gopebble.com)
    assert sharing.slowdown == pytest.approx(0.195)
    assert (
        device_sharing(
            "time-sliced", "a100-80gb", Catalog.load().gpu("a100-80gb"), ["a", "b"], cal
        ).slowdown
        > 0.5
    )


def test_mig_gives_each_member_its_own_slice(write_fleet: Callable[[str], Path]) -> None:
    gpu = Catalog.load().gpu("a100-80gb")
    assert choose_mig_profiles(gpu, ["a", "b"]) == {"a": "3g.40gb", "b": "3g.40gb"}
    cal = calibration_for("a100-80gb")
    sharing = device_sharing("mig", "a100-80gb", gpu, ["a", "b"], cal, {"a": "4g.40gb"})
    assert sharing.slowdown == 0.0
    assert sharing.slices["a"].gpu.memory_bandwidth_gbps == pytest.approx(2039 * 4 / 8)
    assert sharing.slices["b"].profile == "3g.40gb"
    with pytest.raises(SimError, match="do not fit"):
        device_sharing("mig", "a100-80gb", gpu, ["a", "b"], cal, {"a": "7g.80gb"})
    path = write_fleet(GROUP.format(sharing="mig", extra=""))
    result = simulate(load_fleet(path), SimOptions(requests=50, rate=1.0, mix={"a": 1, "b": 1}))
    assert result.gpus == {"a100-80gb": 1}
    accuracy = result.models[0].accuracy
    assert accuracy is not None and accuracy.gpu == "a100-80gb/3g.40gb"
    assert not accuracy.measured_on_gpu and "MIG slice" in " ".join(accuracy.notes)
    # a slice is a smaller GPU: slower than the whole one alone, however busy the other is
    whole = _tpot(path, placement="isolated")
    assert _tpot(path) > whole


def test_sharing_override_and_mps_compute_share(write_fleet: Callable[[str], Path]) -> None:
    path = write_fleet(GROUP.format(sharing="time-sliced", extra=""))
    assert _tpot(path, sharing="mps") < _tpot(path)
    with pytest.raises(SimError, match="compute share"):
        device_sharing(
            "mps",
            "a100-80gb",
            Catalog.load().gpu("a100-80gb"),
            ["a"],
            calibration_for("a100-80gb"),
            mps_compute_share=0,
        )


H200_GROUP = GROUP.replace("a100-80gb", "h200")


def _accuracy(path: Path, **kw: object) -> Accuracy:
    """The first model's accuracy in a short open-loop run of the pair."""
    options = SimOptions(requests=50, rate=1.0, mix={"a": 1, "b": 1}, **kw)  # type: ignore[arg-type]
    accuracy = simulate(load_fleet(path), options).models[0].accuracy
    assert accuracy is not None
    return accuracy


def _closed_pair(path: Path, calibration: Calibration) -> SimResult:
    """The pair at 16 users, 50/50, 512 in / 256 out, on `calibration`."""
    return simulate(
        load_fleet(path),
        SimOptions(
            requests=200,
            concurrency=16,
            input_tokens=LengthDist(mean=512),
            output_tokens=LengthDist(mean=256),
            mix={"a": 1, "b": 1},
            calibrations=(calibration,),
        ),
    )


def test_shared_device_slows_prefill_steps_by_their_own_factor() -> None:
    device = SharedDevice("h200", slowdown=0.85, prefill_slowdown=0.15)
    one, other = object(), object()
    device.busy = {id(one), id(other)}
    assert device.factor(one) == pytest.approx(1.85)  # type: ignore[arg-type]
    assert device.factor(one, prefill=True) == pytest.approx(1.15)  # type: ignore[arg-type]
    # without a prefill figure, every step has the one factor
    sliced = SharedDevice("h200", slowdown=1.15)
    sliced.busy = {id(one), id(other)}
    assert sliced.factor(one, prefill=True) == sliced.factor(one)  # type: ignore[arg-type]


def test_mps_on_the_h200_is_measured_and_spares_prefill(
    write_fleet: Callable[[str], Path],
) -> None:
    """The H200 profile's MPS factors were fitted to two real vLLM engines under MPS: its figures
    carry the measured band and no published-case note, and a lighter prefill factor gives a
    lower TTFT than the decode factor applied to every step."""
    path = write_fleet(H200_GROUP.format(sharing="mps", extra=""))
    cal = calibration_for("h200")
    assert cal.mps_measured_on == ["h200"] and cal.mps_prefill_slowdown is not None
    assert cal.mps_prefill_slowdown < cal.mps_slowdown

    fitted = _closed_pair(path, cal)
    accuracy = fitted.models[0].accuracy
    assert accuracy is not None and accuracy.measured_on_gpu
    assert not any("published case" in n for n in accuracy.notes)
    limited = _accuracy(path, mps_compute_share=0.6)
    assert not limited.measured_on_gpu
    assert any("no SM limit" in n for n in limited.notes)
    uniform = _closed_pair(
        path, cal.model_copy(update={"mps_prefill_slowdown": None, "name": "uniform"})
    )
    assert fitted.models[0].ttft_ms["p50"] < uniform.models[0].ttft_ms["p50"]
    # elsewhere the MPS penalty is the published A100 case, and says so
    a100 = _accuracy(write_fleet(GROUP.format(sharing="mps", extra="")))
    assert any("published case" in n for n in a100.notes)


def test_time_slicing_on_the_h200_spares_prefill(write_fleet: Callable[[str], Path]) -> None:
    """Time-sliced on the H200, a step that prefills has its own, measured factor (lower than a
    decode step's): the pair's TTFT is lower with it than with the decode factor on every
    step."""
    path = write_fleet(H200_GROUP.format(sharing="time-sliced", extra=""))
    cal = calibration_for("h200")
    assert cal.contention_prefill_slowdown is not None
    assert cal.contention_prefill_slowdown < cal.contention_slowdown
    sharing = device_sharing("time-sliced", "h200", Catalog.load().gpu("h200"), ["a", "b"], cal)
    assert sharing.prefill_slowdown == cal.contention_prefill_slowdown

    measured = _closed_pair(path, cal)
    uniform = _closed_pair(
        path, cal.model_copy(update={"contention_prefill_slowdown": None, "name": "uniform"})
    )
    assert measured.models[0].ttft_ms["p50"] < uniform.models[0].ttft_ms["p50"]
