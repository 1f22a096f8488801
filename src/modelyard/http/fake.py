"""An in-memory `Transport` for tests, as httpx's `MockTransport`: a handler (an async function
of the request) gives each answer, so whatever calls a transport — the gateway, its health
checks, the load generator — runs in-process, without sockets or processes.

    async def engine(request: Request) -> Reply:
        if request.path == "/health":
            return Reply(200)
        return Reply(200, SSE, sse(b'{"choices":[{"index":0,"text":"hi"}]}', b"[DONE]"))

    transport = FakeTransport(engine)

The handler may raise `UpstreamConnectError` (a refused connection) or wait forever (a hung
backend; the caller's deadline cancels it). A reply's body is bytes, or an async iterable of
byte pieces handed on one per read; an `UpstreamResetError` raised from it breaks the body off
there, and waiting in it holds the stream still.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

JSON_TYPE = {"content-type": "application/json"}
SSE = {"content-type": "text/event-stream"}


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    path: str
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: dict(JSON_TYPE))
    body: bytes | AsyncIterable[bytes] = b""

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Reply:
        return cls(status, JSON_TYPE, orjson.dumps(data))


def sse(*payloads: bytes) -> bytes:
    """Server-sent events, one `data:` line each."""
    return b"".join(b"data: " + payload + b"\n\n" for payload in payloads)


Handler = Callable[[Request], Awaitable[Reply]]


class FakeResponse:
    """A reply as the caller reads it; `closed` says whether the caller let it go."""

    def __init__(self, reply: Reply) -> None:
        self.status = reply.status
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in reply.headers.items()}
        self.closed = False
        self.read_to_end = False
        self._feeding: asyncio.Future[None] | None = None
        self.pipes = 0  # how often the caller piped the body (pipe)
        body = reply.body
        self._whole: bytes | None = body if isinstance(body, bytes) else None
        self._pieces: AsyncIterator[bytes] | None = None if isinstance(body, bytes) else aiter(body)

    async def read_any(self) -> bytes:
        if self._whole is not None:
            data, self._whole = self._whole, b""
            self.read_to_end = not data
            return data
        assert self._pieces is not None
        try:
            return await anext(self._pieces)
        except StopAsyncIteration:
            self.read_to_end = True
            return b""

    async def read_all(self) -> bytes:
        parts = []
        while data := await self.read_any():
            parts.append(data)
        return b"".join(parts)

    def pipe(self, consumer: Callable[[bytes], bool]) -> asyncio.Future[None]:
        """As the real connection's: each piece to `consumer` as it comes, until it returns
        True, the body ends, or the body raises (the future's exception)."""
        piped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pipes += 1

        async def feed() -> None:
            try:
                while data := await self.read_any():
                    if piped.done() or consumer(data):  # done: its waiter was cancelled
                        break
            except Exception as exc:  # the body's own error, as the caller would read it
                if not piped.done():
                    piped.set_exception(exc)
                return
            if not piped.done():
                piped.set_result(None)

        self._feeding = asyncio.ensure_future(feed())
        return piped

    async def finish(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True
        if self._feeding is not None:
            self._feeding.cancel()


class FakeTransport:
    """Answers every request with `handler`; keeps the requests and responses it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.responses: list[FakeResponse] = []
        self.arrived = asyncio.Event()  # set at each request (tests wait on it, then clear it)

    async def request(
        self,
        method: str,
        url: str,
        path: str,
        body: bytes = b"",
        connect_timeout_s: float = 10.0,
        accept: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> FakeResponse:
        request = Request(method, url, path, body, dict(headers or {}))
        self.requests.append(request)
        self.arrived.set()
        response = FakeResponse(await self.handler(request))
        self.responses.append(response)
        return response

    def close(self) -> None:
        return None
