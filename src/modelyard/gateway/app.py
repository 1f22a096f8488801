"""The gateway's HTTP side: OpenAI-compatible endpoints, fallback across candidates, health
checks and warm-up. One `Gateway` object per process, built by the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from modelyard.engines import EngineMetrics, adapter_for
from modelyard.fleet import LoadedFleet
from modelyard.gateway.auth import KeyCheck, RateLimiter
from modelyard.gateway.breaker import Breaker, State
from modelyard.gateway.errors import Outcome, policy
from modelyard.gateway.metrics import GatewayMetrics
from modelyard.gateway.routing import Resolution, RouteNotFoundError, Router, pick_replica
from modelyard.gateway.upstream import Attempt, Deadlines, attempt
from modelyard.http.client import Pool

TASK_HEADER = "X-Modelyard-Task"
REQUEST_ID = "modelyard_request_id"
RATE_LIMIT_PAUSE_S = 1.0  # a 429 without Retry-After backs the replica off this long
MAX_RATE_LIMIT_PAUSE_S = 60.0
OUTCOME = "modelyard_outcome"
CALLER = "modelyard_caller"
BREAKER_GAUGE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}
log = logging.getLogger("modelyard.gateway")


def error_response(
    message: str,
    status: int,
    kind: str,
    code: str | int | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "error": {"message": message, "type": kind, "code": code if code is not None else status}
    }
    if extra:
        body["error"].update(extra)
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _openai_error_body(status: int, body: bytes) -> bytes:
    """An upstream error as OpenAI's shape; vLLM's {"object":"error",...} is flattened."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return body
    message = data.get("message") if isinstance(data, dict) else body.decode(errors="replace")
    kind = data.get("type") if isinstance(data, dict) else "upstream_error"
    return orjson.dumps(
        {"error": {"message": message or f"HTTP {status}", "type": kind, "code": status}}
    )


@dataclass
class BackendState:
    model: str
    url: str
    engine: str
    breaker: Breaker
    healthy: bool | None = None
    outstanding: int = 0
    last_error: str = ""
    backoff_until: float = 0.0  # after a 429: skipped, without counting toward the breaker
    engine_waiting: float = 0.0  # from the engine's /metrics, when weight_by_engine_load
    gauge: float | None = None  # the breaker state last exported


class AccessLog:
    """One JSON line per answered request on stderr, written in batches (one write per 50 ms)
    rather than a formatted log record and a flush per request."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.lines: list[bytes] = []
        self.handle: asyncio.TimerHandle | None = None

    def write(self, record: dict[str, Any]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        self.lines.append(orjson.dumps(record))
        if self.handle is None:
            self.handle = asyncio.get_running_loop().call_later(self.interval_s, self.flush)

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.lines:
            lines, self.lines = self.lines, []
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.buffer.write(b"\n".join(lines) + b"\n")
                sys.stderr.buffer.flush()


@dataclass
class Gateway:
    """Everything a gateway process holds: routes, backends, breakers, clients, metrics."""

    loaded: LoadedFleet
    backends: dict[str, list[BackendState]]
    router: Router
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    session: aiohttp.ClientSession | None = None  # health checks, metrics scrapes
    pool: Pool = field(default_factory=Pool)  # requests to upstreams (modelyard/http/client.py)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    keys: KeyCheck = field(default_factory=lambda: KeyCheck(()))
    limiter: RateLimiter | None = None
    access: AccessLog = field(default_factory=AccessLog)
    # request ids: unique per process (random prefix) without a uuid4 per request
    id_prefix: str = field(default_factory=lambda: os.urandom(6).hex())

    @classmethod
    def build(cls, loaded: LoadedFleet, endpoints: dict[str, list[str]]) -> Gateway:
        breaker = loaded.fleet.policy.breaker
        backends = {
            model: [
                BackendState(
                    model,
                    url.rstrip("/"),
                    loaded.fleet.models[model].engine,
                    Breaker(
                        breaker.consecutive_failures, breaker.open_for, breaker.half_open_probes
                    ),
                )
                for url in urls
            ]
            for model, urls in endpoints.items()
        }
        config = loaded.fleet.gateway
        from_env = [h.strip() for h in os.environ.get(config.api_key_hashes_env, "").split(",")]
        keys = KeyCheck(tuple(config.api_key_hashes) + tuple(h for h in from_env if h))
        limit = config.rate_limit
        limiter = RateLimiter(limit.requests_per_second, limit.burst) if limit else None
        return cls(
            loaded=loaded,
            backends=backends,
            router=Router(loaded.fleet),
            keys=keys,
            limiter=limiter,
        )

    @property
    def deadlines(self) -> Deadlines:
        t = self.loaded.fleet.policy.timeouts
        return Deadlines(connect=t.connect, first_token=t.first_token, idle=t.idle, total=t.total)

    def now(self) -> float:
        return time.monotonic()

    def _update_gauge(self, backend: BackendState) -> None:
        value = BREAKER_GAUGE[backend.breaker.current(self.now())]
        if value != backend.gauge:
            backend.gauge = value
            self.metrics.of(self.metrics.breaker_state, backend.model, backend.url).set(value)

    def record(self, backend: BackendState, result: Attempt) -> None:
        now = self.now()
        rule = policy(result.outcome)
        if result.outcome is Outcome.OK:
            backend.breaker.on_success(now)
        elif rule.counts:
            backend.breaker.on_failure(now)
            backend.last_error = f"{result.outcome.value}: {result.detail}"
        else:
            backend.breaker.on_neutral(now)
        if result.outcome is Outcome.RATE_LIMITED:
            pause = result.retry_after_s if result.retry_after_s is not None else RATE_LIMIT_PAUSE_S
            backend.backoff_until = now + min(pause, MAX_RATE_LIMIT_PAUSE_S)
        self._update_gauge(backend)
        self.metrics.of(
            self.metrics.attempts, backend.model, backend.url, result.outcome.value
        ).inc()
        if result.ttft_s is not None:
            self.metrics.of(self.metrics.ttft, backend.model).observe(result.ttft_s)
        self.metrics.of(self.metrics.latency, backend.model).observe(result.elapsed_s)


class _Assembler:
    """Builds a non-streaming answer from the upstream's stream."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.text: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.head: dict[str, Any] = {}

    async def commit(self) -> None:
        return None

    async def line(self, event: bytes) -> None:
        data = event[5:].strip()
        if data == b"[DONE]":
            return
        chunk = orjson.loads(data)
        if not self.head:
            self.head = {k: chunk[k] for k in ("id", "created", "model") if k in chunk}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
            if piece:
                self.text.append(piece)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def body(self) -> dict[str, Any]:
        text = "".join(self.text)
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text}
            kind = "text_completion"
        choice.update(logprobs=None, finish_reason=self.finish_reason)
        body = {**self.head, "object": kind, "choices": [choice]}
        if self.usage is not None:
            body["usage"] = self.usage
        return body


class _Relay:
    """Streams a committed attempt's events to the client as they arrive."""

    def __init__(self, http: web.Request, headers: dict[str, str]) -> None:
        self.http = http
        self.headers = headers
        self.response: web.StreamResponse | None = None

    async def commit(self) -> None:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **self.headers,
            }
        )
        await response.prepare(self.http)
        self.response = response

    async def line(self, event: bytes) -> None:
        assert self.response is not None
        await self.response.write(event)


async def _generate(http: web.Request, chat: bool) -> web.StreamResponse:
    gateway: Gateway = http.app[GATEWAY]
    raw = await http.read()
    try:
        body = orjson.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
    except (ValueError, orjson.JSONDecodeError) as exc:
        return error_response(f"invalid JSON body: {exc}", 400, "invalid_request_error")
    metadata = body.get("metadata")
    task = http.headers.get(TASK_HEADER) or (
        metadata.get("task") if isinstance(metadata, dict) else None
    )
    requested = body.get("model")
    try:
        resolution = gateway.router.resolve(requested, task)
    except RouteNotFoundError:
        return error_response(
            f"The model `{requested}` does not exist. Known: {', '.join(gateway.router.names())}",
            404,
            "invalid_request_error",
            "model_not_found",
        )
    stream = bool(body.get("stream"))
    gateway.metrics.in_flight.inc()
    try:
        return await _try_candidates(gateway, http, body, resolution, chat, stream)
    finally:
        gateway.metrics.in_flight.dec()


async def _try_candidates(
    gateway: Gateway,
    http: web.Request,
    body: dict[str, Any],
    resolution: Resolution,
    chat: bool,
    stream: bool,
) -> web.StreamResponse:
    path = "/v1/chat/completions" if chat else "/v1/completions"
    fleet = gateway.loaded.fleet
    budget = 1 + fleet.policy.retry.attempts
    tried: list[dict[str, str]] = []
    failed: set[str] = set()
    attempts = 0
    assert gateway.session is not None
    for round_index in range(budget):
        for model in resolution.models:
            if attempts >= budget:
                break
            replicas = gateway.backends.get(model, [])
            now = gateway.now()
            untried = [b for b in replicas if b.url not in failed and b.backoff_until <= now]
            # allow() reserves a half-open probe slot for each replica it lets through; only
            # the replica we pick keeps its slot, the others give theirs back
            usable = [b for b in untried if b.breaker.allow(gateway.now())]
            weigh = fleet.gateway.weight_by_engine_load
            load = {b.url: b.outstanding + (b.engine_waiting if weigh else 0.0) for b in usable}
            choice_url = pick_replica([b.url for b in usable], load, gateway.rng, set())
            for b in usable:
                if b.url != choice_url:
                    b.breaker.on_neutral(gateway.now())
            if choice_url is None:
                if round_index == 0:
                    paused = any(b.backoff_until > now for b in replicas)
                    why = (
                        "breaker open"
                        if untried
                        else "rate limited, backing off"
                        if paused
                        else "no backend"
                    )
                    tried.append({"model": model, "backend": "", "error": why})
                continue
            backend = next(b for b in usable if b.url == choice_url)
            if attempts > 0:
                gateway.metrics.of(gateway.metrics.retries, resolution.route).inc()
                if round_index > 0:
                    await asyncio.sleep(fleet.policy.retry.backoff)
            attempts += 1
            payload = orjson.dumps(
                {**body, "model": model, "stream": True, "stream_options": {"include_usage": True}}
            )
            headers = {
                "X-Modelyard-Model": model,
                "X-Modelyard-Backend": backend.url,
                "X-Modelyard-Attempts": str(attempts),
                "X-Request-Id": http.get(REQUEST_ID, ""),
            }
            sink: _Relay | _Assembler = _Relay(http, headers) if stream else _Assembler(chat)
            backend.outstanding += 1
            try:
                result = await attempt(
                    gateway.pool,
                    backend.url,
                    path,
                    payload,
                    gateway.deadlines,
                    sink.commit,
                    sink.line,
                )
            finally:
                backend.outstanding -= 1
            committed_to_client = stream and result.committed
            if result.outcome is not Outcome.OK and committed_to_client:
                result.outcome = Outcome.MID_STREAM
            gateway.record(backend, result)
            if result.outcome is Outcome.OK:
                _log(http, resolution, model, backend.url, attempts, "ok")
                return _finish(gateway, resolution, model, sink, headers)
            if committed_to_client:
                assert isinstance(sink, _Relay) and sink.response is not None
                message = f"upstream {model} failed mid-stream: {result.detail}"
                error = {"error": {"message": message, "type": "upstream_error", "code": 502}}
                with contextlib.suppress(ConnectionResetError):
                    await sink.response.write(b"data: " + orjson.dumps(error) + b"\n\n")
                gateway.metrics.of(
                    gateway.metrics.requests, resolution.route, model, "mid_stream"
                ).inc()
                _log(http, resolution, model, backend.url, attempts, "mid_stream")
                return sink.response  # closed without [DONE]: never a clean end
            tried.append(
                {
                    "model": model,
                    "backend": backend.url,
                    "error": f"{result.outcome.value}: {result.detail}",
                }
            )
            failed.add(backend.url)
            if result.outcome is Outcome.CLIENT_ERROR:
                gateway.metrics.of(
                    gateway.metrics.requests, resolution.route, model, "client_error"
                ).inc()
                _log(http, resolution, model, backend.url, attempts, "client_error")
                status = result.status or 400
                return web.Response(
                    body=_openai_error_body(status, result.body),
                    status=status,
                    content_type="application/json",
                    headers=headers,
                )
    gateway.metrics.of(gateway.metrics.requests, resolution.route, "", "unavailable").inc()
    summary = "; ".join(
        f"{t['model']} {t['backend']}: {t['error']}".replace("  ", " ") for t in tried
    )
    _log(http, resolution, "", "", attempts, "unavailable")
    return error_response(
        f"all candidates failed: {summary}", 503, "service_unavailable", extra={"tried": tried}
    )


def _finish(
    gateway: Gateway,
    resolution: Resolution,
    model: str,
    sink: _Relay | _Assembler,
    headers: dict[str, str],
) -> web.StreamResponse:
    gateway.metrics.of(gateway.metrics.requests, resolution.route, model, "ok").inc()
    if model != resolution.models[0]:
        gateway.metrics.of(gateway.metrics.fallbacks, resolution.route, model).inc()
    if isinstance(sink, _Relay):
        assert sink.response is not None
        return sink.response
    return web.Response(
        body=orjson.dumps(sink.body()), content_type="application/json", headers=headers
    )


def _log(
    http: web.Request, resolution: Resolution, model: str, backend: str, attempts: int, outcome: str
) -> None:
    http[OUTCOME] = {
        "route": resolution.route,
        "model": model,
        "backend": backend,
        "attempts": attempts,
        "outcome": outcome,
    }


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNGUARDED = frozenset({"/health", "/metrics"})


@web.middleware
async def outermost(http: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, OpenAI-shaped errors for everything, one JSON access-log line."""
    gateway: Gateway = http.app[GATEWAY]
    request_id = http.headers.get("X-Request-Id") or f"{gateway.id_prefix}{next(gateway.ids):08x}"
    http[REQUEST_ID] = request_id
    started = time.monotonic()
    try:
        response: web.StreamResponse = await guard(http, handler)
    except web.HTTPRequestEntityTooLarge as exc:
        response = error_response(
            f"request body too large: {exc.text}", 413, "invalid_request_error", "request_too_large"
        )
    except web.HTTPException as exc:
        response = error_response(exc.reason, exc.status, "invalid_request_error")
    except Exception:
        log.exception("unhandled error")  # the client gets JSON, the log the traceback
        response = error_response("internal gateway error", 500, "internal_error")
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    who = http.get(CALLER)
    gateway.access.write(
        {
            "event": "access",
            "request_id": request_id,
            "method": http.method,
            "path": http.path,
            "status": response.status,
            "ms": round((time.monotonic() - started) * 1000, 2),
            "key": who[:8] if who and gateway.keys.enabled else None,
            **http.get(OUTCOME, {}),
        }
    )
    return response


async def guard(http: web.Request, handler: Handler) -> web.StreamResponse:
    """API keys (when configured) and per-caller rate limits; called by `outermost` (one
    middleware layer instead of two)."""
    if http.path in UNGUARDED:
        passed: web.StreamResponse = await handler(http)
        return passed
    gateway: Gateway = http.app[GATEWAY]
    caller = http.remote or "unknown"
    if gateway.keys.enabled:
        key = gateway.keys.identify(http.headers.get("Authorization"))
        if key is None:
            return error_response(
                "Incorrect or missing API key (Authorization: Bearer ...)",
                401,
                "invalid_request_error",
                "invalid_api_key",
            )
        caller = key
    http[CALLER] = caller
    if gateway.limiter is not None:
        allowed, wait = gateway.limiter.allow(caller, gateway.now())
        if not allowed:
            limited = error_response(
                "rate limit exceeded for this API key",
                429,
                "rate_limit_exceeded",
                "rate_limit_exceeded",
            )
            limited.headers["Retry-After"] = str(max(1, round(wait)))
            return limited
    result: web.StreamResponse = await handler(http)
    return result


async def _models(http: web.Request) -> web.Response:
    gateway: Gateway = http.app[GATEWAY]
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "modelyard"}
        for name in gateway.router.names()
    ]
    return web.Response(
        body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )


async def _health(http: web.Request) -> web.Response:
    gateway: Gateway = http.app[GATEWAY]
    now = gateway.now()
    backends = [
        {
            "model": b.model,
            "url": b.url,
            "breaker": b.breaker.current(now).value,
            "healthy": b.healthy,
            "outstanding": b.outstanding,
            "backing_off_s": round(max(b.backoff_until - now, 0.0), 3),
            "last_error": b.last_error,
        }
        for replicas in gateway.backends.values()
        for b in replicas
    ]
    serving = any(b["breaker"] != "open" and b["healthy"] is not False for b in backends)
    return web.Response(
        body=orjson.dumps({"status": "ok", "serving": serving, "backends": backends}),
        content_type="application/json",
    )


async def _metrics(http: web.Request) -> web.Response:
    from prometheus_client import generate_latest

    gateway: Gateway = http.app[GATEWAY]
    return web.Response(
        body=generate_latest(gateway.metrics.registry), content_type="text/plain", charset="utf-8"
    )


async def _health_loop(gateway: Gateway) -> None:
    """Active health checks: a failing check counts toward the backend's breaker."""
    assert gateway.session is not None
    interval = gateway.loaded.fleet.policy.health.interval
    timeout = aiohttp.ClientTimeout(total=max(min(interval, 5.0), 0.5))
    while True:
        for replicas in gateway.backends.values():
            for backend in replicas:
                path = adapter_for(backend.engine).health_path
                try:
                    async with gateway.session.get(backend.url + path, timeout=timeout) as r:
                        backend.healthy = r.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    backend.healthy = False
                if not backend.healthy:
                    backend.breaker.on_failure(gateway.now())
                gateway.metrics.of(gateway.metrics.healthy, backend.model, backend.url).set(
                    1 if backend.healthy else 0
                )
                gateway._update_gauge(backend)
                if backend.healthy and gateway.loaded.fleet.gateway.weight_by_engine_load:
                    await _read_engine_load(gateway, backend, timeout)
        await asyncio.sleep(interval)


async def _read_engine_load(
    gateway: Gateway, backend: BackendState, timeout: aiohttp.ClientTimeout
) -> EngineMetrics | None:
    """The engine's queue length from its /metrics, through its adapter (None: unread)."""
    assert gateway.session is not None
    adapter = adapter_for(backend.engine)
    if adapter.metrics_path is None:
        return None
    try:
        async with gateway.session.get(backend.url + adapter.metrics_path, timeout=timeout) as r:
            metrics = adapter.parse_metrics(await r.text()) if r.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        metrics = None
    backend.engine_waiting = float(metrics.waiting or 0.0) if metrics is not None else 0.0
    return metrics


def fallback_models(gateway: Gateway) -> list[str]:
    """Models that are a fallback (not first) in some route: these get warmed up."""
    fleet = gateway.loaded.fleet
    seen: list[str] = []
    for route in fleet.routes:
        for model in route.targets[1:]:
            if model not in seen:
                seen.append(model)
    return seen


async def warm_up(gateway: Gateway) -> None:
    """One tiny completion to every replica of every fallback model; outcomes feed breakers."""
    assert gateway.session is not None
    deadlines = gateway.deadlines
    for model in fallback_models(gateway):
        for backend in gateway.backends.get(model, []):
            payload = orjson.dumps(
                {
                    "model": model,
                    "prompt": "Hello",
                    "max_tokens": 1,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            )
            sink = _Assembler(chat=False)
            result = await attempt(
                gateway.pool,
                backend.url,
                "/v1/completions",
                payload,
                deadlines,
                sink.commit,
                sink.line,
            )
            gateway.record(backend, result)
            gateway.metrics.of(gateway.metrics.warmups, model, result.outcome.value).inc()


async def _warmup_loop(gateway: Gateway) -> None:
    every = gateway.loaded.fleet.policy.health.warmup_every
    while True:
        await warm_up(gateway)
        await asyncio.sleep(every)


GATEWAY = web.AppKey("gateway", Gateway)


def create_app(gateway: Gateway) -> web.Application:
    app = web.Application(
        client_max_size=gateway.loaded.fleet.gateway.max_body_bytes,
        middlewares=[outermost],  # type: ignore[list-item]
    )
    app[GATEWAY] = gateway
    app.router.add_post("/v1/chat/completions", lambda r: _generate(r, chat=True))
    app.router.add_post("/v1/completions", lambda r: _generate(r, chat=False))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)

    async def lifecycle(app: web.Application) -> Any:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=True)
        gateway.session = aiohttp.ClientSession(connector=connector)
        tasks = [
            asyncio.create_task(_health_loop(gateway)),
            asyncio.create_task(_warmup_loop(gateway)),
        ]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await gateway.session.close()
        gateway.pool.close()

    app.cleanup_ctx.append(lifecycle)
    return app
