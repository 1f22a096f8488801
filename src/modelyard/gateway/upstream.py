"""One attempt against one upstream: send the request, enforce the deadlines, hand on the
answer.

Streams (`attempt`): the gateway always asks the upstream for one, so the connect,
first-output, idle and total deadlines hold for every request. Nothing is sent to the client
until the first output arrives (gateway/streams.py says what that is per endpoint): up to then
a failure can still move to the next candidate. Whole bodies (`exchange`, embeddings): headers
within the first-token deadline, the body within the total one; nothing reaches the client
before the whole body has arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from modelyard.gateway.errors import Outcome, classify_status
from modelyard.gateway.streams import CHUNK_RULES, StreamRules
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
    cause: str = ""  # the low-level error (addresses included): for the log and /health

    @property
    def reason(self) -> str:
        """What went wrong, fit for the client: no backend address."""
        return f"{self.outcome.value}: {self.detail}" if self.detail else self.outcome.value

    @property
    def full_reason(self) -> str:
        return f"{self.reason} ({self.cause})" if self.cause else self.reason


class _Watchdog:
    """The attempt's one deadline timer. Moving the deadline is a float store; when the timer
    fires before a deadline that has since moved, it re-arms itself there. (An
    `asyncio.timeout_at` per received line costs a timer handle each.)"""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, deadline: float, start: float, total_deadline: float
    ) -> None:
        self.loop = loop
        self.task = asyncio.current_task()
        self.start = start
        self.total_deadline = total_deadline
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


BodyReader = Callable[[Response, Attempt, _Watchdog], Awaitable[None]]


async def attempt(
    pool: Pool,
    backend: str,
    path: str,
    payload: bytes,
    deadlines: Deadlines,
    commit: Commit,
    sink: LineSink,
    rules: StreamRules = CHUNK_RULES,
) -> Attempt:
    """POST `payload` to `backend + path` and relay its SSE events through `sink`."""

    async def read(response: Response, result: Attempt, watchdog: _Watchdog) -> None:
        await _relay(response, result, watchdog, deadlines, commit, sink, rules)

    return await _run(pool, backend, path, payload, deadlines, "text/event-stream", read)


async def exchange(
    pool: Pool, backend: str, path: str, payload: bytes, deadlines: Deadlines
) -> Attempt:
    """POST `payload` and read the whole answer into `Attempt.body` (non-streaming APIs)."""

    async def read(response: Response, result: Attempt, watchdog: _Watchdog) -> None:
        watchdog.deadline = watchdog.total_deadline
        result.body = await response.read_all()
        result.committed = True
        result.ttft_s = watchdog.loop.time() - watchdog.start

    return await _run(pool, backend, path, payload, deadlines, "application/json", read)


async def _run(
    pool: Pool,
    backend: str,
    path: str,
    payload: bytes,
    deadlines: Deadlines,
    accept: str,
    read: BodyReader,
) -> Attempt:
    """One request under the deadlines; `read` takes a 200 response's body."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = Attempt(backend=backend)
    first_deadline = start + min(deadlines.first_token, deadlines.total)
    watchdog = _Watchdog(loop, first_deadline, start, start + deadlines.total)
    response: Response | None = None
    try:
        response = await pool.post(backend, path, payload, deadlines.connect, accept=accept)
        result.status = response.status
        if response.status != 200:
            watchdog.deadline = watchdog.total_deadline
            result.body = await response.read_all()
            result.outcome = classify_status(response.status, result.body)
            result.detail = f"HTTP {response.status}"
            retry_after = response.headers.get("retry-after", "")
            if retry_after.replace(".", "", 1).isdigit():
                result.retry_after_s = float(retry_after)
            return _done(result, loop, start)
        await read(response, result, watchdog)
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
        elif loop.time() >= watchdog.total_deadline:
            result.outcome = Outcome.TOTAL_TIMEOUT
            result.detail = f"not finished within {deadlines.total:g} s"
        elif not result.committed:
            result.outcome = Outcome.FIRST_TOKEN_TIMEOUT
            result.detail = f"no first token within {deadlines.first_token:g} s"
        else:
            result.outcome = Outcome.IDLE_TIMEOUT
            result.detail = f"no event for {deadlines.idle:g} s"
        return _done(result, loop, start)
    except UpstreamConnectError as exc:
        result.outcome, result.detail, result.cause = Outcome.CONNECT, "cannot connect", str(exc)
        return _done(result, loop, start)
    except UpstreamResetError as exc:
        result.outcome, result.cause = Outcome.RESET, str(exc)
        result.detail = (
            "connection lost before headers" if exc.before_headers else "connection lost"
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
    commit: Commit,
    sink: LineSink,
    rules: StreamRules,
) -> None:
    """Read the SSE body as it arrives (whole reads, not line by line) and hand on events,
    each with its `event:` line when the upstream names events."""
    loop = watchdog.loop
    total_deadline = watchdog.total_deadline
    pending: list[bytes] = []
    buffer = b""
    named = b""  # the `event:` line of the event being read
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
            if line.startswith(b"event:"):
                named = line.rstrip(b"\r") + b"\n"
                continue
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if rules.is_error(payload):
                result.outcome, result.body = Outcome.SERVER_ERROR, payload
                result.detail = "error event in the stream"
                return
            event = named + b"data: " + payload + b"\n\n"
            named = b""
            end = rules.is_end(payload)
            if not result.committed and (end or rules.starts_output(payload)):
                result.committed = True
                result.ttft_s = loop.time() - watchdog.start
                watchdog.deadline = min(loop.time() + deadlines.idle, total_deadline)
                await commit()
                for earlier in pending:
                    await sink(earlier)
                pending.clear()
            if result.committed:
                await sink(event)
            else:
                pending.append(event)
            if end:
                await response.finish()  # the connection goes back to the pool
                return
    result.outcome = Outcome.RESET
    result.detail = "stream ended before its last event"


def _done(result: Attempt, loop: asyncio.AbstractEventLoop, start: float) -> Attempt:
    result.elapsed_s = loop.time() - start
    return result
