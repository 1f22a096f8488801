"""The real-vLLM GPU run's pieces that need no GPU: the weight-free models, the fleets it writes
and the launch plan `modelyard up` makes of them (benchmarks/gpu_bundle.py, gpu_vllm.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from modelyard.catalog import Catalog
from modelyard.engines import launcher
from modelyard.fleet import load_fleet

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bundle = _module("gpu_bundle")
driver = _module("gpu_vllm")


@pytest.mark.parametrize("name", sorted(bundle.MODEL_CONFIGS))
def test_model_config_has_the_catalog_shapes(name: str) -> None:
    config = bundle.MODEL_CONFIGS[name]
    spec = Catalog.load().model(name)
    assert config["architectures"] == [spec.architecture]
    assert config["num_hidden_layers"] == spec.num_layers
    assert config["hidden_size"] == spec.hidden_size
    assert config["num_attention_heads"] == spec.num_attention_heads
    assert config["num_key_value_heads"] == spec.num_kv_heads
    assert config["head_dim"] == spec.head_dim
    assert config["intermediate_size"] == spec.intermediate_size
    assert config["vocab_size"] == spec.vocab_size
    assert config["tie_word_embeddings"] == spec.tie_word_embeddings


def test_tokenizer_has_exactly_the_vocabulary() -> None:
    files = bundle.tokenizer_files(32000, bos_id=1, eos_id=2)
    vocab = json.loads(files["tokenizer.json"])["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(32000))
    assert (vocab["<unk>"], vocab["<s>"], vocab["</s>"]) == (0, 1, 2)
    assert vocab["w3"] == 3 and vocab["w31999"] == 31999
    assert "w1" not in vocab  # replaced by <s>
    config = json.loads(files["tokenizer_config.json"])
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_llama_tokenizer_specials_sit_at_llamas_ids(tmp_path: Path) -> None:
    written = bundle.write_models(tmp_path)
    llama = next(p for p in written if p.name == "llama-3.1-8b")
    vocab = json.loads((llama / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(vocab) == 128256
    assert (vocab["<s>"], vocab["</s>"]) == (128000, 128001)
    assert json.loads((llama / "config.json").read_text())["vocab_size"] == 128256


def _plan(tmp_path: Path, text: str) -> list[launcher.PlannedEngine]:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return launcher.plan(load_fleet(path), cores=list(range(16)))


def test_isolated_fleet_launches_vllm_on_the_whole_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelyard.engines.adapters.VLLM_PYTHON", Path(sys.executable))
    text = driver.fleet_yaml("h200-llama", [driver.LLAMA], shared=False, sleep_mode=set())
    [item] = _plan(tmp_path, text)
    command = item.adapter.command(item.spec)
    assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(command)
    assert f"--model {driver.MODELS}/llama-3.1-8b" in joined
    assert "--load-format dummy" in joined
    assert "--gpu-memory-utilization 0.9" in joined
    assert "--max-model-len 8192" in joined
    assert item.adapter.env(item.spec) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert item.spec.cpus == tuple(range(16))  # a GPU engine is not held to one core


def test_shared_fleet_puts_both_on_one_gpu_with_their_fractions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelyard.engines.adapters.VLLM_PYTHON", Path(sys.executable))
    text = driver.fleet_yaml(
        "h200-shared", [driver.LLAMA, driver.MISTRAL], shared=True, sleep_mode={"mistral-7b"}
    )
    llama, mistral = _plan(tmp_path, text)
    assert llama.spec.gpu_devices == mistral.spec.gpu_devices == (0,)
    assert llama.spec.gpu_memory_utilization == 0.45
    assert mistral.spec.gpu_memory_utilization == 0.40
    assert "--enable-sleep-mode" in mistral.adapter.command(mistral.spec)
    assert "--enable-sleep-mode" not in llama.adapter.command(llama.spec)


def test_two_isolated_gpu_units_split_the_cores(tmp_path: Path) -> None:
    text = """\
name: two
models:
  a: {catalog: llama-3.1-8b, engine: sim, gpu: h200}
  b: {catalog: mistral-7b-instruct-v0.2, engine: sim, gpu: h200}
"""
    a, b = _plan(tmp_path, text)
    assert a.spec.cpus == tuple(range(8)) and b.spec.cpus == tuple(range(8, 16))
    assert (a.spec.gpu_devices, b.spec.gpu_devices) == ((0,), (1,))


report = _module("gpu_report")


def test_step_scan_reads_vllms_step_lines_and_nvidia_smi_samples(tmp_path: Path) -> None:
    """Lines as vLLM 0.24 and nvidia-smi write them: a second of four 512-sequence decode steps
    is a 250 ms step; the prefill step and the smaller batch's second are left out."""
    phase = tmp_path / "stepscan-async"
    phase.mkdir()
    step = (
        "(EngineCore pid=737) INFO 12-03 13:00:{s} [core.py:452] Iteration({i}): {c} context "
        "requests, {t} context tokens, {g} generation requests, {g} generation tokens, "
        "iteration elapsed time: 2.38 ms"
    )
    lines = [step.format(s="02", i=0, c=8, t=256, g=504)]  # a mixed step: not decode
    lines += [step.format(s="02", i=1 + i, c=0, t=0, g=512) for i in range(4)]
    lines += [step.format(s="03", i=5 + i, c=0, t=0, g=100) for i in range(9)]
    (phase / "engine-llama-8b.log").write_text("\n".join(lines) + "\n")
    (phase / "gpu-samples.csv").write_text(
        "timestamp, clocks.current.sm [MHz], clocks.current.memory [MHz], power.draw [W], "
        "power.limit [W], utilization.gpu [%], temperature.gpu\n"
        "2026/12/03 13:00:02.100, 1600 MHz, 3201 MHz, 600.00 W, 700.00 W, 90 %, 50\n"
        "2026/12/03 13:00:02.300, 1700 MHz, 3201 MHz, 640.00 W, 700.00 W, 100 %, 50\n"
        "2026/12/03 13:00:03.100, 345 MHz, 3201 MHz, 80.00 W, 700.00 W, 0 %, 40\n"
    )
    run = {"max_concurrency": 512, "completed": 512, "median_tpot_ms": 260.0}
    run |= {"total_input_tokens": 512 * 32, "total_output_tokens": 512 * 256}
    (phase / "c512-in32-out256.json").write_text(json.dumps(run))
    rows = report.step_scans(tmp_path).splitlines()[2:]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[:7] == ["stepscan-async", "512", "250.0", "260.0", "95", "1650", "620"]
