"""Active health checks and warm-up, feeding the same breakers as client requests.

Every `health.interval` each backend's health path (from its engine adapter) is asked, all
backends at once, each with its own timeout, so one hung backend never delays the checks of
the others; a failed check counts toward that backend's breaker. With
`gateway.weight_by_engine_load`, a healthy backend's queue is read from its /metrics. At start
and every `health.warmup_every`, one tiny completion goes to every replica of every model that
is a fallback in some route, so a fallback is never cold when traffic moves to it.
"""

from __future__ import annotations

import asyncio

from modelyard.engines import EngineMetrics, adapter_for
from modelyard.engines.api import COMPLETIONS
from modelyard.gateway.clock import within
from modelyard.gateway.endpoints import ROUTED, upstream_body
from modelyard.gateway.relay import AnswerSink
from modelyard.gateway.state import BackendState, Gateway
from modelyard.gateway.upstream import attempt
from modelyard.http.errors import HttpError
from modelyard.http.transport import Transport

MAX_CHECK_S = 5.0
MIN_CHECK_S = 0.5


async def get(transport: Transport, url: str, path: str, connect_s: float) -> tuple[int, bytes]:
    """GET `url + path`: status and body."""
    response = await transport.request("GET", url, path, connect_timeout_s=connect_s)
    try:
        return response.status, await response.read_all()
    finally:
        response.close()


def check_timeout_s(gateway: Gateway) -> float:
    interval = gateway.config.loaded.fleet.policy.health.interval
    return max(min(interval, MAX_CHECK_S), MIN_CHECK_S)


async def check(gateway: Gateway, backend: BackendState) -> None:
    """One backend's health check (and queue, when weighed), into its state and breaker."""
    timeout_s = check_timeout_s(gateway)
    adapter = adapter_for(backend.engine)
    try:
        status, _ = await within(
            gateway.clock,
            timeout_s,
            get(gateway.transport, backend.url, adapter.health_path, timeout_s),
        )
        backend.healthy = status == 200
    except (HttpError, TimeoutError):
        backend.healthy = False
    if not backend.healthy:
        backend.breaker.on_failure(gateway.clock.now())
    metrics = gateway.metrics
    metrics.of(metrics.healthy, backend.model, backend.url).set(1 if backend.healthy else 0)
    gateway.update_gauge(backend)
    if backend.healthy and gateway.config.loaded.fleet.gateway.weight_by_engine_load:
        await read_engine_load(gateway, backend)


async def read_engine_load(gateway: Gateway, backend: BackendState) -> EngineMetrics | None:
    """The engine's queue length from its /metrics, through its adapter (None: unread)."""
    adapter = adapter_for(backend.engine)
    if adapter.metrics_path is None:
        return None
    timeout_s = check_timeout_s(gateway)
    try:
        status, body = await within(
            gateway.clock,
            timeout_s,
            get(gateway.transport, backend.url, adapter.metrics_path, timeout_s),
        )
        metrics = adapter.parse_metrics(body.decode(errors="replace")) if status == 200 else None
    except (HttpError, TimeoutError, ValueError):
        metrics = None
    backend.engine_waiting = float(metrics.waiting or 0.0) if metrics is not None else 0.0
    return metrics


async def check_all(gateway: Gateway) -> None:
    replicas = [b for backends in gateway.backends.values() for b in backends]
    await asyncio.gather(*(check(gateway, backend) for backend in replicas))


async def health_loop(gateway: Gateway) -> None:
    """Checks every `health.interval`, on a fixed schedule (a check's timeout is at most the
    interval, so a slow round does not push the next one back)."""
    while True:
        started = gateway.clock.now()
        await check_all(gateway)
        interval = gateway.config.loaded.fleet.policy.health.interval
        await gateway.clock.sleep(max(started + interval - gateway.clock.now(), 0.0))


def fallback_models(gateway: Gateway) -> list[str]:
    """Models that are a fallback (not first) in some route: these get warmed up."""
    seen: list[str] = []
    for route in gateway.config.loaded.fleet.routes:
        for model in route.targets[1:]:
            if model not in seen:
                seen.append(model)
    return seen


async def warm(gateway: Gateway, backend: BackendState) -> None:
    """One one-token completion; its outcome feeds the backend's breaker."""
    endpoint = ROUTED[COMPLETIONS]
    payload = upstream_body(endpoint, {"prompt": "Hello", "max_tokens": 1}, backend.model)
    call = gateway.call(backend, endpoint.path, payload)
    result = await attempt(call, AnswerSink(endpoint, None))
    gateway.record(backend, result)
    metrics = gateway.metrics
    metrics.of(metrics.warmups, backend.model, result.outcome.value).inc()


async def warm_up(gateway: Gateway) -> None:
    """Every replica of every fallback model, at once."""
    replicas = [b for model in fallback_models(gateway) for b in gateway.backends.get(model, [])]
    await asyncio.gather(*(warm(gateway, backend) for backend in replicas))


async def warmup_loop(gateway: Gateway) -> None:
    while True:
        await warm_up(gateway)
        await gateway.clock.sleep(gateway.config.loaded.fleet.policy.health.warmup_every)
