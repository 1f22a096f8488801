"""Typed catalog entries and the arithmetic that follows from their dimensions."""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

GIB = 1024**3
MIB = 1024**2


def capability(version: str) -> tuple[int, ...]:
    """A compute capability such as "8.9" as a comparable tuple."""
    return tuple(int(part) for part in version.split("."))


def _is_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError(f"source must be a URL (http:// or https://), got '{value}'")
    return value


SourceUrl = Annotated[str, AfterValidator(_is_url)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlidingWindow(_Entry):
    """Layers whose attention sees only the last `size` tokens (KV kept for `size` tokens)."""

    size: int = Field(gt=0)
    layers: int = Field(gt=0)


class MoeSpec(_Entry):
    num_experts: int = Field(gt=0)
    experts_per_token: int = Field(gt=0)
    shared_experts: int = Field(default=0, ge=0)


class ModelSpec(_Entry):
    """A decoder-only transformer's dimensions (from its config.json)."""

    display_name: str
    hf_id: str
    architecture: str
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0, description="FFN size (per expert for MoE)")
    vocab_size: int = Field(gt=0)
    max_context: int = Field(gt=0)
    tie_word_embeddings: bool
    params: float = Field(gt=0, description="parameter count stated by the model card")
    active_params: float | None = Field(default=None, gt=0)
    moe: MoeSpec | None = None
    sliding_window: SlidingWindow | None = None
    notes: str = ""
    source: SourceUrl
    as_of: datetime.date

    @property
    def attention_params_per_layer(self) -> int:
        q_and_o = 2 * self.hidden_size * self.num_attention_heads * self.head_dim
        k_and_v = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        return q_and_o + k_and_v

    @property
    def _ffn_params(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size  # gate, up, down

    @property
    def linear_params(self) -> int:
        """Parameters of the transformer blocks' linear layers (all experts), norms ignored."""
        ffn = self._ffn_params
        if self.moe is not None:
            experts = self.moe.num_experts + self.moe.shared_experts
            ffn = experts * ffn + self.hidden_size * self.moe.num_experts  # + router
        return self.num_layers * (self.attention_params_per_layer + ffn)

    @property
    def active_linear_params(self) -> int:
        """Linear parameters one token passes through (routed + shared experts for MoE)."""
        ffn = self._ffn_params
        if self.moe is not None:
            ffn *= self.moe.experts_per_token + self.moe.shared_experts
        return self.num_layers * (self.attention_params_per_layer + ffn)

    @property
    def embedding_params(self) -> int:
        """Token embedding plus lm_head (one matrix when they are tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def computed_params(self) -> int:
        return self.linear_params + self.embedding_params

    @property
    def computed_active_params(self) -> int:
        return self.active_linear_params + self.embedding_params

    @property
    def windowed_layers(self) -> int:
        return self.sliding_window.layers if self.sliding_window else 0

    def kv_bytes_per_token_per_layer(self, dtype_bytes: float) -> float:
        return 2 * self.num_kv_heads * self.head_dim * dtype_bytes  # K and V

    def kv_bytes_per_token(self, dtype_bytes: float) -> float:
        """KV bytes one token adds while the context is shorter than every window."""
        return self.num_layers * self.kv_bytes_per_token_per_layer(dtype_bytes)

    def kv_bytes_for_sequence(self, tokens: int, dtype_bytes: float) -> float:
        """KV bytes a sequence of `tokens` holds; windowed layers keep at most their window."""
        per_layer = self.kv_bytes_per_token_per_layer(dtype_bytes)
        full_layers = self.num_layers - self.windowed_layers
        windowed = 0
        if self.sliding_window is not None:
            windowed = self.sliding_window.layers * min(tokens, self.sliding_window.size)
        return per_layer * (full_layers * tokens + windowed)


class Price(_Entry):
    cloud: str
    instance: str
    gpus: int = Field(gt=0)
    usd_per_hour: float = Field(gt=0, description="whole instance, on-demand")
    source: SourceUrl
    as_of: datetime.date

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.usd_per_hour / self.gpus


class Interconnect(_Entry):
    """How the GPUs of one node exchange data; tensor parallelism's all-reduces cross it."""

    kind: Literal["nvlink", "pcie"]
    bandwidth_gbps: float = Field(
        gt=0, description="GB/s per GPU, both directions together, as the vendor prints it"
    )
    allreduce_latency_us: float = Field(
        gt=0, description="one small (latency-bound) all-reduce between GPUs of one node"
    )
    source: SourceUrl
    latency_source: SourceUrl
    notes: str = ""
    as_of: datetime.date


class GpuSpec(_Entry):
    display_name: str
    memory_gb: float = Field(gt=0, description="nominal memory")
    visible_memory_mib: int = Field(gt=0, description="total memory as nvidia-smi reports it")
    memory_bandwidth_gbps: float = Field(gt=0, description="GB/s")
    bf16_tflops: float = Field(gt=0, description="dense")
    fp8_tflops: float | None = Field(default=None, gt=0, description="dense")
    compute_capability: str
    mig_profiles: list[str] = Field(default_factory=list)
    node_labels: dict[str, str | None] = Field(
        default_factory=dict, description="Kubernetes node label values by scheme (nvidia, gke)"
    )
    source: SourceUrl
    memory_source: str
    as_of: datetime.date
    prices: list[Price] = Field(default_factory=list)
    interconnect: Interconnect | None = Field(
        default=None, description="GPU-to-GPU link within a node (tensor parallelism)"
    )

    @property
    def memory_bytes(self) -> int:
        return self.visible_memory_mib * MIB

    def price(self, cloud: str | None = None) -> Price | None:
        """The price on `cloud`, or the cheapest listed when `cloud` is None."""
        if cloud is None:
            return min(self.prices, key=lambda p: p.usd_per_gpu_hour, default=None)
        return next((p for p in self.prices if p.cloud == cloud), None)


class EngineArgs(_Entry):
    args: list[str] = Field(default_factory=list)


class LlmCompressorSpec(_Entry):
    """How `modelyard quant --recipe` writes an llm-compressor recipe for a profile."""

    method: Literal["rtn", "awq", "gptq"]
    scheme: str | None = None
    num_bits: int | None = None
    symmetric: bool | None = None
    group_size: int | None = None


class QuantProfile(_Entry):
    display_name: str
    bits_per_weight: float = Field(gt=0, le=32, description="linear layers, incl. scales")
    unquantized_bits: float = Field(gt=0, le=32, description="embeddings and lm_head")
    kv_cache_bytes: float = Field(gt=0, description="bytes per KV element by default")
    group_size: int | None = None
    engines: dict[str, EngineArgs]
    llmcompressor: LlmCompressorSpec | None = None
    min_compute_capability: str | None = None
    notes: str = ""
    source: SourceUrl
    as_of: datetime.date

    def weights_bytes(self, model: ModelSpec) -> float:
        """Bytes of the model's weights stored in this profile."""
        linear = model.linear_params * self.bits_per_weight / 8
        return linear + model.embedding_params * self.unquantized_bits / 8


class Alias(_Entry):
    model: str
    note: str


class CatalogFile(_Entry):
    """One catalog YAML file; every section optional so user files can add just one entry."""

    models: dict[str, ModelSpec] = Field(default_factory=dict)
    gpus: dict[str, GpuSpec] = Field(default_factory=dict)
    quants: dict[str, QuantProfile] = Field(default_factory=dict)
    aliases: dict[str, Alias] = Field(default_factory=dict)
