"""Fit a calibration (efficiency factors) to step times measured on a real GPU.

Input: the JSON written by benchmarks/gpu_calibrate.py. The fit searches mfu,
bandwidth_efficiency and serial_fraction on a grid and solves step_overhead_ms and
per_seq_overhead_ms by least squares for each point of the grid, minimising squared relative
error over the training points. Held-out points (other batch sizes and prompt lengths) are
predicted with the fitted factors and their errors reported.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.catalog import Catalog
from modelyard.sim.errors import CalibrationError
from modelyard.sim.perf import Calibration, Hardware, Provenance, StepBatch, StepModel


@dataclass(frozen=True)
class Point:
    model: str
    kind: str  # "decode" or "prefill"
    batch: int
    context: int
    seconds: float
    held_out: bool


@dataclass(frozen=True)
class Prediction:
    point: Point
    predicted_s: float

    @property
    def error(self) -> float:
        return self.predicted_s / self.point.seconds - 1.0


@dataclass(frozen=True)
class Fit:
    calibration: Calibration
    predictions: list[Prediction]
    contention_ratios: list[float]


def load_points(
    data: dict[str, Any], hold_batches: set[int], hold_prompts: set[int]
) -> list[Point]:
    points = []
    for model, runs in data["models"].items():
        for row in runs["decode"]:
            points.append(
                Point(
                    model,
                    "decode",
                    row["batch"],
                    row["context"],
                    row["seconds"],
                    row["batch"] in hold_batches,
                )
            )
        for row in runs["prefill"]:
            points.append(
                Point(
                    model,
                    "prefill",
                    1,
                    row["tokens"],
                    row["seconds"],
                    row["tokens"] in hold_prompts,
                )
            )
    return points


def _terms(catalog: Catalog, gpu: str, point: Point) -> tuple[float, float, int]:
    """(compute seconds at mfu 1, memory seconds at efficiency 1, sequences) for a point."""
    unit = Calibration(
        name="unit",
        devices=["*"],
        mfu=1.0,
        bandwidth_efficiency=1.0,
        step_overhead_ms=0.0,
        provenance=Provenance(where="-", how="-", when=datetime.date(2026, 1, 1), source="-"),
    )
    hardware = Hardware.for_gpu(gpu, catalog.gpu(gpu), "bf16", unit)
    model = StepModel(catalog.model(point.model), catalog.quant("bf16"), hardware, unit, 2.0)
    spec = model.model
    if point.kind == "decode":
        context = float(point.batch * point.context)
        batch = StepBatch(
            tokens=point.batch,
            sequences=point.batch,
            sampled=point.batch,
            full_pairs=context,
            window_pairs=context,
            kv_full_tokens=context,
            kv_window_tokens=context,
        )
    else:
        pairs = point.context * (point.context + 1) / 2.0
        batch = StepBatch(
            tokens=point.context,
            sequences=1,
            sampled=1,
            full_pairs=pairs,
            window_pairs=pairs,
            kv_full_tokens=point.context,
            kv_window_tokens=point.context,
        )
    flops = (
        2.0 * spec.active_linear_params * batch.tokens
        + 2.0 * spec.hidden_size * spec.vocab_size * batch.sampled
        + 4.0 * spec.num_attention_heads * spec.head_dim * spec.num_layers * batch.full_pairs
    )
    read = (
        model.weights_read_bytes(batch.tokens) + spec.kv_bytes_per_token(2.0) * batch.kv_full_tokens
    )
    return flops / hardware.peak_flops, read / hardware.bandwidth, batch.sequences


def fit_calibration(
    data: dict[str, Any],
    gpu: str,
    catalog: Catalog,
    hold_batches: set[int],
    hold_prompts: set[int],
    source: str,
) -> Fit:
    points = load_points(data, hold_batches, hold_prompts)
    train = [p for p in points if not p.held_out]
    if len(train) < 4:
        raise CalibrationError([f"only {len(train)} training points; need at least 4"])
    terms = np.array([_terms(catalog, gpu, p) for p in points])
    measured = np.array([p.seconds for p in points])
    mask = np.array([not p.held_out for p in points])
    # every (mfu, efficiency, serial) of the grid at once; for each, the weighted least squares
    # of overhead and per-sequence cost has the same design matrix, so one pseudo-inverse
    # solves them all (measured = busy + overhead + per_seq x sequences, in relative error)
    mfus, efficiencies = np.linspace(0.2, 1.0, 41), np.linspace(0.4, 1.0, 61)
    serials = np.linspace(0.0, 1.0, 21)
    compute = (terms[:, 0] / mfus[:, None])[:, None, None, :]
    memory = (terms[:, 1] / efficiencies[:, None])[None, :, None, :]
    high, low = np.maximum(compute, memory), np.minimum(compute, memory)
    busy = high + serials[None, None, :, None] * low  # (mfu, efficiency, serial, point)
    weights = 1.0 / measured[mask]
    design = np.stack([np.ones(mask.sum()), terms[mask, 2]], axis=1) * weights[:, None]
    coef = ((measured[mask] - busy[..., mask]) * weights) @ np.linalg.pinv(design).T
    overheads, per_seqs = np.maximum(coef[..., 0], 0.0), np.maximum(coef[..., 1], 0.0)
    predicted = busy + overheads[..., None] + per_seqs[..., None] * terms[:, 2]
    losses = np.sum(((predicted[..., mask] - measured[mask]) / measured[mask]) ** 2, axis=-1)
    i, j, k = np.unravel_index(int(np.argmin(losses)), losses.shape)  # first minimum, as a loop
    mfu, efficiency, serial = mfus[i], efficiencies[j], serials[k]
    overhead, per_seq = float(overheads[i, j, k]), float(per_seqs[i, j, k])
    contention = [
        row["p50"] / alone["p50"]
        for row in data.get("colocation", [])
        if row["colocated"]
        for alone in data["colocation"]
        if not alone["colocated"]
        and alone["model"] == row["model"]
        and alone["batch"] == row["batch"]
        and alone["context"] == row["context"]
    ]
    slowdown = float(np.mean(contention)) - 1.0 if contention else 1.0
    calibration = Calibration(
        name=f"{gpu}-measured",
        devices=[gpu],
        mfu=round(float(mfu), 4),
        bandwidth_efficiency=round(float(efficiency), 4),
        serial_fraction=round(float(serial), 4),
        step_overhead_ms=round(overhead * 1000, 4),
        per_seq_overhead_ms=round(per_seq * 1000, 5),
        contention_slowdown=round(slowdown, 3),
        provenance=Provenance(
            where=", ".join(
                f"{label}{data[key]}"
                for key, label in (("device", ""), ("torch", "torch "), ("cuda", "CUDA "))
                if data.get(key)
            ),
            how=f"{_method(data)} fitted by `modelyard sim calibrate`; held-out batches "
            f"{sorted(hold_batches)} and prompts {sorted(hold_prompts)}",
            when=datetime.date.fromisoformat(str(data.get("date", datetime.date.today()))),
            source=source,
        ),
    )
    hardware = Hardware.for_gpu(gpu, catalog.gpu(gpu), "bf16", calibration)
    predictions = []
    for point in points:
        model = StepModel(
            catalog.model(point.model), catalog.quant("bf16"), hardware, calibration, 2.0
        )
        if point.kind == "decode":
            predicted = model.decode_step_time(point.batch, float(point.batch * point.context))
        else:
            predicted = model.prefill_time(point.context)
        predictions.append(Prediction(point, predicted))
    return Fit(calibration, predictions, contention)


def load_results(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CalibrationError([f"{path}: cannot read calibration results: {exc}"]) from exc
    if "models" not in data:
        raise CalibrationError([f"{path}: not a benchmarks/gpu_calibrate.py result (no 'models')"])
    return data


def _method(data: dict[str, Any]) -> str:
    """How the measurements were taken: the harness says so (files from before it did are
    recognised by their fields)."""
    if data.get("method"):
        return str(data["method"])
    if data.get("engine_url"):
        return "benchmarks/engine_steps.py against a running engine"
    return (
        "benchmarks/gpu_calibrate.py (random-weight Llama-3.1-8B and Mistral-7B shapes, bf16, "
        "CUDA-graph decode steps, static KV cache)"
    )
