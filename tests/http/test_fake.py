"""The in-memory transport answers as a real one would, to whatever calls it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelyard.http.errors import UpstreamConnectError, UpstreamResetError
from modelyard.http.fake import SSE, FakeTransport, Reply, Request, sse


async def _engine(request: Request) -> Reply:
    if request.path == "/refuse":
        raise UpstreamConnectError("refused")
    if request.path == "/stream":

        async def pieces() -> AsyncIterator[bytes]:
            yield sse(b'{"a":1}')
            yield sse(b"[DONE]")

        return Reply(200, SSE, pieces())
    if request.path == "/broken":

        async def broken() -> AsyncIterator[bytes]:
            yield b"data: x\n\n"
            raise UpstreamResetError("EOF", False)

        return Reply(200, SSE, broken())
    return Reply.json({"echo": request.json(), "method": request.method}, status=201)


def test_requests_are_kept_and_answered_by_the_handler() -> None:
    async def go() -> None:
        transport = FakeTransport(_engine)
        response = await transport.request(
            "POST", "http://e:1", "/x", b'{"q":1}', headers={"A": "b"}
        )
        assert response.status == 201 and response.headers["content-type"] == "application/json"
        assert await response.read_all() == b'{"echo":{"q":1},"method":"POST"}'
        response.close()
        assert transport.requests[0].headers == {"A": "b"} and transport.arrived.is_set()
        assert transport.responses[0].closed and transport.responses[0].read_to_end

    asyncio.run(go())


def test_a_streamed_body_comes_piece_by_piece_and_can_break_off() -> None:
    async def go() -> None:
        transport = FakeTransport(_engine)
        response = await transport.request("GET", "http://e:1", "/stream")
        assert [await response.read_any() for _ in range(3)] == [
            b'data: {"a":1}\n\n',
            b"data: [DONE]\n\n",
            b"",
        ]
        broken = await transport.request("GET", "http://e:1", "/broken")
        assert await broken.read_any() == b"data: x\n\n"
        with pytest.raises(UpstreamResetError):
            await broken.read_any()
        with pytest.raises(UpstreamConnectError):
            await transport.request("GET", "http://e:1", "/refuse")

    asyncio.run(go())
