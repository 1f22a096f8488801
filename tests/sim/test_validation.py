"""The validation set's data file and its replay."""

from __future__ import annotations

import pytest

from modelyard.sim.validation import case_calibration, load_validation_set, replay


def test_validation_set_is_broad_and_split_by_source() -> None:
    validation = load_validation_set()
    cases = validation.cases
    assert len(cases) >= 30
    publishers = {s.publisher.split(" (")[0] for s in validation.sources.values()}
    assert len(publishers) >= 4, publishers
    assert len({c.gpu for c in cases}) >= 3
    for which in ("fit", "held-out"):
        assert validation.split(which)  # type: ignore[arg-type]
    assert len(validation.split("fit")) + len(validation.split("held-out")) == len(cases)
    for case in cases:
        figures = case.measured.model_dump(exclude_none=True)
        assert figures, case.id
        assert case.quote and case.url.startswith("https://")
        assert case.source in validation.sources
    used = {c.source for c in cases}
    assert used == set(validation.sources)  # no source without a case


def test_ids_are_unique() -> None:
    ids = [c.id for c in load_validation_set().cases]
    assert len(ids) == len(set(ids))


def test_replay_compares_each_published_figure() -> None:
    case = next(c for c in load_validation_set().cases if c.id == "vllm-ci-9523-latency-llama8b")
    done = replay(case)
    assert [c.metric for c in done.comparisons] == ["batch_latency_ms"]
    assert done.calibration == "vllm-v0.6-ampere"
    (comparison,) = done.comparisons
    assert comparison.published == pytest.approx(1579.34)
    assert comparison.simulated > 0 and comparison.error == pytest.approx(
        comparison.simulated / comparison.published - 1
    )


def test_in_process_cases_have_no_request_path() -> None:
    case = next(c for c in load_validation_set().cases if not c.server)
    calibration = case_calibration(case)
    assert calibration.request_latency_ms == 0 and calibration.frontend_ms_per_request == 0
