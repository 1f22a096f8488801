"""Circuit breaker per backend: a pure state machine driven by an injected clock.

    closed --N consecutive counted failures--> open --open_for elapsed--> half-open
    half-open --a probe succeeds--> closed;  half-open --a probe fails--> open (timer restarts)

In half-open at most `half_open_probes` requests are let through at once; the rest are refused
as if open. Failures that do not count (4xx, 429) neither trip nor reset it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class Breaker:
    consecutive_failures: int
    open_for_s: float
    half_open_probes: int
    state: State = State.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probes_in_flight: int = 0
    trips: int = 0

    def current(self, now: float) -> State:
        """The state at `now` (an open breaker becomes half-open once `open_for_s` passed)."""
        if self.state is State.OPEN and now - self.opened_at >= self.open_for_s:
            self.state = State.HALF_OPEN
            self.probes_in_flight = 0
        return self.state

    def allow(self, now: float) -> bool:
        """May a request go to this backend now? Reserves a probe slot when half-open."""
        state = self.current(now)
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and self.probes_in_flight < self.half_open_probes:
            self.probes_in_flight += 1
            return True
        return False

    def on_success(self, now: float) -> None:
        if self.current(now) is State.HALF_OPEN:
            self.probes_in_flight = max(self.probes_in_flight - 1, 0)
        self.state = State.CLOSED
        self.failures = 0

    def on_failure(self, now: float) -> None:
        """A failure that counts toward the breaker (see errors.classify)."""
        state = self.current(now)
        if state is State.HALF_OPEN:
            self._open(now)
            return
        if state is State.OPEN:
            return
        self.failures += 1
        if self.failures >= self.consecutive_failures:
            self._open(now)

    def on_neutral(self, now: float) -> None:
        """An outcome that neither trips nor heals (4xx): frees a half-open probe slot."""
        if self.current(now) is State.HALF_OPEN:
            self.probes_in_flight = max(self.probes_in_flight - 1, 0)

    def _open(self, now: float) -> None:
        self.state = State.OPEN
        self.opened_at = now
        self.failures = 0
        self.probes_in_flight = 0
        self.trips += 1
