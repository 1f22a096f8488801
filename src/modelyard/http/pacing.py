"""Sending at a moment: THE spin-to-deadline wait of the load generator (requests at their
scheduled times) and `sim serve` (tokens at their due times).

The event loop's timers fire up to a millisecond early or late (libuv counts whole
milliseconds), so `until` sleeps on a timer to `SPIN_S` before the moment, then yields the loop
with `sleep(0)` (sockets are still served meanwhile) and the core with `sched_yield` (another
process on it runs) until the moment comes. benchmarks/loop_timing.py measures both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

SPIN_S = 0.002


async def until(due: float, wake: asyncio.Event | None = None) -> bool:
    """Wait until `due` (time.monotonic seconds), or until `wake` is set: True at `due`, False
    when woken first."""
    delay = due - time.monotonic() - SPIN_S
    if delay > 0:
        if wake is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
            if wake.is_set():
                return False
    while time.monotonic() < due:
        if wake is not None and wake.is_set():
            return False
        await asyncio.sleep(0)
        os.sched_yield()
    return True
