from __future__ import annotations

from hypothesis import settings
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
    assert breaker.allow(32.0)  # the one probe
    assert not breaker.allow(32.1)  # a second concurrent request is refused
    breaker.on_success(33.0)
    assert breaker.current(33.0) is State.CLOSED and breaker.allow(33.0)


def test_failed_probe_reopens_and_restarts_timer() -> None:
    breaker = Breaker(consecutive_failures=1, open_for_s=10, half_open_probes=1)
    breaker.on_failure(0.0)
    assert breaker.allow(10.0)
    breaker.on_failure(10.5)
    assert breaker.current(15.0) is State.OPEN
    assert breaker.current(20.5) is State.HALF_OPEN


def test_success_resets_the_count() -> None:
    breaker = Breaker(consecutive_failures=2, open_for_s=10, half_open_probes=1)
    breaker.on_failure(0.0)
    breaker.on_success(0.1)
    breaker.on_failure(0.2)
    assert breaker.current(0.3) is State.CLOSED


def test_neutral_outcomes_neither_trip_nor_heal() -> None:
    breaker = Breaker(consecutive_failures=2, open_for_s=10, half_open_probes=1)
    breaker.on_failure(0.0)
    for t in range(10):
        breaker.on_neutral(1.0 + t)  # e.g. 400 context-length errors
    assert breaker.current(20.0) is State.CLOSED
    breaker.on_failure(21.0)
    assert breaker.current(21.0) is State.OPEN


class Reference:
    """The breaker's documented behaviour, written the slow obvious way."""

    def __init__(self, n: int, open_for: float, probes: int) -> None:
        self.n, self.open_for, self.probes = n, open_for, probes
        self.state = "closed"
        self.count = 0
        self.opened = 0.0
        self.in_flight = 0

    def tick(self, now: float) -> None:
        if self.state == "open" and now - self.opened >= self.open_for:
            self.state, self.in_flight = "half_open", 0

    def allow(self, now: float) -> bool:
        self.tick(now)
        if self.state == "closed":
            return True
        if self.state == "half_open" and self.in_flight < self.probes:
            self.in_flight += 1
            return True
        return False

    def success(self, now: float) -> None:
        self.tick(now)
        if self.state == "half_open":
            self.in_flight = max(self.in_flight - 1, 0)
        self.state, self.count = "closed", 0

    def failure(self, now: float) -> None:
        self.tick(now)
        if self.state == "half_open":
            self.state, self.opened, self.count, self.in_flight = "open", now, 0, 0
        elif self.state == "closed":
            self.count += 1
            if self.count >= self.n:
                self.state, self.opened, self.count, self.in_flight = "open", now, 0, 0

    def neutral(self, now: float) -> None:
        self.tick(now)
        if self.state == "half_open":
            self.in_flight = max(self.in_flight - 1, 0)


class BreakerMachine(RuleBasedStateMachine):
    @initialize(n=st.integers(1, 6), open_for=st.floats(0.1, 60), probes=st.integers(1, 3))
    def setup(self, n: int, open_for: float, probes: int) -> None:
        self.now = 0.0
        self.real = Breaker(n, open_for, probes)
        self.model = Reference(n, open_for, probes)

    @rule(dt=st.floats(0, 30))
    def wait(self, dt: float) -> None:
        self.now += dt

    @rule()
    def allow(self) -> None:
        assert self.real.allow(self.now) == self.model.allow(self.now)

    @rule()
    def success(self) -> None:
        self.real.on_success(self.now)
        self.model.success(self.now)

    @rule()
    def failure(self) -> None:
        self.real.on_failure(self.now)
        self.model.failure(self.now)

    @rule()
    def neutral(self) -> None:
        self.real.on_neutral(self.now)
        self.model.neutral(self.now)

    @invariant()
    def same_state(self) -> None:
        if hasattr(self, "real"):
            assert self.real.current(self.now).value == (
                self.model.tick(self.now) or self.model.state
            )


TestBreakerMatchesReference = BreakerMachine.TestCase
TestBreakerMatchesReference.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
