"""SIGINT and SIGTERM, whatever handling the process inherited (a shell's background job starts
with SIGINT ignored, and Python then installs no KeyboardInterrupt handler). Commands that
start processes (`up`, `compare`) stop the same way on both — an exception that unwinds them,
so that everything they started is stopped on the way out — and the CLI exits with 128 + the
signal's number. Servers (`gateway`, `sim serve`) wait on `stopping_signal`, then drain and
exit 0, as a server stopped by its supervisor does."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """The command was asked to stop by a signal. A BaseException, as KeyboardInterrupt is, so
    that nothing in between catches it as an error; not a KeyboardInterrupt, which click turns
    into "Aborted!" and exit code 1 before the CLI could give the signal's exit code."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Stopped`; the handlers before are restored."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, handler) for signum in STOPPING_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def stopping_signal(loop: asyncio.AbstractEventLoop) -> Iterator[asyncio.Future[int]]:
    """Within the block, the first SIGINT or SIGTERM sets the future to its number (later ones
    change nothing); the loop's handlers are removed after."""
    stopped: asyncio.Future[int] = loop.create_future()

    def on_signal(signum: int) -> None:
        if not stopped.done():
            stopped.set_result(signum)

    for signum in STOPPING_SIGNALS:
        loop.add_signal_handler(signum, on_signal, int(signum))
    try:
        yield stopped
    finally:
        for signum in STOPPING_SIGNALS:
            loop.remove_signal_handler(signum)
