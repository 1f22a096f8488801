"""What modelyard needs to know about a serving engine, independent of which one it is."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from prometheus_client.parser import text_string_to_metric_families

from modelyard.catalog import ModelSpec, QuantProfile
from modelyard.engines.api import CHAT, COMPLETIONS, MODELS, AnswerShape
from modelyard.errors import UnsupportedError


@dataclass(frozen=True)
class LaunchSpec:
    """One engine instance to start: the model, where it listens, what it may use."""

    name: str  # served model name (the fleet's model name)
    catalog_model: str
    model: ModelSpec
    quant_name: str
    quant: QuantProfile
    weights: str  # a local path or a hub id
    host: str = "127.0.0.1"
    port: int = 8000
    gpu: str | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_dtype: str = "auto"
    tensor_parallel_size: int = 1
    cpus: tuple[int, ...] = ()
    gpu_devices: tuple[int, ...] = ()
    parallel: int = 4
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineMetrics:
    """An engine's /metrics reduced to common meanings (None where the engine has no such
    metric). Counters are totals since the engine started."""

    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None
    prompt_tokens_total: float | None = None
    generation_tokens_total: float | None = None
    preemptions_total: float | None = None
    ttft_seconds_sum: float | None = None
    ttft_count: float | None = None
    raw: dict[str, float] = field(default_factory=dict)


# meaning -> metric sample name in the engine's Prometheus output
MetricNames = dict[str, str]


class EngineAdapter:
    """Base for one engine kind. Subclasses set the class attributes and build commands."""

    name: str = ""
    health_path: str = "/health"
    metrics_path: str | None = "/metrics"
    image: str = ""  # pinned container image for Kubernetes
    gpu_image: str | None = None  # the image's GPU build, where it is a different tag
    container_port: int = 8000
    # where the model cache volume is mounted in a pod: not under /root, which a non-root
    # user cannot traverse (deploy sets HF_HOME to it)
    cache_path: str = "/models"
    metric_names: ClassVar[MetricNames] = {}
    # the OpenAI endpoints its server answers, and the fields of its non-streaming answers
    # that its streams leave out, per endpoint (engines/api.py)
    serves: ClassVar[frozenset[str]] = frozenset({CHAT, COMPLETIONS, MODELS})
    answer_shapes: ClassVar[Mapping[str, AnswerShape]] = {}
    # log lines that mean the engine ran out of memory (at start or at run time)
    oom_patterns: tuple[str, ...] = (
        r"CUDA out of memory",
        r"OutOfMemoryError",
        r"No available memory for the cache blocks",
        r"larger than the maximum number of tokens that can be stored in KV cache",
        r"failed to allocate .* buffer",
        r"Cannot allocate memory",
        r"std::bad_alloc",
    )

    # LaunchSpec settings and this engine's flag for each (rendered when set and not the
    # engine's default: None, 0, "auto", one GPU)
    setting_flags: ClassVar[dict[str, str]] = {}

    def setting_args(self, spec: LaunchSpec) -> list[str]:
        args: list[str] = []
        for setting, flag in self.setting_flags.items():
            value = getattr(spec, setting)
            if value in (None, 0, "auto") or (setting == "tensor_parallel_size" and value == 1):
                continue
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        return args

    def quant_args(self, spec: LaunchSpec) -> list[str]:
        """The quantization profile's arguments for this engine (none where it lists none)."""
        engine = spec.quant.engines.get(self.name)
        return list(engine.args) if engine is not None else []

    def command(self, spec: LaunchSpec) -> list[str]:
        raise NotImplementedError

    def container_command(self, spec: LaunchSpec) -> list[str]:
        """The full command line inside this engine's container image (Kubernetes)."""
        raise UnsupportedError(
            f"engine '{self.name}' has no container command modelyard can render "
            "(deployable engines: vllm, sglang, tgi, llamacpp)"
        )

    def env(self, spec: LaunchSpec) -> dict[str, str]:
        """Environment variables the engine needs (device visibility, thread binding)."""
        if spec.gpu_devices:
            return {"CUDA_VISIBLE_DEVICES": ",".join(str(d) for d in spec.gpu_devices)}
        return {}

    def is_ready(self, status: int, body: bytes) -> bool:
        """Whether a health-path response means the model is loaded and serving."""
        return status == 200

    def is_oom(self, log_text: str) -> bool:
        return any(re.search(pattern, log_text) for pattern in self.oom_patterns)

    def parse_metrics(self, text: str) -> EngineMetrics:
        """Sum each mapped metric's samples (over labels) into common meanings."""
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name] = samples.get(sample.name, 0.0) + float(sample.value)
        values = {meaning: samples.get(name) for meaning, name in self.metric_names.items()}
        return EngineMetrics(**values, raw=samples)
