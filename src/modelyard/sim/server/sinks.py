"""Where the simulated engine's tokens go: the listener hands each token to its request's sink;
a non-streaming request's sink counts them, a streaming one writes each to the socket the moment
the simulation produces it, as one HTTP chunk, without waking the handler (at a few hundred
streams a coroutine switch per token would cost more than the simulation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from modelyard.sim.engine import SimRequest
from modelyard.sim.faults import Faults

if TYPE_CHECKING:
    from modelyard.sim.server.metrics import SimModel

# one token's SSE event: (token index, whether it is the last, simulated time) -> bytes
Frame = Callable[[int, bool, float], bytes]


class Listener:
    """Hands tokens to the requests' sinks and keeps vLLM-style metrics."""

    def __init__(self, model: SimModel | None = None) -> None:
        self.model = model

    def on_first_token(self, request: SimRequest, time_s: float) -> None:
        request.payload.token(time_s)
        assert self.model is not None
        self.model.ttft.observe(time_s - request.arrival)

    def on_tokens(self, requests: Iterable[SimRequest], time_s: float) -> None:
        for request in requests:
            request.payload.token(time_s)

    def on_finished(self, request: SimRequest, time_s: float) -> None:
        request.payload.finish()
        model = self.model
        assert model is not None
        model.prompt_tokens += request.prompt_tokens
        model.generation_tokens += request.output_tokens
        model.finished += 1
        model.e2e.observe(time_s - request.arrival)


class CountSink:
    """A non-streaming request: count tokens, wake the handler when done."""

    def __init__(self) -> None:
        self.tokens = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def token(self, time_s: float) -> None:
        self.tokens += 1

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class StreamSink:
    """A streaming request (one choice): each token's event, built by `frame`, written as one
    chunked-encoding frame; the stream faults (close, stall after N tokens) applied here."""

    def __init__(
        self,
        transport: asyncio.Transport,
        frame: Frame,
        output_tokens: int,
        faults: Faults,
    ) -> None:
        self.transport = transport
        self.frame = frame
        self.output_tokens = output_tokens
        self.faults = faults
        self.sent = 0
        self.stalled = False
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def token(self, time_s: float) -> None:
        if self.stalled or self.done.done():
            return
        faults = self.faults
        if faults.close_after_tokens is not None and (
            self.sent >= faults.close_after_tokens or self.transport.is_closing()
        ):  # this choice's sink, or another of the request's, drops the connection
            self.transport.close()
            self.done.set_result("closed")
            return
        if faults.stall_after_tokens is not None and self.sent >= faults.stall_after_tokens:
            self.stalled = True  # send nothing more; the handler waits for the client to leave
            return
        data = self.frame(self.sent, self.sent + 1 == self.output_tokens, time_s)
        self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))  # one chunked frame
        self.sent += 1

    def finish(self) -> None:
        if not self.done.done() and not self.stalled:
            self.done.set_result("finished")
