"""The one spin-to-deadline wait: never early, and a wake-up ends it at once."""

from __future__ import annotations

import asyncio
import time

from modelyard.http import pacing


def test_it_never_returns_before_the_moment() -> None:
    async def late_by() -> list[float]:
        errors = []
        for ahead_s in (0.0, 0.0005, pacing.SPIN_S / 2, pacing.SPIN_S * 2):
            due = time.monotonic() + ahead_s
            assert await pacing.until(due)
            errors.append(time.monotonic() - due)
        return errors

    assert all(error >= 0 for error in asyncio.run(late_by()))


def test_a_wake_up_ends_the_wait_early() -> None:
    async def woken() -> tuple[bool, bool, float]:
        wake = asyncio.Event()
        wake.set()
        due = time.monotonic() + 60.0  # far off: only the wake-up can end it
        started = time.monotonic()
        in_timer = await pacing.until(due, wake)
        near = await pacing.until(time.monotonic() + pacing.SPIN_S / 2, wake)  # in the spin
        return in_timer, near, time.monotonic() - started

    in_timer, near, took_s = asyncio.run(woken())
    assert (in_timer, near) == (False, False)
    assert took_s < 1.0
