"""The gateway in this process on fakes: a clock the test moves by hand, engines that answer
through `FakeTransport` (no sockets upstream) with the faults a test sets, and a real aiohttp
test server in front (loopback, a free port) for the client's side.

Nothing here waits on real time: a deadline fires when the test moves the clock past it, and
`eventually` polls a condition while the event loop runs (with a real-time bound only as a
safety net)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from modelyard.catalog import Catalog
from modelyard.fleet import Fleet, LoadedFleet, check_fleet
from modelyard.gateway.access_log import AccessLog
from modelyard.gateway.app import create_app
from modelyard.gateway.server import endpoints_for
from modelyard.gateway.state import Gateway
from modelyard.http.errors import UpstreamConnectError, UpstreamResetError
from modelyard.http.fake import SSE, FakeTransport, Reply, Request, sse
from modelyard.yamlsource import load_yaml


@functools.cache
def _catalog() -> Catalog:
    return Catalog.load()


def load_test_fleet(path: Path) -> LoadedFleet:
    """`load_fleet` with the built-in catalog read once per test session (it takes ~0.15 s)."""
    fleet = Fleet.model_validate(load_yaml(path).data)
    problems = check_fleet(fleet, _catalog())
    assert problems == [], problems
    return LoadedFleet(fleet=fleet, catalog=_catalog(), path=path)


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Monotonic seconds that pass only when `advance` is called; timers fire in order."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, Callable[[], None], FakeTimer]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer()
        heapq.heappush(self._timers, (when, next(self._order), callback, timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        done = asyncio.get_running_loop().create_future()
        timer = self.call_at(self._now + seconds, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            timer.cancel()

    def sleeping_until(self, when: float) -> bool:
        """Whether some timer is set for `when` or later (a loop has gone to sleep that long)."""
        return any(at >= when and not timer.cancelled for at, _, _, timer in self._timers)

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, firing every timer due on the way, in order."""
        until = self._now + seconds
        while self._timers and self._timers[0][0] <= until:
            when, _, callback, timer = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                callback()
        self._now = until


async def eventually(condition: Callable[[], bool], what: str = "the condition") -> None:
    """Let the event loop run until `condition()` holds (fails after 5 s of real time)."""
    end = time.monotonic() + 5.0
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not come true")
        await asyncio.sleep(0)


@dataclass
class Faults:
    """What a fake engine does wrong; times are on the fake clock."""

    status: int | None = None  # answer this status with `error_body`
    error_body: Any = None
    retry_after: str | None = None
    refuse: bool = False  # connection refused
    hang: bool = False  # never sends headers
    first_token_delay_s: float = 0.0
    token_gap_s: float = 0.0
    close_after_tokens: int | None = None  # the connection breaks after this many tokens
    stall_after_tokens: int | None = None  # then nothing more, ever
    malformed_after_tokens: int | None = None  # then `data: not json`
    whole_json: bool = False  # answers `stream: true` with a complete JSON body
    health_status: int = 200
    health_hang: bool = False
    waiting: float = 0.0  # the queue its /metrics reports


ERROR_BODY = {"error": {"message": "boom", "type": "server_error", "code": 500}}


@dataclass
class FakeEngine:
    """An OpenAI-compatible engine in memory, answering as the sim engine does: words
    `w0 w1 ...`, `max_tokens` of them, usage when asked."""

    name: str
    clock: FakeClock
    faults: Faults = field(default_factory=Faults)
    requests: list[Request] = field(default_factory=list)
    tokens_sent: int = 0
    started: int = 0  # generation requests that got headers

    def generations(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]

    async def __call__(self, request: Request) -> Reply:
        self.requests.append(request)
        faults = self.faults
        if faults.refuse:
            raise UpstreamConnectError(f"{self.name}: connection refused")
        if request.path == "/health":
            if faults.health_hang:
                await asyncio.Event().wait()
            return Reply(faults.health_status, {"content-type": "application/json"}, b"{}")
        if request.path == "/metrics":
            text = f"vllm:num_requests_running 0.0\nvllm:num_requests_waiting {faults.waiting}\n"
            return Reply(200, {"content-type": "text/plain"}, text.encode())
        if request.path == "/v1/models":
            card = {"id": self.name, "object": "model", "owned_by": "fake", "max_model_len": 4096}
            return Reply.json({"object": "list", "data": [card]})
        if faults.hang:
            await asyncio.Event().wait()
        if faults.status is not None:
            headers = {"content-type": "application/json"}
            if faults.retry_after is not None:
                headers["retry-after"] = faults.retry_after
            body = faults.error_body if faults.error_body is not None else ERROR_BODY
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            return Reply(faults.status, headers, data)
        body = request.json()
        self.started += 1
        if request.path == "/v1/embeddings":
            return Reply.json(
                {"object": "list", "data": [{"embedding": [0.1]}], "model": self.name}
            )
        chat = request.path == "/v1/chat/completions"
        if faults.whole_json or not body.get("stream"):
            return Reply.json(_answer(body, chat))
        return Reply(200, SSE, self._stream(body, chat))

    async def _stream(self, body: dict[str, Any], chat: bool) -> AsyncIterator[bytes]:
        faults = self.faults
        tokens = int(body.get("max_tokens") or 16)
        if faults.first_token_delay_s:
            await self.clock.sleep(faults.first_token_delay_s)
        if chat:
            yield sse(_chunk(body, chat, {"role": "assistant", "content": ""}))
        for index in range(tokens):
            if index and faults.token_gap_s:
                await self.clock.sleep(faults.token_gap_s)
            if index == faults.close_after_tokens:
                raise UpstreamResetError("connection closed mid-body (EOF)", False)
            if index == faults.stall_after_tokens:
                await asyncio.Event().wait()
            if index == faults.malformed_after_tokens:
                yield b"data: not json\n\n"
                return
            self.tokens_sent += 1
            piece = {"content": f"w{index} "} if chat else {"text": f"w{index} "}
            yield sse(_chunk(body, chat, piece))
        yield sse(_chunk(body, chat, {"content": ""} if chat else {"text": ""}, "length"))
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            usage = {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": tokens + 3}
            yield sse(orjson.dumps({**_top(body, chat), "choices": [], "usage": usage}))
        yield sse(b"[DONE]")


def _top(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    kind = "chat.completion.chunk" if chat else "text_completion"
    return {"id": "cmpl-fake", "object": kind, "created": 1, "model": body.get("model")}


def _chunk(
    body: dict[str, Any], chat: bool, piece: dict[str, Any], finish: str | None = None
) -> bytes:
    choice: dict[str, Any] = {"index": 0}
    choice.update({"delta": piece} if chat else piece)
    choice.update({"logprobs": None, "finish_reason": finish})
    return orjson.dumps({**_top(body, chat), "choices": [choice]})


def _answer(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    tokens = int(body.get("max_tokens") or 16)
    text = "".join(f"w{i} " for i in range(tokens))
    content: dict[str, Any] = (
        {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
    )
    usage = {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": tokens + 3}
    return {
        "id": "cmpl-fake",
        "object": "chat.completion" if chat else "text_completion",
        "created": 1,
        "model": body.get("model"),
        "choices": [{"index": 0, **content, "logprobs": None, "finish_reason": "length"}],
        "usage": usage,
    }


FLEET = """\
name: gw-test
models:
  primary: {{catalog: qwen2.5-7b, engine: sim, gpu: h100-sxm, endpoints: [{primary}]}}
  fallback: {{catalog: qwen2.5-7b, engine: sim, gpu: h100-sxm, endpoints: [{fallback}]}}
routes:
  - {{match: {{task: summary}}, targets: [fallback, primary]}}
  - {{name: chat, targets: [primary, fallback]}}
{routes}policy:
  breaker: {{consecutive_failures: 2, open_for: 1s, half_open_probes: 1}}
  retry: {{attempts: 1, backoff: 10ms}}
  timeouts: {{connect: 1s, first_token: 1s, idle: 1s, total: 30s}}
  health: {{interval: 30s, warmup_every: 1h}}
"""


def fleet_text(
    extra: str = "",
    routes: str = "",
    primary: str = '"http://primary:8000"',
    fallback: str = '"http://fallback:8000"',
) -> str:
    """FLEET with `routes` (YAML list items) added to its routes and `extra` at the end."""
    return FLEET.format(primary=primary, fallback=fallback, routes=routes) + extra


@dataclass
class System:
    """A gateway on fakes, and a client for it."""

    gateway: Gateway
    client: aiohttp.ClientSession  # its base URL is the gateway's
    clock: FakeClock
    transport: FakeTransport
    engines: dict[str, FakeEngine]  # by URL
    log_lines: list[bytes]
    fleet_path: Path

    def engine(self, model: str) -> FakeEngine:
        return next(e for e in self.engines.values() if e.name == model)

    def access_lines(self) -> list[dict[str, Any]]:
        """Every access-log record written so far (the batch flushed first)."""
        self.gateway.access.flush()
        records = [orjson.loads(line) for chunk in self.log_lines for line in chunk.splitlines()]
        return [r for r in records if r["event"] == "access"]

    async def post(self, path: str, body: dict[str, Any], **kwargs: Any) -> tuple[int, Any, Any]:
        """Status, headers and the JSON body of one request."""
        async with self.client.post(path, json=body, **kwargs) as response:
            return response.status, response.headers, await response.json(content_type=None)

    async def stream(self, body: dict[str, Any], path: str = "/v1/completions") -> list[bytes]:
        """The non-empty lines of a streamed answer."""
        async with self.client.post(path, json={**body, "stream": True}) as response:
            assert response.status == 200, await response.text()
            return [line.strip() async for line in response.content if line.strip()]

    def metric(self, name: str, **labels: str) -> float | None:
        value = self.gateway.metrics.registry.get_sample_value(name, labels)
        return None if value is None else float(value)


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    extra: str = "",
    background: bool = False,
    environ: dict[str, str] | None = None,
    routes: str = "",
) -> AsyncIterator[System]:
    """The two-model gateway of FLEET (plus `extra` YAML) on fake engines and a fake clock."""
    clock = FakeClock()
    engines = {
        "http://primary:8000": FakeEngine("primary", clock),
        "http://fallback:8000": FakeEngine("fallback", clock),
        "http://other:8000": FakeEngine("other", clock),  # for fleets that add a replica
    }

    async def upstream(request: Request) -> Reply:
        return await engines[request.url](request)

    transport = FakeTransport(upstream)
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_text(extra, routes))
    loaded = load_test_fleet(path)
    lines: list[bytes] = []
    gateway = Gateway.build(
        loaded,
        endpoints_for(loaded, None),
        transport,
        clock,
        AccessLog(clock, lines.append),
        environ or {},
    )
    # as `modelyard gateway` runs it: a handler is not cancelled when its client goes away
    runner = web.AppRunner(create_app(gateway, background=background), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    client = aiohttp.ClientSession(base_url=f"http://{host}:{port}")
    try:
        yield System(gateway, client, clock, transport, engines, lines, path)
    finally:
        await client.close()
        await runner.cleanup()


def run(scenario: Callable[[], Any]) -> None:
    asyncio.run(scenario())
