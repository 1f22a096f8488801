from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from modelyard.catalog import Catalog
from modelyard.errors import CatalogError, UnknownNameError

REQUIRED_MODELS = {
    "llama-3.1-8b",
    "llama-3.1-70b",
    "mistral-7b-instruct-v0.2",
    "mistral-7b-v0.3",
    "qwen2.5-7b",
    "gemma-3-270m",
    "llama-4-scout-17b-16e",
}
REQUIRED_GPUS = {"a10g", "l4", "a100-40gb", "a100-80gb", "h100-sxm", "h200"}
REQUIRED_QUANTS = {"bf16", "fp8", "awq-w4-g128", "awq-w4-g64", "gptq-w4-g128", "gguf-q4_k_m"}

# KV bytes per token in bf16 = 2 (K,V) x layers x KV heads x head_dim x 2 bytes, by hand.
KV_BYTES_PER_TOKEN_BF16 = {
    "llama-3.1-8b": 2 * 32 * 8 * 128 * 2,  # 131072
    "llama-3.1-70b": 2 * 80 * 8 * 128 * 2,  # 327680
    "mistral-7b-instruct-v0.2": 2 * 32 * 8 * 128 * 2,
    "mistral-7b-v0.3": 2 * 32 * 8 * 128 * 2,
    "qwen2.5-7b": 2 * 28 * 4 * 128 * 2,  # 57344
    "gemma-3-270m": 2 * 18 * 1 * 256 * 2,  # 18432
    "llama-4-scout-17b-16e": 2 * 48 * 8 * 128 * 2,  # 196608
}


def test_required_entries_present(catalog: Catalog) -> None:
    assert set(catalog.models) >= REQUIRED_MODELS
    assert set(catalog.gpus) >= REQUIRED_GPUS
    assert set(catalog.quants) >= REQUIRED_QUANTS


def test_every_entry_is_sourced_and_dated(catalog: Catalog) -> None:
    entries = [*catalog.models.values(), *catalog.gpus.values(), *catalog.quants.values()]
    for entry in entries:
        assert entry.source.startswith("https://"), entry
        assert datetime.date(2024, 1, 1) <= entry.as_of <= datetime.date(2026, 12, 31)
    for gpu in catalog.gpus.values():
        assert gpu.prices, f"{gpu.display_name} has no price"
        for price in gpu.prices:
            assert price.source.startswith("https://")


@pytest.mark.parametrize("name", sorted(REQUIRED_MODELS))
def test_params_from_dimensions_within_3_percent(catalog: Catalog, name: str) -> None:
    model = catalog.models[name]
    assert model.computed_params == pytest.approx(model.params, rel=0.03)
    if model.active_params is not None:
        assert model.computed_active_params == pytest.approx(model.active_params, rel=0.03)


def test_llama_8b_param_count_by_hand(catalog: Catalog) -> None:
    model = catalog.models["llama-3.1-8b"]
    attention = 4096 * 4096 * 2 + 4096 * 1024 * 2
    ffn = 3 * 4096 * 14336
    embeddings = 2 * 128256 * 4096
    assert model.computed_params == 32 * (attention + ffn) + embeddings == 8_029_995_008


def test_moe_total_vs_active(catalog: Catalog) -> None:
    scout = catalog.models["llama-4-scout-17b-16e"]
    assert scout.computed_params > 6 * scout.computed_active_params
    assert scout.computed_active_params == pytest.approx(17e9, rel=0.03)


@pytest.mark.parametrize(("name", "expected"), sorted(KV_BYTES_PER_TOKEN_BF16.items()))
def test_kv_bytes_per_token(catalog: Catalog, name: str, expected: int) -> None:
    assert catalog.models[name].kv_bytes_per_token(2) == expected


def test_sliding_window_caps_kv(catalog: Catalog) -> None:
    gemma = catalog.models["gemma-3-270m"]
    per_layer = 2 * 1 * 256 * 2
    # 3 global layers keep all 8192 tokens; 15 windowed layers keep 512 each.
    assert gemma.kv_bytes_for_sequence(8192, 2) == per_layer * (3 * 8192 + 15 * 512)
    # shorter than the window: every layer keeps every token
    assert gemma.kv_bytes_for_sequence(100, 2) == gemma.kv_bytes_per_token(2) * 100


def test_aliases_map_article_names(catalog: Catalog) -> None:
    assert catalog.resolve_model_name("Llama-4-8B") == "llama-3.1-8b"
    assert catalog.resolve_model_name("mistral-2") == "mistral-7b-instruct-v0.2"
    assert "does not exist" in catalog.aliases["llama-4-8b"].note


def test_unknown_names_suggest(catalog: Catalog) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown GPU 'h100' \(did you mean 'h200'\?"):
        catalog.gpu("h100")
    with pytest.raises(UnknownNameError, match="unknown quantization 'int3'"):
        catalog.quant("int3")


def test_quant_bits_follow_group_size(catalog: Catalog) -> None:
    assert catalog.quants["awq-w4-g128"].bits_per_weight == 4 + 20 / 128
    assert catalog.quants["awq-w4-g64"].bits_per_weight == 4 + 20 / 64
    assert catalog.quants["gptq-w4-g128"].bits_per_weight == 4 + 16 / 128
    assert catalog.quants["awq-w4-g128"].engines["vllm"].args == ["--quantization", "awq_marlin"]


def test_gpu_prices_per_gpu(catalog: Catalog) -> None:
    h100 = catalog.gpus["h100-sxm"]
    price = h100.price("aws")
    assert price is not None and price.usd_per_gpu_hour == pytest.approx(55.04 / 8)
    assert catalog.gpus["a10g"].price() is not None


def test_user_catalog_overrides_and_validates(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text("""\
aliases:
  my-llama: {model: llama-3.1-8b, note: team name}
""")
    catalog = Catalog.load([extra])
    assert catalog.resolve_model_name("my-llama") == "llama-3.1-8b"

    bad = tmp_path / "bad.yaml"
    bad.write_text("""\
gpus:
  tiny:
    display_name: Tiny
    memory_gb: -1
    visible_memory_mib: 100
    memory_bandwidth_gbps: 10
    bf16_tflops: 1
    compute_capability: "8.0"
    source: not-a-url
    memory_source: x
    as_of: 2026-11-28
""")
    with pytest.raises(CatalogError) as info:
        Catalog.load([bad])
    assert info.value.problems == [
        f"{bad}:4: gpus.tiny.memory_gb: Input should be greater than 0",
        f"{bad}:9: gpus.tiny.source: source must be a URL (http:// or https://), got 'not-a-url'",
    ]


def test_alias_to_missing_model_rejected(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text("aliases:\n  x: {model: llama-9b, note: typo}\n")
    with pytest.raises(CatalogError, match="catalog alias 'x': unknown model 'llama-9b'"):
        Catalog.load([extra])
