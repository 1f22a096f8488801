"""Simulated time for `sim serve`: a clock running `speed` times faster than the wall, and the
driver that runs the engine simulation in step with it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from modelyard.http import pacing
from modelyard.sim.engine import Engine, SimRequest
from modelyard.sim.fixed import FixedLatencyEngine
from modelyard.sim.loop import EventLoop


class Clock:
    """Simulation seconds from a monotonic wall clock running `speed` times faster."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._start = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._start) * self.speed

    def wall(self, sim_s: float) -> float:
        """The time.monotonic() value at which simulation time `sim_s` is due."""
        return self._start + sim_s / self.speed


class RealtimeDriver:
    """Runs the event loop in step with the clock; submissions wake it.

    Two things keep emitted tokens on time at a few hundred streams on one core
    (benchmarks/sim_serve_timing.py). The asyncio loop's timers fire up to a millisecond early
    or late, so when `precise` the driver waits for a due time with `http.pacing.until` (a
    timer to shortly before, then yielding the loop and the core). And a step that ends with
    n tokens takes n socket writes, one after another; the step's outcome is fixed when it
    starts, so the driver starts writing half that long before the step ends
    (`Engine.announce`, the cost per token a moving average of measured writes), which centres
    the burst on the due time instead of trailing it. Tokens still carry the simulated time;
    the engine's state changes only when the step is done.
    """

    MAX_LEAD_S = 0.005

    def __init__(self, clock: Clock, precise: bool | None = None) -> None:
        self.clock = clock
        self.loop = EventLoop()
        self.engines: list[Engine | FixedLatencyEngine] = []
        self.precise = clock.speed <= 1 if precise is None else precise
        self.token_write_s = 10e-6  # wall seconds to hand one token to its socket
        self._wake = asyncio.Event()

    def submit(self, engine: Engine | FixedLatencyEngine, request: SimRequest) -> None:
        self.loop.schedule(engine.submit(self.clock.now(), request))
        self._wake.set()

    def _next_announcement(self) -> tuple[float, Engine | FixedLatencyEngine | None, int]:
        """The earliest simulated time at which an engine's step should start being written,
        that engine, and how many tokens its step ends with."""
        best, chosen, count = math.inf, None, 0
        for engine in self.engines:
            tokens = engine.tokens_in_flight()
            if tokens and engine.in_flight is not None:
                lead = min(tokens * self.token_write_s / 2, self.MAX_LEAD_S)
                at = engine.in_flight.end - lead * self.clock.speed
                if at < best:
                    best, chosen, count = at, engine, tokens
        return best, chosen, count

    def _announce(self, engine: Engine | FixedLatencyEngine, tokens: int) -> None:
        started = time.perf_counter()
        engine.announce()
        per_token = (time.perf_counter() - started) / tokens
        self.token_write_s = 0.9 * self.token_write_s + 0.1 * min(per_token, 1e-3)

    async def run(self) -> None:
        clock, loop, precise = self.clock, self.loop, self.precise
        while True:
            self._wake.clear()
            due = loop.next_time()
            early, engine, tokens = self._next_announcement() if precise else (math.inf, None, 0)
            now = clock.now()
            if due <= now:
                loop.run(until=now)
                continue
            if engine is not None and early <= now:
                self._announce(engine, tokens)
                continue
            wait = (min(due, early) - now) / clock.speed
            if math.isinf(wait):
                await self._wake.wait()
            elif precise:
                await pacing.until(time.monotonic() + wait, self._wake)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
