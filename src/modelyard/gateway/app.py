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
from modelyard.engines.api import COMPLETIONS, MODELS
from modelyard.fleet import LoadedFleet
from modelyard.gateway import models
from modelyard.gateway.auth import KeyCheck, RateLimiter
from modelyard.gateway.breaker import Breaker, State
from modelyard.gateway.endpoints import (
    ANSWERED,
    ROUTED,
    Endpoint,
    Upstream,
    upstream_body,
    wants_stream,
)
from modelyard.gateway.errors import Outcome, policy
from modelyard.gateway.metrics import GatewayMetrics
from modelyard.gateway.relay import AnswerSink, StreamRelay
from modelyard.gateway.routing import Resolution, RouteNotFoundError, Router, pick_replica
from modelyard.gateway.streams import failure_event, rules_for
from modelyard.gateway.upstream import Attempt, Deadlines, attempt, exchange
from modelyard.http.client import Pool

TASK_HEADER = "X-Modelyard-Task"
REQUEST_ID = web.RequestKey("modelyard_request_id", str)
RATE_LIMIT_PAUSE_S = 1.0  # a 429 without Retry-After backs the replica off this long
MAX_RATE_LIMIT_PAUSE_S = 60.0
OUTCOME = web.RequestKey("modelyard_outcome", dict[str, Any])
CALLER = web.RequestKey("modelyard_caller", str)
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
    """An upstream error as OpenAI's shape: a body already in it passes unchanged; vLLM's
    older {"object": "error", "message": ...} and FastAPI's {"detail": ...} (vLLM's answer for
    a route it does not have) become {"error": {...}} with their message and type."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return body
    if isinstance(data, dict):
        message = data.get("message") or data.get("detail")
        kind = data.get("type") or "upstream_error"
    else:
        message, kind = body.decode(errors="replace").strip(), "upstream_error"
    return orjson.dumps(
        {"error": {"message": str(message or f"HTTP {status}"), "type": kind, "code": status}}
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
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)  # engines' model entries

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

    def engine_of(self, model: str) -> str:
        return self.loaded.fleet.models[model].engine

    def serves(self, model: str) -> frozenset[str]:
        """The endpoints the engine of `model` serves (from its adapter)."""
        return adapter_for(self.engine_of(model)).serves

    def can_serve(self, backend: BackendState) -> bool:
        return (
            backend.breaker.current(self.now()) is not State.OPEN and backend.healthy is not False
        )

    def serving_routes(self) -> dict[str, bool]:
        """Per route: whether some target has a backend that is neither open nor unhealthy."""
        return {
            route.route: any(
                self.can_serve(b) for model in route.models for b in self.backends.get(model, [])
            )
            for route in self.router.routes()
        }

    def count_tokens(self, model: str, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        for kind in ("prompt_tokens", "completion_tokens"):
            value = usage.get(kind)
            if isinstance(value, int) and value > 0:
                self.metrics.of(self.metrics.tokens, model, kind.removesuffix("_tokens")).inc(value)

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
            backend.last_error = result.full_reason
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


async def _generate(http: web.Request, endpoint: Endpoint) -> web.StreamResponse:
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
    serving = tuple(m for m in resolution.models if endpoint.path in gateway.serves(m))
    if not serving:
        engines = ", ".join(f"{m} ({gateway.engine_of(m)})" for m in resolution.models)
        return error_response(
            f"{endpoint.path} is not served by the engines of `{resolution.route}`: {engines}",
            404,
            "invalid_request_error",
            "endpoint_not_served",
        )
    stream = endpoint.upstream is not Upstream.WHOLE and wants_stream(body)
    gateway.metrics.in_flight.inc()
    try:
        return await _try_candidates(
            gateway, http, body, Resolution(resolution.route, serving), endpoint, stream
        )
    finally:
        gateway.metrics.in_flight.dec()


Sink = StreamRelay | AnswerSink


def _sink_for(
    http: web.Request,
    endpoint: Endpoint,
    backend: BackendState,
    stream: bool,
    headers: dict[str, str],
) -> Sink:
    if stream:
        return StreamRelay(http, headers)
    return AnswerSink(endpoint, adapter_for(backend.engine).answer_shapes.get(endpoint.path))


async def _send(
    gateway: Gateway, backend: BackendState, endpoint: Endpoint, payload: bytes, sink: Sink | None
) -> Attempt:
    """One attempt at `backend`, its events into `sink` (None: a whole body)."""
    backend.outstanding += 1
    try:
        if sink is None:
            return await exchange(
                gateway.pool, backend.url, endpoint.path, payload, gateway.deadlines
            )
        return await attempt(
            gateway.pool,
            backend.url,
            endpoint.path,
            payload,
            gateway.deadlines,
            sink.commit,
            sink.line,
            rules_for(endpoint.upstream),
        )
    finally:
        backend.outstanding -= 1


async def _try_candidates(
    gateway: Gateway,
    http: web.Request,
    body: dict[str, Any],
    resolution: Resolution,
    endpoint: Endpoint,
    stream: bool,
) -> web.StreamResponse:
    fleet = gateway.loaded.fleet
    budget = 1 + fleet.policy.retry.attempts
    tried: list[dict[str, str]] = []  # for the client: models and reasons, no addresses
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
                    tried.append({"model": model, "error": why})
                continue
            backend = next(b for b in usable if b.url == choice_url)
            if attempts > 0:
                gateway.metrics.of(gateway.metrics.retries, resolution.route).inc()
                if round_index > 0:
                    await asyncio.sleep(fleet.policy.retry.backoff)
            attempts += 1
            headers = {
                "X-Modelyard-Model": model,
                "X-Modelyard-Backend": backend.url,
                "X-Modelyard-Attempts": str(attempts),
                "X-Request-Id": http.get(REQUEST_ID, ""),
            }
            whole = endpoint.upstream is Upstream.WHOLE
            sink = None if whole else _sink_for(http, endpoint, backend, stream, headers)
            payload = upstream_body(endpoint, body, model)
            result = await _send(gateway, backend, endpoint, payload, sink)
            committed_to_client = stream and result.committed
            if result.outcome is not Outcome.OK and committed_to_client:
                result.outcome = Outcome.MID_STREAM
            gateway.record(backend, result)
            if result.outcome is Outcome.OK:
                _log(http, resolution, model, backend.url, attempts, "ok")
                return _finish(gateway, resolution, model, sink, result, headers)
            gateway.access.write(
                {
                    "event": "attempt_failed",
                    "request_id": http.get(REQUEST_ID, ""),
                    "model": model,
                    "backend": backend.url,
                    "why": result.full_reason,
                }
            )
            if committed_to_client:
                assert isinstance(sink, StreamRelay) and sink.response is not None
                message = f"upstream {model} failed mid-stream: {result.reason}"
                with contextlib.suppress(ConnectionResetError):
                    await sink.response.write(failure_event(endpoint.upstream, message))
                gateway.metrics.of(
                    gateway.metrics.requests, resolution.route, model, "mid_stream"
                ).inc()
                _log(http, resolution, model, backend.url, attempts, "mid_stream")
                return sink.response  # closed without [DONE]: never a clean end
            tried.append({"model": model, "error": result.reason})
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
    summary = "; ".join(f"{t['model']}: {t['error']}" for t in tried)
    _log(http, resolution, "", "", attempts, "unavailable")
    return error_response(
        f"all candidates failed: {summary}", 503, "service_unavailable", extra={"tried": tried}
    )


def _finish(
    gateway: Gateway,
    resolution: Resolution,
    model: str,
    sink: Sink | None,
    result: Attempt,
    headers: dict[str, str],
) -> web.StreamResponse:
    gateway.metrics.of(gateway.metrics.requests, resolution.route, model, "ok").inc()
    if model != resolution.models[0]:
        gateway.metrics.of(gateway.metrics.fallbacks, resolution.route, model).inc()
    if sink is not None:
        gateway.count_tokens(model, sink.usage)
    if isinstance(sink, StreamRelay):
        assert sink.response is not None
        return sink.response
    answer = orjson.dumps(sink.answer()) if sink is not None else result.body
    return web.Response(body=answer, content_type="application/json", headers=headers)


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
    await _fill_cards(gateway)
    return _json(models.listing(gateway.router.names(), gateway.cards))


async def _model(http: web.Request) -> web.Response:
    gateway: Gateway = http.app[GATEWAY]
    name = http.match_info["model"]
    if name not in gateway.router.names():
        return error_response(
            f"The model `{name}` does not exist. Known: {', '.join(gateway.router.names())}",
            404,
            "invalid_request_error",
            "model_not_found",
        )
    await _fill_cards(gateway)
    return _json(gateway.cards.get(name) or models.own_card(name))


async def _fill_cards(gateway: Gateway) -> None:
    assert gateway.session is not None
    replicas = {
        model: [b.url for b in backends]
        for model, backends in gateway.backends.items()
        if MODELS in gateway.serves(model)
    }
    timeouts = gateway.loaded.fleet.policy.timeouts
    await models.fill_cards(gateway.session, gateway.cards, replicas, timeouts.connect + 5.0)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


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
    routes = gateway.serving_routes()
    serving = any(routes.values())
    body = {
        "status": "ok" if serving else "unavailable",
        "serving": serving,
        "routes": routes,
        "backends": backends,
    }
    return _json(body, 200 if serving else 503)


async def _not_routed(http: web.Request) -> web.Response:
    """Anything the gateway does not answer: OpenAI's shape, naming what it does."""
    return error_response(
        f"Unknown request URL: {http.method} {http.path}. This gateway answers: "
        + ", ".join(ANSWERED),
        404,
        "invalid_request_error",
        "unknown_url",
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
            endpoint = ROUTED[COMPLETIONS]
            payload = upstream_body(endpoint, {"prompt": "Hello", "max_tokens": 1}, model)
            sink = AnswerSink(endpoint, None)
            result = await attempt(
                gateway.pool,
                backend.url,
                endpoint.path,
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


def _routed(endpoint: Endpoint) -> Handler:
    async def handle(http: web.Request) -> web.StreamResponse:
        return await _generate(http, endpoint)

    return handle


def create_app(gateway: Gateway) -> web.Application:
    app = web.Application(
        client_max_size=gateway.loaded.fleet.gateway.max_body_bytes,
        middlewares=[outermost],  # type: ignore[list-item]
    )
    app[GATEWAY] = gateway
    for endpoint in ROUTED.values():
        app.router.add_post(endpoint.path, _routed(endpoint))
    app.router.add_get(MODELS, _models)
    app.router.add_get(MODELS + "/{model:.+}", _model)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_route("*", "/{path:.*}", _not_routed)

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
