from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.catalog import Catalog
from modelyard.sim.perf import (
    Calibration,
    Hardware,
    Provenance,
    StepBatch,
    StepModel,
    builtin_calibrations,
    calibration_for,
)

CAL = Calibration(
    name="test",
    devices=["*"],
    mfu=0.5,
    bandwidth_efficiency=0.8,
    step_overhead_ms=2.0,
    per_seq_overhead_ms=0.1,
    provenance=Provenance(
        where="hand", how="hand", when=datetime.date(2026, 11, 28), source="tests"
    ),
)


def _model(
    catalog: Catalog, name: str = "llama-3.1-8b", gpu: str = "h100-sxm", cal: Calibration = CAL
) -> StepModel:
    hardware = Hardware.for_gpu(gpu, catalog.gpu(gpu), "bf16", cal)
    return StepModel(catalog.model(name), catalog.quant("bf16"), hardware, cal, 2.0)


def test_single_decode_step_is_memory_bound(catalog: Catalog) -> None:
    model = _model(catalog)
    # one sequence with 1000 tokens of context on an H100: read 16.06 GB of weights and
    # 1000 x 131072 bytes of KV at 3.35 TB/s x 0.8, plus 2 ms + 0.1 ms overhead
    weights = 8_029_995_008 * 2
    expected = (weights + 1000 * 131072) / (3350e9 * 0.8) + 0.002 + 0.0001
    assert model.decode_step_time(1, 1000) == pytest.approx(expected, rel=1e-12)


def test_long_prefill_is_compute_bound(catalog: Catalog) -> None:
    model = _model(catalog)
    tokens = 4096
    linear = 2 * 8_029_995_008 * tokens - 2 * 4096 * 128256 * tokens  # lm_head only once
    flops = 2 * (8_029_995_008 - 2 * 128256 * 4096) * tokens + 2 * 4096 * 128256 * 1
    attention = 4 * 32 * 128 * 32 * tokens * (tokens + 1) / 2
    expected = (flops + attention) / (989e12 * 0.5) + 0.002 + 0.0001
    assert linear > 0
    assert model.prefill_time(tokens) == pytest.approx(expected, rel=1e-12)


def test_sliding_window_caps_attention(catalog: Catalog) -> None:
    gemma = _model(catalog, "gemma-3-270m", "a10g")
    short = gemma.decode_step_time(64, 64 * 400)
    long = gemma.decode_step_time(64, 64 * 4000)
    full_only = _model(catalog, "llama-3.1-8b", "a10g")
    # Gemma's 15 windowed layers stop growing past 512 tokens; only 3 global layers grow
    growth_gemma = long / short
    growth_llama = full_only.decode_step_time(64, 64 * 4000) / full_only.decode_step_time(
        64, 64 * 400
    )
    assert 1 < growth_gemma < growth_llama


def test_moe_reads_only_touched_experts(catalog: Catalog) -> None:
    hardware = Hardware.for_gpu("h200", catalog.gpu("h200"), "fp8", CAL)
    scout = StepModel(
        catalog.model("llama-4-scout-17b-16e"), catalog.quant("fp8"), hardware, CAL, 2.0
    )
    one = scout.weights_read_bytes(1)
    many = scout.weights_read_bytes(512)
    assert one < 0.25 * scout.weights_bytes
    assert many == pytest.approx(scout.weights_bytes, rel=1e-6)


@given(
    sequences=st.integers(min_value=1, max_value=512),
    context_per_seq=st.integers(min_value=1, max_value=32_000),
    steps=st.integers(min_value=1, max_value=300),
    name=st.sampled_from(["llama-3.1-8b", "gemma-3-270m", "qwen2.5-7b"]),
    serial=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_span_closed_form_equals_step_sum(
    catalog: Catalog, sequences: int, context_per_seq: int, steps: int, name: str, serial: float
) -> None:
    model = _model(catalog, name, "a10g", CAL.model_copy(update={"serial_fraction": serial}))
    context0 = float(sequences * context_per_seq)
    by_steps = sum(
        model.decode_step_time(sequences, context0 + sequences * j) for j in range(steps)
    )
    if model.model.sliding_window is None:
        assert model.decode_span_time(sequences, context0, steps) == pytest.approx(
            by_steps, rel=1e-9
        )
    else:
        # windowed layers are held at the first step's context: never more than per step
        assert model.decode_span_time(sequences, context0, steps) <= by_steps * (1 + 1e-9)


def test_step_batch_counts_sampled_tokens(catalog: Catalog) -> None:
    model = _model(catalog)
    base = StepBatch(
        tokens=100,
        sequences=1,
        sampled=0,
        full_pairs=0,
        window_pairs=0,
        kv_full_tokens=0,
        kv_window_tokens=0,
    )
    with_sample = StepBatch(
        tokens=100,
        sequences=1,
        sampled=1,
        full_pairs=0,
        window_pairs=0,
        kv_full_tokens=0,
        kv_window_tokens=0,
    )
    assert model.step_time(with_sample) >= model.step_time(base)


def test_builtin_calibrations_have_provenance() -> None:
    calibrations = builtin_calibrations()
    assert calibrations
    for calibration in calibrations:
        assert calibration.provenance.source
        assert calibration.provenance.how
    assert calibration_for("a10g").name  # every GPU has one (the default applies to '*')
