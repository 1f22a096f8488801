"""Circuit breaker per backend: a pure state machine driven by an injected clock.

    closed --N consecutive counted failures--> open --open_for elapsed--> half-open
    half-open --a probe succeeds--> closed;  half-open --a probe fails--> open (timer restarts)

In half-open at most `half_open_probes` requests are let through at once; the rest are refused
as if open. `allow` hands out a `Permit` that the request's outcome brings back, so a probe
frees a slot only of the half-open period that let it through (one let through before the
breaker opened again frees nothing of the next). Outcomes that do not count (4xx, 429, a client
hanging up) neither trip nor reset it. Health checks report failures without a permit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Permit:
    """A request let through; `probe_of` is the half-open period it probes (0: none)."""

    probe_of: int = 0


NOT_A_PROBE = Permit()


@dataclass
class Breaker:
    consecutive_failures: int
    open_for_s: float
    half_open_probes: int
    state: State = State.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probes_in_flight: int = 0
    half_open_periods: int = 0
    trips: int = 0

    def current(self, now: float) -> State:
        """The state at `now` (an open breaker becomes half-open once `open_for_s` passed)."""
        if self.state is State.OPEN and now - self.opened_at >= self.open_for_s:
            self.state = State.HALF_OPEN
            self.probes_in_flight = 0
            self.half_open_periods += 1
        return self.state

    def admits(self, now: float) -> bool:
        """Would `allow(now)` let a request through? Changes nothing (for the pure failover
        decision, which reads several backends and takes one)."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            return now - self.opened_at >= self.open_for_s and self.half_open_probes > 0
        return self.probes_in_flight < self.half_open_probes

    def allow(self, now: float) -> Permit | None:
        """Let a request go to this backend now? Takes a probe slot when half-open."""
        state = self.current(now)
        if state is State.CLOSED:
            return NOT_A_PROBE
        if state is State.HALF_OPEN and self.probes_in_flight < self.half_open_probes:
            self.probes_in_flight += 1
            return Permit(self.half_open_periods)
        return None

    def _release(self, permit: Permit | None) -> None:
        if permit is not None and permit.probe_of == self.half_open_periods:
            self.probes_in_flight = max(self.probes_in_flight - 1, 0)

    def on_success(self, now: float, permit: Permit | None = None) -> None:
        if self.current(now) is State.HALF_OPEN:
            self._release(permit)
        self.state = State.CLOSED
        self.failures = 0

    def on_failure(self, now: float, permit: Permit | None = None) -> None:
        """A failure that counts toward the breaker (gateway/errors.py: `policy`)."""
        state = self.current(now)
        if state is State.HALF_OPEN:
            self._open(now)
            return
        if state is State.OPEN:
            return
        self.failures += 1
        if self.failures >= self.consecutive_failures:
            self._open(now)

    def on_neutral(self, now: float, permit: Permit | None = None) -> None:
        """An outcome that neither trips nor heals (4xx): frees its half-open probe slot."""
        if self.current(now) is State.HALF_OPEN:
            self._release(permit)

    def _open(self, now: float) -> None:
        self.state = State.OPEN
        self.opened_at = now
        self.failures = 0
        self.probes_in_flight = 0
        self.trips += 1

    def adopt_open(self, opened_at: float) -> None:
        """Another gateway worker opened its breaker for this backend at `opened_at` (the
        host's monotonic clock, which every worker shares): open here too, until the same
        moment (gateway/peers.py)."""
        self.state = State.OPEN
        self.opened_at = opened_at
        self.failures = 0
        self.probes_in_flight = 0

    def adopt_closed(self) -> None:
        """Another gateway worker's probe succeeded: close here too."""
        self.state = State.CLOSED
        self.failures = 0
        self.probes_in_flight = 0
