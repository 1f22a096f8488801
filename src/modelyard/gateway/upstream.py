"""One attempt against one upstream: request a stream, enforce the deadlines, relay events.

The gateway always asks the upstream for a stream (with usage), so the connect, first-token,
idle and total deadlines hold for every request. Nothing is sent to the client until the first
token arrives: up to then a failure can still move to the next candidate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import orjson

from modelyard.gateway.errors import Outcome, classify_status

LineSink = Callable[[bytes], Awaitable[None]]
Commit = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Deadlines:
    """Seconds: to connect; from sending to the first token; between events; for everything."""

    connect: float
    first_token: float
    idle: float
    total: float


@dataclass
class Attempt:
    backend: str
    outcome: Outcome = Outcome.OK
    status: int | None = None
    body: bytes = b""
    detail: str = ""
    committed: bool = False  # the first token was handed on (a streaming client has bytes)
    ttft_s: float | None = None
    elapsed_s: float = 0.0
    retry_after_s: float | None = None  # from a 429's Retry-After header


_RESET_ERRORS = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientOSError,
    ConnectionResetError,
)


def _starts_output(data: bytes) -> bool:
    """Whether an SSE data payload carries the first token (or the end of the choice)."""
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if choice.get("text") or delta.get("content") or choice.get("finish_reason"):
            return True
    return False


def _is_error_event(data: bytes) -> bool:
    return data.startswith(b'{"error"') or (b'"error"' in data[:40] and b'"choices"' not in data)


async def attempt(
    session: aiohttp.ClientSession,
    backend: str,
    path: str,
    payload: bytes,
    deadlines: Deadlines,
    commit: Commit,
    sink: LineSink,
) -> Attempt:
    """POST `payload` to `backend + path` and relay its SSE events through `sink`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = Attempt(backend=backend)
    first_deadline = start + min(deadlines.first_token, deadlines.total)
    total_deadline = start + deadlines.total
    timeout = aiohttp.ClientTimeout(
        total=None, connect=deadlines.connect, sock_connect=deadlines.connect
    )
    try:
        async with asyncio.timeout_at(first_deadline):
            response = await session.post(
                backend + path,
                data=payload,
                timeout=timeout,
                headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
            )
    except TimeoutError:
        result.outcome, result.detail = Outcome.FIRST_TOKEN_TIMEOUT, "no response headers in time"
        return _done(result, loop, start)
    except aiohttp.ClientConnectorError as exc:
        result.outcome, result.detail = Outcome.CONNECT, f"cannot connect: {exc.os_error}"
        return _done(result, loop, start)
    except _RESET_ERRORS as exc:
        result.outcome, result.detail = Outcome.RESET, f"connection lost before headers: {exc}"
        return _done(result, loop, start)
    try:
        result.status = response.status
        if response.status != 200:
            async with asyncio.timeout_at(total_deadline):
                result.body = await response.read()
            result.outcome = classify_status(response.status, result.body)
            result.detail = f"HTTP {response.status}"
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.replace(".", "", 1).isdigit():
                result.retry_after_s = float(retry_after)
            return _done(result, loop, start)
        pending: list[bytes] = []
        finished = False
        while True:
            deadline = (
                first_deadline
                if not result.committed
                else min(loop.time() + deadlines.idle, total_deadline)
            )
            try:
                async with asyncio.timeout_at(deadline):
                    line = await response.content.readline()
            except TimeoutError:
                if not result.committed:
                    result.outcome, result.detail = (
                        Outcome.FIRST_TOKEN_TIMEOUT,
                        (f"no first token within {deadlines.first_token:g} s"),
                    )
                elif loop.time() >= total_deadline:
                    result.outcome = Outcome.TOTAL_TIMEOUT
                    result.detail = f"not finished within {deadlines.total:g} s"
                else:
                    result.outcome = Outcome.IDLE_TIMEOUT
                    result.detail = f"no event for {deadlines.idle:g} s"
                return _done(result, loop, start)
            if not line:
                break
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                finished = True
                await sink(b"data: [DONE]\n\n")
                break
            if _is_error_event(data):
                result.outcome, result.body = Outcome.SERVER_ERROR, data
                result.detail = "error event in the stream"
                return _done(result, loop, start)
            event = b"data: " + data + b"\n\n"
            if result.committed:
                await sink(event)
            elif _starts_output(data):
                result.committed = True
                result.ttft_s = loop.time() - start
                await commit()
                for earlier in pending:
                    await sink(earlier)
                await sink(event)
            else:
                pending.append(event)
        if not finished:
            result.outcome = Outcome.RESET
            result.detail = "stream ended without [DONE]"
        return _done(result, loop, start)
    except _RESET_ERRORS as exc:
        result.outcome, result.detail = Outcome.RESET, f"connection lost: {exc}"
        return _done(result, loop, start)
    finally:
        response.close()  # never leave an upstream generating for nobody


def _done(result: Attempt, loop: asyncio.AbstractEventLoop, start: float) -> Attempt:
    result.elapsed_s = loop.time() - start
    return result
