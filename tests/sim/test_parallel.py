"""sim/parallel.py: the step time of a tensor-parallel engine (ranks split the work, two
all-reduces per layer per step cross the catalog's interconnect)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.catalog import Catalog
from modelyard.fleet import load_fleet
from modelyard.sim.errors import SimError
from modelyard.sim.parallel import allreduce_seconds, step_model_for
from modelyard.sim.perf import Hardware, StepBatch, StepModel, calibration_for
from modelyard.sim.run import SimOptions, simulate


def _models(catalog: Catalog, gpu: str, ranks: int) -> tuple[StepModel, StepModel]:
    model = catalog.model("llama-3.1-70b")
    quant = catalog.quant("bf16")
    spec = catalog.gpu(gpu)
    cal = calibration_for(gpu)
    hardware = Hardware.for_gpu(gpu, spec, "bf16", cal)
    single = StepModel(model, quant, hardware, cal, 2.0)
    return single, step_model_for(model, quant, hardware, cal, 2.0, ranks, gpu, spec)


def test_one_rank_is_the_plain_step_model(catalog: Catalog) -> None:
    single, same = _models(catalog, "h100-sxm", 1)
    assert same.communication.time(1000) == 0.0
    assert same.decode_step_time(8, 8000.0) == single.decode_step_time(8, 8000.0)


def test_ranks_split_compute_and_reads_and_pay_two_allreduces_per_layer(catalog: Catalog) -> None:
    single, tp = _models(catalog, "h100-sxm", 4)
    link = catalog.gpu("h100-sxm").interconnect
    assert link is not None
    batch = StepBatch(
        tokens=32,
        sequences=32,
        sampled=32,
        full_pairs=64_000,
        window_pairs=0,
        kv_full_tokens=64_000,
        kv_window_tokens=0,
    )
    # 80 layers x 2 all-reduces of 32 tokens x 8192 hidden x 2 bytes over 4 NVLink GPUs
    payload = 32 * 8192 * 2
    one = link.allreduce_latency_us * 1e-6 + 2 * 3 / 4 * payload / (900e9 / 2)
    assert allreduce_seconds(link, payload, 4) == pytest.approx(one)
    communication = tp.communication.time(32)
    assert communication == pytest.approx(160 * one)
    cal = calibration_for("h100-sxm")
    overhead = cal.step_overhead_ms / 1000 + cal.per_seq_overhead_ms / 1000 * 32
    # the memory-bound part (weights, KV) is split 4 ways; 70B has 8 KV heads: 2 per rank
    assert tp.step_time(batch) - communication - overhead == pytest.approx(
        (single.step_time(batch) - overhead) / 4, rel=0.02
    )
    steps = 50
    span = tp.decode_span_time(32, 64_000.0, steps)
    by_step = sum(tp.decode_step_time(32, 64_000.0 + 32 * j) for j in range(steps))
    assert span == pytest.approx(by_step)  # the closed form carries the all-reduces too
    assert span - steps * communication == pytest.approx(
        sum(single.decode_step_time(32, 64_000.0 + 32 * j) - overhead for j in range(steps)) / 4
        + steps * overhead,
        rel=0.02,
    )


def test_pcie_all_reduces_cost_more_than_nvlink(catalog: Catalog) -> None:
    nvlink = catalog.gpu("h100-sxm").interconnect
    pcie = catalog.gpu("l4").interconnect
    assert nvlink is not None and pcie is not None
    assert pcie.kind == "pcie" and nvlink.kind == "nvlink"
    for payload in (1e3, 1e6, 1e8):
        assert allreduce_seconds(pcie, payload, 2) > allreduce_seconds(nvlink, payload, 2)
    assert allreduce_seconds(nvlink, 1e6, 1) == 0.0


def test_a_gpu_without_an_interconnect_cannot_run_tensor_parallel(catalog: Catalog) -> None:
    spec = catalog.gpu("h100-sxm").model_copy(update={"interconnect": None})
    model, quant = catalog.model("llama-3.1-8b"), catalog.quant("bf16")
    cal = calibration_for("h100-sxm")
    hardware = Hardware.for_gpu("h100-sxm", spec, "bf16", cal)
    with pytest.raises(SimError, match="h100-sxm has no interconnect in the catalog"):
        step_model_for(model, quant, hardware, cal, 2.0, 2, "h100-sxm", spec)


def test_sim_run_simulates_a_tensor_parallel_fleet(write_fleet: Callable[[str], Path]) -> None:
    path = write_fleet(
        "name: tp\nmodels:\n"
        "  big: {catalog: llama-3.1-70b, gpu: h100-sxm, tensor_parallel_size: 4,"
        " max_model_len: 8192}\n"
    )
    result = simulate(load_fleet(path), SimOptions(requests=200, rate=2.0))
    big = result.models[0]
    assert big.completed == 200
    # decode of 140 GB of weights over 4 ranks: ~35 GB per rank per step, plus all-reduces
    assert 10 < big.tpot_ms["p50"] < 40


def test_ranks_keep_the_fp8_efficiency_of_their_gpu(catalog: Catalog) -> None:
    model, quant = catalog.model("llama-3.1-70b"), catalog.quant("fp8")
    spec = catalog.gpu("h100-sxm")
    cal = calibration_for("h100-sxm")
    assert cal.fp8_mfu is not None and cal.fp8_mfu != cal.mfu

    def prefill_s(quant_name: str, ranks: int) -> float:
        hardware = Hardware.for_gpu("h100-sxm", spec, quant_name, cal)
        steps = step_model_for(model, quant, hardware, cal, 1.0, ranks, "h100-sxm", spec)
        return steps.prefill_time(8192)

    # a compute-bound prefill: FP8 gains as much over bf16 on 2 ranks as on one GPU
    one_gpu = prefill_s("fp8", 1) / prefill_s("bf16", 1)
    assert prefill_s("fp8", 2) / prefill_s("bf16", 2) == pytest.approx(one_gpu, rel=0.05)
