"""Closed-loop and offline load, the request path, and chained spans against per-step runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from modelyard.fleet import LoadedFleet, load_fleet, single_model_fleet
from modelyard.sim.errors import SimError
from modelyard.sim.load import SharedFrontEnd
from modelyard.sim.perf import calibration_for
from modelyard.sim.run import SimOptions, simulate, simulate_levels
from modelyard.workload import LengthDist


def _llama(gpu: str = "h100-sxm") -> LoadedFleet:
    return single_model_fleet("llama-3.1-8b", gpu, max_model_len=4096)


def _options(**kw: object) -> SimOptions:
    base = SimOptions(
        requests=120,
        input_tokens=LengthDist(mean=512),
        output_tokens=LengthDist(mean=64),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _path(
    latency_ms: float, frontend_ms: float, gpu: str = "h100-sxm", queue: str = "fifo"
) -> SimOptions:
    cal = calibration_for(gpu).model_copy(
        update={
            "request_latency_ms": latency_ms,
            "frontend_ms_per_request": frontend_ms,
            "frontend_queue": queue,
        }
    )
    return _options(calibrations=(cal,))


def test_closed_loop_keeps_n_requests_in_flight() -> None:
    """Little's law for a closed loop without think time: users = throughput x latency."""
    for users in (1, 4, 16):
        result = simulate(_llama(), _options(concurrency=users, requests=400))
        model = result.models[0]
        in_flight = model.throughput_rps * model.e2e_ms["mean"] / 1000
        assert in_flight == pytest.approx(users, rel=0.05), users
        assert result.load == {"kind": "closed", "concurrency": users}


def test_one_user_sends_one_request_at_a_time() -> None:
    result = simulate(_llama(), replace(_path(0, 0), concurrency=1, requests=30))
    model = result.models[0]
    # back to back: the run lasts exactly as long as its requests, one after another
    assert result.duration_s * 1000 == pytest.approx(model.e2e_ms["mean"] * 30, rel=1e-9)
    assert model.queue_ms["p99"] == pytest.approx(0.0, abs=1e-9)


def test_more_users_more_throughput_and_latency() -> None:
    results = simulate_levels(_llama(), _options(requests=300), concurrencies=[1, 8, 32])
    tps = [r.models[0].output_tokens_per_s for r in results]
    tpot = [r.models[0].tpot_ms["p50"] for r in results]
    assert tps[0] < tps[1] < tps[2]
    assert tpot[0] < tpot[1] < tpot[2]


def test_offline_everything_arrives_at_zero() -> None:
    result = simulate(_llama(), _options(offline=True, requests=600))
    model = result.models[0]
    assert result.load == {"kind": "offline"}
    assert model.completed == 600
    # every request's E2E counts from t=0, so the slowest one lasts the whole run
    assert model.e2e_ms["p99"] <= result.duration_s * 1000 + 1e-6
    assert model.e2e_ms["p99"] > 0.95 * result.duration_s * 1000
    # and it is the most output a GPU gives: more than any closed loop of a few users
    closed = simulate(_llama(), _options(concurrency=8, requests=600)).models[0]
    assert model.output_tokens_per_s > closed.output_tokens_per_s


def test_request_latency_adds_to_ttft_not_tpot() -> None:
    base = simulate(_llama(), replace(_path(0, 0), concurrency=1)).models[0]
    slow = simulate(_llama(), replace(_path(50, 0), concurrency=1)).models[0]
    assert slow.ttft_ms["p50"] - base.ttft_ms["p50"] == pytest.approx(50.0, abs=1e-6)
    assert slow.tpot_ms["p50"] == pytest.approx(base.tpot_ms["p50"], rel=1e-12)


def test_front_end_is_a_queue_under_a_burst() -> None:
    """An API server taking 20 ms per request serves a burst of 200 one after another."""
    result = simulate(_llama(), replace(_path(0, 20), offline=True, requests=200))
    model = result.models[0]
    assert result.duration_s >= 200 * 0.020
    assert model.throughput_rps <= 50.0 + 1e-6
    # at one request per second the same front end adds exactly its 20 ms
    quiet = simulate(_llama(), replace(_path(0, 20), rate=1.0, arrival="constant")).models[0]
    free = simulate(_llama(), replace(_path(0, 0), rate=1.0, arrival="constant")).models[0]
    assert quiet.ttft_ms["p50"] - free.ttft_ms["p50"] == pytest.approx(20.0, abs=1e-6)


def test_shared_front_end_keeps_a_burst_together() -> None:
    """Processor sharing: a burst of 200 at 20 ms each is ingested together, so no request
    reaches the engine before all 4 s of front-end work are done, and the engine's work
    follows it instead of overlapping it (as vLLM's bursts on the H200 and GPUStack's A100
    show); one at a time (FIFO) the median request is through in about half that."""
    burst = {"offline": True, "requests": 200}
    shared = simulate(_llama(), replace(_path(0, 20, queue="processor-sharing"), **burst))
    fifo = simulate(_llama(), replace(_path(0, 20), **burst))
    engine_alone = simulate(_llama(), replace(_path(0, 0), **burst))
    assert shared.models[0].ttft_ms["p50"] >= 200 * 20.0 - 1e-6
    assert fifo.models[0].ttft_ms["p50"] < 0.75 * 200 * 20.0
    for result in (shared, fifo):
        assert result.models[0].completed == 200
        assert result.duration_s >= 200 * 0.020
    assert shared.duration_s == pytest.approx(4.0 + engine_alone.duration_s, rel=0.02)
    assert fifo.duration_s < shared.duration_s


def test_shared_front_end_alone_is_the_fifo_one() -> None:
    """With one request inside at a time the two disciplines are the same: exactly 20 ms more
    TTFT, whatever the engine does."""
    for load in ({"rate": 1.0, "arrival": "constant"}, {"concurrency": 1, "requests": 40}):
        shared = simulate(_llama(), replace(_path(0, 20, queue="processor-sharing"), **load))
        fifo = simulate(_llama(), replace(_path(0, 20), **load))
        free = simulate(_llama(), replace(_path(0, 0), **load))
        for name in ("ttft_ms", "tpot_ms", "e2e_ms"):
            assert getattr(shared.models[0], name) == pytest.approx(
                getattr(fifo.models[0], name), rel=1e-9
            ), (load, name)
        added = shared.models[0].ttft_ms["p50"] - free.models[0].ttft_ms["p50"]
        assert added == pytest.approx(20.0, abs=1e-6)


def test_shared_front_end_state() -> None:
    """The front end's own arithmetic: A (2 s of work) alone for 1 s, then B joins; both at
    half speed, A is through at 3 s, then B alone at 4 s (4 s of work in 4 s, in order)."""
    front = SharedFrontEnd(2.0)
    front.enter(0.0, 0.0, 7)
    assert front.next_done() == pytest.approx(2.0)
    front.enter(1.0, 1.0, 8)
    assert front.next_done() == pytest.approx(3.0)
    assert front.leave(3.0) == (0.0, 7)
    assert front.next_done() == pytest.approx(4.0)
    assert front.leave(4.0) == (1.0, 8)
    assert front.count == 0 and front.next_done() == math.inf
    # a group that entered together leaves together
    for index in range(3):
        front.enter(10.0, 10.0, index)
    done = front.next_done()
    assert done == pytest.approx(16.0)
    assert [front.leave(done)[1] for _ in range(3)] == [0, 1, 2]


def test_shared_front_ends_per_replica(write_fleet: Callable[[str], Path]) -> None:
    """Two replicas, each with its own front end: a burst splits between them and is through
    in half the time one front end would take."""
    fleet = load_fleet(
        write_fleet(
            "name: replicas\nmodels:\n"
            "  llama: {catalog: llama-3.1-8b, engine: sim, gpu: h100-sxm, max_model_len: 4096,"
            " replicas: 2}\n"
        )
    )
    shared = simulate(
        fleet, replace(_path(0, 20, queue="processor-sharing"), offline=True, requests=200)
    )
    model = shared.models[0]
    assert model.completed == 200
    assert 100 * 20.0 - 1e-6 <= model.ttft_ms["p50"] < 200 * 20.0


@pytest.mark.parametrize("placement", ["isolated", "shared"])
@pytest.mark.parametrize(
    "load",
    [{"concurrency": 6}, {"offline": True}, {"rate": 3.0}],
    ids=["closed", "offline", "open"],
)
def test_chained_spans_equal_per_step(placement: str, load: dict[str, object]) -> None:
    """Chaining decode steps into spans (and cutting them when something unforeseen happens,
    as a closed-loop arrival on the other model of a shared GPU) changes no figure."""
    loaded = load_fleet(Path(__file__).parents[2] / "examples" / "fleet.yaml")
    options = _options(
        placement=placement,
        gpu="a100-80gb",
        requests=150,
        mix={"llama-8b": 1, "mistral-7b": 1},
        input_tokens=LengthDist(kind="lognormal", mean=300, std=200),
        output_tokens=LengthDist(kind="lognormal", mean=80, std=60),
        **load,
    )
    chained = simulate(loaded, options)
    stepped = simulate(loaded, replace(options, per_step=True))
    for a, b in zip(chained.models, stepped.models, strict=True):
        for metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
            for key, value in getattr(a, metric).items():
                assert value == pytest.approx(getattr(b, metric)[key], rel=1e-9, abs=1e-9)
        assert a.preemptions == b.preemptions
    assert chained.duration_s == pytest.approx(stepped.duration_s, rel=1e-12)


def test_load_options_conflict(write_fleet: Callable[[str], Path]) -> None:
    with pytest.raises(SimError, match="not both"):
        simulate(_llama(), _options(offline=True, concurrency=2))
    with pytest.raises(SimError, match="at least 1"):
        simulate(_llama(), _options(concurrency=0))
