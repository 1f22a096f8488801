"""The breaker's documented behaviour as stated invariants, checked by hypothesis over random
sequences of requests, outcomes, health-check failures and time (not against a transcription
of the breaker):

- never more than `half_open_probes` requests in flight that were let through while half-open;
- never lets a request through before `open_for` has passed since it opened;
- N counted failures in a row (no success between) always open it;
- a success closes it; outcomes that do not count neither trip nor heal it;
- `admits` says what `allow` would do, and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from modelyard.gateway.breaker import Breaker, State


def test_full_cycle() -> None:
    breaker = Breaker(consecutive_failures=3, open_for_s=30, half_open_probes=1)
    for t in range(2):
        breaker.on_failure(t)
    assert breaker.allow(2.0)
    breaker.on_failure(2.0)
    assert breaker.current(2.0) is State.OPEN and not breaker.allow(10.0)
    assert breaker.current(32.0) is State.HALF_OPEN
    probe = breaker.allow(32.0)
    assert probe  # the one probe
    assert not breaker.allow(32.1)  # a second concurrent request is refused
    breaker.on_success(33.0, probe)
    assert breaker.current(33.0) is State.CLOSED and breaker.allow(33.0)


def test_failed_probe_reopens_and_restarts_timer() -> None:
    breaker = Breaker(consecutive_failures=1, open_for_s=10, half_open_probes=1)
    breaker.on_failure(0.0)
    probe = breaker.allow(10.0)
    breaker.on_failure(10.5, probe)
    assert breaker.current(15.0) is State.OPEN
    assert breaker.current(20.5) is State.HALF_OPEN


def test_a_probe_from_an_earlier_half_open_period_frees_no_slot_of_this_one() -> None:
    breaker = Breaker(consecutive_failures=1, open_for_s=10, half_open_probes=1)
    breaker.on_failure(0.0)
    old = breaker.allow(10.0)
    breaker.on_failure(11.0)  # a health check fails while the probe is out: open again
    current = breaker.allow(21.0)
    assert current and not breaker.allow(21.0)
    breaker.on_neutral(22.0, old)  # the old probe comes back with a 4xx
    assert not breaker.allow(22.0)  # still one probe out: the current one


@dataclass
class Request:
    permit: object
    probe_of: int | None  # the half-open period it was let through in, if any


class BreakerInvariants(RuleBasedStateMachine):
    @initialize(n=st.integers(1, 3), open_for=st.floats(0.1, 60), probes=st.integers(1, 2))
    def setup(self, n: int, open_for: float, probes: int) -> None:
        self.n, self.open_for, self.probes = n, open_for, probes
        self.breaker = Breaker(n, open_for, probes)
        self.now = 0.0
        self.out: list[Request] = []
        self.period = 0  # half-open periods seen so far
        self.opened_at: float | None = None
        self.run = 0  # counted failures since the last success, while not open
        self.last_state = State.CLOSED

    def _observe(self) -> State:
        state = self.breaker.current(self.now)
        if state is State.HALF_OPEN and self.last_state is State.OPEN:
            self.period += 1
        if state is State.OPEN and self.last_state is not State.OPEN:
            self.opened_at = self.now
        if state is State.CLOSED:
            self.opened_at = None
        self.last_state = state
        return state

    @rule(times_open_for=st.sampled_from([0.5, 0.999, 1.0, 2.5]))
    def wait(self, times_open_for: float) -> None:
        self.now += times_open_for * self.open_for
        self._observe()

    @rule()
    def request(self) -> None:
        state = self._observe()
        admits = self.breaker.admits(self.now)
        assert self.breaker.admits(self.now) == admits  # asking changes nothing
        permit = self.breaker.allow(self.now)
        assert bool(permit) == admits
        if self.opened_at is not None and self.now - self.opened_at < self.open_for:
            assert not permit  # never before open_for
        if permit:
            self.out.append(Request(permit, self.period if state is State.HALF_OPEN else None))

    @rule(outcome=st.sampled_from(["success", "failure", "neutral"]), index=st.integers(0, 1))
    def finish(self, outcome: str, index: int) -> None:
        """One request in flight comes back."""
        if not self.out:
            return
        permit = self.out.pop(index % len(self.out)).permit
        before = self._observe()
        if outcome == "success":
            self.breaker.on_success(self.now, permit)
            assert self._observe() is State.CLOSED
            self.run = 0
        elif outcome == "failure":
            self.breaker.on_failure(self.now, permit)
            self._counted(before)
        else:
            self.breaker.on_neutral(self.now, permit)
            assert self._observe() is before  # a 4xx neither trips nor heals

    @rule()
    def health_check_fails(self) -> None:
        before = self._observe()
        self.breaker.on_failure(self.now)
        self._counted(before)

    def _counted(self, before: State) -> None:
        if before is State.HALF_OPEN:
            assert self._observe() is State.OPEN  # a failed probe (or check) re-opens it
        if before is State.CLOSED:
            self.run += 1
        if self.run >= self.n:
            assert self._observe() is not State.CLOSED  # N in a row always open it
            self.run = 0

    @invariant()
    def probes_in_flight_within_the_limit(self) -> None:
        if not hasattr(self, "breaker"):
            return
        if self._observe() is State.HALF_OPEN:
            probes = [r for r in self.out if r.probe_of == self.period]
            assert len(probes) <= self.probes
            # and a slot is free exactly when fewer than that are out
            assert self.breaker.admits(self.now) == (len(probes) < self.probes)


TestBreakerInvariants = BreakerInvariants.TestCase
TestBreakerInvariants.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestBreakerInvariants.pytestmark = [pytest.mark.slow]  # 200 machines of 40 steps: make test


@pytest.mark.slow  # a long property or a whole sweep: make test runs it
@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 6),
    between=st.lists(st.lists(st.one_of(st.just("neutral"), st.floats(0, 100)), max_size=4)),
)
def test_n_counted_failures_in_a_row_always_open_it(n: int, between: list[list[object]]) -> None:
    breaker = Breaker(n, open_for_s=30.0, half_open_probes=1)
    now = 0.0
    gaps = (between + [[]] * n)[:n]
    for gap in gaps:
        for event in gap:
            if event == "neutral":
                breaker.on_neutral(now)
            else:
                assert isinstance(event, float)
                now += event
        assert breaker.current(now) is State.CLOSED  # nothing opened it early
        breaker.on_failure(now)
    assert breaker.current(now) is State.OPEN
