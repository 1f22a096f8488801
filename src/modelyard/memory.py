"""GPU memory: weights + runtime overhead + activation peak + KV cache, as vLLM budgets it.

vLLM (V1, `vllm serve`) reserves `gpu_memory_utilization x total memory` per instance, loads
the weights, runs one profiling forward pass of `max_num_batched_tokens` tokens (plus a
sampler pass over `max_num_seqs` rows of logits), and gives what is left to the KV cache.
docs/memory.md derives each term and lists its sources; the numbers here follow that page.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

from modelyard.catalog import GpuSpec, ModelSpec, QuantProfile
from modelyard.catalog.entries import GIB
from modelyard.fleet import LoadedFleet
from modelyard.placement import DEFAULT_GPU_MEMORY_UTILIZATION, device_plans

KV_BLOCK_TOKENS = 16
# vllm-project/vllm PR 10511 (H100 80GB, Meta-Llama-3-8B, TP=1): "non_torch_memory 1.79GiB"
# (CUDA context, cuBLAS/NCCL workspaces). Later versions log 0.16-0.20 GiB on other setups;
# we keep the larger, measured figure so `fit` errs toward "does not fit".
NON_TORCH_BYTES = 1.79 * GIB
ACTIVATION_BYTES = 2  # bf16 activations
LOGITS_BYTES = 4  # the sampler works in fp32
LOGITS_COPIES = 3  # logits, probabilities, log-probabilities live at once while sampling
LARGE_GPU_BYTES = 70 * GIB


@dataclass(frozen=True)
class Device:
    """Where a model's memory lives: a catalog GPU, or the host's RAM for CPU engines."""

    name: str
    memory_bytes: float
    is_gpu: bool

    @classmethod
    def from_gpu(cls, gpu_name: str, gpu: GpuSpec) -> Device:
        return cls(name=gpu_name, memory_bytes=gpu.memory_bytes, is_gpu=True)

    @classmethod
    def host(cls) -> Device:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return cls(name="cpu", memory_bytes=float(pages), is_gpu=False)


@dataclass(frozen=True)
class FitSettings:
    """Engine settings that move the memory budget; None means vLLM's default."""

    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    non_torch_bytes: float | None = None
    tensor_parallel_size: int = 1


def default_batch_limits(device: Device) -> tuple[int, int]:
    """vLLM V1 `vllm serve` defaults: (max_num_batched_tokens, max_num_seqs).

    8192 and 1024 on GPUs with at least 70 GiB that are not A100s, else 2048 and 256
    (vllm/engine/arg_utils.py, `_set_default_args`, vLLM 0.10-0.11)."""
    large = device.is_gpu and device.memory_bytes >= LARGE_GPU_BYTES and "a100" not in device.name
    return (8192, 1024) if large else (2048, 256)


def activation_peak_bytes(
    model: ModelSpec, batched_tokens: int, num_seqs: int, tensor_parallel_size: int = 1
) -> float:
    """Peak temporary memory of the profiling pass, on one GPU (one tensor-parallel rank).

    The forward pass holds the FFN's gate/up output (2 x FFN size), the activated product
    (1 x FFN size) — split over the ranks — and about four hidden-size tensors per token; the
    sampler then holds `num_seqs` rows of fp32 logits a few times over (gathered on each rank)."""
    ffn = model.intermediate_size
    if model.moe is not None:
        ffn *= model.moe.experts_per_token + model.moe.shared_experts
    ffn_per_rank = ffn / tensor_parallel_size
    forward = batched_tokens * (3 * ffn_per_rank + 4 * model.hidden_size) * ACTIVATION_BYTES
    sampler = num_seqs * model.vocab_size * LOGITS_BYTES * LOGITS_COPIES
    return float(forward + sampler)


@dataclass(frozen=True)
class FitResult:
    """What one model instance needs on one device and whether it fits. Bytes are bytes."""

    model: str
    quant: str
    device: str
    device_memory_bytes: float
    gpu_memory_utilization: float
    budget_bytes: float
    weights_bytes: float
    non_torch_bytes: float
    activation_peak_bytes: float
    kv_budget_bytes: float
    kv_bytes_per_token: float
    kv_bytes_per_sequence: float
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    kv_cache_tokens: int
    max_concurrency: float
    fits: bool
    reason: str
    name: str | None = None
    tensor_parallel_size: int = 1  # byte figures above are per GPU (per rank)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fit(
    model_name: str,
    model: ModelSpec,
    quant_name: str,
    quant: QuantProfile,
    device: Device,
    settings: FitSettings,
    name: str | None = None,
) -> FitResult:
    """Memory budget of one engine instance of `model` in `quant` on `device`.

    With tensor parallelism each of the `settings.tensor_parallel_size` GPUs holds its share of
    the weights and of the KV heads (replicated where there are fewer KV heads than ranks); the
    byte figures are one GPU's, the token and sequence counts the instance's."""
    tp = settings.tensor_parallel_size
    default_tokens, default_seqs = default_batch_limits(device)
    batched_tokens = settings.max_num_batched_tokens or default_tokens
    num_seqs = settings.max_num_seqs or default_seqs
    max_model_len = settings.max_model_len or model.max_context
    kv_dtype_bytes = 1.0 if settings.kv_cache_dtype == "fp8" else quant.kv_cache_bytes

    budget = device.memory_bytes * settings.gpu_memory_utilization
    weights = quant.weights_bytes(model) / tp
    if settings.non_torch_bytes is not None:
        non_torch = settings.non_torch_bytes
    else:
        non_torch = NON_TORCH_BYTES if device.is_gpu else 0.0
    activation = activation_peak_bytes(model, batched_tokens, num_seqs, tp)
    kv_budget = budget - weights - non_torch - activation

    kv_share = max(model.num_kv_heads // tp, 1) / model.num_kv_heads  # of each layer's heads
    per_token = model.kv_bytes_per_token(kv_dtype_bytes) * kv_share
    per_sequence = model.kv_bytes_for_sequence(max_model_len, kv_dtype_bytes) * kv_share
    effective_per_token = per_sequence / max_model_len
    if kv_budget > 0:
        tokens = math.floor(kv_budget / effective_per_token)
        kv_cache_tokens = tokens - tokens % KV_BLOCK_TOKENS
        concurrency = kv_budget / per_sequence
    else:
        kv_cache_tokens, concurrency = 0, 0.0

    gib = GIB
    if kv_budget <= 0:
        fits = False
        reason = (
            f"weights {weights / gib:.2f} GiB + runtime {non_torch / gib:.2f} GiB + activations "
            f"{activation / gib:.2f} GiB exceed the budget {budget / gib:.2f} GiB "
            f"({settings.gpu_memory_utilization:.2f} of {device.memory_bytes / gib:.2f} GiB)"
        )
    elif kv_budget < per_sequence:
        fits = False
        reason = (
            f"KV cache holds {kv_cache_tokens} tokens, less than one max_model_len "
            f"({max_model_len}) sequence; lower max_model_len or raise gpu_memory_utilization"
        )
    else:
        fits = True
        reason = f"{concurrency:.1f} sequences of {max_model_len} tokens fit in the KV cache"
    return FitResult(
        model=model_name,
        quant=quant_name,
        device=device.name,
        device_memory_bytes=device.memory_bytes,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        budget_bytes=budget,
        weights_bytes=weights,
        non_torch_bytes=non_torch,
        activation_peak_bytes=activation,
        kv_budget_bytes=max(kv_budget, 0.0),
        kv_bytes_per_token=per_token,
        kv_bytes_per_sequence=per_sequence,
        max_model_len=max_model_len,
        max_num_batched_tokens=batched_tokens,
        max_num_seqs=num_seqs,
        kv_cache_tokens=kv_cache_tokens,
        max_concurrency=concurrency,
        fits=fits,
        reason=reason,
        name=name,
        tensor_parallel_size=tp,
    )


@dataclass(frozen=True)
class GroupFit:
    """Several engines on one device: each has its own fraction and its own CUDA context."""

    device: str
    members: list[str]
    memory_fractions: dict[str, float]
    memory_limit: float
    fits: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fit_group(device: str, members: list[FitResult], memory_limit: float) -> GroupFit:
    fractions = {m.name or m.model: m.gpu_memory_utilization for m in members}
    total = sum(fractions.values())
    failing = [m for m in members if not m.fits]
    if total > memory_limit + 1e-9:
        fits, reason = False, f"memory fractions add up to {total:.2f} > limit {memory_limit:.2f}"
    elif failing:
        fits = False
        reason = "; ".join(f"{m.name or m.model}: {m.reason}" for m in failing)
    else:
        fits, reason = True, f"all {len(members)} members fit, fractions sum to {total:.2f}"
    return GroupFit(
        device=device,
        members=[m.name or m.model for m in members],
        memory_fractions=fractions,
        memory_limit=memory_limit,
        fits=fits,
        reason=reason,
    )


@dataclass(frozen=True)
class FleetFit:
    models: list[FitResult]
    groups: list[GroupFit]

    @property
    def fits(self) -> bool:
        return all(m.fits for m in self.models) and all(g.fits for g in self.groups)


def _device_for(loaded: LoadedFleet, name: str) -> Device:
    gpu = loaded.gpu(name)
    if gpu is None:
        return Device.host()
    return Device.from_gpu(str(loaded.gpu_name(name)), gpu)


def fleet_settings(
    loaded: LoadedFleet, name: str, utilization: float, overrides: FitSettings | None = None
) -> FitSettings:
    """A fleet model's engine settings at `utilization`; `overrides` replaces those it sets."""
    entry = loaded.fleet.models[name]
    given = overrides or FitSettings()
    return FitSettings(
        gpu_memory_utilization=utilization,
        max_model_len=given.max_model_len or entry.max_model_len,
        max_num_batched_tokens=given.max_num_batched_tokens or entry.max_num_batched_tokens,
        max_num_seqs=given.max_num_seqs or entry.max_num_seqs,
        kv_cache_dtype=entry.kv_cache_dtype,
        tensor_parallel_size=entry.tensor_parallel_size,
    )


def fit_model(loaded: LoadedFleet, name: str, device: Device, utilization: float) -> FitResult:
    """One fleet model's fit on `device` at `utilization`, with the fleet's engine settings."""
    entry = loaded.fleet.models[name]
    return fit(
        loaded.catalog.resolve_model_name(entry.catalog),
        loaded.model_spec(name),
        entry.quant_name,
        loaded.quant(name),
        device,
        fleet_settings(loaded, name, utilization),
        name=name,
    )


def fit_fleet(loaded: LoadedFleet, overrides: FitSettings | None = None) -> FleetFit:
    """Fit every model of a fleet where its placement puts it; shared groups as a whole.

    `overrides` replaces per-model settings that it sets (max_model_len and the rest)."""
    fleet = loaded.fleet
    fractions = {
        engine.model: engine.memory_fraction
        for device in device_plans(loaded)
        for engine in device.engines
    }
    results: dict[str, FitResult] = {}
    for name, entry in fleet.models.items():
        results[name] = fit(
            loaded.catalog.resolve_model_name(entry.catalog),
            loaded.model_spec(name),
            entry.quant_name,
            loaded.quant(name),
            _device_for(loaded, name),
            fleet_settings(loaded, name, fractions[name], overrides),
            name=name,
        )
    groups = [
        fit_group(group.gpu or "cpu", [results[m] for m in group.models], group.memory_limit)
        for group in fleet.shared_groups()
    ]
    return FleetFit(models=list(results.values()), groups=groups)
