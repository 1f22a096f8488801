"""The gateway over real HTTP, in front of `sim serve` backends with injected faults: every row
of the failure-policy table, the breaker's cycle, warm-up, reload, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelyard.engines.launcher import free_port
from tests.procs import (
    GatewayProcess,
    SimServe,
    poll_until,
    refuses_connections,
    start_gateway,
    start_sim_serve,
    wait_http,
)

pytestmark = pytest.mark.process  # sim serve and the gateway as processes


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SimServe]]:
    folder = tmp_path_factory.mktemp("backends")
    started = {}
    for name in ("primary", "fallback"):
        port = free_port("127.0.0.1")
        started[name] = start_sim_serve(
            [
                "--model",
                "qwen2.5-7b",
                "--gpu",
                "h100-sxm",
                "--served-model-name",
                name,
                "--port",
                str(port),
                "--speed",
                "20",
                "--cold-start-s",
                "0",
                "--max-model-len",
                "4096",
            ],
            folder,
        )
    yield started
    for running in started.values():
        running.stop()


def _post(url: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    async def go() -> tuple[int, dict[str, str], bytes]:
        async with aiohttp.ClientSession() as s, s.post(url + path, json=body) as r:
            return r.status, dict(r.headers), await r.read()

    return asyncio.run(go())


def _get(url: str) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return r.status, await r.read()

    return asyncio.run(go())


def _backend(url: str, model: str) -> dict[str, Any]:
    health = json.loads(_get(url + "/health")[1])
    return next(b for b in health["backends"] if b["model"] == model)  # type: ignore[no-any-return]


def _sample(metrics: bytes, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def faults(backend: SimServe, **values: object) -> None:
    wait_http(backend.url() + "/health", deadline_s=10)  # it may be refusing connections
    status, _, body = _post(backend.url(), "/_sim/faults", values)
    assert status == 200, body


FLEET = """\
name: gw-test
models:
  primary: {{catalog: qwen2.5-7b, engine: sim, gpu: h100-sxm, endpoints: ["http://127.0.0.1:{p}"]}}
  fallback: {{catalog: qwen2.5-7b, engine: sim, gpu: h100-sxm, endpoints: ["http://127.0.0.1:{f}"]}}
routes:
  - {{match: {{task: summary}}, targets: [fallback, primary]}}
  - {{name: chat, targets: [primary, fallback]}}
policy:
  breaker: {{consecutive_failures: 2, open_for: 1s, half_open_probes: 1}}
  retry: {{attempts: 1, backoff: 10ms}}
  timeouts: {{connect: 1s, first_token: 1s, idle: 1s, total: 30s}}
  health: {{interval: {interval}, warmup_every: 1h}}
"""


def _fleet_text(backends: dict[str, SimServe], interval: str = "30s") -> str:
    port = {name: backend.url().rsplit(":", 1)[1] for name, backend in backends.items()}
    return FLEET.format(p=port["primary"], f=port["fallback"], interval=interval)


def _write_fleet(
    tmp_path: Path, backends: dict[str, SimServe], interval: str = "30s", extra: str = ""
) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(_fleet_text(backends, interval) + extra)
    return path


@pytest.fixture
def gateway(backends: dict[str, SimServe], tmp_path: Path) -> Iterator[GatewayProcess]:
    for backend in backends.values():
        faults(backend)
    running = start_gateway(_write_fleet(tmp_path, backends), tmp_path)
    yield running
    running.stop()
    for backend in backends.values():
        faults(backend)


def _completion(url: str, **extra: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    status, headers, body = _post(
        url, "/v1/completions", {"prompt": "hello", "max_tokens": 5, **extra}
    )
    return status, headers, json.loads(body)


def _stream(url: str, **extra: Any) -> tuple[int, dict[str, str], list[bytes]]:
    async def go() -> tuple[int, dict[str, str], list[bytes]]:
        body = {"prompt": "hello", "max_tokens": 6, "stream": True, **extra}
        events = []
        async with aiohttp.ClientSession() as s, s.post(url + "/v1/completions", json=body) as r:
            try:
                async for line in r.content:
                    if line.strip():
                        events.append(line.strip())
            except aiohttp.ClientPayloadError:
                events.append(b"<payload error>")
            return r.status, dict(r.headers), events

    return asyncio.run(go())


def test_openai_clients_through_gateway(gateway: GatewayProcess) -> None:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 4
        assert reply.choices[0].message.content
        text = client.completions.create(model="primary", prompt="x", max_tokens=3)
        assert text.choices[0].text.split() and text.model == "primary"
        pieces = [
            c.choices[0].text
            for c in client.completions.create(model="chat", prompt="x", max_tokens=5, stream=True)
            if c.choices
        ]
        assert len([p for p in pieces if p]) == 5

    async def run_async() -> int:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
        async with client:
            stream = await client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=7,
                stream=True,
                stream_options={"include_usage": True},
            )
            count = 0
            async for chunk in stream:
                count += sum(1 for c in chunk.choices if c.delta.content)
            return count

    assert asyncio.run(run_async()) == 7


def test_routing_headers_and_task(gateway: GatewayProcess) -> None:
    status, headers, body = _completion(gateway.url, model="chat")
    assert status == 200
    assert headers["X-Modelyard-Model"] == "primary"
    assert headers["X-Modelyard-Attempts"] == "1"
    assert body["usage"]["completion_tokens"] == 5
    status, headers, _ = _post(
        gateway.url,
        "/v1/completions",
        {"prompt": "x", "max_tokens": 1, "metadata": {"task": "summary"}},
    )
    assert headers["X-Modelyard-Model"] == "fallback"
    status, body404 = _post(gateway.url, "/v1/completions", {"model": "gpt-9", "prompt": "x"})[::2]
    assert status == 404
    assert json.loads(body404)["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    "fault",
    [
        {"error_rate": 1.0, "error_status": 500},
        {"error_rate": 1.0, "error_status": 503},
        {"hang_rate": 1.0},
        {"slow_first_token_s": 60.0},
        {"error_rate": 1.0, "error_status": 429},
    ],
)
def test_failures_before_first_token_fall_back(
    gateway: GatewayProcess, backends: dict[str, SimServe], fault: dict[str, Any]
) -> None:
    faults(backends["primary"], **fault)
    status, headers, body = _completion(gateway.url, model="chat")
    assert status == 200, body
    assert headers["X-Modelyard-Model"] == "fallback"
    assert headers["X-Modelyard-Attempts"] == "2"
    status, headers, events = _stream(gateway.url, model="chat")
    assert status == 200 and headers["X-Modelyard-Model"] == "fallback"
    assert events[-1] == b"data: [DONE]"


def test_connection_refused_falls_back(
    gateway: GatewayProcess, backends: dict[str, SimServe]
) -> None:
    faults(backends["primary"], refuse_connections_s=40)  # 2 s wall at speed 20
    poll_until(
        lambda: refuses_connections(backends["primary"].url()), "the primary refuses connections"
    )
    status, headers, _ = _completion(gateway.url, model="chat")
    assert status == 200 and headers["X-Modelyard-Model"] == "fallback"
    wait_http(backends["primary"].url() + "/health", deadline_s=10)


def test_429_does_not_trip_the_breaker(
    gateway: GatewayProcess, backends: dict[str, SimServe]
) -> None:
    faults(backends["primary"], error_rate=1.0, error_status=429)
    attempts = []
    for _ in range(4):
        _, headers, _ = _completion(gateway.url, model="chat")
        assert headers["X-Modelyard-Model"] == "fallback"
        attempts.append(headers["X-Modelyard-Attempts"])
    # the first 429 backs the primary off (1 s without Retry-After): the rest skip it
    assert attempts == ["2", "1", "1", "1"]
    health = json.loads(_get(gateway.url + "/health")[1])
    primary = next(b for b in health["backends"] if b["model"] == "primary")
    assert primary["breaker"] == "closed" and primary["backing_off_s"] > 0
    faults(backends["primary"])
    poll_until(lambda: _backend(gateway.url, "primary")["backing_off_s"] == 0, "the back-off ends")
    assert _completion(gateway.url, model="chat")[1]["X-Modelyard-Model"] == "primary"


@pytest.mark.parametrize(
    ("fault", "expected_status"),
    [
        ({"error_rate": 1.0, "error_body": "context_length"}, 400),
        (
            {
                "error_rate": 1.0,
                "error_status": 500,
                "error_body": {
                    "object": "error",
                    "message": "This model's maximum context length is 4096 tokens.",
                    "type": "BadRequestError",
                    "code": 500,
                },
            },
            500,
        ),  # vLLM reports some context-length errors as 500
    ],
)
def test_client_errors_are_returned_not_retried(
    gateway: GatewayProcess,
    backends: dict[str, SimServe],
    fault: dict[str, Any],
    expected_status: int,
) -> None:
    faults(backends["primary"], **fault)
    for _ in range(3):  # more than consecutive_failures: the breaker must stay closed
        status, headers, body = _completion(gateway.url, model="chat")
        assert status == expected_status
        assert headers["X-Modelyard-Model"] == "primary"
        assert "context length" in body["error"]["message"]
        assert set(body["error"]) >= {"message", "type", "code"}
    health = json.loads(_get(gateway.url + "/health")[1])
    assert all(b["breaker"] == "closed" for b in health["backends"])


def test_mid_stream_failure_streaming_gets_error_event(
    gateway: GatewayProcess, backends: dict[str, SimServe]
) -> None:
    faults(backends["primary"], close_after_tokens=2)
    status, headers, events = _stream(gateway.url, model="chat")
    assert status == 200 and headers["X-Modelyard-Model"] == "primary"
    data = [e for e in events if e.startswith(b"data: {")]
    assert len([e for e in data if b'"text"' in e]) == 2
    assert b'"error"' in data[-1]
    assert b"data: [DONE]" not in events  # never a clean end


def test_mid_stream_failure_non_streaming_is_retried(
    gateway: GatewayProcess, backends: dict[str, SimServe]
) -> None:
    faults(backends["primary"], stall_after_tokens=2)  # idle deadline 1 s
    status, headers, body = _completion(gateway.url, model="chat")
    assert status == 200
    assert headers["X-Modelyard-Model"] == "fallback"
    assert body["usage"]["completion_tokens"] == 5


def test_all_candidates_fail_503(gateway: GatewayProcess, backends: dict[str, SimServe]) -> None:
    for backend in backends.values():
        faults(backend, error_rate=1.0, error_status=502)
    status, _, body = _completion(gateway.url, model="chat")
    assert status == 503
    tried = body["error"]["tried"]
    assert tried == [
        {"model": "primary", "error": "server_error: HTTP 502"},
        {"model": "fallback", "error": "server_error: HTTP 502"},
    ]


def test_breaker_full_cycle(gateway: GatewayProcess, backends: dict[str, SimServe]) -> None:
    faults(backends["primary"], error_rate=1.0, error_status=500)
    for _ in range(2):
        assert _completion(gateway.url, model="chat")[1]["X-Modelyard-Attempts"] == "2"
    # open: the primary is skipped without an attempt
    status, headers, _ = _completion(gateway.url, model="chat")
    assert headers["X-Modelyard-Model"] == "fallback" and headers["X-Modelyard-Attempts"] == "1"
    health = json.loads(_get(gateway.url + "/health")[1])
    assert next(b for b in health["backends"] if b["model"] == "primary")["breaker"] == "open"
    faults(backends["primary"])
    # open_for: 1 s, then one half-open probe decides
    poll_until(lambda: _backend(gateway.url, "primary")["breaker"] == "half_open", "half-open")
    status, headers, _ = _completion(gateway.url, model="chat")
    assert status == 200 and headers["X-Modelyard-Model"] == "primary"
    health = json.loads(_get(gateway.url + "/health")[1])
    assert next(b for b in health["backends"] if b["model"] == "primary")["breaker"] == "closed"
    _, metrics = _get(gateway.url + "/metrics")
    # the three answers the fallback gave while the primary failed or was open
    fallbacks = _sample(
        metrics, "modelyard_gateway_fallbacks_total", route="chat", model="fallback"
    )
    assert fallbacks == 3


def test_warm_up_reaches_the_fallback(backends: dict[str, SimServe], tmp_path: Path) -> None:
    def served(name: str) -> float:
        text = _get(backends[name].url() + "/metrics")[1].decode()
        line = next(x for x in text.splitlines() if x.startswith("vllm:request_success_total"))
        return float(line.split()[-1])

    before_primary, before_fallback = served("primary"), served("fallback")
    running = start_gateway(_write_fleet(tmp_path, backends), tmp_path)
    try:
        deadline = time.monotonic() + 10
        while served("fallback") <= before_fallback and time.monotonic() < deadline:
            time.sleep(0.05)
        # both are fallbacks of some route (primary in 'summary'), and no client sent anything
        assert served("fallback") > before_fallback
        assert served("primary") > before_primary
        metrics = _get(running.url + "/metrics")[1]
        warmed = _sample(metrics, "modelyard_gateway_warmups_total", model="fallback", outcome="ok")
        assert warmed is not None and warmed >= 1
    finally:
        running.stop()


def test_starts_with_backends_down_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "down.yaml"
    path.write_text(FLEET.format(p=1, f=2, interval="200ms"))
    running = start_gateway(path, tmp_path)
    try:
        deadline = time.monotonic() + 10
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            health = json.loads(_get(running.url + "/health")[1])
            if all(b["healthy"] is False for b in health["backends"]):
                break
            time.sleep(0.05)
        assert health["status"] == "unavailable" and health["serving"] is False
        assert _get(running.url + "/health")[0] == 503  # what load balancers read
        status, _, body = _completion(running.url, model="chat")
        assert status == 503 and "all candidates failed" in body["error"]["message"]
        assert "127.0.0.1" not in json.dumps(body)  # backend addresses stay in /health
    finally:
        running.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_lets_a_stream_finish(
    backends: dict[str, SimServe], tmp_path: Path, signum: int
) -> None:
    """Started with SIGINT ignored (as a shell's background job is), either signal stops it:
    no new connections, the stream in flight finishes, exit 0."""
    running = start_gateway(_write_fleet(tmp_path, backends), tmp_path, sigint_ignored=True)

    async def long_stream() -> list[bytes]:
        body = {"model": "chat", "prompt": "x", "max_tokens": 400, "stream": True}
        events = []
        async with (
            aiohttp.ClientSession() as s,
            s.post(running.url + "/v1/completions", json=body) as r,
        ):
            async for line in r.content:
                if line.strip():
                    events.append(line.strip())
                if len(events) == 3:
                    running.process.send_signal(signum)
                    poll_until(
                        lambda: refuses_connections(running.url), "the gateway stops accepting"
                    )
        return events

    try:
        events = asyncio.run(long_stream())
        assert events[-1] == b"data: [DONE]"
        assert len([e for e in events if b'"text"' in e]) >= 100  # the whole stream, not a cut
        assert running.process.wait(timeout=15) == 0
        log = running.log.read_text()
        assert f"stopped on {signal.Signals(signum).name}" in log and "Traceback" not in log
    finally:
        running.stop()


def test_reload_on_sighup(backends: dict[str, SimServe], tmp_path: Path) -> None:
    path = _write_fleet(tmp_path, backends)
    running = start_gateway(path, tmp_path)
    try:
        path.write_text("name: [broken\n")
        running.process.send_signal(signal.SIGHUP)
        poll_until(lambda: "rejected" in running.log.read_text(), "the broken fleet is rejected")
        assert _completion(running.url, model="chat")[0] == 200  # the old fleet serves on
        path.write_text(
            _fleet_text(backends).replace(
                "routes:\n",
                "routes:\n  - {name: quick, match: {task: quick}, targets: [fallback]}\n",
            )
        )
        running.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while _completion(running.url, model="quick")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, headers, _ = _completion(running.url, model="quick")
        assert status == 200 and headers["X-Modelyard-Model"] == "fallback"
        assert "rejected" in running.log.read_text()
    finally:
        running.stop()


def test_api_keys_body_limit_and_rate_limit(backends: dict[str, SimServe], tmp_path: Path) -> None:
    from modelyard.gateway.auth import hash_key

    path = _write_fleet(
        tmp_path,
        backends,
        extra=f"""\
gateway:
  api_key_hashes: ["{hash_key("sk-good")}"]
  max_body_bytes: 2000
  rate_limit: {{requests_per_second: 1, burst: 3}}
""",
    )
    running = start_gateway(path, tmp_path)
    try:

        async def call(key: str | None, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            async with (
                aiohttp.ClientSession() as s,
                s.post(running.url + "/v1/completions", json=body, headers=headers) as r,
            ):
                return r.status, dict(r.headers), await r.json()

        small = {"model": "chat", "prompt": "x", "max_tokens": 1}
        status, _, body = asyncio.run(call(None, small))
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        status, _, body = asyncio.run(call("sk-bad", small))
        assert status == 401
        status, _, body = asyncio.run(call("sk-good", {**small, "prompt": "x" * 5000}))
        assert status == 413 and body["error"]["code"] == "request_too_large"
        codes = [asyncio.run(call("sk-good", small))[0] for _ in range(4)]
        assert codes[:2] == [200, 200] and codes[-1] == 429  # burst 3, one already used by 413
        status, headers, body = asyncio.run(call("sk-good", small))
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert _get(running.url + "/health")[0] == 200  # probes need no key
        # access lines are written in batches: wait for the one naming the key
        shown = hash_key("sk-good")[:8]
        poll_until(lambda: shown in running.log.read_text(), "an access line naming the key")
        log = running.log.read_text()
        assert "sk-good" not in log and '"request_id"' in log
    finally:
        running.stop()


def test_access_log_names_route_model_and_outcome(gateway: GatewayProcess) -> None:
    status, headers, _ = _completion(gateway.url, model="chat")
    assert status == 200
    deadline = time.monotonic() + 5
    line = ""
    while time.monotonic() < deadline:
        lines = [
            record
            for x in gateway.log.read_text().splitlines()
            if x.startswith("{") and (record := json.loads(x)).get("event") == "access"
        ]
        request_id = {k.lower(): v for k, v in headers.items()}["x-request-id"]
        match = [x for x in lines if x["request_id"] == request_id]
        if match:
            line = match[0]
            break
        time.sleep(0.05)
    assert line and line["route"] == "chat" and line["model"] == "primary"  # type: ignore[index]
    assert line["outcome"] == "ok" and line["attempts"] == 1 and line["status"] == 200  # type: ignore[index]


def test_engine_queue_is_read_from_metrics(backends: dict[str, SimServe], tmp_path: Path) -> None:
    """With weight_by_engine_load the gateway reads each replica's queue from a real `sim
    serve`'s /metrics, through its adapter."""
    from modelyard.fleet import load_fleet
    from modelyard.gateway.clock import LoopClock
    from modelyard.gateway.health import read_engine_load
    from modelyard.gateway.state import Gateway
    from modelyard.http.client import Pool

    path = _write_fleet(tmp_path, backends, extra="gateway: {weight_by_engine_load: true}\n")
    loaded = load_fleet(path)

    async def run(url: str) -> tuple[Any, float]:
        pool = Pool()
        gateway = Gateway.build(loaded, {"primary": [url]}, pool, LoopClock(), environ={})
        backend = gateway.backends["primary"][0]
        backend.engine_waiting = 5.0  # stale value: the read must replace it with the engine's
        try:
            metrics = await read_engine_load(gateway, backend)
        finally:
            pool.close()
        return metrics, backend.engine_waiting

    metrics, waiting = asyncio.run(run(backends["primary"].url()))
    assert metrics is not None and metrics.waiting == 0.0 and metrics.running is not None
    assert waiting == 0.0
    # unreachable: the load falls back to 0, no exception
    assert asyncio.run(run(f"http://127.0.0.1:{free_port('127.0.0.1')}")) == (None, 0.0)
