from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from modelyard.catalog import Catalog
from modelyard.errors import UnsupportedError
from modelyard.memory import Device, FitSettings
from modelyard.quant import profile_options, render_recipe
from tests.conftest import Cli

LLMC_ENV = "MODELYARD_LLMCOMPRESSOR_PYTHON"
DEFAULT_LLMC = Path.home() / ".cache/modelyard/llmcompressor-0.14.0.1/bin/python"


def test_profiles_for_llama_on_a10g(catalog: Catalog) -> None:
    device = Device.from_gpu("a10g", catalog.gpu("a10g"))
    options = {
        o.profile: o
        for o in profile_options(
            catalog, "llama-3.1-8b", device, "8.6", "vllm", FitSettings(max_model_len=8192)
        )
    }
    assert options["awq-w4-g128"].engine_args == ["--quantization", "awq_marlin"]
    assert options["awq-w4-g128"].supported
    assert options["bf16"].supported  # 16 GB of weights leave ~4 GB of KV on a 24 GB A10G
    assert not options["bf16"].fit.max_concurrency > options["awq-w4-g128"].fit.max_concurrency


def test_engine_without_profile_is_marked(catalog: Catalog) -> None:
    device = Device.from_gpu("h100-sxm", catalog.gpu("h100-sxm"))
    options = {
        o.profile: o
        for o in profile_options(
            catalog, "qwen2.5-7b", device, "9.0", "llamacpp", FitSettings(max_model_len=4096)
        )
    }
    assert options["gguf-q4_k_m"].supported
    assert options["awq-w4-g128"].why_not == "engine llamacpp does not serve it"


def test_70b_bf16_does_not_fit_one_h100(catalog: Catalog) -> None:
    device = Device.from_gpu("h100-sxm", catalog.gpu("h100-sxm"))
    options = {
        o.profile: o
        for o in profile_options(
            catalog, "llama-3.1-70b", device, "9.0", "vllm", FitSettings(max_model_len=8192)
        )
    }
    assert not options["bf16"].supported
    assert "exceed the budget" in options["bf16"].why_not
    assert options["awq-w4-g128"].supported


def test_recipe_awq_shape(catalog: Catalog) -> None:
    recipe = yaml.safe_load(render_recipe(catalog, "llama-3.1-8b", "awq-w4-g64"))
    modifiers = recipe["quant_stage"]["quant_modifiers"]
    assert list(modifiers) == ["AWQModifier", "QuantizationModifier"]
    weights = modifiers["QuantizationModifier"]["config_groups"]["group_0"]["weights"]
    assert (
        weights["group_size"] == 64 and weights["num_bits"] == 4 and weights["symmetric"] is False
    )


def test_recipe_moe_keeps_router(catalog: Catalog) -> None:
    recipe = yaml.safe_load(render_recipe(catalog, "llama-4-scout-17b-16e", "fp8"))
    assert (
        "re:.*router.*"
        in recipe["quant_stage"]["quant_modifiers"]["QuantizationModifier"]["ignore"]
    )


@pytest.mark.parametrize("profile", ["bf16", "gguf-q4_k_m"])
def test_no_recipe_for_non_llmcompressor_profiles(catalog: Catalog, profile: str) -> None:
    with pytest.raises(UnsupportedError, match="has no llm-compressor recipe"):
        render_recipe(catalog, "llama-3.1-8b", profile)


_PARSE = """
import json, sys
from llmcompressor.recipe import Recipe
out = {}
for path in sys.argv[1:]:
    recipe = Recipe.create_instance(path)
    out[path] = [
        {"type": type(m).__name__, **m.model_dump(mode="json", exclude_unset=True)}
        for m in recipe.modifiers
    ]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_recipes_parse_with_llm_compressor(catalog: Catalog, tmp_path: Path) -> None:
    python = Path(os.environ.get(LLMC_ENV, DEFAULT_LLMC))
    if not python.exists():
        pytest.fail(f"llm-compressor environment missing at {python}: run `make llmcompressor-env`")
    paths = {}
    for profile in ("fp8", "awq-w4-g128", "awq-w4-g64", "gptq-w4-g128"):
        path = tmp_path / f"{profile}.yaml"
        path.write_text(render_recipe(catalog, "llama-3.1-8b", profile))
        paths[profile] = str(path)
    # a misspelt modifier must be refused, so the parser really validates
    bad = tmp_path / "bad.yaml"
    bad.write_text("quant_stage:\n  quant_modifiers:\n    AWQModifer: {}\n")
    refused = subprocess.run(
        [str(python), "-c", _PARSE, str(bad)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert refused.returncode != 0 and "AWQModifer" in refused.stderr
    done = subprocess.run(
        [str(python), "-c", _PARSE, *paths.values()],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    fp8 = parsed[paths["fp8"]]
    assert [m["type"] for m in fp8] == ["QuantizationModifier"]
    assert fp8[0]["scheme"] == "FP8_DYNAMIC"
    for profile, group_size in (("awq-w4-g128", 128), ("awq-w4-g64", 64)):
        modifiers = parsed[paths[profile]]
        assert [m["type"] for m in modifiers] == ["AWQModifier", "QuantizationModifier"]
        weights = modifiers[1]["config_groups"]["group_0"]["weights"]
        assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (
            4,
            group_size,
            False,
        )
    gptq = parsed[paths["gptq-w4-g128"]]
    assert [m["type"] for m in gptq] == ["GPTQModifier"]
    weights = gptq[0]["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (4, 128, True)


def test_cli_quant_recipe_writes_file(tmp_path: Path, cli: Cli) -> None:
    target = tmp_path / "r.yaml"
    out = cli("quant", "mistral-2", "--profile", "awq-w4-g128", "--recipe", "-o", str(target))
    assert out.returncode == 0, out.stderr
    assert "mistral-7b-instruct-v0.2 -> awq-w4-g128" in target.read_text()
    refused = cli(
        "quant", "mistral-2", "--profile", "gguf-q4_k_m", "--recipe", "-o", str(tmp_path / "g.yaml")
    )
    assert refused.returncode == 1
    assert "llama-quantize" in refused.stderr
    assert not (tmp_path / "g.yaml").exists()
