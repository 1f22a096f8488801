"""The load generator against `sim serve` over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.engines.launcher import free_port
from tests.procs import SimServe, start_sim_serve

pytestmark = pytest.mark.process  # sim serve engines and the bench command


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SimServe]]:
    folder = tmp_path_factory.mktemp("bench")
    started = {
        name: start_sim_serve(
            [
                "--model",
                "qwen2.5-7b",
                "--gpu",
                "h100-sxm",
                "--port",
                str(port),
                "--served-model-name",
                name,
                "--speed",
                "10",
                "--cold-start-s",
                "0",
            ],
            folder,
        )
        for name, port in (("a", free_port("127.0.0.1")), ("b", free_port("127.0.0.1")))
    }
    yield started
    for server in started.values():
        server.stop()


def _bench(tmp_path: Path, *args: str, exit_code: int = 0) -> dict[str, object]:
    path = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, "-m", "modelyard", "bench", *args, "--results", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == exit_code, done.stderr
    return json.loads(path.read_text())


def test_open_loop_mix_and_usage(servers: dict[str, SimServe], tmp_path: Path) -> None:
    data = _bench(
        tmp_path,
        "--target",
        f"a={servers['a'].url()}",
        "--target",
        f"b={servers['b'].url()}",
        "--mix",
        "a=3,b=1",
        "--rate",
        "40",
        "--requests",
        "200",
        "--warmup",
        "10",
        "--output-tokens",
        "8",
    )
    models = data["models"]
    assert isinstance(models, dict)
    assert models["a"]["completed"] + models["b"]["completed"] == 200
    assert 120 <= models["a"]["completed"] <= 175  # 75% of 200, seeded
    assert models["a"]["usage_chunk_mismatch"] == 0 and models["a"]["usage_missing"] == 0
    assert models["a"]["tpot_ms"]["p50"] > 0


def test_closed_loop_and_non_streaming(servers: dict[str, SimServe], tmp_path: Path) -> None:
    data = _bench(
        tmp_path,
        "--target",
        servers["a"].url(),
        "--model",
        "a",
        "--concurrency",
        "4",
        "--requests",
        "20",
        "--no-stream",
    )
    overall = data["all"]
    assert isinstance(overall, dict) and overall["completed"] == 20


def test_errors_are_classified(servers: dict[str, SimServe], tmp_path: Path) -> None:
    import asyncio

    import aiohttp

    async def set_faults(**faults: object) -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.post(servers["b"].url() + "/_sim/faults", json=faults) as r,
        ):
            assert r.status == 200

    asyncio.run(set_faults(error_rate=1.0, error_status=503))
    try:
        data = _bench(
            tmp_path,
            "--target",
            servers["b"].url(),
            "--model",
            "b",
            "--rate",
            "50",
            "--requests",
            "10",
            exit_code=3,  # every request failed
        )
        assert data["all"]["errors"]["http_5xx"] == 10  # type: ignore[index]
        asyncio.run(set_faults(close_after_tokens=2))
        data = _bench(
            tmp_path,
            "--target",
            servers["b"].url(),
            "--model",
            "b",
            "--rate",
            "50",
            "--requests",
            "5",
            "--output-tokens",
            "10",
            exit_code=3,
        )
        assert data["all"]["errors"]["mid_stream"] == 5  # type: ignore[index]
    finally:
        asyncio.run(set_faults())
    data = _bench(
        tmp_path,
        "--target",
        "http://127.0.0.1:9",
        "--model",
        "b",
        "--rate",
        "50",
        "--requests",
        "3",
        exit_code=3,
    )
    assert data["all"]["errors"]["connect"] == 3  # type: ignore[index]


def test_rate_sweep_writes_one_result_per_level(
    servers: dict[str, SimServe], tmp_path: Path
) -> None:
    path = tmp_path / "sweep.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelyard",
            "bench",
            "--target",
            servers["a"].url(),
            "--model",
            "a",
            "--rate",
            "10,40",
            "--requests",
            "20",
            "--output-tokens",
            "4",
            "--results",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rates = [
        json.loads((tmp_path / f"sweep-rate{r}.json").read_text())["config"]["workload"][
            "arrivals"
        ]["rate"]
        for r in (10, 40)
    ]
    assert rates == [10.0, 40.0]


def test_engine_metrics_sampled_during_the_run(
    servers: dict[str, SimServe], tmp_path: Path
) -> None:
    data = _bench(
        tmp_path,
        "--target",
        servers["a"].url(),
        "--model",
        "a",
        "--rate",
        "30",
        "--requests",
        "40",
        "--output-tokens",
        "6",
        "--engine",
        "sim",
    )
    model = data["models"]["a"]  # type: ignore[index]
    server = model["server"]
    assert server["samples"] >= 2 and server["scrape_failures"] == 0
    # the engine's own counter agrees with the client's token count
    assert server["server_generation_tokens"] == model["completed"] * 6
    # the gauges were read under their vLLM names (a wrong name reads as None)
    assert server["running_max"] is not None and server["kv_usage_max"] is not None


def test_prompts_from_a_jsonl_file(servers: dict[str, SimServe], tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "' + "x" * 400 + '", "max_tokens": 3}\n{"prompt": "y"}\n')
    data = _bench(
        tmp_path,
        "--target",
        servers["a"].url(),
        "--model",
        "a",
        "--rate",
        "20",
        "--requests",
        "10",
        "--output-tokens",
        "7",
        "--prompts",
        str(prompts),
        "--engine",
        "sim",
    )
    model = data["models"]["a"]  # type: ignore[index]
    assert model["completed"] == 10
    # five of each prompt: 3 and 7 output tokens; 100 + 1 prompt tokens by sim serve's rule
    assert model["server"]["server_generation_tokens"] == 5 * 3 + 5 * 7
    assert model["server"]["server_prompt_tokens"] == 5 * 100 + 5 * 1


def test_targets_from_a_fleet(servers: dict[str, SimServe], tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(f"""\
name: f
models:
  a: {{catalog: qwen2.5-7b, engine: sim, gpu: h100-sxm, endpoints: ["{servers["a"].url()}"]}}
  b: {{catalog: qwen2.5-7b, engine: sim, gpu: h100-sxm, endpoints: ["{servers["b"].url()}"]}}
routes:
  - {{targets: [a, b]}}
traffic: {{fallback_rate: 0.2}}
""")
    data = _bench(
        tmp_path, "--fleet", str(fleet), "--rate", "40", "--requests", "100", "--output-tokens", "4"
    )
    models = data["models"]  # type: ignore[assignment]
    assert set(models) == {"a", "b"}  # type: ignore[arg-type]
    assert 65 <= models["a"]["completed"] <= 95  # type: ignore[index]  # 80% primary


def test_collector_paused_during_a_run_and_restored_after() -> None:
    import gc

    from modelyard.bench.loadgen import _collector_paused

    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            with _collector_paused():
                assert not gc.isenabled()
                assert gc.get_freeze_count() > 0  # start-up objects out of the collector's way
            assert gc.isenabled() is enabled
            assert gc.get_freeze_count() == 0
        finally:
            gc.enable()


def test_synthetic_prompts_share_no_prefix_within_or_across_runs() -> None:
    """An engine's prefix cache caches whole blocks from the start, so differing first tokens
    are what keep it from answering a request with an earlier one's work."""
    import orjson

    from modelyard.bench.loadgen import LoadOptions, Target, _payload

    target, options = Target("a", "http://127.0.0.1:1", "m"), LoadOptions()

    def prompt(index: int, salt: int, tokens: int = 64) -> list[int]:
        body = orjson.loads(_payload(target, tokens, 8, options, index, salt=salt))
        assert len(body["prompt"]) == tokens
        return body["prompt"]

    starts = {tuple(prompt(i, salt=5)[:2]) for i in range(0, 60000, 7)}
    assert len(starts) == len(range(0, 60000, 7))  # beyond 20,000 requests too
    assert prompt(123, salt=5)[:2] != prompt(123, salt=6)[:2]  # another run
    assert len(prompt(3, salt=5, tokens=1)) == 1
