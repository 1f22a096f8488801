from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.catalog import Catalog
from modelyard.engines import adapter_for
from modelyard.engines import adapters as adapter_module
from modelyard.engines.base import LaunchSpec
from modelyard.engines.errors import EngineNotInstalledError
from modelyard.errors import UnknownNameError

FIXTURES = Path(__file__).parent / "fixtures"


def _spec(
    catalog: Catalog, model: str = "llama-3.1-8b", quant: str = "awq-w4-g128", **kw: object
) -> LaunchSpec:
    values: dict[str, object] = dict(
        name="llama-8b",
        catalog_model=model,
        model=catalog.model(model),
        quant_name=quant,
        quant=catalog.quant(quant),
        weights="/models/llama",
        host="127.0.0.1",
        port=8001,
        gpu="a10g",
        max_model_len=8192,
        gpu_memory_utilization=0.9,
        cpus=(0,),
        gpu_devices=(1,),
    )
    values.update(kw)
    return LaunchSpec(**values)  # type: ignore[arg-type]


def test_vllm_arguments(catalog: Catalog) -> None:
    args = adapter_for("vllm").server_args(_spec(catalog, max_num_seqs=64, kv_cache_dtype="fp8"))  # type: ignore[attr-defined]
    assert args == [
        "--served-model-name",
        "llama-8b",
        "--host",
        "127.0.0.1",
        "--port",
        "8001",
        "--quantization",
        "awq_marlin",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.9",
        "--max-num-seqs",
        "64",
        "--kv-cache-dtype",
        "fp8",
    ]
    assert adapter_for("vllm").env(_spec(catalog)) == {"CUDA_VISIBLE_DEVICES": "1"}


def test_vllm_cpu_environment(catalog: Catalog) -> None:
    env = adapter_for("vllm").env(_spec(catalog, gpu=None, gpu_devices=(), cpus=(1,)))
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"]
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_vllm_missing_environment_names_make_target(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapter_module, "VLLM_PYTHON", Path("/nonexistent/python"))
    with pytest.raises(EngineNotInstalledError, match="make vllm-cpu"):
        adapter_for("vllm").command(_spec(catalog))


def test_llamacpp_command(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = tmp_path / "llama-server"
    server.write_text("")
    monkeypatch.setattr(adapter_module, "LLAMA_SERVER", server)
    spec = _spec(
        catalog,
        "gemma-3-270m",
        "gguf-q4_k_m",
        gpu=None,
        gpu_devices=(),
        cpus=(1,),
        max_model_len=1024,
        weights="/m/g.gguf",
    )
    assert adapter_for("llamacpp").command(spec) == [
        str(server),
        "-m",
        "/m/g.gguf",
        "--alias",
        "llama-8b",
        "--host",
        "127.0.0.1",
        "--port",
        "8001",
        "-c",
        "4096",
        "-np",
        "4",
        "-t",
        "1",
        "--metrics",
        "--cpu-mask",
        "2",
        "--cpu-strict",
        "1",
    ]
    assert adapter_for("llamacpp").env(spec)["LD_LIBRARY_PATH"] == str(tmp_path)
    monkeypatch.setattr(adapter_module, "LLAMA_SERVER", tmp_path / "missing")
    with pytest.raises(EngineNotInstalledError, match="make llamacpp"):
        adapter_for("llamacpp").command(spec)


def test_sglang_tgi_ollama_sim_commands(catalog: Catalog) -> None:
    sglang = adapter_for("sglang").command(_spec(catalog))
    assert sglang[1:3] == ["-m", "sglang.launch_server"]
    assert sglang[sglang.index("--mem-fraction-static") :][:2] == ["--mem-fraction-static", "0.9"]
    assert "--context-length" in sglang and "--enable-metrics" in sglang
    tgi = adapter_for("tgi").command(_spec(catalog))
    assert tgi[:3] == ["text-generation-launcher", "--model-id", "/models/llama"]
    assert tgi[tgi.index("--quantize") :][:2] == ["--quantize", "awq"]
    assert tgi[tgi.index("--max-total-tokens") :][:2] == ["--max-total-tokens", "8192"]
    ollama = adapter_for("ollama")
    assert ollama.command(_spec(catalog)) == ["ollama", "serve"]
    assert ollama.env(_spec(catalog))["OLLAMA_HOST"] == "127.0.0.1:8001"
    assert ollama.metrics_path is None
    sim = adapter_for("sim").command(_spec(catalog))
    assert sim[1:5] == ["-m", "modelyard", "sim", "serve"]
    assert sim[sim.index("--served-model-name") :][:2] == ["--served-model-name", "llama-8b"]


def test_unknown_engine(catalog: Catalog) -> None:
    with pytest.raises(UnknownNameError, match="unknown engine 'vlm'"):
        adapter_for("vlm")


def test_vllm_metrics_from_real_engine() -> None:
    """Captured from vllm-cpu 0.32.0 serving Gemma-3-270M here, after 1 request."""
    metrics = adapter_for("vllm").parse_metrics(
        (FIXTURES / "vllm_cpu_0.32.0_metrics.txt").read_text()
    )
    assert metrics.running == 0 and metrics.waiting == 0
    assert metrics.kv_usage == 0
    assert metrics.prompt_tokens_total == 1
    assert metrics.preemptions_total == 0
    assert metrics.ttft_count is not None


def test_llamacpp_metrics_from_real_engine() -> None:
    """Captured from llama-server (llama-cpp-python 0.3.36 sources) after one 8-token reply."""
    metrics = adapter_for("llamacpp").parse_metrics(
        (FIXTURES / "llamacpp_0.3.36_metrics.txt").read_text()
    )
    assert metrics.generation_tokens_total == 8
    assert metrics.prompt_tokens_total == 2
    assert metrics.running == 0 and metrics.waiting == 0
    assert metrics.kv_usage is None  # llama-server exposes no KV usage


def test_sim_metrics_use_vllm_names() -> None:
    metrics = adapter_for("sim").parse_metrics((FIXTURES / "sim_0.1.0_metrics.txt").read_text())
    assert metrics.generation_tokens_total == 3
    assert metrics.ttft_count == 1


@pytest.mark.parametrize(
    ("engine", "line", "oom"),
    [
        ("vllm", "ValueError: No available memory for the cache blocks. Try increasing", True),
        ("vllm", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", True),
        (
            "llamacpp",
            "ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size",
            True,
        ),
        ("vllm", "ValueError: invalid literal for int()", False),
    ],
)
def test_oom_recognition(engine: str, line: str, oom: bool) -> None:
    assert adapter_for(engine).is_oom(f"INFO starting\n{line}\n") is oom
