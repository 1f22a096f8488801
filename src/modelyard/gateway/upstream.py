"""One attempt against one upstream: send the request, enforce the deadlines, hand on the
answer.

Streams (`attempt`): the gateway always asks the upstream for one, so the connect,
first-output, idle and total deadlines hold for every request. Nothing is sent to the client
until the first output arrives (http/sse.py says what that is per stream kind): up to then a
failure can still move to the next candidate. An upstream that ignores `stream: true` and
answers with one JSON body (status 200, application/json) has answered: the sink gets it
whole. Whole bodies (`exchange`, embeddings): headers within the first-token deadline, the body
within the total one; nothing reaches the client before the whole body has arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from modelyard.gateway.clock import Clock, Watchdog
from modelyard.gateway.errors import ClientGone, MalformedStream, Outcome, classify_status
from modelyard.http.errors import UpstreamConnectError, UpstreamResetError
from modelyard.http.sse import Classified, Kind, SseReader, classify_chunk, decode, is_error
from modelyard.http.transport import Response, Transport

KindOf = Callable[[bytes], Classified]
_STARTS_OUTPUT = frozenset({Kind.TOKEN, Kind.FINISH, Kind.DONE})


@dataclass(frozen=True)
class Deadlines:
    """Seconds: to connect; from sending to the first token; between events; for everything."""

    connect: float
    first_token: float
    idle: float
    total: float


@dataclass(frozen=True, slots=True)
class Call:
    """One request to one upstream: the transport and clock it goes by, where it goes, its
    body and its deadlines."""

    transport: Transport
    clock: Clock
    backend: str  # base URL
    path: str
    payload: bytes
    deadlines: Deadlines


@dataclass(slots=True)
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


class Sink(Protocol):
    """Where a committed attempt's answer goes (gateway/relay.py)."""

    @property
    def piping(self) -> bool:
        """Once committed, write_now may take the rest of the stream."""
        ...

    async def commit(self) -> None:
        """The first output arrived: from now on the answer is this upstream's."""
        ...

    async def event(self, named: bytes, data: bytes, decoded: dict[str, Any] | None) -> None:
        """One event, in order: its `event:` line (b"" when it had none), its data payload,
        and the payload's object when the reader already decoded it (else None)."""
        ...

    async def whole(self, body: bytes, answer: dict[str, Any]) -> None:
        """The upstream answered the stream request with one JSON body."""
        ...

    def write_now(self, named: bytes, data: bytes, decoded: dict[str, Any] | None) -> bool:
        """`event` without a wait, from inside the upstream connection's callback (the relay
        of a committed stream); True when the client's buffer is full and `drain` is due.
        Raises ClientGone or MalformedStream as `event` does."""
        ...

    async def drain(self) -> None:
        """Wait until the client has taken what `write_now` buffered."""
        ...


class AttemptWatchdog(Watchdog):
    """The attempt's deadline timer, knowing when the attempt started and must end."""

    def __init__(self, clock: Clock, deadline: float, start: float, total_deadline: float) -> None:
        super().__init__(clock, deadline)
        self.start = start
        self.total_deadline = total_deadline


BodyReader = Callable[[Response, Attempt, AttemptWatchdog], Awaitable[None]]


async def attempt(call: Call, sink: Sink, kind_of: KindOf = classify_chunk) -> Attempt:
    """POST the call's payload and relay the upstream's SSE events through `sink`."""
    clock = call.clock

    async def read(response: Response, result: Attempt, watchdog: AttemptWatchdog) -> None:
        if response.headers.get("content-type", "").startswith("application/json"):
            await _whole_answer(response, result, watchdog, clock, sink)
        else:
            await _relay(response, result, watchdog, clock, call.deadlines, sink, kind_of)

    return await _run(call, "text/event-stream", read)


async def exchange(call: Call) -> Attempt:
    """POST the call's payload and read the whole answer into `Attempt.body` (non-streaming
    APIs)."""

    async def read(response: Response, result: Attempt, watchdog: AttemptWatchdog) -> None:
        watchdog.deadline = watchdog.total_deadline
        result.body = await response.read_all()
        result.committed = True
        result.ttft_s = call.clock.now() - watchdog.start

    return await _run(call, "application/json", read)


async def _run(call: Call, accept: str, read: BodyReader) -> Attempt:
    """One request under the deadlines; `read` takes a 200 response's body."""
    clock, deadlines = call.clock, call.deadlines
    start = clock.now()
    result = Attempt(backend=call.backend)
    first_deadline = start + min(deadlines.first_token, deadlines.total)
    watchdog = AttemptWatchdog(clock, first_deadline, start, start + deadlines.total)
    response: Response | None = None
    try:
        response = await call.transport.request(
            "POST", call.backend, call.path, call.payload, deadlines.connect, accept
        )
        result.status = response.status
        if response.status != 200:
            watchdog.deadline = watchdog.total_deadline
            result.body = await response.read_all()
            result.outcome = classify_status(response.status, result.body)
            result.detail = f"HTTP {response.status}"
            retry_after = response.headers.get("retry-after", "")
            if retry_after.replace(".", "", 1).isdigit():
                result.retry_after_s = float(retry_after)
            return _done(result, clock, start)
        await read(response, result, watchdog)
        return _done(result, clock, start)
    except asyncio.CancelledError:
        if not watchdog.expired:
            raise  # the gateway is stopping: not ours to handle
        watchdog.absorb()
        _timed_out(result, response, clock, watchdog, deadlines)
        return _done(result, clock, start)
    except UpstreamConnectError as exc:
        result.outcome, result.detail, result.cause = Outcome.CONNECT, "cannot connect", str(exc)
        return _done(result, clock, start)
    except UpstreamResetError as exc:
        result.outcome, result.cause = Outcome.RESET, str(exc)
        result.detail = (
            "connection lost before headers" if exc.before_headers else "connection lost"
        )
        return _done(result, clock, start)
    except MalformedStream as exc:
        result.outcome, result.detail = Outcome.SERVER_ERROR, "malformed event in the stream"
        result.cause = str(exc)
        return _done(result, clock, start)
    except ClientGone:
        result.outcome, result.detail = Outcome.CLIENT_GONE, "the client closed the connection"
        return _done(result, clock, start)
    finally:
        watchdog.close()
        if response is not None:
            response.close()  # never leave an upstream generating for nobody


def _timed_out(
    result: Attempt,
    response: Response | None,
    clock: Clock,
    watchdog: AttemptWatchdog,
    deadlines: Deadlines,
) -> None:
    if response is None:
        result.outcome, result.detail = Outcome.FIRST_TOKEN_TIMEOUT, "no response headers in time"
    elif clock.now() >= watchdog.total_deadline:
        result.outcome = Outcome.TOTAL_TIMEOUT
        result.detail = f"not finished within {deadlines.total:g} s"
    elif not result.committed:
        result.outcome = Outcome.FIRST_TOKEN_TIMEOUT
        result.detail = f"no first token within {deadlines.first_token:g} s"
    else:
        result.outcome = Outcome.IDLE_TIMEOUT
        result.detail = f"no event for {deadlines.idle:g} s"


async def _whole_answer(
    response: Response, result: Attempt, watchdog: AttemptWatchdog, clock: Clock, sink: Sink
) -> None:
    """A complete JSON answer where a stream was asked for: the answer, if it is one."""
    watchdog.deadline = watchdog.total_deadline
    body = await response.read_all()
    answer = decode(body)
    if answer is None:
        raise MalformedStream(f"a 200 answer that is not a JSON object: {body[:80]!r}")
    if is_error(answer):
        result.outcome, result.body = Outcome.SERVER_ERROR, body
        result.detail = "error object in a 200 answer"
        return
    result.committed = True
    result.ttft_s = clock.now() - watchdog.start
    await sink.commit()
    await sink.whole(body, answer)


async def _relay(
    response: Response,
    result: Attempt,
    watchdog: AttemptWatchdog,
    clock: Clock,
    deadlines: Deadlines,
    sink: Sink,
    kind_of: KindOf,
) -> None:
    """Read the SSE body as it arrives (whole reads, not line by line) and hand on events,
    each with its `event:` line when the upstream names events."""
    now = clock.now
    idle, total_deadline = deadlines.idle, watchdog.total_deadline

    def alive() -> None:
        """An event came: the idle deadline starts again (never past the total one)."""
        watchdog.deadline = min(now() + idle, total_deadline)

    reader = SseReader()
    pending: list[tuple[bytes, bytes, dict[str, Any] | None]] = []
    while True:
        data = await response.read_any()
        events = reader.feed(data) if data else reader.end()
        if result.committed:
            alive()
        for named, payload in events:
            kind, decoded = kind_of(payload)
            if kind >= Kind.ERROR:
                _failed_event(result, kind, payload)
                return
            if not result.committed and kind in _STARTS_OUTPUT:
                result.committed = True
                result.ttft_s = now() - watchdog.start
                alive()
                await sink.commit()
                for earlier in pending:
                    await sink.event(*earlier)
                pending.clear()
            if result.committed:
                await sink.event(named, payload, decoded)
            else:
                pending.append((named, payload, decoded))
            if kind is Kind.DONE:
                await response.finish()  # the connection goes back to the pool
                return
        if not data:
            break
        if result.committed and sink.piping:
            await _piped(response, result, alive, sink, kind_of, reader)
            return
    result.outcome = Outcome.RESET
    result.detail = "stream ended before its last event"


def _failed_event(result: Attempt, kind: Kind, payload: bytes) -> None:
    """The upstream's stream carried an error event, or one that is not JSON."""
    result.outcome, result.body = Outcome.SERVER_ERROR, payload
    result.detail = (
        "error event in the stream" if kind is Kind.ERROR else "malformed event in the stream"
    )


async def _piped(
    response: Response,
    result: Attempt,
    alive: Callable[[], None],
    sink: Sink,
    kind_of: KindOf,
    reader: SseReader,
) -> None:
    """The rest of a committed stream, relayed from inside the upstream connection's own
    callback: each event goes to the sink as its bytes arrive, without a task waking per
    chunk (what `_relay`'s loop costs per chunk is most of the gateway's own CPU for a
    stream). This task waits only for the end, a full client buffer, or an error."""
    ended: list[str] = []  # "done", "error" or "full", set by the callback
    failure: list[Exception] = []

    def hand_on(events: list[tuple[bytes, bytes]]) -> bool:
        full = False
        for named, payload in events:
            kind, decoded = kind_of(payload)
            if kind >= Kind.ERROR:
                _failed_event(result, kind, payload)
                ended.append("error")
                return True
            full = sink.write_now(named, payload, decoded) or full
            if kind is Kind.DONE:
                ended.append("done")
                return True
        if full:
            ended.append("full")
        return full

    def consume(data: bytes) -> bool:
        try:
            alive()
            return hand_on(reader.feed(data))
        except Exception as exc:  # ClientGone, MalformedStream: raised in this task below
            failure.append(exc)
            return True

    while True:
        await response.pipe(consume)
        if failure:
            raise failure[0]
        state = ended.pop() if ended else ""
        if state == "done":
            await response.finish()  # the connection goes back to the pool
            return
        if state == "error":
            return
        if state == "full":
            # what arrives meanwhile waits in the connection's buffer, which stops reading
            # from the upstream at its own limit (http/client.py), as a read_any loop does
            await sink.drain()
            continue
        # the body ended: its last line may have come without a newline
        hand_on(reader.end())
        if ended and ended[-1] != "full":  # its [DONE] or an error event
            return
        result.outcome = Outcome.RESET
        result.detail = "stream ended before its last event"
        return


def _done(result: Attempt, clock: Clock, start: float) -> Attempt:
    result.elapsed_s = clock.now() - start
    return result
