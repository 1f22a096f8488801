"""Where a committed attempt's events go: to a streaming client as they arrive, byte for byte,
or into an assembler that builds the non-streaming answer. Both keep the usage the upstream
reported (for the gateway's token counts)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from modelyard.engines.api import AnswerShape
from modelyard.gateway.assemble import JSON, ResponsesAssembler, StreamAssembler
from modelyard.gateway.endpoints import Endpoint, Upstream
from modelyard.gateway.streams import DONE

_USAGE = b'"usage":{'


def data_of(event: bytes) -> bytes:
    """The data payload of one SSE event as `attempt` hands it on (event line, data line)."""
    start = event.find(b"data:")
    return event[start + 5 :].strip() if start >= 0 else b""


def usage_of(event: bytes) -> dict[str, Any] | None:
    """The usage a chat or completion chunk reports, decoding only chunks whose bytes show
    one."""
    if _USAGE not in event:
        return None
    try:
        usage = orjson.loads(data_of(event)).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


class StreamRelay:
    """Streams events to the client as the upstream sent them."""

    def __init__(self, http: web.Request, headers: dict[str, str]) -> None:
        self.http = http
        self.headers = headers
        self.response: web.StreamResponse | None = None
        self.usage: dict[str, Any] | None = None

    async def commit(self) -> None:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **self.headers,
            }
        )
        await response.prepare(self.http)
        self.response = response

    async def line(self, event: bytes) -> None:
        assert self.response is not None
        usage = usage_of(event)
        if usage is not None:
            self.usage = usage
        await self.response.write(event)


class AnswerSink:
    """Feeds a committed attempt's events to the assembler of its endpoint."""

    def __init__(self, endpoint: Endpoint, shape: AnswerShape | None) -> None:
        self.assembler: StreamAssembler | ResponsesAssembler
        if endpoint.upstream is Upstream.EVENTS:
            self.assembler = ResponsesAssembler(shape)
        else:
            assert endpoint.answer is not None
            self.assembler = StreamAssembler(endpoint.answer, shape)

    async def commit(self) -> None:
        return None

    async def line(self, event: bytes) -> None:
        data = data_of(event)
        if data != DONE:
            self.assembler.add(orjson.loads(data))

    def answer(self) -> JSON:
        return self.assembler.answer(int(time.time()))  # a timestamp for the answer, not a clock

    @property
    def usage(self) -> dict[str, Any] | None:
        if isinstance(self.assembler, StreamAssembler):
            usage = self.assembler.top.get("usage")
        else:
            usage = (self.assembler.response or {}).get("usage")
        return usage if isinstance(usage, dict) else None
