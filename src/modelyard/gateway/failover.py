"""Which backend answers: the pure "next candidate" decision, and the attempt loop around it.

`next_candidate` is a function of the route's candidates, their breaker and back-off state, the
attempts that failed so far and the time: the route's models in order, each backend at most
once per request, the model tried fewest times first (so a route of two models goes primary,
fallback, then the primary's other replica...), within a model the less loaded of two replicas
chosen at random (routing.pick_replica). A model tried before is tried again only after the
retry back-off; `retry.attempts` caps the attempts after the first. When nothing is left, the
client's 503 names each model and why: its failed attempts, or why it was skipped.

`try_candidates` runs the loop: decide, send (gateway/upstream.py), record the outcome
(breaker, back-off, metrics), and answer the client — from the first success, with the
upstream's error for a client error, with an error event for a stream that failed after its
first byte, or with the 503.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from modelyard.engines import adapter_for
from modelyard.gateway.access_log import RequestLog
from modelyard.gateway.endpoints import Endpoint, Upstream, upstream_body
from modelyard.gateway.errors import Outcome
from modelyard.gateway.relay import AnswerSink, StreamRelay
from modelyard.gateway.replies import error_response, openai_error_body
from modelyard.gateway.routing import Resolution, pick_replica
from modelyard.gateway.state import BackendState, Gateway
from modelyard.gateway.streams import failure_event, kind_for
from modelyard.gateway.upstream import Attempt, attempt, exchange


@dataclass(frozen=True, slots=True)
class Tried:
    """An attempt that failed and let the request go on."""

    model: str
    url: str
    reason: str  # fit for the client: no address


@dataclass(frozen=True, slots=True)
class Next:
    backend: BackendState
    backoff_s: float  # wait this long first (the model was tried before)


@dataclass(frozen=True, slots=True)
class GiveUp:
    tried: tuple[dict[str, str], ...]  # {"model", "error"} per failed attempt or skipped model


def _skip_reason(replicas: Sequence[BackendState], now: float) -> str:
    if any(b.backoff_until <= now for b in replicas):
        return "breaker open"
    return "rate limited, backing off" if replicas else "no backend"


def next_candidate(
    models: Sequence[str],
    backends: Mapping[str, Sequence[BackendState]],
    tried: Sequence[Tried],
    now: float,
    budget: int,
    backoff_s: float,
    weigh_engine_load: bool,
    rng: random.Random,
) -> Next | GiveUp:
    """What to try next for a request whose `tried` attempts failed, at time `now`."""
    used = {t.url for t in tried}
    times = {model: 0 for model in models}
    for t in tried:
        times[t.model] = times.get(t.model, 0) + 1
    chosen: tuple[str, list[BackendState]] | None = None
    if len(tried) < budget:
        for model in models:
            usable = [
                b
                for b in backends.get(model, ())
                if b.url not in used and b.backoff_until <= now and b.breaker.admits(now)
            ]
            if usable and (chosen is None or times[model] < times[chosen[0]]):
                chosen = (model, usable)
    if chosen is None:
        return GiveUp(_summary(models, backends, tried, now))
    model, usable = chosen
    if len(usable) == 1:
        backend = usable[0]
    else:
        load = {
            b.url: b.outstanding + (b.engine_waiting if weigh_engine_load else 0.0) for b in usable
        }
        url = pick_replica([b.url for b in usable], load, rng)
        backend = next(b for b in usable if b.url == url)
    return Next(backend, backoff_s if times[model] > 0 else 0.0)


def _summary(
    models: Sequence[str],
    backends: Mapping[str, Sequence[BackendState]],
    tried: Sequence[Tried],
    now: float,
) -> tuple[dict[str, str], ...]:
    """Per model in route order: its failed attempts, or why it was never tried."""
    rows: list[dict[str, str]] = []
    for model in models:
        attempts = [{"model": model, "error": t.reason} for t in tried if t.model == model]
        replicas = backends.get(model, ())
        usable = any(b.backoff_until <= now and b.breaker.admits(now) for b in replicas)
        if attempts:
            rows += attempts
        elif not usable:  # (a model left usable was not reached: the attempts ran out)
            rows.append({"model": model, "error": _skip_reason(replicas, now)})
    return tuple(rows)


async def try_candidates(
    gateway: Gateway,
    http: web.Request,
    entry: RequestLog,
    body: dict[str, Any],
    resolution: Resolution,
    endpoint: Endpoint,
    stream: bool,
) -> web.StreamResponse:
    """Try the route's candidates until one answers (see the module docstring)."""
    fleet = gateway.config.loaded.fleet
    retry = fleet.policy.retry
    metrics = gateway.metrics
    route = resolution.route
    tried: list[Tried] = []
    while True:
        now = gateway.clock.now()
        decision = next_candidate(
            resolution.models,
            gateway.backends,
            tried,
            now,
            1 + retry.attempts,
            retry.backoff,
            fleet.gateway.weight_by_engine_load,
            gateway.rng,
        )
        if isinstance(decision, GiveUp):
            metrics.of(metrics.requests, route, "", "unavailable").inc()
            entry.answered(route, "", "", len(tried), "unavailable")
            summary = "; ".join(f"{t['model']}: {t['error']}" for t in decision.tried)
            return error_response(
                f"all candidates failed: {summary}",
                503,
                "service_unavailable",
                extra={"tried": list(decision.tried)},
            )
        backend = decision.backend
        permit = backend.breaker.allow(now)  # a half-open probe slot, if that is the state
        if tried:
            metrics.of(metrics.retries, route).inc()
        if decision.backoff_s > 0:
            await gateway.clock.sleep(decision.backoff_s)
        attempts = len(tried) + 1
        model = backend.model
        headers = {
            "X-Modelyard-Model": model,
            "X-Modelyard-Backend": backend.url,
            "X-Modelyard-Attempts": str(attempts),
            "X-Request-Id": entry.request_id,
        }
        sink = _sink_for(http, endpoint, backend, stream, body, headers)
        result = await _send(gateway, backend, endpoint, upstream_body(endpoint, body, model), sink)
        relayed = isinstance(sink, StreamRelay) and result.committed
        if relayed and result.outcome not in (Outcome.OK, Outcome.CLIENT_GONE):
            result.outcome = Outcome.MID_STREAM
        gateway.record(backend, result, permit)
        outcome = result.outcome
        if outcome is Outcome.OK:
            return _answered(gateway, entry, resolution, backend, attempts, sink, result, headers)
        if outcome is Outcome.CLIENT_GONE:
            assert isinstance(sink, StreamRelay) and sink.response is not None
            metrics.of(metrics.requests, route, model, outcome.value).inc()
            entry.answered(route, model, backend.url, attempts, outcome.value)
            return sink.response
        gateway.access.attempt_failed(entry.request_id, model, backend.url, result.full_reason)
        if relayed:
            assert isinstance(sink, StreamRelay) and sink.response is not None
            message = f"upstream {model} failed mid-stream: {result.reason}"
            with contextlib.suppress(ConnectionResetError):
                await sink.response.write(failure_event(endpoint.upstream, message))
            metrics.of(metrics.requests, route, model, "mid_stream").inc()
            entry.answered(route, model, backend.url, attempts, "mid_stream")
            return sink.response  # closed without [DONE]: never a clean end
        if outcome is Outcome.CLIENT_ERROR:
            metrics.of(metrics.requests, route, model, "client_error").inc()
            entry.answered(route, model, backend.url, attempts, "client_error")
            status = result.status or 400
            return web.Response(
                body=openai_error_body(status, result.body),
                status=status,
                content_type="application/json",
                headers=headers,
            )
        tried.append(Tried(model, backend.url, result.reason))


ClientSink = StreamRelay | AnswerSink | None  # None: a whole body (embeddings)


def _sink_for(
    http: web.Request,
    endpoint: Endpoint,
    backend: BackendState,
    stream: bool,
    body: dict[str, Any],
    headers: dict[str, str],
) -> ClientSink:
    if endpoint.upstream is Upstream.WHOLE:
        return None
    if stream:
        options = body.get("stream_options")
        asked = isinstance(options, dict) and bool(options.get("include_usage"))
        return StreamRelay(http, headers, endpoint, asked)
    return AnswerSink(endpoint, adapter_for(backend.engine).answer_shapes.get(endpoint.path))


async def _send(
    gateway: Gateway, backend: BackendState, endpoint: Endpoint, payload: bytes, sink: ClientSink
) -> Attempt:
    """One attempt at `backend`, its events into `sink` (None: a whole body)."""
    call = gateway.call(backend, endpoint.path, payload)
    backend.outstanding += 1
    try:
        if sink is None:
            return await exchange(call)
        return await attempt(call, sink, kind_for(endpoint.upstream))
    finally:
        backend.outstanding -= 1


def _answered(
    gateway: Gateway,
    entry: RequestLog,
    resolution: Resolution,
    backend: BackendState,
    attempts: int,
    sink: ClientSink,
    result: Attempt,
    headers: dict[str, str],
) -> web.StreamResponse:
    metrics, model = gateway.metrics, backend.model
    metrics.of(metrics.requests, resolution.route, model, "ok").inc()
    if model != resolution.models[0]:
        metrics.of(metrics.fallbacks, resolution.route, model).inc()
    entry.answered(resolution.route, model, backend.url, attempts, "ok")
    if sink is not None:
        gateway.count_tokens(model, sink.usage)
    if isinstance(sink, StreamRelay):
        assert sink.response is not None
        return sink.response
    answer = sink.answer() if sink is not None else result.body
    return web.Response(body=answer, content_type="application/json", headers=headers)
