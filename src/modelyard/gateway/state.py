"""Everything one gateway process holds, in one typed object the composition root builds: the
configuration read from the fleet file (swapped whole on reload), each backend's state, and the
injected clock and transport.

`Config` is everything derived from the fleet file — routes, API keys, the rate limit,
deadlines — so a reload replaces all of it at once and nothing of the old file lingers.
Backends are merged instead: one that stays keeps its breaker and counters.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelyard.engines import adapter_for
from modelyard.fleet import LoadedFleet
from modelyard.gateway.access_log import AccessLog
from modelyard.gateway.auth import KeyCheck, RateLimiter
from modelyard.gateway.breaker import Breaker, Permit, State
from modelyard.gateway.clock import Clock
from modelyard.gateway.errors import Outcome, policy
from modelyard.gateway.metrics import GatewayMetrics
from modelyard.gateway.routing import Router
from modelyard.gateway.upstream import Attempt, Call, Deadlines
from modelyard.http.transport import Transport

RATE_LIMIT_PAUSE_S = 1.0  # a 429 without Retry-After backs the replica off this long
MAX_RATE_LIMIT_PAUSE_S = 60.0
BREAKER_GAUGE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


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


@dataclass(frozen=True)
class Config:
    """What the fleet file says, ready to use."""

    loaded: LoadedFleet
    router: Router
    keys: KeyCheck
    limiter: RateLimiter | None
    deadlines: Deadlines

    @classmethod
    def from_fleet(cls, loaded: LoadedFleet, environ: Mapping[str, str]) -> Config:
        config = loaded.fleet.gateway
        from_env = [h.strip() for h in environ.get(config.api_key_hashes_env, "").split(",")]
        keys = KeyCheck(tuple(config.api_key_hashes) + tuple(h for h in from_env if h))
        limit = config.rate_limit
        limiter = RateLimiter(limit.requests_per_second, limit.burst) if limit else None
        t = loaded.fleet.policy.timeouts
        deadlines = Deadlines(
            connect=t.connect, first_token=t.first_token, idle=t.idle, total=t.total
        )
        return cls(loaded, Router(loaded.fleet), keys, limiter, deadlines)


def _backends(
    loaded: LoadedFleet, endpoints: dict[str, list[str]]
) -> dict[str, list[BackendState]]:
    breaker = loaded.fleet.policy.breaker
    return {
        model: [
            BackendState(
                model,
                url.rstrip("/"),
                loaded.fleet.models[model].engine,
                Breaker(breaker.consecutive_failures, breaker.open_for, breaker.half_open_probes),
            )
            for url in urls
        ]
        for model, urls in endpoints.items()
    }


@dataclass
class Gateway:
    """Routes, backends, breakers, the transport to upstreams, metrics: one per process."""

    config: Config
    backends: dict[str, list[BackendState]]
    transport: Transport
    clock: Clock
    access: AccessLog
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    ids: itertools.count[int] = field(default_factory=itertools.count)
    # request ids: unique per process (random prefix) without a uuid4 per request
    id_prefix: str = field(default_factory=lambda: os.urandom(6).hex())
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)  # engines' model entries
    # told after each attempt's outcome or health check is recorded (gateway/peers.py shares
    # the backend's breaker, back-off and health with the other workers)
    on_backend_change: Callable[[BackendState], None] | None = None
    # /health's body made the whole gateway's (the other workers' requests in flight added)
    whole_health: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None

    @classmethod
    def build(
        cls,
        loaded: LoadedFleet,
        endpoints: dict[str, list[str]],
        transport: Transport,
        clock: Clock,
        access: AccessLog | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Gateway:
        environ = dict(os.environ if environ is None else environ)
        return cls(
            config=Config.from_fleet(loaded, environ),
            backends=_backends(loaded, endpoints),
            transport=transport,
            clock=clock,
            access=access or AccessLog(clock),
            environ=environ,
        )

    def reconfigure(self, loaded: LoadedFleet, endpoints: dict[str, list[str]]) -> None:
        """Serve a new fleet file: all of its configuration, the backends that stay with their
        breakers; engines' model entries are fetched again, from the new endpoints."""
        config = Config.from_fleet(loaded, self.environ)
        fresh = _backends(loaded, endpoints)
        old = {(b.model, b.url): b for replicas in self.backends.values() for b in replicas}
        for replicas in fresh.values():
            for index, backend in enumerate(replicas):
                replicas[index] = old.get((backend.model, backend.url), backend)
        self.config, self.backends = config, fresh
        self.cards.clear()

    def call(self, backend: BackendState, path: str, payload: bytes) -> Call:
        """A request to `backend`, on this gateway's transport, clock and deadlines."""
        return Call(self.transport, self.clock, backend.url, path, payload, self.config.deadlines)

    def engine_of(self, model: str) -> str:
        return self.config.loaded.fleet.models[model].engine

    def serves(self, model: str) -> frozenset[str]:
        """The endpoints the engine of `model` serves (from its adapter)."""
        return adapter_for(self.engine_of(model)).serves

    def can_serve(self, backend: BackendState) -> bool:
        now = self.clock.now()
        return backend.breaker.current(now) is not State.OPEN and backend.healthy is not False

    def serving_routes(self) -> dict[str, bool]:
        """Per route: whether some target has a backend that is neither open nor unhealthy."""
        return {
            route.route: any(
                self.can_serve(b) for model in route.models for b in self.backends.get(model, [])
            )
            for route in self.config.router.routes()
        }

    def count_tokens(self, model: str, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        for kind in ("prompt_tokens", "completion_tokens"):
            value = usage.get(kind)
            if isinstance(value, int) and value > 0:
                self.metrics.of(self.metrics.tokens, model, kind.removesuffix("_tokens")).inc(value)

    def update_gauge(self, backend: BackendState) -> None:
        value = BREAKER_GAUGE[backend.breaker.current(self.clock.now())]
        if value != backend.gauge:
            backend.gauge = value
            self.metrics.of(self.metrics.breaker_state, backend.model, backend.url).set(value)
        if self.on_backend_change is not None:
            self.on_backend_change(backend)

    def record(self, backend: BackendState, result: Attempt, permit: Permit | None = None) -> None:
        """An attempt's outcome (with the breaker's permit it went with, if it asked for one)
        into the backend's breaker, back-off and metrics."""
        now = self.clock.now()
        rule = policy(result.outcome)
        if result.outcome is Outcome.OK:
            backend.breaker.on_success(now, permit)
        elif rule.counts:
            backend.breaker.on_failure(now, permit)
            backend.last_error = result.full_reason
        else:
            backend.breaker.on_neutral(now, permit)
        if result.outcome is Outcome.RATE_LIMITED:
            pause = result.retry_after_s if result.retry_after_s is not None else RATE_LIMIT_PAUSE_S
            backend.backoff_until = now + min(pause, MAX_RATE_LIMIT_PAUSE_S)
        self.update_gauge(backend)
        metrics = self.metrics
        metrics.of(metrics.attempts, backend.model, backend.url, result.outcome.value).inc()
        if result.ttft_s is not None:
            metrics.of(metrics.ttft, backend.model).observe(result.ttft_s)
        metrics.of(metrics.latency, backend.model).observe(result.elapsed_s)
