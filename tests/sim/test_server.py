from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest

from modelyard.engines.launcher import free_port
from tests.procs import SimServe, poll_until, refuses_connections, start_sim_serve, wait_http

pytestmark = pytest.mark.process  # sim serve and the gateway as processes

SPEED = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServe]:
    running = start_sim_serve(
        [
            "--model",
            "qwen2.5-7b",
            "--gpu",
            "h100-sxm",
            "--port",
            str(free_port("127.0.0.1")),
            "--speed",
            str(SPEED),
            "--cold-start-s",
            "0",
            "--max-model-len",
            "4096",
        ],
        tmp_path_factory.mktemp("simserve"),
    )
    yield running
    assert running.stop() == 0


def _client(server: SimServe, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url() + "/v1", api_key="unused", max_retries=0, **kwargs)  # type: ignore[arg-type]


def _set_faults(server: SimServe, **faults: object) -> None:
    async def post() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(server.url() + "/_sim/faults", json=faults) as response,
        ):
            assert response.status == 200, await response.text()

    asyncio.run(post())


@pytest.fixture(autouse=True)
def _clear_faults(server: SimServe) -> Iterator[None]:
    yield
    _set_faults(server)


def test_completion_with_official_client(server: SimServe) -> None:
    with _client(server) as client:
        result = client.completions.create(model="qwen2.5-7b", prompt="x" * 400, max_tokens=7)
    assert result.usage is not None
    assert result.usage.prompt_tokens == 100  # 400 bytes / 4
    assert result.usage.completion_tokens == 7
    assert len(result.choices[0].text.split()) == 7
    assert result.choices[0].finish_reason == "length"


def test_chat_stream_with_usage_async_client(server: SimServe) -> None:
    async def run() -> tuple[list[str], object]:
        client = openai.AsyncOpenAI(base_url=server.url() + "/v1", api_key="unused", max_retries=0)
        async with client:
            stream = await client.chat.completions.create(
                model="qwen2.5-7b",
                messages=[{"role": "user", "content": "hello there"}],
                max_tokens=12,
                stream=True,
                stream_options={"include_usage": True},
            )
            pieces, usage = [], None
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        pieces.append(choice.delta.content)
            return pieces, usage

    pieces, usage = asyncio.run(run())
    assert len(pieces) == 12
    assert usage is not None and usage.completion_tokens == 12  # type: ignore[attr-defined]
    assert usage.prompt_tokens == 4 + 3  # type: ignore[attr-defined]


def test_chat_non_stream_sync_client(server: SimServe) -> None:
    with _client(server) as client:
        result = client.chat.completions.create(
            model="qwen2.5-7b", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
    assert result.choices[0].message.content is not None
    assert result.usage is not None and result.usage.completion_tokens == 3


def test_models_health_metrics(server: SimServe) -> None:
    async def run() -> tuple[dict[str, object], int, str]:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url() + "/v1/models") as r:
                models = await r.json()
            async with session.get(server.url() + "/health") as r:
                health = r.status
            async with session.get(server.url() + "/metrics") as r:
                metrics = await r.text()
            return models, health, metrics

    models, health, metrics = asyncio.run(run())
    assert models["data"][0]["id"] == "qwen2.5-7b"  # type: ignore[index]
    assert health == 200
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:num_preemptions_total",
    ):
        assert name in metrics


def test_context_length_error_is_vllm_shaped(server: SimServe) -> None:
    with _client(server) as client, pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="qwen2.5-7b", prompt="x" * 16000, max_tokens=200)
    assert info.value.status_code == 400
    assert "maximum context length is 4096 tokens" in str(info.value)
    assert "4200 tokens (4000 in the messages, 200 in the completion)" in str(info.value)


def test_min_tokens_above_max_is_rejected(server: SimServe) -> None:
    with _client(server) as client, pytest.raises(openai.BadRequestError):
        client.completions.create(
            model="qwen2.5-7b", prompt="x", max_tokens=2, extra_body={"min_tokens": 5}
        )


def test_fault_error_rate(server: SimServe) -> None:
    _set_faults(server, error_rate=1.0, error_status=503)
    with _client(server) as client, pytest.raises(openai.APIStatusError) as info:
        client.completions.create(model="qwen2.5-7b", prompt="x", max_tokens=2)
    assert info.value.status_code == 503


def test_fault_context_length_body(server: SimServe) -> None:
    _set_faults(server, error_rate=1.0, error_body="context_length")
    with _client(server) as client, pytest.raises(openai.BadRequestError):
        client.completions.create(model="qwen2.5-7b", prompt="x", max_tokens=2)


def test_fault_partial_error_rate_is_seeded(server: SimServe) -> None:
    outcomes = []
    for _ in range(2):
        _set_faults(server, error_rate=0.5, seed=3)
        with _client(server) as client:
            run = []
            for _ in range(16):
                try:
                    client.completions.create(model="qwen2.5-7b", prompt="x", max_tokens=1)
                    run.append(True)
                except openai.InternalServerError:
                    run.append(False)
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert 2 <= outcomes[0].count(False) <= 14


def test_fault_hang_before_headers(server: SimServe) -> None:
    _set_faults(server, hang_rate=1.0)
    with _client(server, timeout=0.5) as client, pytest.raises(openai.APITimeoutError):
        client.completions.create(model="qwen2.5-7b", prompt="x", max_tokens=2)


def test_fault_slow_first_token(server: SimServe) -> None:
    with _client(server) as client:
        start = time.monotonic()
        client.completions.create(model="qwen2.5-7b", prompt="x", max_tokens=1)
        fast = time.monotonic() - start
        _set_faults(server, slow_first_token_s=10.0)  # 10 sim s = 0.5 s at speed 20
        start = time.monotonic()
        client.completions.create(model="qwen2.5-7b", prompt="x", max_tokens=1)
        slow = time.monotonic() - start
    assert slow - fast >= 10.0 / SPEED * 0.9


async def _stream_lines(
    url: str, timeout_s: float, max_tokens: int = 10
) -> tuple[list[bytes], str]:
    body = {"model": "qwen2.5-7b", "prompt": "x", "max_tokens": max_tokens, "stream": True}
    lines: list[bytes] = []
    try:
        timeout = aiohttp.ClientTimeout(sock_read=timeout_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as s,
            s.post(url + "/v1/completions", json=body) as response,
        ):
            async for line in response.content:
                if line.strip():
                    lines.append(line.strip())
        return lines, "complete"
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return lines, "timeout"
    except aiohttp.ClientPayloadError:
        return lines, "payload-error"


def test_fault_stall_after_tokens(server: SimServe) -> None:
    _set_faults(server, stall_after_tokens=3)
    lines, outcome = asyncio.run(_stream_lines(server.url(), timeout_s=0.5))
    assert outcome == "timeout"
    assert len(lines) == 3 and b"[DONE]" not in b"".join(lines)


def test_fault_close_after_tokens(server: SimServe) -> None:
    _set_faults(server, close_after_tokens=2)
    lines, outcome = asyncio.run(_stream_lines(server.url(), timeout_s=5.0))
    assert outcome in ("payload-error", "complete")
    assert len(lines) == 2 and b"[DONE]" not in b"".join(lines)


def test_fault_refuse_connections(server: SimServe) -> None:
    _set_faults(server, refuse_connections_s=20.0)  # 1 s wall at speed 20
    poll_until(lambda: refuses_connections(server.url()), "the server refuses connections")
    with _client(server) as client, pytest.raises(openai.APIConnectionError):
        client.completions.create(model="qwen2.5-7b", prompt="x", max_tokens=1)
    wait_http(server.url() + "/health", deadline_s=5)
    with _client(server) as client:
        assert client.completions.create(model="qwen2.5-7b", prompt="x", max_tokens=1).usage


def test_fault_crash_after_requests(tmp_path: Path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text("gemma-3-270m: {crash_after_requests: 2}\n")
    running = start_sim_serve(
        [
            "--model",
            "gemma-3-270m",
            "--gpu",
            "l4",
            "--port",
            str(free_port("127.0.0.1")),
            "--speed",
            "20",
            "--cold-start-s",
            "0",
            "--faults",
            str(faults),
        ],
        tmp_path,
    )
    with _client(running) as client:
        client.completions.create(model="gemma-3-270m", prompt="x", max_tokens=1)
        client.completions.create(model="gemma-3-270m", prompt="x", max_tokens=1)
        with pytest.raises(openai.APIConnectionError):
            client.completions.create(model="gemma-3-270m", prompt="x", max_tokens=1)
    assert running.process.wait(timeout=5) == 1


def test_cold_start_health_503(tmp_path: Path) -> None:
    running = start_sim_serve(
        [
            "--model",
            "gemma-3-270m",
            "--gpu",
            "l4",
            "--port",
            str(free_port("127.0.0.1")),
            "--speed",
            "10",
            "--cold-start-s",
            "15",
        ],
        tmp_path,
        ready_path="/v1/models",
    )
    try:

        async def health() -> int:
            async with aiohttp.ClientSession() as s, s.get(running.url() + "/health") as r:
                return r.status

        assert asyncio.run(health()) == 503
        wait_http(running.url() + "/health", deadline_s=5)
    finally:
        running.stop()


def test_bad_faults_file_is_one_line(tmp_path: Path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text("m:\n  error_rate: 2\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelyard",
            "sim",
            "serve",
            "--model",
            "gemma-3-270m",
            "--gpu",
            "l4",
            "--faults",
            str(faults),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 1
    assert f"{faults}:2: m.error_rate: Input should be less than or equal to 1" in out.stderr


def test_fixed_latency_mode_is_exact(tmp_path: Path) -> None:
    """--fixed-ttft-ms/--fixed-itl-ms: tokens due exactly ITL apart, and the load generator
    (which measures from the scheduled send) never sees a TTFT below the injected one."""
    from modelyard.bench.loadgen import LoadOptions, Target, run_load
    from modelyard.workload import ArrivalProcess, LengthDist, Workload, generate

    running = start_sim_serve(
        [
            "--model",
            "qwen2.5-7b",
            "--gpu",
            "h200",
            "--port",
            str(free_port("127.0.0.1")),
            "--cold-start-s",
            "0",
            "--fixed-ttft-ms",
            "30",
            "--fixed-itl-ms",
            "7",
            "--timing-debug",
        ],
        tmp_path,
    )
    try:
        plan = generate(
            Workload(
                arrivals=ArrivalProcess("poisson", 50.0),
                input_tokens=LengthDist(mean=16),
                output_tokens=LengthDist(mean=6),
                mix={"q": 1.0},
            ),
            40,
            seed=3,
        )
        targets = {"q": Target("q", running.url(), "qwen2.5-7b")}
        records, _ = asyncio.run(run_load(plan, targets, LoadOptions(capture_due=True)))
    finally:
        assert running.stop() == 0
    assert all(r.ok for r in records) and len(records) == 40
    for record in records:
        assert record.tokens == 6 and record.due_times is not None
        gaps = [b - a for a, b in zip(record.due_times, record.due_times[1:], strict=False)]
        assert gaps == pytest.approx([0.007] * 5, abs=1e-9)
        assert record.ttft is not None and record.ttft >= 0.030
        # no batched steps, so nothing is written ahead of its due time
        assert all(a >= d for a, d in zip(record.chunk_times, record.due_times, strict=True))
