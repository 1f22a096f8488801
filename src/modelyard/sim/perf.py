"""Step-time model: how long one continuous-batching step takes on a device.

For a batch of new tokens (prefill chunks plus one token per decoding sequence):

    compute_s = FLOPs / (peak_flops x mfu)
    memory_s  = (weight bytes read + KV bytes read) / (bandwidth x bandwidth_efficiency)
    step_s    = max(compute_s, memory_s) + serial_fraction x min(compute_s, memory_s)
                + step_overhead_s + per_seq_overhead_s x sequences

FLOPs = 2 x active linear params x tokens + 2 x hidden x vocab x sampled tokens
        + 4 x heads x head_dim x (query, key) pairs, per layer.
docs/simulator.md derives each term; calibration files hold the efficiency factors.
"""

from __future__ import annotations

import datetime
import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelyard.catalog import GpuSpec, ModelSpec, QuantProfile
from modelyard.sim.errors import CalibrationError
from modelyard.yamlsource import YamlDocument, load_yaml, parse_yaml, validation_problems


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    where: str = Field(description="hardware and software the factors were measured on")
    how: str = Field(description="the command or harness that measured them")
    when: datetime.date
    source: str = Field(description="URL or repository path of the data")


class Calibration(BaseModel):
    """Efficiency factors for one device (class); every file states where they came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    devices: list[str] = Field(description="GPU names this calibration applies to; '*' = any")
    mfu: float = Field(gt=0, le=1, description="achieved / peak FLOP/s in compute-bound steps")
    bandwidth_efficiency: float = Field(gt=0, le=1, description="achieved / peak bytes/s")
    step_overhead_ms: float = Field(ge=0, description="fixed cost of every step")
    per_seq_overhead_ms: float = Field(default=0.0, ge=0, description="per sequence per step")
    serial_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="how much of the smaller roofline term adds to the larger one "
        "(0 = perfect overlap, pure roofline; 1 = compute and memory time add up)",
    )
    contention_slowdown: float = Field(
        default=1.0,
        ge=0,
        description="extra step time per other busy engine on the same device, as a multiple "
        "of the step's own time (1.0 = fair time-slicing, 2x with two engines)",
    )
    load_bandwidth_gbps: float = Field(default=5.0, gt=0, description="weights load, GB/s")
    init_s: float = Field(default=15.0, ge=0, description="engine start besides weights")
    peak_flops_override: float | None = Field(default=None, gt=0, description="FLOP/s (CPUs)")
    bandwidth_override_gbps: float | None = Field(default=None, gt=0, description="GB/s (CPUs)")
    provenance: Provenance


def _parse_calibration(doc: YamlDocument) -> Calibration:
    try:
        return Calibration.model_validate(doc.data)
    except ValidationError as exc:
        raise CalibrationError(validation_problems(exc, doc, Calibration)) from exc


@functools.cache  # the packaged files do not change while a process runs; callers only read
def builtin_calibrations() -> list[Calibration]:
    folder = resources.files("modelyard.sim").joinpath("calibrations")
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            doc = parse_yaml(entry.read_text(encoding="utf-8"), f"sim/calibrations/{entry.name}")
            found.append(_parse_calibration(doc))
    return found


def load_calibration(path: Path) -> Calibration:
    return _parse_calibration(load_yaml(path))


def calibration_for(device: str, extra: list[Calibration] | None = None) -> Calibration:
    """The most specific calibration for `device`: user files first, then built-in."""
    candidates = [*(extra or []), *builtin_calibrations()]
    for calibration in candidates:
        if device in calibration.devices:
            return calibration
    for calibration in candidates:
        if "*" in calibration.devices:
            return calibration
    raise CalibrationError([f"no calibration applies to device '{device}'"])


@dataclass(frozen=True)
class Hardware:
    name: str
    peak_flops: float  # FLOP/s, dense bf16 (fp8 profiles use the fp8 peak when listed)
    bandwidth: float  # bytes/s

    @classmethod
    def for_gpu(cls, name: str, gpu: GpuSpec, quant_name: str, cal: Calibration) -> Hardware:
        tflops = gpu.fp8_tflops if quant_name == "fp8" and gpu.fp8_tflops else gpu.bf16_tflops
        peak = cal.peak_flops_override or tflops * 1e12
        bandwidth = (cal.bandwidth_override_gbps or gpu.memory_bandwidth_gbps) * 1e9
        return cls(name=name, peak_flops=peak, bandwidth=bandwidth)


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
    ) -> None:
        self.model = model
        self.calibration = cal
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
        self._compute_rate = hardware.peak_flops * cal.mfu
        self._memory_rate = hardware.bandwidth * cal.bandwidth_efficiency
        self._step_overhead = cal.step_overhead_ms / 1000.0
        self._per_seq = cal.per_seq_overhead_ms / 1000.0
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
        return busy + self._step_overhead + self._per_seq * batch.sequences

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
        overhead = self._step_overhead + self._per_seq * sequences
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
