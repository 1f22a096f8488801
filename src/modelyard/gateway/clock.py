"""The gateway's time: one injected clock drives the breakers, back-offs, rate limits, attempt
deadlines, health-check intervals and access-log batches. `LoopClock` is the event loop's
(monotonic seconds); tests pass a fake one and move it by hand, so deadlines fire without
waiting for them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    now: Callable[[], float]  # monotonic seconds

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's clock (`loop.time`, `loop.call_at`, `asyncio.sleep`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.now = self.loop.time  # the bound method: no extra call on the request path

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        return self.loop.call_at(when, callback)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Watchdog:
    """One deadline timer for the task that creates it, cancelling the task when the deadline
    passes. Moving the deadline is a float store; when the timer fires before a deadline that
    has since moved, it re-arms itself there. (An `asyncio.timeout_at` per received line costs
    a timer handle each.)"""

    def __init__(self, clock: Clock, deadline: float) -> None:
        self.clock = clock
        self.task = asyncio.current_task()
        self.deadline = deadline
        self.expired = False
        self.handle = clock.call_at(deadline, self._fire)

    def _fire(self) -> None:
        if self.clock.now() >= self.deadline:
            self.expired = True
            if self.task is not None:
                self.task.cancel()
        else:
            self.handle = self.clock.call_at(self.deadline, self._fire)

    def absorb(self) -> None:
        """After catching the CancelledError this watchdog caused: the task carries on."""
        if self.task is not None:
            self.task.uncancel()

    def close(self) -> None:
        self.handle.cancel()


async def within(clock: Clock, seconds: float, work: Awaitable[T]) -> T:
    """`work`, or TimeoutError when it takes longer than `seconds` on `clock`."""
    watchdog = Watchdog(clock, clock.now() + seconds)
    try:
        return await work
    except asyncio.CancelledError:
        if not watchdog.expired:
            raise
        watchdog.absorb()
        raise TimeoutError(f"not done within {seconds:g} s") from None
    finally:
        watchdog.close()
