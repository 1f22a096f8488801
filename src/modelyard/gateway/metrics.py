"""Prometheus metrics of one gateway process (its own registry, no global state). With several
workers (gateway/peers.py) each writes its values to the shared directory, prometheus_client's
multiprocess mode, and the gauges say how the workers' values combine."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


class GatewayMetrics:
    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "modelyard_gateway_requests",
            "Client requests by outcome.",
            ["route", "model", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "modelyard_gateway_attempts",
            "Upstream attempts by outcome.",
            ["model", "backend", "outcome"],
            registry=r,
        )
        self.fallbacks = Counter(
            "modelyard_gateway_fallbacks",
            "Requests answered by a model other than the route's first.",
            ["route", "model"],
            registry=r,
        )
        self.retries = Counter(
            "modelyard_gateway_retries", "Attempts after the first.", ["route"], registry=r
        )
        self.breaker_state = Gauge(
            "modelyard_gateway_breaker_state",
            "Breaker per backend: 0 closed, 1 half-open, 2 open.",
            ["model", "backend"],
            registry=r,
            multiprocess_mode="livemax",  # with several workers: the worst of them
        )
        self.healthy = Gauge(
            "modelyard_gateway_backend_healthy",
            "Last active health check: 1 passed, 0 failed.",
            ["model", "backend"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.warmups = Counter(
            "modelyard_gateway_warmups",
            "Warm-up completions by outcome.",
            ["model", "outcome"],
            registry=r,
        )
        self.ttft = Histogram(
            "modelyard_gateway_upstream_ttft_seconds",
            "Upstream time to first token.",
            ["model"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.latency = Histogram(
            "modelyard_gateway_upstream_latency_seconds",
            "Upstream attempt duration.",
            ["model"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.tokens = Counter(
            "modelyard_gateway_tokens",
            "Tokens in answered requests, from the upstream's usage.",
            ["model", "kind"],
            registry=r,
        )
        self.in_flight = Gauge(
            "modelyard_gateway_in_flight",
            "Client requests in flight.",
            registry=r,
            multiprocess_mode="livesum",
        )

    def of(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: the request path asks for the same few
        children every time, and prometheus_client looks each up under a lock."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
