"""The gateway's request handlers, each a closure over the one `Gateway` it serves: routed
OpenAI endpoints (resolve the route, then gateway/failover.py), the model list, /health,
/metrics, and the 404 for everything else. gateway/app.py wraps each in the middleware stack."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from prometheus_client import generate_latest

from modelyard.engines.api import MODELS
from modelyard.gateway import models
from modelyard.gateway.access_log import RequestLog
from modelyard.gateway.endpoints import ANSWERED, Endpoint, Upstream, wants_stream
from modelyard.gateway.failover import try_candidates
from modelyard.gateway.middleware import Handler
from modelyard.gateway.replies import error_response, json_response, model_not_found
from modelyard.gateway.routing import Resolution, RouteNotFoundError
from modelyard.gateway.state import Gateway

TASK_HEADER = "X-Modelyard-Task"
CARD_TIMEOUT_EXTRA_S = 5.0


def routed(gateway: Gateway, endpoint: Endpoint) -> Handler:
    async def generate(http: web.Request, entry: RequestLog) -> web.StreamResponse:
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
        router = gateway.config.router
        try:
            resolution = router.resolve(requested, task)
        except RouteNotFoundError:
            return model_not_found(requested, router.names())
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
        in_flight = gateway.metrics.in_flight
        in_flight.inc()
        try:
            return await try_candidates(
                gateway, http, entry, body, Resolution(resolution.route, serving), endpoint, stream
            )
        finally:
            in_flight.dec()

    return generate


async def _fill_cards(gateway: Gateway) -> None:
    replicas = {
        model: [b.url for b in backends]
        for model, backends in gateway.backends.items()
        if MODELS in gateway.serves(model)
    }
    timeout_s = gateway.config.loaded.fleet.policy.timeouts.connect + CARD_TIMEOUT_EXTRA_S
    await models.fill_cards(gateway.transport, gateway.clock, gateway.cards, replicas, timeout_s)


def model_list(gateway: Gateway) -> Handler:
    async def listing(http: web.Request, entry: RequestLog) -> web.StreamResponse:
        await _fill_cards(gateway)
        return json_response(models.listing(gateway.config.router.names(), gateway.cards))

    return listing


def model_card(gateway: Gateway) -> Handler:
    async def retrieve(http: web.Request, entry: RequestLog) -> web.StreamResponse:
        name = http.match_info["model"]
        known = gateway.config.router.names()
        if name not in known:
            return model_not_found(name, known)
        await _fill_cards(gateway)
        return json_response(gateway.cards.get(name) or models.own_card(name))

    return retrieve


def health_body(gateway: Gateway) -> tuple[dict[str, Any], int]:
    """`/health`: every backend's state, which routes can serve; 503 when none can."""
    now = gateway.clock.now()
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
    return body, 200 if serving else 503


def health(gateway: Gateway) -> Handler:
    async def health(http: web.Request, entry: RequestLog) -> web.StreamResponse:
        body, status = health_body(gateway)
        if gateway.whole_health is not None:  # one of several workers (gateway/peers.py)
            body = await gateway.whole_health(body)
        return json_response(body, status)

    return health


def metrics(gateway: Gateway) -> Handler:
    async def metrics(http: web.Request, entry: RequestLog) -> web.StreamResponse:
        return web.Response(
            body=generate_latest(gateway.metrics.registry),
            content_type="text/plain",
            charset="utf-8",
        )

    return metrics


async def not_routed(http: web.Request, entry: RequestLog) -> web.StreamResponse:
    """Anything the gateway does not answer: OpenAI's shape, naming what it does."""
    return error_response(
        f"Unknown request URL: {http.method} {http.path}. This gateway answers: "
        + ", ".join(ANSWERED),
        404,
        "invalid_request_error",
        "unknown_url",
    )
