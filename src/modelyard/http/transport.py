"""The seam under every HTTP caller (the gateway, its health checks, the load generator): a
transport sends one request and hands back the response as it arrives. `client.Pool` is the
real one (keep-alive HTTP/1.1 on asyncio protocols); `fake.FakeTransport` answers in memory, so
those callers run in-process in tests, as httpx's `MockTransport` lets its users do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol


class Response(Protocol):
    """A response: status and headers (names lower-case) now, the body as it arrives."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read_any(self) -> bytes:
        """Body bytes that have arrived (waiting for some); b"" at the end."""
        ...

    async def read_all(self) -> bytes:
        """The rest of the body."""
        ...

    def pipe(self, consumer: Callable[[bytes], bool]) -> asyncio.Future[None]:
        """Hand each piece of the body to `consumer` as it arrives, without a task waking per
        piece; done when the consumer returns True, the body ends, or with its error."""
        ...

    async def finish(self) -> None:
        """After the last bytes the caller wants: read what trails them (a stream's last chunk
        follows its `[DONE]` by a moment) so the connection can be reused; gives up quietly."""
        ...

    def close(self) -> None:
        """Done with it: a connection read to its end is reused, any other is closed (an
        upstream still generating is told to stop)."""
        ...


class Transport(Protocol):
    async def request(
        self,
        method: str,
        url: str,
        path: str,
        body: bytes = b"",
        connect_timeout_s: float = 10.0,
        accept: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send `method url+path` with `body`; return when the status and headers arrived.
        Raises UpstreamConnectError or UpstreamResetError (modelyard.http.errors)."""
        ...

    def close(self) -> None:
        """Close idle connections."""
        ...
