"""The upstream HTTP/1.1 client against a raw TCP server that answers with crafted bytes: body
framings split at awkward places, keep-alive reuse, a server closing idle connections, resets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from modelyard.http.client import Pool
from modelyard.http.errors import UpstreamConnectError, UpstreamResetError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def serve(handler: Handler) -> tuple[asyncio.Server, str, list[bytes], list[int]]:
    """A server on a free port; returns it, its URL, the requests it saw, and one entry per
    connection it accepted."""
    seen: list[bytes] = []
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        number = connections[-1]
        try:
            await handler(reader, writer, number)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        original = reader.readuntil

        async def recording(separator: bytes = b"\n") -> bytes:
            data = await original(separator)
            seen.append(data)
            return data

        reader.readuntil = recording  # type: ignore[method-assign]
        await on_connect(reader, writer)

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/base", seen, connections


async def pieces(writer: asyncio.StreamWriter, *parts: bytes) -> None:
    for part in parts:
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.01)


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


def test_content_length_body_split_across_reads_and_connection_reused() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        for _ in range(2):
            await read_request(r)
            await pieces(w, b"HTTP/1.1 200 OK\r\nContent-Len", b"gth: 11\r\n\r\nhello", b" world")

    async def main() -> None:
        server, url, seen, connections = await serve(handler)
        pool = Pool()
        for _ in range(2):
            response = await pool.request(
                "POST", url, "/v1/x", b'{"a":1}', 2.0, "text/event-stream"
            )
            assert response.status == 200 and await response.read_all() == b"hello world"
            response.close()
        assert len(connections) == 1  # the second request reused the first connection
        assert seen[0].startswith(b"POST /base/v1/x HTTP/1.1\r\n")
        assert b"Content-Length: 7\r\n" in seen[0]
        pool.close()
        server.close()

    run(main())


def test_chunked_with_extensions_and_trailers_split_anywhere() -> None:
    body = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n"

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        data = head + body
        await pieces(w, *[data[i : i + 3] for i in range(0, len(data), 3)])
        await read_request(r)  # still usable afterwards
        await pieces(w, b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")

    async def main() -> None:
        server, url, _, connections = await serve(handler)
        pool = Pool()
        response = await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        assert await response.read_all() == b"hello world"
        response.close()
        second = await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        assert second.status == 204 and await second.read_all() == b""
        second.close()
        assert len(connections) == 1
        pool.close()
        server.close()

    run(main())


def test_close_delimited_body_and_extra_headers() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        await pieces(w, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ", b"two")
        w.close()

    async def main() -> None:
        server, url, seen, _ = await serve(handler)
        pool = Pool()
        response = await pool.request(
            "POST", url, "/p", b"{}", 2.0, "*/*", {"X-Modelyard-Task": "qa"}
        )
        assert response.headers["content-type"] == "text/plain"
        assert await response.read_all() == b"part one, two"
        response.close()
        assert b"X-Modelyard-Task: qa\r\n" in seen[0]
        pool.close()
        server.close()

    run(main())


def test_server_closing_an_idle_connection_is_retried_on_a_new_one() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        await pieces(w, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if n == 0:
            # an idle keep-alive timeout: read the next request's bytes, answer nothing, close
            await r.read(1)

    async def main() -> None:
        server, url, _, connections = await serve(handler)
        pool = Pool()
        first = await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        assert await first.read_all() == b"ok"
        first.close()
        second = await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        assert second.status == 200 and await second.read_all() == b"ok"
        second.close()
        assert len(connections) == 2
        pool.close()
        server.close()

    run(main())


def test_resets_and_refusals_are_classified() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        if n == 0:
            return  # closes before any response
        await pieces(w, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")

    async def main() -> None:
        server, url, _, _ = await serve(handler)
        pool = Pool()
        with pytest.raises(UpstreamResetError) as before:
            await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        assert before.value.before_headers
        response = await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        assert await response.read_any() == b"only part"
        with pytest.raises(UpstreamResetError) as during:
            await response.read_all()
        assert not during.value.before_headers
        response.close()
        server.close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        with pytest.raises(UpstreamConnectError):
            await pool.request("POST", f"http://127.0.0.1:{free}", "/p", b"{}", 2.0, "*/*")
        pool.close()

    run(main())


def test_an_unfinished_response_is_not_reused() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        await pieces(w, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await r.read(1)  # waits: the client closes instead of reading on

    async def main() -> None:
        server, url, _, connections = await serve(handler)
        pool = Pool()
        response = await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        assert await response.read_any() == b"abc"
        response.close()  # mid-body: the connection must be closed, not pooled
        again = await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        assert await again.read_any() == b"abc"
        again.close()
        assert len(connections) == 2
        pool.close()
        server.close()

    run(main())


def test_finish_reads_the_terminator_that_trails_done_so_the_connection_is_reused() -> None:
    """A stream's last event arrives before its chunked terminator; a caller that stops at
    `[DONE]` and calls finish() gets the connection back in the pool. One whose server never
    ends the body is given up after finish()'s timeout and closed, not pooled."""
    done = b"data: [DONE]\n\n"

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        for request in range(3):
            await read_request(r)
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            await pieces(w, head + b"%x\r\n%b\r\n" % (len(done), done))
            if n == 0 and request == 1:
                await r.read(1)  # never sends the terminator; waits for the client to leave
                return
            await pieces(w, b"0\r\n\r\n")

    async def main() -> None:
        server, url, _, connections = await serve(handler)
        pool = Pool()
        response = await pool.request("POST", url, "/p", b"{}", 2.0, "text/event-stream")
        assert await response.read_any() == done
        await response.finish()
        response.close()
        again = await pool.request("POST", url, "/p", b"{}", 2.0, "text/event-stream")
        assert await again.read_any() == done
        await again.finish(timeout_s=0.05)  # the terminator never comes
        again.close()
        third = await pool.request("POST", url, "/p", b"{}", 2.0, "text/event-stream")
        assert await third.read_any() == done
        third.close()
        assert len(connections) == 2  # reused once, then a new one after the unfinished body
        pool.close()
        server.close()

    run(main())


def test_pipe_hands_on_each_piece_in_order_and_keeps_the_rest_for_reads() -> None:
    """`pipe`: body bytes go to the consumer from the connection's own callback; when it says
    it is done, later bytes wait for read_any as before, and the connection is reused."""
    body = b"5\r\nhello\r\n6\r\n world\r\n3\r\n!!!\r\n0\r\n\r\n"

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        await pieces(w, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await pieces(w, *[body[i : i + 4] for i in range(0, len(body), 4)])
        await read_request(r)
        await pieces(w, b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")

    async def main() -> None:
        server, url, _, connections = await serve(handler)
        pool = Pool()
        response = await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        got: list[bytes] = []

        def consumer(data: bytes) -> bool:
            got.append(data)
            return b"".join(got).endswith(b"world")

        await response.pipe(consumer)
        assert b"".join(got) == b"hello world" and len(got) > 1  # piece by piece
        assert await response.read_all() == b"!!!"  # after the consumer had enough
        response.close()
        second = await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        assert second.status == 204
        second.close()
        assert len(connections) == 1
        pool.close()
        server.close()

    run(main())


def test_pipe_ends_at_the_body_end_or_with_the_connection_error() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        if n == 0:
            await pieces(w, head, b"2\r\nok\r\n", b"0\r\n\r\n")
        else:
            await pieces(w, head, b"4\r\nhalf\r\n")  # then the connection closes mid-body

    async def main() -> None:
        server, url, _, _ = await serve(handler)
        pool = Pool()
        got: list[bytes] = []
        whole = await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        await whole.pipe(lambda data: got.append(data) is not None)  # never done: to the end
        assert b"".join(got) == b"ok"
        whole.close()
        got.clear()
        cut = await pool.request("POST", url, "/p", b"{}", 2.0, "*/*")
        with pytest.raises(UpstreamResetError, match="mid-body"):
            await cut.pipe(lambda data: got.append(data) is not None)
        assert b"".join(got) == b"half"
        cut.close()
        pool.close()
        server.close()

    run(main())
