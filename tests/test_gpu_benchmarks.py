"""The real-vLLM GPU run's pieces that need no GPU: the weight-free models, the fleets it writes
and the launch plan `modelyard up` makes of them (benchmarks/gpu_bundle.py, gpu_vllm.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
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


LOOP = (
    "<module> (<string>:1);spawn_main (multiprocessing/spawn.py:122);run_engine_core "
    "(vllm/v1/engine/core.py:1224);run_busy_loop (vllm/v1/engine/core.py:1265)"
)
STEP = f"{LOOP};_process_engine_step (vllm/v1/engine/core.py:1304)"
QUEUE = f"{STEP};step_with_batch_queue (vllm/v1/engine/core.py:{{line}})"
RUNNER = (
    f"{QUEUE.format(line=549)};execute_model (vllm/v1/executor/uniproc_executor.py:111);"
    "execute_model (vllm/v1/worker/gpu_worker.py:896);decorate_context "
    "(torch/utils/_contextlib.py:124);execute_model (vllm/v1/worker/gpu/model_runner.py:{line})"
)


def test_engine_profile_splits_the_engine_cores_main_thread_as_py_spy_writes_it() -> None:
    """py-spy 0.4.1's raw lines from vLLM 0.24's engine core: waiting on the GPU, the forward
    called eagerly from the model runner, its other work, the scheduler, idle; another thread's
    samples and a line without a count are not the main thread's."""
    lines = [
        f"{QUEUE.format(line=554)};result (concurrent/futures/_base.py:449);get_output "
        "(vllm/v1/worker/gpu/async_utils.py:49);synchronize (torch/cuda/streams.py:254) 30",
        f"{RUNNER.format(line=1292)};_wrapped_call_impl (torch/nn/modules/module.py:1779);"
        "forward (vllm/model_executor/models/llama.py:558) 20",
        f"{RUNNER.format(line=1161)};prepare_inputs (vllm/v1/worker/gpu/model_runner.py:861) 10",
        f"{RUNNER.format(line=1262)};run_fullgraph (vllm/v1/worker/gpu/model_runner.py:700) 5",
        f"{QUEUE.format(line=535)};schedule (vllm/v1/core/sched/async_scheduler.py:20);"
        "allocate_slots (vllm/v1/core/kv_cache_manager.py:404) 15",
        f"{QUEUE.format(line=605)};update_from_output (vllm/v1/core/sched/scheduler.py:1591) 10",
        f"{LOOP};_process_input_queue (vllm/v1/engine/core.py:1285);get (queue.py:171) 10",
        "_bootstrap (threading.py:1030);run (zmq/utils/garbage.py:56) 500",
        f"{QUEUE.format(line=565)};sample_tokens (vllm/v1/worker/gpu_worker.py:833)",
    ]
    split = report.engine_main_thread_split("\n".join(lines))
    assert split == pytest.approx(
        {
            "GPU wait": 0.3,
            "forward launch": 0.2,
            "other execute_model": 0.15,
            "schedule": 0.15,
            "update_from_output": 0.1,
            "sample_tokens": 0.0,
            "idle": 0.1,
            "other": 0.0,
        }
    )
    assert report.engine_main_thread_split("_bootstrap (threading.py:1030) 9") == {}


def test_main_thread_cpu_reads_the_thread_whose_id_is_the_process_id() -> None:
    window = {"624/624 python3": 99.6, "624/1043 python3": 1.2, "752/752 VLLM::EngineCor": 92.2}
    assert report.main_thread_cpu(window, "python") == 99.6
    assert report.main_thread_cpu(window, "VLLM::EngineCor") == 92.2
    assert report.main_thread_cpu(window, "nginx") is None


def test_process_tree_and_thread_cpu_read_this_process_from_proc() -> None:
    """The profile phase's /proc readers on the test process itself: its tree holds it, not
    its parent; its main thread's CPU seconds grow by what it spends."""
    pid = os.getpid()
    tree = driver.process_tree(pid)
    assert pid in tree and "python" in tree[pid]
    assert os.getppid() not in tree  # the tree goes down only
    before = driver.thread_cpu_s([pid])
    (main,) = (k for k in before if k.startswith(f"{pid}/{pid} "))
    start = time.thread_time()
    while time.thread_time() - start < 0.1:
        pass
    assert driver.thread_cpu_s([pid])[main] - before[main] >= 0.05
    assert driver.host_info()["cpu_count"] == os.cpu_count()


@pytest.mark.process  # starts a child
def test_process_tree_holds_the_children_as_the_api_servers_holds_its_engine_core() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "engine-core-stand-in"],
        stdin=subprocess.PIPE,
    )
    try:
        tree = driver.process_tree(os.getpid())
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    assert "engine-core-stand-in" in tree[child.pid]
