"""What a served simulated engine keeps: its identity, faults and vLLM-named metrics
(`vllm:num_requests_running`, `vllm:time_to_first_token_seconds`, ...), as vLLM's /metrics
shows them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from modelyard.sim.engine import Engine
from modelyard.sim.faults import FaultState
from modelyard.sim.fixed import FixedLatencyEngine

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)


class EngineCollector(Collector):
    def __init__(self, model: SimModel) -> None:
        self.model = model

    def collect(self) -> Iterable[Any]:
        model = self.model
        engine = model.engine
        labels = ["model_name", "engine"]
        values = [model.served_name, "0"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric(values, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=labels)
            family.add_metric(values, value)
            return family

        if model.cache_config:
            info = GaugeMetricFamily(
                "vllm:cache_config_info",
                "Information of the LLMEngine CacheConfig",
                labels=["engine", *model.cache_config],
            )
            info.add_metric(["0", *model.cache_config.values()], 1.0)
            yield info
        yield gauge(
            "vllm:num_requests_running", "Requests in model execution batches.", engine.running
        )
        yield gauge(
            "vllm:num_requests_waiting", "Requests waiting to be processed.", len(engine.waiting)
        )
        yield gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            engine.used_blocks() / engine.kv_blocks,
        )
        yield counter(
            "vllm:num_preemptions", "Cumulative number of preemptions.", engine.stats.preemptions
        )
        yield counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", model.prompt_tokens
        )
        yield counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            model.generation_tokens,
        )
        yield counter(
            "vllm:request_success", "Count of successfully processed requests.", model.finished
        )


@dataclass(eq=False)
class SimModel:
    """One served engine: its HTTP identity, engine, faults and metrics."""

    name: str
    served_name: str
    engine: Engine | FixedLatencyEngine
    max_model_len: int
    cold_start_s: float
    faults: FaultState
    default_max_tokens: int
    gpu: str = ""
    # vLLM's `vllm:cache_config_info` labels: the KV cache the engine was sized to
    cache_config: dict[str, str] = field(default_factory=dict)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: int = 0
    requests_seen: int = 0

    def __post_init__(self) -> None:
        labels = ["model_name", "engine"]
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            registry=self.registry,
            buckets=TTFT_BUCKETS,
        ).labels(self.served_name, "0")
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            labels,
            registry=self.registry,
            buckets=E2E_BUCKETS,
        ).labels(self.served_name, "0")
        self.registry.register(EngineCollector(self))
