from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.catalog import Catalog
from modelyard.sim.engine import BLOCK_TOKENS, Engine, SimRequest
from modelyard.sim.loop import PRIORITY_ARRIVAL, Event, EventLoop
from modelyard.sim.perf import Hardware, StepModel
from tests.sim.test_perf import CAL


class Recorder:
    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.done: dict[int, float] = {}
        self.token_times: dict[int, list[float]] = {}

    def on_first_token(self, request: SimRequest, time: float) -> None:
        self.first[request.rid] = time
        self.token_times.setdefault(request.rid, []).append(time)

    def on_tokens(self, requests: Iterable[SimRequest], time: float) -> None:
        for request in requests:
            self.token_times.setdefault(request.rid, []).append(time)

    def on_finished(self, request: SimRequest, time: float) -> None:
        assert request.rid not in self.done, "finished twice"
        self.done[request.rid] = time


class CheckedEngine(Engine):
    """Asserts the KV invariant and the O(1) block count at every step boundary."""

    def _start_step(self, now: float) -> list[Event]:
        events = super()._start_step(now)
        step = self.step_index
        brute = sum(-(-(step + r.offset) // BLOCK_TOKENS) for r in self.decoding.values())
        assert self.decode_blocks(step) == brute
        assert brute + sum(r.blocks for r in self.prefilling.values()) <= self.kv_blocks
        return events


def _engine(
    catalog: Catalog,
    kv_blocks: int,
    max_seqs: int,
    budget: int,
    per_token: bool,
    recorder: Recorder,
    async_scheduling: bool = False,
) -> Engine:
    hardware = Hardware.for_gpu("a10g", catalog.gpu("a10g"), "bf16", CAL)
    model = StepModel(
        catalog.model("llama-3.1-8b"), catalog.quant("awq-w4-g128"), hardware, CAL, 2.0
    )
    return CheckedEngine(
        "e",
        model,
        kv_blocks,
        max_seqs,
        budget,
        recorder,
        per_token=per_token,
        async_scheduling=async_scheduling,
    )


def _run(
    catalog: Catalog,
    requests: list[tuple[float, int, int]],
    kv_blocks: int,
    max_seqs: int,
    budget: int,
    per_token: bool = False,
    announce_early: bool = False,
    async_scheduling: bool = False,
) -> tuple[Recorder, Engine, list[SimRequest]]:
    recorder = Recorder()
    engine = _engine(catalog, kv_blocks, max_seqs, budget, per_token, recorder, async_scheduling)
    loop = EventLoop()
    objects = [
        SimRequest(rid=i, arrival=t, prompt_tokens=p, output_tokens=o)
        for i, (t, p, o) in enumerate(requests)
    ]
    arrivals = sorted(objects, key=lambda r: r.arrival)
    position = [0]
    engine.horizon = lambda: (
        arrivals[position[0]].arrival if position[0] < len(arrivals) else math.inf
    )

    def arrive(time: float, request: SimRequest) -> list[Event]:
        position[0] += 1
        return engine.submit(time, request)

    loop.schedule((r.arrival, PRIORITY_ARRIVAL, arrive, r) for r in arrivals)
    if not announce_early:
        loop.run()
    while announce_early and loop.next_time() < math.inf:
        engine.announce()  # as sim serve may: the running step's tokens before it ends
        loop.run(until=loop.next_time())
    return recorder, engine, objects


workloads = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=20, allow_nan=False),
        st.integers(min_value=1, max_value=600),
        st.integers(min_value=1, max_value=200),
    ),
    min_size=1,
    max_size=40,
)
ENGINE_CASES = st.fixed_dictionaries(
    {
        "requests": workloads,
        "kv_blocks": st.integers(min_value=60, max_value=400),
        "max_seqs": st.integers(min_value=1, max_value=16),
        "budget": st.integers(min_value=16, max_value=1024),
    }
)


@settings(max_examples=150, deadline=None)
@given(case=ENGINE_CASES)
def test_engine_invariants(catalog: Catalog, case: dict[str, Any]) -> None:
    recorder, engine, objects = _run(catalog, **case)
    # no request lost, each finished once, after it arrived and after its first token
    assert set(recorder.done) == {r.rid for r in objects}
    for request in objects:
        assert request.arrival <= request.first_scheduled <= recorder.first[request.rid]
        assert recorder.first[request.rid] <= recorder.done[request.rid]
        assert request.generated == request.output_tokens
    # first admissions happen in arrival order (FIFO; preempted requests only go back in front)
    by_arrival = sorted(objects, key=lambda r: (r.arrival, r.rid))
    admitted = [r.first_scheduled for r in by_arrival]
    assert admitted == sorted(admitted)
    assert not engine.decoding and not engine.prefilling and not engine.waiting


@settings(max_examples=100, deadline=None)
@given(case=ENGINE_CASES)
def test_spans_equal_step_by_step(catalog: Catalog, case: dict[str, Any]) -> None:
    """Chaining decode steps into spans must not change any outcome."""
    fast, fast_engine, _ = _run(catalog, **case)
    slow, slow_engine, _ = _run(catalog, **case, per_token=True)
    assert fast.first.keys() == slow.first.keys()
    for rid in fast.done:
        assert fast.first[rid] == pytest.approx(slow.first[rid], rel=1e-9, abs=1e-12)
        assert fast.done[rid] == pytest.approx(slow.done[rid], rel=1e-9, abs=1e-12)
    assert fast_engine.stats.preemptions == slow_engine.stats.preemptions
    assert fast_engine.stats.steps == slow_engine.stats.steps


@settings(max_examples=100, deadline=None)
@given(case=ENGINE_CASES)
def test_spans_equal_step_by_step_with_async_scheduling(
    catalog: Catalog, case: dict[str, Any]
) -> None:
    fast, fast_engine, _ = _run(catalog, **case, async_scheduling=True)
    slow, slow_engine, _ = _run(catalog, **case, per_token=True, async_scheduling=True)
    assert fast.first.keys() == slow.first.keys()
    for rid in fast.done:
        assert fast.first[rid] == pytest.approx(slow.first[rid], rel=1e-9, abs=1e-12)
        assert fast.done[rid] == pytest.approx(slow.done[rid], rel=1e-9, abs=1e-12)
    assert fast_engine.stats.steps == slow_engine.stats.steps


def test_async_scheduling_admits_a_late_request_one_step_later(catalog: Catalog) -> None:
    """A request arriving while a decode step runs: with synchronous scheduling it prefills in
    the next step; with asynchronous scheduling that step's batch was chosen already, so it
    prefills in the one after. An idle engine takes a request at once either way."""
    workload = [(0.0, 64, 200), (0.5, 64, 4)]  # the second arrives mid-decode
    sync, _, _ = _run(catalog, workload, 400, 8, 512, per_token=True)
    late, _, _ = _run(catalog, workload, 400, 8, 512, per_token=True, async_scheduling=True)
    assert late.first[0] == sync.first[0]  # the first arrived at an idle engine
    ticks = sorted(sync.token_times[0])
    after = next(t for t in ticks if t > 0.5)  # the decode step running at 0.5 ends here
    nxt = next(t for t in ticks if t > after)
    assert sync.first[1] == pytest.approx(nxt, rel=1e-9)  # prefilled in the next step
    late_ticks = sorted(late.token_times[0])
    late_after = next(t for t in late_ticks if t > 0.5)
    second = [t for t in late_ticks if t > late_after]
    assert late.first[1] == pytest.approx(second[1], rel=1e-9)  # in the step after next
    assert late.first[1] > sync.first[1]


@pytest.mark.slow  # a long property or a whole sweep: make test runs it
@settings(max_examples=100, deadline=None)
@given(case=ENGINE_CASES)
def test_early_announcement_changes_nothing(catalog: Catalog, case: dict[str, Any]) -> None:
    """Handing a step's tokens out as soon as it starts (sim serve writes large steps early)
    emits the same tokens at the same simulated times, once each, with the same outcome."""
    plain, plain_engine, _ = _run(catalog, **case, per_token=True)
    early, early_engine, _ = _run(catalog, **case, per_token=True, announce_early=True)
    assert early.token_times == plain.token_times
    assert early.first == plain.first
    assert early.done == plain.done
    assert early_engine.stats.preemptions == plain_engine.stats.preemptions
    assert early_engine.stats.steps == plain_engine.stats.steps


def test_per_token_mode_emits_every_token(catalog: Catalog) -> None:
    recorder, _, objects = _run(
        catalog, [(0.0, 100, 20), (0.01, 50, 5)], 400, 8, 512, per_token=True
    )
    for request in objects:
        times = recorder.token_times[request.rid]
        assert len(times) == request.output_tokens
        assert times == sorted(times)
        assert times[-1] == recorder.done[request.rid]


def test_preemption_under_kv_pressure(catalog: Catalog) -> None:
    # 8 requests that each grow to 32 blocks cannot all stay in a 100-block cache
    requests = [(0.0, 256, 256)] * 8
    recorder, engine, objects = _run(catalog, requests, 100, 8, 4096)
    assert engine.stats.preemptions > 0
    assert any(r.preemptions for r in objects)
    assert len(recorder.done) == 8


def test_chunked_prefill_respects_budget(catalog: Catalog) -> None:
    # a 1000-token prompt with a 256-token budget takes four steps before its first token
    recorder, engine, _ = _run(catalog, [(0.0, 1000, 1)], 400, 4, 256)
    assert engine.stats.steps == 4
    assert recorder.done[0] == recorder.first[0]


def test_queueing_when_max_num_seqs_reached(catalog: Catalog) -> None:
    recorder, _, objects = _run(catalog, [(0.0, 16, 50), (0.0, 16, 50)], 400, 1, 512)
    first, second = objects
    assert second.first_scheduled >= recorder.done[first.rid]
