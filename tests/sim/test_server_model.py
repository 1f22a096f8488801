"""`sim serve` simulates exactly the engines `sim run` and `fit` describe — quantization, KV
cache dtype, memory fractions, a shared GPU — whether it is given the fleet file or started by
`up` (`engine: sim`, one `sim serve --model` per engine); and a taken port is one line."""

from __future__ import annotations

import re
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from modelyard.engines.launcher import plan, processes
from modelyard.fleet import LoadedFleet, load_fleet
from modelyard.memory import fit_fleet
from modelyard.sim.engine import Engine
from modelyard.sim.gpu import BLOCK_TOKENS, SharedDevice
from modelyard.sim.run import SimOptions, plan_devices
from modelyard.sim.server import ServeOptions, build_models
from tests.conftest import Cli

FLEET = """\
name: as-written
models:
  llama-8b: {catalog: llama-3.1-8b, engine: sim, gpu: h100-sxm, quant: awq-w4-g128, kv_cache_dtype: fp8}
  mistral-7b: {catalog: mistral-7b-instruct-v0.2, engine: sim, gpu: h100-sxm, max_num_seqs: 64}
  qwen-7b: {catalog: qwen2.5-7b, engine: sim, gpu: l4, gpu_memory_utilization: 0.8, max_model_len: 8192}
placement:
  shared:
    - {gpu: h100-sxm, models: [llama-8b, mistral-7b], memory_fractions: {llama-8b: 0.6, mistral-7b: 0.3}}
"""


def _fleet(tmp_path: Path) -> LoadedFleet:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    return load_fleet(path)


def _shape(engine: Engine) -> tuple[int, int, int, float, float]:
    """What decides an engine's answers: its KV blocks, batch limits and step times."""
    step = engine.model
    return (
        engine.kv_blocks,
        engine.max_num_seqs,
        engine.max_num_batched_tokens,
        step.prefill_time(2048),
        step.decode_step_time(32, 32 * 1024),
    )


@pytest.mark.parametrize("sharing", ["time-sliced", "mps"])
def test_sim_serve_of_a_fleet_builds_the_engines_fit_describes(
    tmp_path: Path, sharing: str
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        FLEET.replace("{gpu: h100-sxm, models:", f"{{sharing: {sharing}, gpu: h100-sxm, models:")
    )
    loaded = load_fleet(path)
    _, served = build_models(loaded, ServeOptions())
    fits = {f.name: f for f in fit_fleet(loaded).models}  # what `modelyard fit` prints
    engines = {m.name: m.engine for m in served}
    assert sorted(engines) == ["llama-8b/0", "mistral-7b/0", "qwen-7b/0"]
    for name, engine in engines.items():
        model = name.split("/")[0]
        fit = fits[model]
        assert isinstance(engine, Engine)
        assert engine.kv_blocks == fit.kv_cache_tokens // BLOCK_TOKENS, name
        assert engine.max_num_seqs == fit.max_num_seqs, name
    by_gpu = {m.name: m.gpu for m in served}
    assert by_gpu == {"llama-8b/0": "h100-sxm", "mistral-7b/0": "h100-sxm", "qwen-7b/0": "l4"}
    # the two on one H100 contend for it, as in `sim run`, by the group's sharing mode
    llama, mistral = engines["llama-8b/0"], engines["mistral-7b/0"]
    assert isinstance(llama.contention, SharedDevice) and llama.contention is mistral.contention
    (shared,) = [d for d in plan_devices(loaded, SimOptions()) if len(d.engines) == 2]
    assert shared.sharing == sharing and llama.contention.slowdown == shared.slowdown > 0
    assert engines["qwen-7b/0"].contention is not llama.contention


def test_up_with_engine_sim_serves_what_sim_run_simulates(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each `sim serve` command `up` would run builds the engines `sim run` builds: one per
    isolated model, and one for the shared group whose two engines contend for the one H100."""
    loaded = _fleet(tmp_path)
    simulated = {
        spec.name: (device, spec)
        for device in plan_devices(loaded, SimOptions())
        for spec in device.engines
    }
    _, from_fleet = build_models(loaded, ServeOptions())  # as `sim run` builds them (above)
    shapes = {m.name: _shape(m.engine) for m in from_fleet if isinstance(m.engine, Engine)}
    import modelyard.cli.sim

    captured: list[tuple[Any, ServeOptions]] = []

    async def capture(fleet: Any, options: ServeOptions, on_ready: Any = None) -> int:
        captured.append((fleet, options))
        return 15

    monkeypatch.setattr(modelyard.cli.sim, "serve", capture)
    started = processes(loaded, plan(loaded))
    assert [sorted(i.name for i in items) for items, _ in started] == [
        ["llama-8b/0", "mistral-7b/0"],
        ["qwen-7b/0"],
    ]
    for items, command in started:
        assert command[1:3] == ["-m", "modelyard"]
        done = cli(*command[3:])
        assert done.returncode == 0, done.stderr
        served_fleet, options = captured[-1]
        _, models = build_models(served_fleet, options)
        assert sorted(m.name for m in models) == sorted(i.name for i in items)
        ports = {i.name: i.spec.port for i in items}
        for model in models:
            device, expected = simulated[model.name]
            assert isinstance(model.engine, Engine)
            assert model.gpu == expected.gpu_name
            assert _shape(model.engine) == shapes[model.name]
            if len(items) > 1:  # the fleet file itself: the group's settings and sharing
                assert options.ports == ports
                assert isinstance(model.engine.contention, SharedDevice)
                assert model.engine.contention.slowdown == device.slowdown > 0
        if len(items) > 1:
            first, second = (m.engine for m in models)
            assert isinstance(first, Engine) and isinstance(second, Engine)
            assert first.contention is second.contention
        else:  # `sim serve --model`: the model's settings as vLLM flags
            (model,) = models
            spec = plan_devices(served_fleet, SimOptions())[0].engines[0]
            _, expected = simulated[model.name]
            context = expected.settings.max_model_len or expected.model.max_context
            assert spec.quant_name == expected.quant_name
            assert spec.settings == replace(expected.settings, max_model_len=context)
    assert len(captured) == 2


def test_sim_serve_ports_name_whole_devices(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    for ports, said in (
        ("llama-8b/0=9001", "mistral-7b/0 share a device with the engines named"),
        ("llama-8b/9=9001", "--ports names llama-8b/9: the fleet places"),
        ("llama-8b/0", "'llama-8b/0' is not NAME=PORT"),
    ):
        done = cli("sim", "serve", str(path), "--ports", ports)
        text = " ".join(re.sub("[│╭╮╰╯─]", " ", done.stderr).split())
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert said in text, text


def test_a_taken_port_is_one_line(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("sim", "serve", "--model", "qwen2.5-7b", "--gpu", "l4", "--port", str(port))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "pick another --port" in done.stderr


def test_engine_settings_go_in_the_fleet_not_on_the_command_line(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    done = cli("sim", "serve", str(path), "--quant", "fp8")
    said = " ".join(re.sub("[│╭╮╰╯─]", " ", done.stderr).split())  # out of click's box
    assert done.returncode == 2 and "--quant: with a fleet file, set these in the fleet" in said
