"""Engines on devices: memory split, start-up (OOM, cold start) and time-sharing.

Several engines on one GPU split its memory by their fractions (each one's KV cache is what
its fraction leaves after weights, runtime and activations, as `memory.fit` computes) and
share its time: while k engines have work, each engine's steps take
(1 + contention_slowdown x (k - 1)) times as long as alone. Offline, an engine chains decode
steps into one event only up to the next moment another engine on the device could start or
stop being busy, so the factor within a span is exact (the step that straddles the change
keeps the old factor, as in per-step simulation). The slowdown comes from the
device's calibration file, measured by benchmarks/gpu_calibrate.py (docs/simulator.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from modelyard.catalog import GpuSpec, ModelSpec, QuantProfile
from modelyard.catalog.entries import GIB
from modelyard.memory import Device, FitResult, FitSettings, fit
from modelyard.sim.engine import BLOCK_TOKENS, Engine, EngineListener
from modelyard.sim.errors import EngineStartError
from modelyard.sim.parallel import step_model_for
from modelyard.sim.perf import Calibration, Hardware


@dataclass
class SharedDevice:
    """Time-sharing of one device between the engines placed on it."""

    name: str
    slowdown: float
    busy: set[int] = field(default_factory=set)
    engines: list[Engine] = field(default_factory=list)

    def join(self, engine: Engine) -> None:
        self.engines.append(engine)
        if len(self.engines) > 1:
            for member in self.engines:
                member.track_busy_until = True

    def horizon(self, engine: Engine) -> float:
        return min((e.change_after() for e in self.engines if e is not engine), default=math.inf)

    def factor(self, engine: Engine) -> float:
        others = len(self.busy) - (1 if id(engine) in self.busy else 0)
        return 1.0 + self.slowdown * others

    def set_busy(self, engine: Engine, busy: bool) -> None:
        if busy:
            self.busy.add(id(engine))
        else:
            self.busy.discard(id(engine))


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to start one simulated engine."""

    name: str
    model_name: str
    model: ModelSpec
    quant_name: str
    quant: QuantProfile
    gpu_name: str
    gpu: GpuSpec
    calibration: Calibration
    settings: FitSettings


def oom_message(result: FitResult) -> str:
    """The error vLLM prints when the weights or the KV cache do not fit."""
    if result.kv_budget_bytes <= 0:
        return (
            "ValueError: No available memory for the cache blocks. Try increasing "
            f"`gpu_memory_utilization` when initializing the engine. (weights "
            f"{result.weights_bytes / GIB:.2f} GiB, budget {result.budget_bytes / GIB:.2f} GiB)"
        )
    return (
        f"ValueError: The model's max seq len ({result.max_model_len}) is larger than the "
        f"maximum number of tokens that can be stored in KV cache ({result.kv_cache_tokens}). "
        "Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when "
        "initializing the engine."
    )


@dataclass(frozen=True)
class StartedEngine:
    engine: Engine
    fit: FitResult
    cold_start_s: float


def start_engine(
    spec: EngineSpec,
    listener: EngineListener,
    device: SharedDevice | None = None,
    per_token: bool = False,
    max_span_steps: int = 1 << 20,
) -> StartedEngine:
    """Fit the engine in its memory fraction and build it; vLLM-like OOM if it cannot start."""
    result = fit(
        spec.model_name,
        spec.model,
        spec.quant_name,
        spec.quant,
        Device.from_gpu(spec.gpu_name, spec.gpu),
        spec.settings,
        name=spec.name,
    )
    if not result.fits:
        raise EngineStartError(f"{spec.name}: {oom_message(result)}")
    kv_dtype = 1.0 if spec.settings.kv_cache_dtype == "fp8" else spec.quant.kv_cache_bytes
    hardware = Hardware.for_gpu(spec.gpu_name, spec.gpu, spec.quant_name, spec.calibration)
    ranks = spec.settings.tensor_parallel_size
    step_model = step_model_for(
        spec.model, spec.quant, hardware, spec.calibration, kv_dtype, ranks, spec.gpu_name, spec.gpu
    )
    engine = Engine(
        name=spec.name,
        step_model=step_model,
        kv_blocks=result.kv_cache_tokens // BLOCK_TOKENS,
        max_num_seqs=result.max_num_seqs,
        max_num_batched_tokens=max(result.max_num_batched_tokens, 1),
        listener=listener,
        contention=device,
        per_token=per_token,
        max_span_steps=max_span_steps,
    )
    if device is not None:
        device.join(engine)
    cold = result.weights_bytes / (spec.calibration.load_bandwidth_gbps * 1e9)
    return StartedEngine(engine, result, cold + spec.calibration.init_s)
