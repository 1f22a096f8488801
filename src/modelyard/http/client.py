"""The HTTP/1.1 client of every part that talks to engines (the gateway's requests, health
checks, metric scrapes and warm-ups; the load generator): keep-alive connections per backend on
asyncio protocols, the response body handed on as it arrives. It is the real `Transport`
(http/transport.py).

Why not aiohttp's client: on the request path it was about a quarter of the gateway's CPU per
request (benchmarks/gateway_overhead.py, profile in docs/benchmarks.md). This client does only
what talking to an OpenAI-compatible engine needs: GET, or POST with a body; a status line and
headers; a body by Content-Length, chunked, or until close; TLS through the event loop. A body
is read by awaiting pieces (`read_any`), or piped: each piece handed to a callback from the
connection's own `data_received`, with no task woken per piece (`PooledResponse.pipe`, the
gateway's relay of a committed stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from modelyard.http.errors import UpstreamConnectError, UpstreamResetError

MAX_HEAD_BYTES = 64 * 1024
PAUSE_AT_BYTES = 1024 * 1024
IDLE_KEEPALIVE_S = 30.0


@dataclass(frozen=True)
class Origin:
    host: str
    port: int
    tls: bool
    prefix: str  # the backend URL's path, prepended to request paths
    authority: str

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname, port, tls, parts.path.rstrip("/"), parts.netloc)


class _Connection(asyncio.Protocol):
    """One connection: one request at a time; the response parsed as bytes arrive."""

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset_response()

    def _reset_response(self) -> None:
        self.head = bytearray()
        self.state = "idle"  # idle -> head -> body -> done
        self.status = 0
        self.headers: dict[str, str] = {}
        self.mode = "length"  # length | chunked | close
        self.keep_alive = False
        self.remaining = 0
        self.raw = bytearray()  # chunked framing not yet decoded
        self.body = bytearray()
        self.complete = False
        self.error: UpstreamResetError | None = None
        self.got_bytes = False
        self.headers_ready: asyncio.Future[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        # piping (PooledResponse.pipe): body bytes go to `consumer` from data_received itself
        self.consumer: Callable[[bytes], bool] | None = None
        self.piped: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.state == "head":
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD_BYTES:
                    self._fail("response headers too large", True)
                return
            rest = bytes(self.head[end + 4 :])
            if not self._parse_head(bytes(self.head[:end])):
                return
            self.state = "body"
            if self.headers_ready is not None and not self.headers_ready.done():
                self.headers_ready.set_result(None)
            data = rest
            if self.mode == "length" and self.remaining == 0:
                self._done()
                return
        if self.state != "body" or not data:
            return
        if self.mode == "length":
            take = data[: self.remaining]
            self.body += take
            self.remaining -= len(take)
            if self.remaining == 0:
                self._done()
        elif self.mode == "chunked":
            self.raw += data
            self._decode_chunks()
        else:
            self.body += data
        if self.consumer is not None:
            self._deliver()
            return
        self._wake()
        if len(self.body) > PAUSE_AT_BYTES and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.state == "head":
            self._fail(f"connection closed before a response ({exc or 'EOF'})", True)
        elif self.state == "body":
            if self.mode == "close":
                self._done()
            else:
                self._fail(f"connection closed mid-body ({exc or 'EOF'})", False)

    # --- parsing ---

    def _parse_head(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        try:
            version, code = lines[0].split(b" ", 2)[:2]
            self.status = int(code)
        except ValueError:
            self._fail(f"bad status line {lines[0][:80]!r}", True)
            return False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        encoding = self.headers.get("transfer-encoding", "").lower()
        connection = self.headers.get("connection", "").lower()
        self.keep_alive = version == b"HTTP/1.1" and "close" not in connection
        if "chunked" in encoding:
            self.mode = "chunked"
        elif "content-length" in self.headers:
            self.mode = "length"
            try:
                self.remaining = int(self.headers["content-length"])
            except ValueError:
                self._fail("bad Content-Length", True)
                return False
        else:
            self.mode, self.keep_alive = "close", False
        return True

    def _decode_chunks(self) -> None:
        raw = self.raw
        while True:
            line_end = raw.find(b"\r\n")
            if line_end < 0:
                return
            try:
                size = int(raw[:line_end].split(b";", 1)[0], 16)
            except ValueError:
                self._fail("bad chunk size", False)
                return
            if size == 0:  # the last chunk, then optional trailers, then an empty line
                after = line_end + 2
                if raw[after : after + 2] != b"\r\n" and raw.find(b"\r\n\r\n", after) < 0:
                    return
                del raw[:]
                self._done()
                return
            if len(raw) < line_end + 2 + size + 2:
                return
            self.body += raw[line_end + 2 : line_end + 2 + size]
            del raw[: line_end + 2 + size + 2]

    def _done(self) -> None:
        self.complete = True
        self.state = "done"
        if self.consumer is not None:
            self._deliver()
        self._end_pipe(None)
        self._wake()

    def _fail(self, message: str, before_headers: bool) -> None:
        self.error = UpstreamResetError(message, before_headers)
        self.keep_alive = False
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(self.error)
        self._end_pipe(self.error)
        self._wake()
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _deliver(self) -> None:
        """Hand what arrived to the consumer; one that says it is done ends the pipe, and
        bytes after that are kept for read() as before."""
        consumer = self.consumer
        if consumer is None or not self.body:
            return
        if self.piped is not None and self.piped.done():  # its waiter was cancelled
            self._end_pipe(None)
            return
        data = bytes(self.body)
        self.body.clear()
        if consumer(data):
            self._end_pipe(None)

    def _end_pipe(self, error: BaseException | None) -> None:
        self.consumer = None
        piped, self.piped = self.piped, None
        if piped is not None and not piped.done():
            if error is None:
                piped.set_result(None)
            else:
                piped.set_exception(error)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # --- requests ---

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self._reset_response()
        self.state = "head"
        self.headers_ready = asyncio.get_running_loop().create_future()
        self.transport.write(request)

    async def read(self) -> bytes:
        """Body bytes that have arrived (waiting for some); b"" at the end."""
        while not self.body:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None
        data = bytes(self.body)
        self.body.clear()
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data


class PooledResponse:
    """A response on a pooled connection: status and headers now, the body as it arrives."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = connection.status
        self.headers = connection.headers
        self._released = False

    async def read_any(self) -> bytes:
        return await self._connection.read()

    async def read_all(self) -> bytes:
        parts = []
        while data := await self._connection.read():
            parts.append(data)
        return b"".join(parts)

    def pipe(self, consumer: Callable[[bytes], bool]) -> asyncio.Future[None]:
        """Hand each piece of the body to `consumer` as it arrives, inside the connection's own
        callback: no task wakes up per piece (the gateway's relay of a committed stream). The
        future completes when the consumer returns True (it wants no more: later bytes are kept
        for read_any), when the body ends, or with the connection's error. The consumer must
        not raise."""
        connection = self._connection
        piped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if connection.error is not None:
            piped.set_exception(connection.error)
            return piped
        connection.consumer, connection.piped = consumer, piped
        connection._deliver()  # what arrived before
        if connection.complete:
            connection._end_pipe(None)
        elif connection.paused and connection.transport is not None:
            connection.paused = False  # read() paused at its limit; the consumer took it all
            connection.transport.resume_reading()
        return piped

    async def finish(self, timeout_s: float = 0.1) -> None:
        """After the last event the caller wants: read the rest of the body (a stream's final
        chunk usually trails its `[DONE]` by a moment), so that close() can return the
        connection to the pool instead of closing it. Gives up quietly after timeout_s."""
        connection = self._connection
        if connection.complete or connection.closed:
            return
        with contextlib.suppress(TimeoutError, UpstreamResetError):
            async with asyncio.timeout(timeout_s):
                while await connection.read():
                    pass

    def close(self) -> None:
        """Back to the pool when the body was read to its end on a keep-alive connection;
        otherwise the connection is closed (an upstream still generating is told to stop)."""
        if self._released:
            return
        self._released = True
        connection = self._connection
        connection._end_pipe(None)
        if connection.complete and connection.keep_alive and not connection.closed:
            connection.pool.release(connection)
        elif connection.transport is not None:
            connection.transport.close()


class Pool:
    """Idle keep-alive connections per origin."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._origins: dict[str, Origin] = {}
        self._tls: ssl.SSLContext | None = None

    def origin(self, url: str) -> Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = Origin.parse(url)
        return origin

    async def _connect(self, origin: Origin, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.tls:
            tls = self._tls = self._tls or ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError as exc:
            raise UpstreamConnectError(f"connect timed out after {timeout:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(str(exc) or type(exc).__name__) from exc
        return connection

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        loop = asyncio.get_running_loop()
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            if loop.time() - connection.idle_since > IDLE_KEEPALIVE_S:
                if connection.transport is not None:
                    connection.transport.close()
                continue
            return connection
        return None

    async def request(
        self,
        method: str,
        url: str,
        path: str,
        body: bytes = b"",
        connect_timeout_s: float = 10.0,
        accept: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> PooledResponse:
        """Send the request (a POST's body is JSON); return when the response's status and
        headers have arrived. A reused connection that the server had already closed is
        retried once on a new one."""
        origin = self.origin(url)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) if headers else ""
        framing = (
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            if body or method == "POST"
            else ""
        )
        request = (
            f"{method} {origin.prefix}{path} HTTP/1.1\r\nHost: {origin.authority}\r\n"
            f"Accept: {accept}\r\n{extra}{framing}\r\n"
        ).encode("latin-1") + body
        for _ in range(2):
            connection = self._take_idle(origin)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(origin, connect_timeout_s)
            connection.send(request)
            assert connection.headers_ready is not None
            try:
                await connection.headers_ready
            except UpstreamResetError:
                if reused and not connection.got_bytes:
                    continue  # the server closed the idle connection as we sent: a new one
                raise
            except asyncio.CancelledError:
                if connection.transport is not None:
                    connection.transport.close()
                raise
            return PooledResponse(connection)
        raise UpstreamResetError("connection closed before a response", True)

    def release(self, connection: _Connection) -> None:
        connection.state = "idle"
        connection.headers_ready = None
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(connection.origin, []).append(connection)

    def forget(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                if connection.transport is not None:
                    connection.transport.close()
        self._idle.clear()
