"""Where a committed attempt's events go: to a streaming client as they arrive, or into an
assembler that builds the non-streaming answer.

The gateway asks chunk streams for usage; a client that did not ask for it must not get the
usage chunk (`choices: []` breaks `chunk.choices[0]` loops, as against the engine directly).
`StreamRelay` drops it and moves what else it carried onto the chunk before it, where the
engine puts those fields when nobody asks for usage (llama.cpp's `timings` go on the last
chunk it sends): the chunk ending a choice waits until the next event has been seen.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from modelyard.engines.api import AnswerShape
from modelyard.gateway.assemble import JSON, ResponsesAssembler, StreamAssembler
from modelyard.gateway.endpoints import Endpoint, Upstream
from modelyard.gateway.streams import DONE

# what every chunk has; anything else on a usage chunk moves to the chunk before it
CHUNK_HEAD = frozenset({"id", "object", "created", "model", "system_fingerprint", "choices"})
_USAGE = b'"usage":{'
_NO_CHOICES = b'"choices":[]'
_FINISHED = b'"finish_reason":"'


def data_of(event: bytes) -> bytes:
    """The data payload of one SSE event as `attempt` hands it on (event line, data line)."""
    start = event.find(b"data:")
    return event[start + 5 :].strip() if start >= 0 else b""


def usage_of(event: bytes) -> dict[str, Any] | None:
    """The usage a chunk reports, decoding only chunks whose bytes show one."""
    if _USAGE not in event:
        return None
    try:
        usage = orjson.loads(data_of(event)).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


class StreamRelay:
    """Streams events to the client, as the client asked for them (see the module docstring).
    `usage` keeps the last usage the upstream reported (for metrics)."""

    def __init__(self, http: web.Request, headers: dict[str, str], strip_usage: bool) -> None:
        self.http = http
        self.headers = headers
        self.strip_usage = strip_usage
        self.response: web.StreamResponse | None = None
        self.usage: dict[str, Any] | None = None
        self._held: bytes | None = None  # a choice's last chunk, until the next event

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
        if not self.strip_usage:
            await self.response.write(event)
            return
        if usage is not None and _NO_CHOICES in event:
            self._move_extras(event)
            return
        if self._held is not None:
            held, self._held = self._held, None
            await self.response.write(held)
        if _FINISHED in event and data_of(event) != DONE:
            self._held = event
        else:
            await self.response.write(event)

    def _move_extras(self, usage_chunk: bytes) -> None:
        extras = {
            k: v
            for k, v in orjson.loads(data_of(usage_chunk)).items()
            if k not in CHUNK_HEAD and k != "usage"
        }
        if extras and self._held is not None:
            chunk = orjson.loads(data_of(self._held))
            chunk.update(extras)
            self._held = b"data: " + orjson.dumps(chunk) + b"\n\n"

    async def close_held(self) -> None:
        """Send a held chunk (the stream failed or ended without [DONE])."""
        if self._held is not None and self.response is not None:
            held, self._held = self._held, None
            await self.response.write(held)


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
