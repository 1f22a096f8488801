"""Step-time model: how long one continuous-batching step takes on a device.

For a batch of new tokens (prefill chunks plus one token per decoding sequence):

    compute_s = FLOPs / (peak_flops x mfu)
    memory_s  = (weight bytes read + KV bytes read) / (bandwidth x bandwidth_efficiency)
    step_s    = max(compute_s, memory_s) + serial_fraction x min(compute_s, memory_s)
                + step_overhead_s + per_seq_overhead_s x sequences
                + communication (tensor parallelism: fixed_s + per_token_s x tokens)

FLOPs = 2 x active linear params x tokens + 2 x hidden x vocab x sampled tokens
        + 4 x heads x head_dim x (query, key) pairs, per layer.
docs/simulator.md derives each term; calibration files hold the efficiency factors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelyard.catalog import GpuSpec, ModelSpec, QuantProfile
from modelyard.sim.calibration import (
    Calibration,
    CalibrationChoice,
    Provenance,
    builtin_calibrations,
    calibration_for,
    choose_calibration,
    load_calibration,
)

__all__ = [
    "Calibration",
    "CalibrationChoice",
    "Communication",
    "Hardware",
    "Provenance",
    "StepBatch",
    "StepModel",
    "builtin_calibrations",
    "calibration_for",
    "choose_calibration",
    "load_calibration",
    "steps_until",
]


@dataclass(frozen=True)
class Hardware:
    name: str
    peak_flops: float  # FLOP/s, dense bf16 (fp8 profiles use the fp8 peak when listed)
    bandwidth: float  # bytes/s
    fp8_compute: bool = False  # peak_flops is the FP8 peak (FP8 weights on an FP8-capable GPU)

    @classmethod
    def for_gpu(
        cls,
        name: str,
        gpu: GpuSpec,
        quant_name: str,
        cal: Calibration,
        compute_share: float = 1.0,
    ) -> Hardware:
        """`compute_share` < 1 limits the engine to that share of the SMs (MPS's
        CUDA_MPS_ACTIVE_THREAD_PERCENTAGE)."""
        fp8 = quant_name == "fp8" and gpu.fp8_tflops is not None
        tflops = gpu.fp8_tflops if fp8 and gpu.fp8_tflops else gpu.bf16_tflops
        peak = cal.peak_flops_override or tflops * 1e12
        bandwidth = (cal.bandwidth_override_gbps or gpu.memory_bandwidth_gbps) * 1e9
        return cls(name=name, peak_flops=peak * compute_share, bandwidth=bandwidth, fp8_compute=fp8)


@dataclass(frozen=True)
class Communication:
    """Time per step that joins the ranks of a tensor-parallel engine (`sim/parallel.py`):
    `fixed_s` + `per_token_s` x the step's new tokens. Zero on one GPU."""

    fixed_s: float = 0.0
    per_token_s: float = 0.0

    def time(self, tokens: int) -> float:
        return self.fixed_s + self.per_token_s * tokens


@dataclass(frozen=True)
class StepBatch:
    """What one step computes. Token counts are new tokens; pairs are (query, key) products."""

    tokens: int
    sequences: int
    sampled: int
    full_pairs: float
    window_pairs: float
    kv_full_tokens: float
    kv_window_tokens: float


class StepModel:
    """Step time of one model on one device with one calibration. Cheap to call."""

    def __init__(
        self,
        model: ModelSpec,
        quant: QuantProfile,
        hardware: Hardware,
        cal: Calibration,
        kv_dtype_bytes: float,
        communication: Communication | None = None,
    ) -> None:
        self.model = model
        self.calibration = cal
        self.communication = communication or Communication()
        self._flops_per_token = 2.0 * model.active_linear_params
        self._flops_per_sample = 2.0 * model.hidden_size * model.vocab_size
        per_pair = 4.0 * model.num_attention_heads * model.head_dim
        self._full_layers = model.num_layers - model.windowed_layers
        self._flops_per_full_pair = per_pair * self._full_layers
        self._flops_per_window_pair = per_pair * model.windowed_layers
        kv_layer = model.kv_bytes_per_token_per_layer(kv_dtype_bytes)
        self._kv_full_bytes = kv_layer * self._full_layers
        self._kv_window_bytes = kv_layer * model.windowed_layers
        self._weights_bytes = quant.weights_bytes(model)
        self._moe = model.moe
        if model.moe is not None:
            expert_ffn = 3 * model.hidden_size * model.intermediate_size
            expert_bytes = expert_ffn * model.num_layers * quant.bits_per_weight / 8
            self._expert_bytes = expert_bytes
            self._dense_bytes = self._weights_bytes - expert_bytes * (
                model.moe.num_experts + model.moe.shared_experts
            )
        mfu = cal.fp8_mfu if hardware.fp8_compute and cal.fp8_mfu is not None else cal.mfu
        self._compute_rate = hardware.peak_flops * mfu
        self._memory_rate = hardware.bandwidth * cal.bandwidth_efficiency
        self._step_overhead = cal.step_overhead_ms / 1000.0 + self.communication.fixed_s
        self._per_seq = cal.per_seq_overhead_ms / 1000.0
        self._per_token = self.communication.per_token_s
        self._serial = cal.serial_fraction

    @property
    def weights_bytes(self) -> float:
        return self._weights_bytes

    def weights_read_bytes(self, tokens: int) -> float:
        """Weights one step reads: all of them, or for MoE the experts its tokens reach."""
        if self._moe is None:
            return self._weights_bytes
        experts = self._moe.num_experts
        per_token = self._moe.experts_per_token
        touched = experts * (1.0 - (1.0 - per_token / experts) ** tokens)
        return self._dense_bytes + self._expert_bytes * (touched + self._moe.shared_experts)

    def step_time(self, batch: StepBatch) -> float:
        """Seconds for one step."""
        flops = (
            self._flops_per_token * batch.tokens
            + self._flops_per_sample * batch.sampled
            + self._flops_per_full_pair * batch.full_pairs
            + self._flops_per_window_pair * batch.window_pairs
        )
        read = (
            self.weights_read_bytes(batch.tokens)
            + self._kv_full_bytes * batch.kv_full_tokens
            + self._kv_window_bytes * batch.kv_window_tokens
        )
        compute_s = flops / self._compute_rate
        memory_s = read / self._memory_rate
        if compute_s > memory_s:
            busy = compute_s + self._serial * memory_s
        else:
            busy = memory_s + self._serial * compute_s
        return (
            busy
            + self._step_overhead
            + self._per_seq * batch.sequences
            + self._per_token * batch.tokens
        )

    def decode_step_time(self, sequences: int, context_tokens: float) -> float:
        """A pure decode step: `sequences` sequences with `context_tokens` total context."""
        window = self.model.sliding_window
        capped = (
            context_tokens
            if window is None
            else min(context_tokens, float(window.size) * sequences)
        )
        return self.step_time(
            StepBatch(
                tokens=sequences,
                sequences=sequences,
                sampled=sequences,
                full_pairs=context_tokens,
                window_pairs=capped,
                kv_full_tokens=context_tokens,
                kv_window_tokens=capped,
            )
        )

    def mixed_step_time(
        self, decoders: int, context_tokens: float, chunks: list[tuple[int, int, bool]]
    ) -> float:
        """One step of `decoders` decoding sequences (`context_tokens` of KV between them)
        plus prefill chunks, each (tokens already computed, chunk tokens, finishes prefill)."""
        window = self.model.sliding_window.size if self.model.sliding_window else 0
        window_context = min(context_tokens, float(window * decoders)) if window else context_tokens
        full_pairs, window_pairs = context_tokens, window_context
        kv_full, kv_window = context_tokens, window_context
        sampled = tokens = decoders
        for done, chunk, finishes in chunks:
            tokens += chunk
            pairs = chunk * done + chunk * (chunk + 1) / 2.0
            full_pairs += pairs
            kv_full += done + chunk
            if window:
                window_pairs += chunk * min(done + (chunk + 1) / 2.0, window)
                kv_window += min(done + chunk, window)
            else:
                window_pairs += pairs
                kv_window += done + chunk
            sampled += finishes
        return self.step_time(
            StepBatch(
                tokens=tokens,
                sequences=decoders + len(chunks),
                sampled=sampled,
                full_pairs=full_pairs,
                window_pairs=window_pairs,
                kv_full_tokens=kv_full,
                kv_window_tokens=kv_window,
            )
        )

    def decode_span_time(self, sequences: int, context0: float, steps: int) -> float:
        """Seconds for `steps` consecutive pure-decode steps of `sequences` sequences whose
        total context is `context0` in the first step and grows by `sequences` each step.

        Both roofline terms are linear in the step index, so the sum of their maximum has a
        closed form (windowed layers' context is held at its first-step value)."""
        if steps <= 0:
            return 0.0
        window = self.model.sliding_window
        capped = context0 if window is None else min(context0, float(window.size) * sequences)
        compute_a = (
            (self._flops_per_token + self._flops_per_sample) * sequences
            + self._flops_per_full_pair * context0
            + self._flops_per_window_pair * capped
        ) / self._compute_rate
        compute_b = self._flops_per_full_pair * sequences / self._compute_rate
        memory_a = (
            self.weights_read_bytes(sequences)
            + self._kv_full_bytes * context0
            + self._kv_window_bytes * capped
        ) / self._memory_rate
        memory_b = self._kv_full_bytes * sequences / self._memory_rate
        overhead = self._step_overhead + (self._per_seq + self._per_token) * sequences
        # max + s*min = (1 - s) * max + s * (compute + memory)
        largest = _sum_of_max_lines(compute_a, compute_b, memory_a, memory_b, steps)
        both = _line_sum(compute_a + memory_a, compute_b + memory_b, 0, steps)
        serial = self._serial
        return (1.0 - serial) * largest + serial * both + overhead * steps

    def prefill_time(self, prompt_tokens: int) -> float:
        """One sequence's whole prompt in a single step (no other work)."""
        window = self.model.sliding_window
        pairs = prompt_tokens * (prompt_tokens + 1) / 2.0
        capped = pairs if window is None else min(pairs, float(window.size) * prompt_tokens)
        return self.step_time(
            StepBatch(
                tokens=prompt_tokens,
                sequences=1,
                sampled=1,
                full_pairs=pairs,
                window_pairs=capped,
                kv_full_tokens=prompt_tokens,
                kv_window_tokens=min(prompt_tokens, window.size) if window else prompt_tokens,
            )
        )


def _line_sum(a: float, b: float, first: int, end: int) -> float:
    """sum of a + b*j for j in [first, end)."""
    count = end - first
    if count <= 0:
        return 0.0
    return count * a + b * count * (first + end - 1) / 2.0


def _sum_of_max_lines(a1: float, b1: float, a2: float, b2: float, steps: int) -> float:
    """sum over j in [0, steps) of max(a1 + b1*j, a2 + b2*j)."""
    if b1 == b2:
        return _line_sum(max(a1, a2), b1, 0, steps)
    cross = (a2 - a1) / (b1 - b2)  # line 1 >= line 2 on the side where (b1 - b2)(j - cross) >= 0
    split = min(max(math.ceil(cross), 0), steps)
    if b1 > b2:
        return _line_sum(a2, b2, 0, split) + _line_sum(a1, b1, split, steps)
    return _line_sum(a1, b1, 0, split) + _line_sum(a2, b2, split, steps)


def steps_until(
    model: StepModel,
    n: int,
    context0: float,
    limit: int,
    left: float,
    factor: float,
    total: float | None = None,
) -> tuple[float, int]:
    """(seconds, steps) of the shortest run of at most `limit` decode steps that lasts at
    least `left` seconds (each step `factor` times as long as alone). Step times vary little
    within a run, so start from the proportional guess and walk to the answer."""
    span_time = model.decode_span_time
    if total is None:
        total = span_time(n, context0, limit) * factor
    steps = max(1, min(limit, math.ceil(left / (total / limit))))
    elapsed = span_time(n, context0, steps) * factor
    while steps > 1 and elapsed - left >= 0:
        shorter = span_time(n, context0, steps - 1) * factor
        if shorter < left:
            break
        steps, elapsed = steps - 1, shorter
    while elapsed < left and steps < limit:
        steps += 1
        elapsed = span_time(n, context0, steps) * factor
    return elapsed, steps
