"""Engines on devices: memory split, start-up (OOM, cold start) and sharing.

Several engines on one GPU split its memory by their fractions (each one's KV cache is what
its fraction leaves after weights, runtime and activations, as `memory.fit` computes) and
share its time by the group's sharing mode (`device_sharing`):

- time-sliced: while k engines have work, each engine's steps take
  (1 + contention_slowdown x (k - 1)) times as long as alone, a step that prefills
  (1 + contention_prefill_slowdown x (k - 1)) (both measured on an H200);
- mps: kernels of all engines run at once; the same form with the smaller `mps_slowdown`,
  and `mps_prefill_slowdown` for a step that prefills (measured on the H200: two vLLM engines'
  decode steps slow each other much more than their prefills do), and an optional share of the
  SMs per engine;
- mig: hard slices, each engine alone on its slice (`mig_gpu`): no contention at all.

Offline, an engine chains decode steps into one event only up to the next moment another
engine on the device could start or stop being busy, so the factor within a span is exact
(the step that straddles the change keeps the old factor, as in per-step simulation); a change
nobody could foresee (closed-loop load) cuts the other engines' spans (`Engine.interrupt`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from modelyard.catalog import GpuSpec, ModelSpec, QuantProfile
from modelyard.catalog.entries import GIB
from modelyard.catalog.mig import fits_on_one_gpu, mig_gpu, mig_memory_gb
from modelyard.fleet import Sharing
from modelyard.memory import Device, FitResult, FitSettings, fit
from modelyard.sim.engine import BLOCK_TOKENS, Engine, EngineListener
from modelyard.sim.errors import EngineStartError, SimError
from modelyard.sim.parallel import step_model_for
from modelyard.sim.perf import Calibration, Hardware


@dataclass
class SharedDevice:
    """Sharing of one device's time between the engines placed on it (time-sliced or MPS:
    `slowdown` is the extra step time per other busy engine; `prefill_slowdown` the same for a
    step that prefills, None: `slowdown`)."""

    name: str
    slowdown: float
    prefill_slowdown: float | None = None
    busy: set[int] = field(default_factory=set)
    engines: list[Engine] = field(default_factory=list)

    def join(self, engine: Engine) -> None:
        self.engines.append(engine)
        if len(self.engines) > 1:
            for member in self.engines:
                member.track_busy_until = True

    def horizon(self, engine: Engine) -> float:
        return min((e.change_after() for e in self.engines if e is not engine), default=math.inf)

    def factor(self, engine: Engine, prefill: bool = False) -> float:
        others = len(self.busy) - (1 if id(engine) in self.busy else 0)
        if prefill and self.prefill_slowdown is not None:
            return 1.0 + self.prefill_slowdown * others
        return 1.0 + self.slowdown * others

    def set_busy(self, engine: Engine, busy: bool, now: float) -> None:
        if busy:
            self.busy.add(id(engine))
        else:
            self.busy.discard(id(engine))
        if self.slowdown and len(self.engines) > 1:
            for other in self.engines:
                if other is not engine and other.busy:
                    other.interrupt(now)  # its factor changes from its next step on


@dataclass(frozen=True)
class MigSlice:
    """One member's MIG slice: its profile and the slice as a GPU of its own."""

    profile: str
    gpu_name: str  # e.g. "a100-80gb/3g.40gb"
    gpu: GpuSpec


@dataclass(frozen=True)
class DeviceSharing:
    """How the engines of one shared group share their GPU, for `sim run` and the planner.

    `slowdown` multiplies each engine's step time by (1 + slowdown x other busy engines);
    with MIG it is 0 and `slices` gives each member its own slice. `prefill_slowdown` is the
    same for a step that prefills (None: `slowdown`)."""

    mode: Sharing
    slowdown: float
    prefill_slowdown: float | None = None
    slices: dict[str, MigSlice] = field(default_factory=dict)
    compute_share: float = 1.0  # MPS: share of the SMs each engine may use


def choose_mig_profiles(gpu: GpuSpec, members: list[str]) -> dict[str, str]:
    """The largest profile that gives every member an equal slice on one GPU."""
    by_size = sorted(gpu.mig_profiles, key=mig_memory_gb, reverse=True)
    for profile in by_size:
        if fits_on_one_gpu(gpu, [profile] * len(members)):
            return dict.fromkeys(members, profile)
    raise SimError(f"{len(members)} MIG slices do not fit on {gpu.display_name}")


def device_sharing(
    mode: Sharing,
    gpu_name: str,
    gpu: GpuSpec,
    members: list[str],
    calibration: Calibration,
    mig_profiles: dict[str, str] | None = None,
    mps_compute_share: float = 1.0,
) -> DeviceSharing:
    """The sharing model of one GPU shared by `members` in `mode`."""
    if mode == "time-sliced":
        return DeviceSharing(
            mode,
            calibration.contention_slowdown,
            prefill_slowdown=calibration.contention_prefill_slowdown,
        )
    if mode == "mps":
        if not 0 < mps_compute_share <= 1:
            raise SimError(f"MPS compute share must be in (0, 1], got {mps_compute_share:g}")
        return DeviceSharing(
            mode,
            calibration.mps_slowdown,
            prefill_slowdown=calibration.mps_prefill_slowdown,
            compute_share=mps_compute_share,
        )
    if not gpu.mig_profiles:
        raise SimError(f"{gpu_name} has no MIG profiles")
    profiles = {**choose_mig_profiles(gpu, members), **(mig_profiles or {})}
    if not fits_on_one_gpu(gpu, [profiles[m] for m in members]):
        listed = ", ".join(f"{m}: {profiles[m]}" for m in members)
        raise SimError(f"MIG profiles {listed} do not fit on one {gpu_name}")
    slices = {
        m: MigSlice(profiles[m], f"{gpu_name}/{profiles[m]}", mig_gpu(gpu, profiles[m]))
        for m in members
    }
    return DeviceSharing(mode, 0.0, slices=slices)


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
    compute_share: float = 1.0  # MPS: share of the SMs this engine may use


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
    hardware = Hardware.for_gpu(
        spec.gpu_name, spec.gpu, spec.quant_name, spec.calibration, spec.compute_share
    )
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
        prefill_first=spec.calibration.scheduler == "prefill-first",
        reserve_full=spec.calibration.admission == "reserve-full",
        async_scheduling=spec.calibration.async_scheduling,
    )
    if device is not None:
        device.join(engine)
    cold = result.weights_bytes / (spec.calibration.load_bandwidth_gbps * 1e9)
    return StartedEngine(engine, result, cold + spec.calibration.init_s)
