"""One attempt against one upstream: request a stream, enforce the deadlines, relay events.

The gateway always asks the upstream for a stream (with usage), so the connect, first-token,
idle and total deadlines hold for every request. Nothing is sent to the client until the first
token arrives: up to then a failure can still move to the next candidate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from modelyard.chunks import decode, has_content, plainly_has_token
from modelyard.gateway.errors import Outcome, classify_status
from modelyard.http.client import Pool, Response, UpstreamConnectError, UpstreamResetError

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


def _starts_output(data: bytes) -> bool:
    """Whether an SSE data payload carries the first token (or the end of the choice); decodes
    JSON only when the bytes do not show a token plainly."""
    if plainly_has_token(data):
        return True
    chunk = decode(data)
    if chunk is None:
        return False
    return has_content(chunk) or any(c.get("finish_reason") for c in chunk.get("choices") or ())


def _is_error_event(data: bytes) -> bool:
    return data.startswith(b'{"error"') or (b'"error"' in data[:40] and b'"choices"' not in data)


class _Watchdog:
    """The attempt's one deadline timer. Moving the deadline is a float store; when the timer
    fires before a deadline that has since moved, it re-arms itself there. (An
    `asyncio.timeout_at` per received line costs a timer handle each.)"""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self.loop = loop
        self.task = asyncio.current_task()
        self.deadline = deadline
        self.expired = False
        self.handle = loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        if self.loop.time() >= self.deadline:
            self.expired = True
            if self.task is not None:
                self.task.cancel()
        else:
            self.handle = self.loop.call_at(self.deadline, self._fire)

    def close(self) -> None:
        self.handle.cancel()


async def attempt(
    pool: Pool,
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
    watchdog = _Watchdog(loop, first_deadline)
    response: Response | None = None
    try:
        response = await pool.post(
            backend, path, payload, deadlines.connect, accept="text/event-stream"
        )
        result.status = response.status
        if response.status != 200:
            watchdog.deadline = total_deadline
            result.body = await response.read_all()
            result.outcome = classify_status(response.status, result.body)
            result.detail = f"HTTP {response.status}"
            retry_after = response.headers.get("retry-after", "")
            if retry_after.replace(".", "", 1).isdigit():
                result.retry_after_s = float(retry_after)
            return _done(result, loop, start)
        await _relay(response, result, watchdog, deadlines, start, total_deadline, commit, sink)
        return _done(result, loop, start)
    except asyncio.CancelledError:
        if not watchdog.expired:
            raise  # the client went away: not ours to handle
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        if response is None:
            result.outcome, result.detail = (
                Outcome.FIRST_TOKEN_TIMEOUT,
                "no response headers in time",
            )
        elif not result.committed:
            result.outcome = Outcome.FIRST_TOKEN_TIMEOUT
            result.detail = f"no first token within {deadlines.first_token:g} s"
        elif loop.time() >= total_deadline:
            result.outcome = Outcome.TOTAL_TIMEOUT
            result.detail = f"not finished within {deadlines.total:g} s"
        else:
            result.outcome = Outcome.IDLE_TIMEOUT
            result.detail = f"no event for {deadlines.idle:g} s"
        return _done(result, loop, start)
    except UpstreamConnectError as exc:
        result.outcome, result.detail = Outcome.CONNECT, f"cannot connect: {exc}"
        return _done(result, loop, start)
    except UpstreamResetError as exc:
        result.outcome = Outcome.RESET
        result.detail = (
            f"connection lost before headers: {exc}"
            if exc.before_headers
            else f"connection lost: {exc}"
        )
        return _done(result, loop, start)
    finally:
        watchdog.close()
        if response is not None:
            response.close()  # never leave an upstream generating for nobody


async def _relay(
    response: Response,
    result: Attempt,
    watchdog: _Watchdog,
    deadlines: Deadlines,
    start: float,
    total_deadline: float,
    commit: Commit,
    sink: LineSink,
) -> None:
    """Read the SSE body as it arrives (whole reads, not line by line) and hand on events."""
    loop = watchdog.loop
    pending: list[bytes] = []
    buffer = b""
    ended = False
    while not ended:
        data = await response.read_any()
        if not data:
            if not buffer:
                break
            ended, data = True, b"\n"  # a last line without its newline
        if result.committed:
            watchdog.deadline = min(loop.time() + deadlines.idle, total_deadline)
        buffer = buffer + data if buffer else data
        lines = buffer.split(b"\n")
        buffer = lines.pop()  # an incomplete last line waits for more
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                await sink(b"data: [DONE]\n\n")
                await response.finish()  # the connection goes back to the pool
                return
            if _is_error_event(payload):
                result.outcome, result.body = Outcome.SERVER_ERROR, payload
                result.detail = "error event in the stream"
                return
            event = b"data: " + payload + b"\n\n"
            if result.committed:
                await sink(event)
            elif _starts_output(payload):
                result.committed = True
                result.ttft_s = loop.time() - start
                watchdog.deadline = min(loop.time() + deadlines.idle, total_deadline)
                await commit()
                for earlier in pending:
                    await sink(earlier)
                await sink(event)
            else:
                pending.append(event)
    result.outcome = Outcome.RESET
    result.detail = "stream ended without [DONE]"


def _done(result: Attempt, loop: asyncio.AbstractEventLoop, start: float) -> Attempt:
    result.elapsed_s = loop.time() - start
    return result
