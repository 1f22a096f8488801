"""`sim serve` as a process: its state file is `up`'s, so the gateway (and `status`) find the
simulated engines through it; SIGINT and SIGTERM stop it cleanly even when it inherited SIGINT
ignored (a shell's background job), and the state file goes with it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from modelyard.engines import launcher
from modelyard.engines.launcher import free_port
from modelyard.engines.state import read_state
from tests.procs import as_background_job, poll_until, start_gateway, wait_http

pytestmark = pytest.mark.process

FLEET = """\
name: simulated
models:
  chat-model: {catalog: qwen2.5-7b, engine: sim, gpu: h100-sxm, max_model_len: 4096}
"""


def _sim_serve(tmp_path: Path, state: Path) -> tuple[subprocess.Popen[bytes], Path]:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    port = free_port("127.0.0.1")
    command = [sys.executable, "-m", "modelyard", "sim", "serve", str(fleet), "--port", str(port)]
    command += ["--speed", "50", "--cold-start-s", "0", "--state", str(state)]
    log = tmp_path / "sim-serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(as_background_job(command), stdout=sink, stderr=sink)
    return process, log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_gateway_serves_simulated_engines_through_the_state_file(
    tmp_path: Path, signum: int
) -> None:
    state_dir = tmp_path / ".modelyard"
    process, log = _sim_serve(tmp_path, state_dir / "state.json")
    gateway = None
    try:
        poll_until(
            lambda: (state_dir / "state.json").exists() or process.poll() is not None, "state"
        )
        assert process.poll() is None, log.read_text()
        (engine,) = read_state(state_dir)
        assert (engine.model, engine.engine, engine.pid) == ("chat-model", "sim", process.pid)
        wait_http(engine.url + "/health")
        (row,) = launcher.status(state_dir)
        assert row.alive and row.health == 200
        # the fleet names no endpoints: the gateway, started in tmp_path, takes them from
        # .modelyard/state.json there (its default state dir)
        gateway = start_gateway(tmp_path / "fleet.yaml", tmp_path)

        async def ask() -> tuple[int, str, dict[str, object]]:
            body = {"model": "chat-model", "prompt": "hi", "max_tokens": 3}
            async with (
                aiohttp.ClientSession() as session,
                session.post(gateway.url + "/v1/completions", json=body) as response,
            ):
                backend = response.headers["X-Modelyard-Backend"]
                return response.status, backend, await response.json()

        status, backend, answer = asyncio.run(ask())
        assert status == 200 and backend == engine.url
        assert answer["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
        process.send_signal(signum)
        assert process.wait(timeout=15) == 0
        said = log.read_text()
        assert f"stopped on {signal.Signals(signum).name}" in said and "Traceback" not in said
        assert not (state_dir / "state.json").exists()
    finally:
        if gateway is not None:
            gateway.stop()
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_second_sim_serve_on_the_same_port_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "first" / "state.json"
    first, log = _sim_serve(tmp_path, state)
    try:
        poll_until(lambda: state.exists() or first.poll() is not None, "the first one listens")
        assert first.poll() is None, log.read_text()
        (engine,) = read_state(state.parent)
        command = [sys.executable, "-m", "modelyard", "sim", "serve", "--model", "qwen2.5-7b"]
        command += ["--gpu", "l4", "--port", str(engine.port)]
        second = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{engine.port}" in lines[0]
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=15)


def test_down_stops_a_sim_serve_from_its_state_file(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    process, log = _sim_serve(tmp_path, state_dir / "state.json")
    try:
        poll_until(lambda: (state_dir / "state.json").exists() or process.poll() is not None, "up")
        assert process.poll() is None, log.read_text()
        assert launcher.down(state_dir) == ["chat-model/0"]
        assert process.wait(timeout=15) == 0
        assert not (state_dir / "state.json").exists()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
