"""Where a committed attempt's events go: to a streaming client as they arrive, byte for byte,
or into an assembler that builds the non-streaming answer. Both keep the usage the upstream
reported (for the gateway's token counts), and both take an upstream's whole JSON answer when
it ignored `stream: true` (one chunk, then `[DONE]`, for a streaming client; the answer as it
is for the others)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_writer import StreamWriter

from modelyard.engines.api import AnswerShape
from modelyard.gateway.assemble import (
    JSON,
    ResponsesAssembler,
    StreamAssembler,
    chunks_of,
    terminal_event_of,
)
from modelyard.gateway.endpoints import Endpoint, Upstream
from modelyard.gateway.errors import ClientGone, MalformedStream
from modelyard.http.sse import DONE_DATA, as_event, decode, usage_from, usage_in

WRITE_LIMIT = 0x10000  # aiohttp's StreamWriter.write drains past this many bytes


class StreamRelay:
    """Streams events to the client as the upstream sent them."""

    def __init__(
        self, http: web.Request, headers: dict[str, str], endpoint: Endpoint, include_usage: bool
    ) -> None:
        self.http = http
        self.headers = headers
        self.endpoint = endpoint
        self.include_usage = include_usage
        self.response: web.StreamResponse | None = None
        self.usage: dict[str, Any] | None = None
        self.writer: StreamWriter | None = None  # aiohttp's chunked writer, once committed

    async def commit(self) -> None:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **self.headers,
            }
        )
        self.response = response
        try:
            await response.prepare(self.http)
        except ConnectionResetError as exc:
            raise ClientGone(str(exc)) from exc
        writer = response._payload_writer  # aiohttp's StreamWriter (aiohttp pinned: 3.14.5)
        if isinstance(writer, StreamWriter) and writer.chunked and writer._compress is None:
            self.writer = writer

    async def event(self, named: bytes, data: bytes, decoded: JSON | None) -> None:
        usage = usage_in(data, decoded)
        if usage is not None:
            self.usage = usage
        await self._write(as_event(named, data))

    async def _write(self, event: bytes) -> None:
        assert self.response is not None
        try:
            await self.response.write(event)
        except ConnectionResetError as exc:  # aiohttp's ClientConnectionResetError among them
            raise ClientGone(str(exc)) from exc

    @property
    def piping(self) -> bool:
        """write_now works (aiohttp's own chunked writer): the relay may pipe the rest."""
        return self.writer is not None

    def write_now(self, named: bytes, data: bytes, decoded: JSON | None) -> bool:
        """`event` without a wait: the chunk goes to the client's transport through aiohttp's
        own writer (its chunked framing, its byte count), as its `write` does short of the
        drain, which is the caller's when this says the buffer passed aiohttp's limit."""
        usage = usage_in(data, decoded)
        if usage is not None:
            self.usage = usage
        writer = self.writer
        assert writer is not None
        try:
            if writer._headers_buf and not writer._headers_written:
                writer._send_headers_with_payload(as_event(named, data), False)
            else:
                writer._write_chunked_payload(as_event(named, data))
        except ConnectionResetError as exc:
            raise ClientGone(str(exc)) from exc
        if writer.buffer_size > WRITE_LIMIT:
            writer.buffer_size = 0
            return True
        return False

    async def drain(self) -> None:
        assert self.writer is not None
        try:
            await self.writer.drain()
        except ConnectionResetError as exc:
            raise ClientGone(str(exc)) from exc

    async def whole(self, body: bytes, answer: JSON) -> None:
        self.usage = usage_from(answer)
        if self.endpoint.upstream is Upstream.EVENTS:
            kind, terminal = terminal_event_of(answer)
            await self._write(as_event(b"event: " + kind.encode() + b"\n", orjson.dumps(terminal)))
            return
        assert self.endpoint.answer is not None
        for chunk in chunks_of(answer, self.endpoint.answer, self.include_usage):
            await self._write(as_event(b"", orjson.dumps(chunk)))
        await self._write(as_event(b"", DONE_DATA))


class AnswerSink:
    """Feeds a committed attempt's events to the assembler of its endpoint."""

    piping = True  # assembling needs no wait: the relay may always pipe

    def __init__(self, endpoint: Endpoint, shape: AnswerShape | None) -> None:
        self.assembler: StreamAssembler | ResponsesAssembler
        if endpoint.upstream is Upstream.EVENTS:
            self.assembler = ResponsesAssembler(shape)
        else:
            assert endpoint.answer is not None
            self.assembler = StreamAssembler(endpoint.answer, shape)
        self.whole_body: bytes | None = None
        self.whole_usage: dict[str, Any] | None = None

    async def commit(self) -> None:
        return None

    async def event(self, named: bytes, data: bytes, decoded: JSON | None) -> None:
        self.write_now(named, data, decoded)

    def write_now(self, named: bytes, data: bytes, decoded: JSON | None) -> bool:
        if data == DONE_DATA:
            return False
        chunk = decoded if decoded is not None else decode(data)
        if chunk is None:
            raise MalformedStream(f"event data is not a JSON object: {data[:80]!r}")
        try:
            self.assembler.add(chunk)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise MalformedStream(f"event not in the API's shape ({exc}): {data[:80]!r}") from exc
        return False

    async def drain(self) -> None:
        return None

    async def whole(self, body: bytes, answer: JSON) -> None:
        self.whole_body, self.whole_usage = body, usage_from(answer)

    def answer(self) -> bytes:
        """The answer's body: the upstream's own when it sent one whole, else assembled."""
        if self.whole_body is not None:
            return self.whole_body
        return orjson.dumps(self.assembler.answer(int(time.time())))  # a timestamp, not a clock

    @property
    def usage(self) -> dict[str, Any] | None:
        if self.whole_body is not None:
            return self.whole_usage
        if isinstance(self.assembler, StreamAssembler):
            usage = self.assembler.top.get("usage")
        else:
            usage = (self.assembler.response or {}).get("usage")
        return usage if isinstance(usage, dict) else None
