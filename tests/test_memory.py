from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.catalog import Catalog
from modelyard.catalog.entries import GIB
from modelyard.fleet import load_fleet
from modelyard.memory import (
    Device,
    FitSettings,
    activation_peak_bytes,
    default_batch_limits,
    fit,
    fit_fleet,
)
from tests.conftest import ROOT, Cli


def _fit(catalog: Catalog, model: str, gpu: str, quant: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return fit(
        model,
        catalog.model(model),
        quant,
        catalog.quant(quant),
        Device.from_gpu(gpu, catalog.gpu(gpu)),
        FitSettings(**kwargs),  # type: ignore[arg-type]
    )


def test_llama_8b_kv_per_token(catalog: Catalog) -> None:
    result = _fit(catalog, "llama-3.1-8b", "a100-80gb", "bf16", max_model_len=8192)
    assert result.kv_bytes_per_token == 131072


def test_reproduces_vllm_pr_10511(catalog: Catalog) -> None:
    """Meta-Llama-3-8B on an 80 GB H100 at 0.9: vLLM logged 71.29 GiB usable, weights 14.96 GiB,
    non-torch 1.79 GiB, activation peak 1.26 GiB, 53.29 GiB for KV (vLLM 0.6.4, V0 profiling
    with max_num_batched_tokens = max_model_len = 8192, max_num_seqs 256)."""
    result = _fit(
        catalog,
        "llama-3.1-8b",
        "h100-sxm",
        "bf16",
        max_model_len=8192,
        max_num_batched_tokens=8192,
        max_num_seqs=256,
    )
    assert result.budget_bytes / GIB == pytest.approx(71.29, rel=0.01)
    assert result.weights_bytes / GIB == pytest.approx(14.96, rel=0.01)
    assert result.non_torch_bytes / GIB == pytest.approx(1.79, rel=0.01)
    assert result.activation_peak_bytes / GIB == pytest.approx(1.26, rel=0.05)
    assert result.kv_budget_bytes / GIB == pytest.approx(53.29, rel=0.10)
    assert result.kv_cache_tokens == pytest.approx(53.29 * GIB / 131072, rel=0.10)
    assert result.fits


def test_activation_peak_grows_with_batch_tokens(catalog: Catalog) -> None:
    model = catalog.model("llama-3.1-8b")
    small = activation_peak_bytes(model, 2048, 256)
    large = activation_peak_bytes(model, 16384, 256)
    # forward term is linear in tokens; the sampler term is fixed
    sampler = 256 * 128256 * 4 * 3
    assert (large - sampler) == pytest.approx(8 * (small - sampler))


def test_default_batch_limits_follow_vllm_v1(catalog: Catalog) -> None:
    h100 = Device.from_gpu("h100-sxm", catalog.gpu("h100-sxm"))
    a100 = Device.from_gpu("a100-80gb", catalog.gpu("a100-80gb"))
    a10g = Device.from_gpu("a10g", catalog.gpu("a10g"))
    assert default_batch_limits(h100) == (8192, 1024)
    assert default_batch_limits(a100) == (2048, 256)
    assert default_batch_limits(a10g) == (2048, 256)


def test_article_memory_claims(catalog: Catalog) -> None:
    """The article says 4-bit Mistral 7B needs ~14 GB and Llama 8B ~16 GB: those are the bf16
    weights; 4-bit weights are about a third of that."""
    mistral_bf16 = _fit(catalog, "mistral-7b-instruct-v0.2", "a10g", "bf16", max_model_len=8192)
    llama_bf16 = _fit(catalog, "llama-3.1-8b", "a10g", "bf16", max_model_len=8192)
    mistral_awq = _fit(
        catalog, "mistral-7b-instruct-v0.2", "a10g", "awq-w4-g64", max_model_len=8192
    )
    llama_awq = _fit(catalog, "llama-3.1-8b", "a10g", "awq-w4-g128", max_model_len=8192)
    assert mistral_bf16.weights_bytes / 1e9 == pytest.approx(14.5, abs=0.1)
    assert llama_bf16.weights_bytes / 1e9 == pytest.approx(16.06, abs=0.1)
    assert mistral_awq.weights_bytes / 1e9 == pytest.approx(4.29, abs=0.05)
    assert llama_awq.weights_bytes / 1e9 == pytest.approx(5.73, abs=0.05)


def test_too_long_context_does_not_fit(catalog: Catalog) -> None:
    result = _fit(catalog, "llama-3.1-8b", "a10g", "bf16")  # default: the full 131072 context
    assert not result.fits
    assert "less than one max_model_len (131072) sequence" in result.reason


def test_model_larger_than_gpu(catalog: Catalog) -> None:
    result = _fit(catalog, "llama-3.1-70b", "a100-80gb", "bf16", max_model_len=4096)
    assert not result.fits
    assert result.kv_cache_tokens == 0
    assert "exceed the budget" in result.reason


def test_fp8_kv_doubles_capacity(catalog: Catalog) -> None:
    auto = _fit(catalog, "llama-3.1-8b", "l4", "awq-w4-g128", max_model_len=8192)
    fp8 = _fit(
        catalog, "llama-3.1-8b", "l4", "awq-w4-g128", max_model_len=8192, kv_cache_dtype="fp8"
    )
    assert fp8.kv_bytes_per_token == auto.kv_bytes_per_token / 2
    assert fp8.kv_cache_tokens == pytest.approx(2 * auto.kv_cache_tokens, abs=16)


MODELS = [
    "llama-3.1-8b",
    "mistral-7b-instruct-v0.2",
    "qwen2.5-7b",
    "gemma-3-270m",
    "llama-4-scout-17b-16e",
    "llama-3.1-70b",
]
GPUS = ["a10g", "l4", "a100-40gb", "a100-80gb", "h100-sxm", "h200"]


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    gpu=st.sampled_from(GPUS),
    quant=st.sampled_from(["bf16", "fp8", "awq-w4-g128", "gguf-q4_k_m"]),
    short=st.integers(min_value=1, max_value=32768),
    extra=st.integers(min_value=0, max_value=32768),
)
def test_more_context_never_needs_less_memory(
    catalog: Catalog, model: str, gpu: str, quant: str, short: int, extra: int
) -> None:
    a = _fit(catalog, model, gpu, quant, max_model_len=short)
    b = _fit(catalog, model, gpu, quant, max_model_len=short + extra)
    assert b.kv_bytes_per_sequence >= a.kv_bytes_per_sequence
    assert b.max_concurrency <= a.max_concurrency + 1e-9
    assert not (b.fits and not a.fits)


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    gpu=st.sampled_from(GPUS),
    low=st.floats(min_value=0.05, max_value=1.0),
    high=st.floats(min_value=0.05, max_value=1.0),
    max_model_len=st.integers(min_value=256, max_value=32768),
)
def test_more_utilization_never_lowers_capacity(
    catalog: Catalog, model: str, gpu: str, low: float, high: float, max_model_len: int
) -> None:
    low, high = min(low, high), max(low, high)
    a = _fit(catalog, model, gpu, "bf16", gpu_memory_utilization=low, max_model_len=max_model_len)
    b = _fit(catalog, model, gpu, "bf16", gpu_memory_utilization=high, max_model_len=max_model_len)
    assert b.kv_cache_tokens >= a.kv_cache_tokens
    assert b.kv_budget_bytes >= a.kv_budget_bytes
    assert not (a.fits and not b.fits)


def test_fleet_fit_example() -> None:
    result = fit_fleet(load_fleet(ROOT / "examples" / "fleet.yaml"))
    by_name = {m.name: m for m in result.models}
    assert by_name["llama-8b"].fits and by_name["mistral-7b"].fits
    assert by_name["llama-8b"].device == "a10g"
    assert result.groups == []


def test_shared_group_fit(write_fleet: Callable[[str], Path]) -> None:
    text = """\
name: shared
models:
  llama-8b: {catalog: llama-3.1-8b, max_model_len: 8192}
  mistral-7b: {catalog: mistral-7b-instruct-v0.2, max_model_len: 8192}
placement:
  shared:
    - {gpu: GPU, models: [llama-8b, mistral-7b], memory_fractions: {llama-8b: 0.5, mistral-7b: 0.4}}
"""
    on_h100 = fit_fleet(load_fleet(write_fleet(text.replace("GPU", "h100-sxm"), "a.yaml")))
    assert on_h100.fits
    llama = on_h100.models[0]
    assert llama.budget_bytes == pytest.approx(0.5 * 81559 * 2**20)
    # two bf16 8B-class models cannot share one 24 GB A10G: each half is smaller than its weights
    on_a10g = fit_fleet(load_fleet(write_fleet(text.replace("GPU", "a10g"), "b.yaml")))
    assert not on_a10g.fits
    assert not on_a10g.groups[0].fits
    assert "llama-8b: weights" in on_a10g.groups[0].reason


def test_cpu_models_use_host_memory(write_fleet: Callable[[str], Path]) -> None:
    result = fit_fleet(
        load_fleet(
            write_fleet(
                "name: cpu\nmodels:\n  g: {catalog: gemma-3-270m, engine: llamacpp, max_model_len: 4096}\n"
            )
        )
    )
    (gemma,) = result.models
    assert gemma.device == "cpu"
    assert gemma.non_torch_bytes == 0
    assert gemma.fits


def test_cli_fit_json_interface(cli: Cli) -> None:
    out = cli(
        "fit",
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "h100-sxm",
        "--quant",
        "bf16",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.9",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["kv_bytes_per_token"] == 131072
    assert data["weights_bytes"] == pytest.approx(8_029_995_008 * 2)
    assert data["fits"] is True
    assert data["kv_cache_tokens"] > 0

    fleet = cli("fit", str(ROOT / "examples" / "fleet.yaml"), "--json")
    assert fleet.returncode == 0, fleet.stderr
    fleet_data = json.loads(fleet.stdout)
    assert [m["name"] for m in fleet_data["models"]] == ["llama-8b", "mistral-7b"]
    assert {"weights_bytes", "kv_bytes_per_token", "kv_cache_tokens", "fits"} <= set(
        fleet_data["models"][0]
    )
    assert fleet_data["groups"] == []


def test_cli_fit_unknown_gpu_is_one_line(cli: Cli) -> None:
    out = cli("fit", "--model", "llama-3.1-8b", "--gpu", "a10")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: unknown GPU 'a10' (did you mean 'a10g'? known: a100-40gb, a100-80gb, a10g, "
        "h100-sxm, h200, l4)"
    ]


def test_tensor_parallel_splits_weights_and_kv_heads(catalog: Catalog) -> None:
    one = _fit(catalog, "llama-3.1-70b", "h100-sxm", "bf16", max_model_len=8192)
    assert not one.fits  # 141 GB of bf16 weights on an 80 GB GPU
    two = _fit(
        catalog, "llama-3.1-70b", "h100-sxm", "bf16", max_model_len=8192, tensor_parallel_size=2
    )
    assert two.fits and two.tensor_parallel_size == 2
    assert two.weights_bytes == pytest.approx(one.weights_bytes / 2)
    # 8 KV heads over 2 ranks: each GPU holds 4 of each layer's heads
    assert two.kv_bytes_per_token == pytest.approx(one.kv_bytes_per_token / 2)
    eight = _fit(
        catalog, "llama-3.1-70b", "h100-sxm", "bf16", max_model_len=8192, tensor_parallel_size=8
    )
    assert eight.kv_bytes_per_token == pytest.approx(one.kv_bytes_per_token / 8)
    # the instance holds more tokens with more GPUs: each has more room and fewer heads
    assert eight.kv_cache_tokens > 4 * two.kv_cache_tokens


def test_kv_heads_replicate_past_their_count(catalog: Catalog) -> None:
    # Llama-3.1-8B has 8 KV heads: at TP=16 every rank would still hold one whole head
    spec = catalog.model("llama-3.1-8b")
    fitted = fit(
        "llama-3.1-8b",
        spec.model_copy(update={"num_attention_heads": 32}),
        "bf16",
        catalog.quant("bf16"),
        Device.from_gpu("h100-sxm", catalog.gpu("h100-sxm")),
        FitSettings(max_model_len=8192, tensor_parallel_size=16),
    )
    assert fitted.kv_bytes_per_token == pytest.approx(131072 / 8)


def test_cli_fit_exits_3_when_something_does_not_fit(
    write_fleet: Callable[[str], Path], cli: Cli
) -> None:
    single = cli("fit", "--model", "llama-3.1-70b", "--gpu", "l4")
    assert single.returncode == 3
    assert "no: llama-3.1-70b does not fit: weights" in single.stderr.replace("\n", " ")
    fleet = write_fleet("name: x\nmodels:\n  big: {catalog: llama-3.1-70b, gpu: l4}\n")
    for extra in ([], ["--json"]):
        done = cli("fit", str(fleet), *extra)
        assert done.returncode == 3, done.stderr
        assert "Traceback" not in done.stderr
    fits = cli("fit", "--model", "gemma-3-270m", "--gpu", "l4")
    assert fits.returncode == 0
