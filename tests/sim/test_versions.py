from __future__ import annotations

import pytest

from modelyard.sim.calibration import Calibration, choose_calibration
from modelyard.sim.errors import SimError
from modelyard.sim.perf import calibration_for
from modelyard.sim.versions import (
    CURRENT_VERSIONS,
    parse_version,
    resolve_engine_version,
    version_in,
)


@pytest.mark.parametrize(
    ("version", "spec", "inside"),
    [
        ("0.6.3", ">=0.6,<0.8", True),
        ("0.8.0", ">=0.6,<0.8", False),
        ("0.5.4", ">=0.6,<0.8", False),
        ("0.11.0", ">=0.8", True),
        ("0.6.3.post1", "0.6.*", True),
        ("0.7", "0.6.*", False),
        ("1.2.0rc1", "*", True),
        ("1.0", "==1", True),
    ],
)
def test_version_ranges(version: str, spec: str, inside: bool) -> None:
    assert version_in(version, spec) is inside


def test_parse_version_ignores_suffixes() -> None:
    assert parse_version("0.6.3.post1") == (0, 6, 3)
    assert parse_version("1.2.0rc1") == (1, 2, 0)
    with pytest.raises(SimError, match="not a version"):
        parse_version("latest")


def test_engine_version_names_an_engine_or_a_release() -> None:
    assert str(resolve_engine_version("vllm", "0.6.3")) == "vllm 0.6.3"
    assert str(resolve_engine_version("sim", "sglang 0.3.0")) == "sglang 0.3.0"
    current = resolve_engine_version("sim", None)
    assert (current.engine, current.version, current.stated) == (
        "vllm",
        CURRENT_VERSIONS["vllm"],
        False,
    )
    with pytest.raises(SimError, match="no simulator profile for 'tgi'"):
        resolve_engine_version("vllm", "tgi 2.0")
    stand_in = resolve_engine_version("tgi", None)  # no TGI profile: the current vLLM's
    assert (str(stand_in), stand_in.stated, stand_in.stands_in_for) == (
        f"vllm {CURRENT_VERSIONS['vllm']}",
        False,
        "tgi",
    )


def test_calibrations_follow_engine_and_version() -> None:
    assert calibration_for("h100-sxm", engine="vllm", version="0.6.3").name == "vllm-v0.6-hopper"
    assert calibration_for("h100-sxm", engine="vllm", version="0.11.0").name == "vllm-v0.8-hopper"
    assert calibration_for("h100-sxm", engine="vllm", version="0.12").name == "vllm-v1-hopper"
    assert calibration_for("h100-sxm").name == "vllm-v1-hopper"  # the current vLLM
    assert calibration_for("a100-80gb", engine="vllm", version="0.6.2").scheduler == "prefill-first"
    assert calibration_for("l4", engine="vllm").name == "vllm-v1-default"
    assert calibration_for("h200", engine="tensorrt-llm", version="1.0").admission == "reserve-full"
    assert calibration_for("h200", engine="harness", version="1").name == "h200-measured"


def test_measured_and_unmeasured_bands() -> None:
    on = choose_calibration("h100-sxm", engine="vllm", version="0.11.0")
    assert on.measured and on.calibration.name == "vllm-v0.8-hopper"
    # the H200 has its own profile, fitted to real vLLM 0.24 on the lent machine
    h200 = choose_calibration("h200", engine="vllm", version="0.11.0")
    assert h200.measured and h200.calibration.name == "vllm-v1-h200"
    nowhere = choose_calibration("l4")
    assert not nowhere.measured and nowhere.band == nowhere.calibration.unmeasured_error_band
    assert nowhere.band > on.band


def test_user_calibration_wins_for_its_engine_only() -> None:
    mine = calibration_for("h100-sxm").model_copy(update={"name": "mine", "devices": ["h100-sxm"]})
    assert calibration_for("h100-sxm", [mine]).name == "mine"
    assert calibration_for("h100-sxm", [mine], engine="sglang").name == "sglang-hopper"


def _banded(device: str, version: str) -> Calibration:
    """The built-in calibration for vLLM `version` on `device`, as a user file whose measured
    and unmeasured bands differ (the shipped ones may be equal, which would hide a widening)."""
    shipped = calibration_for(device, engine="vllm", version=version)
    return shipped.model_copy(
        update={"name": f"banded-{shipped.name}", "error_band": 0.1, "unmeasured_error_band": 0.3}
    )


def _accuracy(entry: dict[str, str], calibrations: tuple[Calibration, ...]) -> tuple[float, str]:
    from modelyard.sim.devices import one_model_fleet
    from modelyard.sim.run import SimOptions, simulate

    options = SimOptions(requests=20, concurrency=1, calibrations=calibrations)
    found = simulate(one_model_fleet(entry, "t"), options).models[0].accuracy
    assert found is not None and found.measured_on_gpu
    return found.band, " ".join(found.notes)


def test_an_unmeasured_request_path_widens_the_band() -> None:
    mine = (_banded("h100-sxm", "0.11.0"), _banded("h100-sxm", "0.6.3"))

    def accuracy(version: str) -> tuple[float, str]:
        entry = {"catalog": "llama-3.1-8b", "gpu": "h100-sxm", "engine_version": version}
        return _accuracy(entry, mine)

    v1_band, v1_notes = accuracy("0.11.0")
    v0_band, v0_notes = accuracy("0.6.3")  # its request path is copied, not measured
    assert "request path" in v0_notes and "request path" not in v1_notes
    assert (v1_band, v0_band) == (0.1, 0.3)


def test_an_engine_without_a_profile_runs_as_the_current_vllm_and_says_so() -> None:
    mine = (_banded("a100-80gb", CURRENT_VERSIONS["vllm"]),)

    def accuracy(engine: str) -> tuple[float, str]:
        return _accuracy({"catalog": "llama-3.1-8b", "gpu": "a100-80gb", "engine": engine}, mine)

    vllm_band, vllm_notes = accuracy("vllm")
    tgi_band, tgi_notes = accuracy("tgi")
    assert "no tgi profile: simulated as vllm" in tgi_notes and "profile" not in vllm_notes
    assert (vllm_band, tgi_band) == (0.1, 0.3)


def test_a_run_that_reaches_the_host_bound_batch_carries_its_band_and_says_so() -> None:
    from modelyard.sim.devices import one_model_fleet
    from modelyard.sim.run import SimOptions, simulate

    host_bound = _banded("h200", CURRENT_VERSIONS["vllm"]).model_copy(
        update={"host_bound_batch": 64, "host_bound_error_band": 0.9}
    )
    fleet = one_model_fleet({"catalog": "llama-3.1-8b", "gpu": "h200"}, "t")

    def run(users: int) -> tuple[int, float, str]:
        options = SimOptions(
            requests=2 * users, concurrency=users, calibrations=(host_bound,), seed=3
        )
        model = simulate(fleet, options).models[0]
        assert model.accuracy is not None
        return model.batch_max, model.accuracy.band, " ".join(model.accuracy.notes)

    below, at = run(32), run(64)
    assert below[0] <= 32 and below[1] == 0.1 and "host's CPU" not in below[2]
    assert at[0] == 64 and at[1] == 0.9
    assert "steps of up to 64 sequences: from 64 on, TPOT follows the host's CPU" in at[2]
