from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from modelyard.compare import CompareOptions, compare_sim
from modelyard.fleet import load_fleet
from tests.conftest import ROOT, Cli

EXAMPLE = ROOT / "examples" / "fleet.yaml"


def test_compare_in_the_simulator() -> None:
    outcome = compare_sim(
        load_fleet(EXAMPLE),
        CompareOptions(requests=1500, rate=1.5, input_tokens=512, output_tokens=128),
    )
    by = {r.placement: r for r in outcome}
    assert set(by) == {"shared", "isolated"}
    for model in ("llama-8b", "mistral-7b"):
        shared, isolated = by["shared"].models[model], by["isolated"].models[model]
        assert shared.completed == isolated.completed  # the identical workload
        # two engines time-sharing one A10G with half its memory each are slower
        assert shared.tpot_ms.p99 > isolated.tpot_ms.p99
    # monthly GPU cost at the catalog's cheapest A10G price (g5.xlarge $1.006/h), 730 h
    catalog = load_fleet(EXAMPLE).catalog
    assert by["isolated"].gpus == {"a10g": 2} and by["shared"].gpus == {"a10g": 1}
    assert by["isolated"].monthly_usd(catalog) == pytest.approx(2 * 1.006 * 730)
    assert by["shared"].monthly_usd(catalog) == pytest.approx(1.006 * 730)


def test_compare_in_the_simulator_closed_loop_and_offline() -> None:
    loaded = load_fleet(EXAMPLE)
    base = CompareOptions(requests=200, input_tokens=512, output_tokens=128)
    closed = compare_sim(loaded, replace(base, concurrency=4))
    offline = compare_sim(loaded, replace(base, offline=True))
    for placement in (0, 1):
        for model in ("llama-8b", "mistral-7b"):
            users, batch = closed[placement].models[model], offline[placement].models[model]
            assert users.completed == batch.completed == users.requests
            # everything at t = 0 waits behind everything else: later first tokens, more req/s
            assert batch.ttft_ms.p50 > 2 * users.ttft_ms.p50
            assert batch.throughput_rps > users.throughput_rps


def test_cli_compare_offline_needs_the_simulator(cli: Cli) -> None:
    out = cli("compare", str(EXAMPLE), "--offline")
    assert out.returncode == 2 and "--offline needs --sim" in out.stderr
    out = cli("compare", str(EXAMPLE), "--sim", "--offline", "--concurrency", "2")
    assert out.returncode == 2 and "not both" in out.stderr


def test_cli_compare_sim_prints_the_table(cli: Cli) -> None:
    out = cli("compare", str(EXAMPLE), "--sim", "--requests", "300", "--rate", "1")
    assert out.returncode == 0, out.stderr
    assert "shared vs isolated" in out.stdout
    assert "llama-8b" in out.stdout and "mistral-7b" in out.stdout
    assert "isolated: 2x a10g, $1,469/month" in out.stdout


@pytest.mark.process
def test_compare_with_real_processes_of_the_sim_engine(tmp_path: Path) -> None:
    """The demo's real-engine path (launcher + bench + down) with fast simulated engines."""
    import asyncio

    from modelyard.compare import compare_real

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("""\
name: demo-sim
models:
  primary: {catalog: qwen2.5-7b, quant: awq-w4-g128, engine: sim, gpu: l4, max_model_len: 2048,
            engine_args: [--speed, "20", --cold-start-s, "0"]}
  fallback: {catalog: gemma-3-270m, engine: sim, gpu: l4, max_model_len: 2048,
             engine_args: [--speed, "20", --cold-start-s, "0"]}
routes:
  - {targets: [primary, fallback]}
traffic: {fallback_rate: 0.5}
""")
    messages: list[str] = []
    outcome = asyncio.run(
        compare_real(
            load_fleet(fleet),
            CompareOptions(requests=30, warmup=2, rate=20, input_tokens=32, output_tokens=8),
            messages.append,
        )
    )
    assert [r.placement for r in outcome] == ["shared", "isolated"]
    for result in outcome:
        assert set(result.models) == {"primary", "fallback"}
        for summary in result.models.values():
            assert summary.completed > 0
            assert summary.cold_start_s is not None and summary.cold_start_s > 0
            assert summary.memory_mib is not None and summary.memory_mib > 10  # a real process
            assert summary.server is not None and summary.server.engine == "sim"
    assert any("starting engines" in m for m in messages)


@pytest.mark.process
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_compare_stops_its_engines(tmp_path: Path, signum: int, code: int) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("""\
name: slow
models:
  a: {catalog: gemma-3-270m, engine: sim, gpu: l4, engine_args: [--cold-start-s, "600"]}
  b: {catalog: gemma-3-270m, engine: sim, gpu: l4, engine_args: [--cold-start-s, "600"]}
""")
    command = f"trap '' INT; exec {sys.executable} -m modelyard compare {fleet} --requests 5"
    compare = subprocess.Popen(
        ["sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    engines: list[int] = []
    try:
        deadline = time.monotonic() + 60
        # shared first: the two engines share the GPU, so the second waits for the first
        while not engines and time.monotonic() < deadline and compare.poll() is None:
            engines = _sim_engines()
            time.sleep(0.02)  # between polls
        assert engines, "compare never started an engine"
        compare.send_signal(signum)
        _, err = compare.communicate(timeout=60)
        assert compare.returncode == code
        assert "Traceback" not in err
        assert _sim_engines() == []
    finally:
        compare.kill()
        compare.communicate()
        for pid in engines:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _sim_engines() -> list[int]:
    """Pids of live `sim serve` processes started with this test's 600 s cold start."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if b"serve" in cmdline and b"--cold-start-s" in cmdline and b"600" in cmdline:
                state = (proc / "stat").read_text().split()[2]
                if state != "Z":
                    pids.append(int(proc.name))
    return pids
