"""What a simulation reports: per-model latency percentiles, throughput, goodput, KV use, and
how far its figures can be trusted (`Accuracy`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from modelyard.sim.engine import SimRequest

PERCENTILES = (50, 90, 99)
# FP8 compute on an FP8-capable GPU without an FP8 measurement: the FP8 peak with bf16-measured
# efficiency puts an H100's FP8 prefill at ~7x an A100's bf16, where vLLM shows ~3-4x
# (issue 17), so such figures may be up to about half or twice as fast as the truth.
FP8_UNMEASURED_BAND = 0.5


@dataclass(frozen=True)
class Accuracy:
    """Which calibration a model's figures came from and their relative error band.

    `band` is a relative error such that the real figure is expected within
    [value x (1 - band), value x (1 + band)]: the validation error of the calibration where it
    was measured on this GPU, a wider one where it is applied unmeasured."""

    calibration: str
    engine_version: str
    gpu: str
    measured_on_gpu: bool
    band: float
    notes: tuple[str, ...] = ()

    def interval(self, value: float) -> tuple[float, float]:
        return value * (1.0 - self.band), value * (1.0 + self.band)


def may_reverse(a: float, a_band: float, b: float, b_band: float) -> bool:
    """Whether an ordering of two simulated figures (a vs b) could flip within their bands:
    their error intervals overlap."""
    return a * (1 - a_band) <= b * (1 + b_band) and b * (1 - b_band) <= a * (1 + a_band)


class Collector:
    """Per-request outcomes, as columns; the engines' listener."""

    def __init__(self) -> None:
        self.model: list[int] = []
        self.ttft: list[float] = []
        self.e2e: list[float] = []
        self.tpot: list[float] = []
        self.queue: list[float] = []
        self.output_tokens: list[int] = []
        self.finished_at: list[float] = []
        self.on_done: Callable[[float], None] | None = None  # closed loop: the user is free

    def on_first_token(self, request: SimRequest, time: float) -> None:
        return None

    def on_tokens(self, requests: Iterable[SimRequest], time: float) -> None:
        return None

    def on_finished(self, request: SimRequest, time: float) -> None:
        self.model.append(request.payload)
        ttft = request.first_token - request.arrival
        self.ttft.append(ttft)
        e2e = time - request.arrival
        self.e2e.append(e2e)
        out = request.output_tokens
        self.tpot.append((e2e - ttft) / (out - 1) if out > 1 else math.nan)
        self.queue.append(request.first_scheduled - request.arrival)
        self.output_tokens.append(out)
        self.finished_at.append(time)
        if self.on_done is not None:
            self.on_done(time)


@dataclass
class ModelResult:
    name: str
    requests: int
    completed: int
    rejected: int
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    e2e_ms: dict[str, float]
    queue_ms: dict[str, float]
    throughput_rps: float
    output_tokens_per_s: float
    goodput_rps: float
    kv_usage_mean: float
    kv_usage_max: float
    queue_mean: float
    preemptions: int
    engines: int
    cold_start_s: float
    kv_cache_tokens: int
    accuracy: Accuracy | None = None
    batch_max: int = 0  # the most sequences one engine ran in one step


@dataclass
class SimResult:
    fleet: str
    placement: str
    gpus: dict[str, int]
    duration_s: float
    requests: int
    slo: dict[str, float | None]
    models: list[ModelResult] = field(default_factory=list)
    wall_s: float = 0.0
    load: dict[str, float | str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EngineTotals:
    """What the engines of one model did over the run."""

    engines: int
    busy_s: float
    kv_block_seconds_per_block: float
    kv_usage_max: float
    queue_seconds: float
    preemptions: int
    cold_start_s: float
    kv_cache_tokens: int
    batch_max: int = 0


def percentiles(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": math.nan, **{f"p{p}": math.nan for p in PERCENTILES}}
    out = {"mean": float(finite.mean())}
    for p, v in zip(PERCENTILES, np.percentile(finite, PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    return out


def _scaled(values: dict[str, float]) -> dict[str, float]:
    return {k: v * 1000.0 for k, v in values.items()}


@dataclass(frozen=True)
class Slo:
    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float | None


def model_results(
    names: list[str],
    requested: dict[str, int],
    rejected: dict[str, int],
    totals: dict[str, EngineTotals],
    accuracy: dict[str, Accuracy],
    collector: Collector,
    slo: Slo,
    duration_s: float,
) -> list[ModelResult]:
    """One result per simulated model, from the collected per-request columns."""
    model_ids = np.asarray(collector.model, dtype=np.int64)
    ttft = np.asarray(collector.ttft)
    tpot = np.asarray(collector.tpot)
    e2e = np.asarray(collector.e2e)
    queue = np.asarray(collector.queue)
    out_tokens = np.asarray(collector.output_tokens)
    results = []
    for index, name in enumerate(names):
        if name not in totals:
            continue
        mask = model_ids == index
        good = mask.copy()
        if slo.ttft_s is not None:
            good &= ttft <= slo.ttft_s
        if slo.tpot_s is not None:
            good &= ~(tpot > slo.tpot_s)  # single-token outputs have no TPOT
        if slo.e2e_s is not None:
            good &= e2e <= slo.e2e_s
        t = totals[name]
        busy = max(t.busy_s, 1e-12)
        results.append(
            ModelResult(
                name=name,
                requests=requested.get(name, 0),
                completed=int(mask.sum()),
                rejected=rejected.get(name, 0),
                ttft_ms=_scaled(percentiles(ttft[mask])),
                tpot_ms=_scaled(percentiles(tpot[mask])),
                e2e_ms=_scaled(percentiles(e2e[mask])),
                queue_ms=_scaled(percentiles(queue[mask])),
                throughput_rps=float(mask.sum()) / duration_s,
                output_tokens_per_s=float(out_tokens[mask].sum()) / duration_s,
                goodput_rps=float(good.sum()) / duration_s,
                kv_usage_mean=t.kv_block_seconds_per_block / busy,
                kv_usage_max=t.kv_usage_max,
                queue_mean=t.queue_seconds / busy,
                preemptions=t.preemptions,
                engines=t.engines,
                cold_start_s=t.cold_start_s,
                kv_cache_tokens=t.kv_cache_tokens,
                accuracy=accuracy.get(name),
                batch_max=t.batch_max,
            )
        )
    return results
