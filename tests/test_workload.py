from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.workload import (
    ArrivalProcess,
    LengthDist,
    Workload,
    WorkloadError,
    generate,
)


def test_same_seed_same_requests() -> None:
    workload = Workload(mix={"a": 1, "b": 1})
    one, two = generate(workload, 500, seed=7), generate(workload, 500, seed=7)
    assert np.array_equal(one.arrival_s, two.arrival_s)
    assert np.array_equal(one.target_index, two.target_index)
    assert not np.array_equal(one.arrival_s, generate(workload, 500, seed=8).arrival_s)


@pytest.mark.parametrize(
    ("kind", "burstiness", "cv"),
    [
        ("constant", 1.0, 0.0),
        ("poisson", 1.0, 1.0),
        ("gamma", 0.25, 2.0),
        ("gamma", 4.0, 0.5),
    ],
)
def test_arrival_rate_and_dispersion(kind: str, burstiness: float, cv: float) -> None:
    process = ArrivalProcess(kind, rate=50.0, burstiness=burstiness)  # type: ignore[arg-type]
    gaps = process.gaps(np.random.default_rng(1), 200_000)
    assert 1 / gaps.mean() == pytest.approx(50.0, rel=0.02)
    # coefficient of variation: 0 constant, 1 Poisson, 1/sqrt(shape) for gamma
    assert gaps.std() / gaps.mean() == pytest.approx(cv, abs=0.03)


def test_mix_shares() -> None:
    requests = generate(Workload(mix={"primary": 95, "fallback": 5}), 100_000, seed=3)
    share = np.mean(requests.target_index == requests.targets.index("fallback"))
    assert share == pytest.approx(0.05, abs=0.003)
    assert len(requests.for_target("fallback")) == round(share * 100_000)


@settings(max_examples=50, deadline=None)
@given(
    kind=st.sampled_from(["fixed", "normal", "lognormal", "uniform"]),
    mean=st.integers(min_value=1, max_value=4000),
    seed=st.integers(0, 1000),
)
def test_lengths_are_positive_integers_within_bounds(kind: str, mean: int, seed: int) -> None:
    dist = LengthDist(kind=kind, mean=mean, std=mean / 2, low=1, high=2 * mean)  # type: ignore[arg-type]
    values = dist.sample(np.random.default_rng(seed), 1000)
    assert values.dtype == np.int64
    assert values.min() >= 1 and values.max() <= 2 * mean


def test_lognormal_matches_mean_and_std() -> None:
    values = LengthDist("lognormal", mean=500, std=250).sample(np.random.default_rng(0), 200_000)
    assert values.mean() == pytest.approx(500, rel=0.02)
    assert values.std() == pytest.approx(250, rel=0.03)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ArrivalProcess(rate=0), "arrival rate must be > 0"),
        (lambda: ArrivalProcess(kind="gamma", rate=1, burstiness=0), "burstiness must be > 0"),
        (lambda: LengthDist(kind="uniform", mean=10), "uniform token lengths need a high bound"),
        (lambda: LengthDist(mean=10, low=20, high=5), "bounds reversed"),
        (lambda: Workload(mix={}), "at least one target"),
        (lambda: Workload(mix={"a": -1}), "mix weights"),
    ],
)
def test_bad_workloads(make: object, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        make()  # type: ignore[operator]
