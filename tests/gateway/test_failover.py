"""Every row of the failure-policy table (docs/gateway.md), the breaker's cycle and the pure
next-candidate decision, in this process: fake engines, a fake clock (deadlines fire when the
test moves it), the gateway's real application in front."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from modelyard.gateway.breaker import Breaker
from modelyard.gateway.failover import GiveUp, Next, Tried, next_candidate
from modelyard.gateway.state import BackendState
from tests.gateway.fakes import Faults, System, eventually, run, running

CHAT = {"model": "chat", "prompt": "hello", "max_tokens": 5}


async def _completion(system: System, **extra: Any) -> tuple[int, Any, Any]:
    return await system.post("/v1/completions", {**CHAT, **extra})


async def _deadline_passes(system: System, model: str, seconds: float) -> None:
    """Wait until `model`'s engine has the request, then move the clock past a deadline."""
    await eventually(lambda: bool(system.engine(model).generations()), f"{model} asked")
    system.clock.advance(seconds)


@pytest.mark.parametrize(
    "faults",
    [
        Faults(status=500),
        Faults(status=502),
        Faults(status=503),
        Faults(status=429),
        Faults(refuse=True),
        Faults(close_after_tokens=0),
        Faults(malformed_after_tokens=0),
    ],
    ids=["500", "502", "503", "429", "refused", "reset", "malformed"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_failure_before_the_first_token_goes_to_the_fallback(
    tmp_path: Path, faults: Faults, stream: bool
) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            system.engine("primary").faults = faults
            if stream:
                async with system.client.post(
                    "/v1/completions", json={**CHAT, "stream": True}
                ) as response:
                    headers = response.headers
                    lines = [line.strip() async for line in response.content if line.strip()]
                assert lines[-1] == b"data: [DONE]"
                assert sum(b'"text":"w' in line for line in lines) == 5
            else:
                status, headers, body = await _completion(system)
                assert status == 200, body
                assert body["choices"][0]["text"] == "w0 w1 w2 w3 w4 "
            assert headers["X-Modelyard-Model"] == "fallback"
            assert headers["X-Modelyard-Attempts"] == "2"
            assert (
                system.metric("modelyard_gateway_fallbacks_total", route="chat", model="fallback")
                == 1.0
            )

    run(scenario)


@pytest.mark.parametrize("where", ["headers", "first token"])
def test_a_backend_slower_than_the_first_token_deadline_is_cut_off(
    tmp_path: Path, where: str
) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            primary = system.engine("primary")
            primary.faults = (
                Faults(hang=True) if where == "headers" else Faults(first_token_delay_s=60)
            )
            request = asyncio.create_task(_completion(system))
            await _deadline_passes(system, "primary", 1.0)  # timeouts.first_token
            status, headers, _ = await request
            assert status == 200 and headers["X-Modelyard-Model"] == "fallback"
            health = system.gateway.backends["primary"][0]
            expected = "no response headers in time" if where == "headers" else "no first token"
            assert health.last_error.startswith(f"first_token_timeout: {expected}")
            if where == "first token":
                assert system.transport.responses[0].closed  # the upstream was told to stop

    run(scenario)


def test_a_stall_after_the_first_token_retries_a_whole_answer(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            primary = system.engine("primary")
            primary.faults = Faults(stall_after_tokens=2)
            request = asyncio.create_task(_completion(system))
            await eventually(lambda: primary.tokens_sent == 2, "two tokens")
            system.clock.advance(0.999)
            await asyncio.sleep(0)
            assert not request.done()  # the idle deadline (1 s) restarted at the last token
            system.clock.advance(0.002)
            status, headers, body = await request
            assert status == 200 and headers["X-Modelyard-Model"] == "fallback"
            assert body["usage"]["completion_tokens"] == 5
            assert system.gateway.backends["primary"][0].last_error == (
                "idle_timeout: no event for 1 s"
            )

    run(scenario)


def test_a_stream_that_fails_after_its_first_byte_ends_with_an_error_event(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            system.engine("primary").faults = Faults(close_after_tokens=2)
            lines = await system.stream(CHAT)
            texts = [line for line in lines if b'"text":"w' in line]
            assert len(texts) == 2
            assert lines[-1].startswith(b'data: {"error"') and b"failed mid-stream" in lines[-1]
            assert b"data: [DONE]" not in lines  # never a clean end
            assert system.engine("fallback").generations() == []
            assert (
                system.metric(
                    "modelyard_gateway_requests_total",
                    route="chat",
                    model="primary",
                    outcome="mid_stream",
                )
                == 1.0
            )

    run(scenario)


@pytest.mark.parametrize(
    ("faults", "status"),
    [
        (
            Faults(
                status=400,
                error_body={
                    "error": {
                        "message": "This model's maximum context length is 4096 tokens.",
                        "type": "BadRequestError",
                        "code": 400,
                    }
                },
            ),
            400,
        ),
        (
            Faults(
                status=500,
                error_body={
                    "object": "error",
                    "message": "This model's maximum context length is 4096 tokens.",
                    "type": "BadRequestError",
                    "code": 500,
                },
            ),
            500,
        ),
        (Faults(status=501, error_body=b'{"detail": "Not Found"}'), 501),
    ],
    ids=["context-400", "context-500", "501"],
)
def test_client_errors_are_returned_not_retried_and_never_trip_the_breaker(
    tmp_path: Path, faults: Faults, status: int
) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            system.engine("primary").faults = faults
            for _ in range(3):  # more than consecutive_failures
                got, headers, body = await _completion(system)
                assert got == status
                assert headers["X-Modelyard-Model"] == "primary"
                assert set(body["error"]) >= {"message", "type", "code"}
            assert system.engine("fallback").generations() == []
            breaker = system.gateway.backends["primary"][0].breaker
            assert breaker.state.value == "closed" and breaker.failures == 0

    run(scenario)


def test_429_backs_the_replica_off_without_tripping_its_breaker(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            primary = system.engine("primary")
            primary.faults = Faults(status=429, retry_after="2")
            attempts = []
            for _ in range(4):
                _, headers, _ = await _completion(system)
                assert headers["X-Modelyard-Model"] == "fallback"
                attempts.append(headers["X-Modelyard-Attempts"])
            assert attempts == ["2", "1", "1", "1"]  # backing off: skipped without an attempt
            backend = system.gateway.backends["primary"][0]
            assert backend.breaker.state.value == "closed"
            assert backend.backoff_until - system.clock.now() == pytest.approx(2.0)
            primary.faults = Faults()
            system.clock.advance(2.0)
            assert (await _completion(system))[1]["X-Modelyard-Model"] == "primary"

    run(scenario)


def test_every_candidate_failing_is_a_503_naming_models_and_reasons(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            system.engine("primary").faults = Faults(status=502)
            system.engine("fallback").faults = Faults(refuse=True)
            status, _, body = await _completion(system)
            assert status == 503
            assert body["error"]["tried"] == [
                {"model": "primary", "error": "server_error: HTTP 502"},
                {"model": "fallback", "error": "connect_error: cannot connect"},
            ]
            assert "fallback:8000" not in str(body)  # addresses only in /health and the log
            assert (
                system.metric(
                    "modelyard_gateway_requests_total",
                    route="chat",
                    model="",
                    outcome="unavailable",
                )
                == 1.0
            )

    run(scenario)


def test_the_breaker_opens_half_opens_and_closes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            primary = system.engine("primary")
            primary.faults = Faults(status=500)
            for _ in range(2):  # consecutive_failures: 2
                assert (await _completion(system))[1]["X-Modelyard-Attempts"] == "2"
            asked = len(primary.generations())
            _, headers, _ = await _completion(system)  # open: skipped without an attempt
            assert headers["X-Modelyard-Model"] == "fallback"
            assert headers["X-Modelyard-Attempts"] == "1"
            assert len(primary.generations()) == asked
            status, body = await _get_json(system, "/health")
            primary_health = next(b for b in body["backends"] if b["model"] == "primary")
            assert status == 200 and primary_health["breaker"] == "open"
            primary.faults = Faults()
            system.clock.advance(0.999)
            assert (await _completion(system))[1]["X-Modelyard-Model"] == "fallback"
            system.clock.advance(0.001)  # open_for: 1s; one probe decides
            status, headers, _ = await _completion(system)
            assert status == 200 and headers["X-Modelyard-Model"] == "primary"
            assert system.gateway.backends["primary"][0].breaker.state.value == "closed"
            fallbacks = system.metric(
                "modelyard_gateway_fallbacks_total", route="chat", model="fallback"
            )
            assert fallbacks == 4.0  # two failed-over, one skipped while open, one before open_for
            assert (
                system.metric(
                    "modelyard_gateway_breaker_state",
                    model="primary",
                    backend="http://primary:8000",
                )
                == 0.0
            )

    run(scenario)


async def _get_json(system: System, path: str) -> tuple[int, Any]:
    async with system.client.get(path) as response:
        return response.status, await response.json()


def test_a_task_selects_its_route(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            status, headers, _ = await _completion(system, metadata={"task": "summary"})
            assert status == 200 and headers["X-Modelyard-Model"] == "fallback"
            _, headers, _ = await system.post(
                "/v1/completions", CHAT, headers={"X-Modelyard-Task": "summary"}
            )
            assert headers["X-Modelyard-Model"] == "fallback"
            status, _, body = await _completion(system, model="gpt-9")
            assert status == 404 and body["error"]["code"] == "model_not_found"

    run(scenario)


# --- the pure decision ---------------------------------------------------------------------


def _backend(model: str, url: str, failures_to_open: int = 1) -> BackendState:
    return BackendState(model, url, "sim", Breaker(failures_to_open, 10.0, 1))


def test_next_candidate_goes_through_models_then_other_replicas() -> None:
    backends = {
        "a": [_backend("a", "a1"), _backend("a", "a2")],
        "b": [_backend("b", "b1")],
    }
    rng = random.Random(0)
    tried: list[Tried] = []
    order = []
    while True:
        decision = next_candidate(("a", "b"), backends, tried, 0.0, 5, 0.05, False, rng)
        if isinstance(decision, GiveUp):
            break
        order.append((decision.backend.url, decision.backoff_s))
        tried.append(Tried(decision.backend.model, decision.backend.url, "server_error"))
    assert [url[0] for url, _ in order] == ["a", "b", "a"]  # a, b, then a's other replica
    assert [backoff for _, backoff in order] == [0.0, 0.0, 0.05]  # back-off before a again
    assert {order[0][0], order[2][0]} == {"a1", "a2"}  # each replica once
    assert decision.tried == (
        {"model": "a", "error": "server_error"},
        {"model": "a", "error": "server_error"},
        {"model": "b", "error": "server_error"},
    )


def test_next_candidate_skips_open_breakers_and_backing_off_replicas_and_says_why() -> None:
    opened = _backend("a", "a1")
    opened.breaker.on_failure(0.0)
    paused = _backend("b", "b1")
    paused.backoff_until = 5.0
    ok = _backend("c", "c1")
    backends = {"a": [opened], "b": [paused], "c": [ok]}
    decision = next_candidate(
        ("a", "b", "c", "d"), backends, [], 1.0, 3, 0.0, False, random.Random(0)
    )
    assert isinstance(decision, Next) and decision.backend is ok
    given_up = next_candidate(
        ("a", "b", "c", "d"),
        backends,
        [Tried("c", "c1", "boom")],
        1.0,
        3,
        0.0,
        False,
        random.Random(0),
    )
    assert isinstance(given_up, GiveUp)
    assert given_up.tried == (
        {"model": "a", "error": "breaker open"},
        {"model": "b", "error": "rate limited, backing off"},
        {"model": "c", "error": "boom"},
        {"model": "d", "error": "no backend"},
    )
    # the breaker admits again once open_for passed; the back-off ends at its time
    later = next_candidate(("a", "b"), backends, [], 10.0, 3, 0.0, False, random.Random(0))
    assert isinstance(later, Next) and later.backend is opened
    assert opened.breaker.probes_in_flight == 0  # deciding changed nothing


def test_next_candidate_stops_at_the_attempt_budget() -> None:
    backends = {"a": [_backend("a", "a1"), _backend("a", "a2")]}
    decision = next_candidate(
        ("a",), backends, [Tried("a", "a1", "x")], 0.0, 1, 0.0, False, random.Random(0)
    )
    assert isinstance(decision, GiveUp)
    assert decision.tried == ({"model": "a", "error": "x"},)


def test_next_candidate_weighs_the_engines_queue_when_asked() -> None:
    busy, idle = _backend("a", "busy"), _backend("a", "idle")
    busy.engine_waiting = 50.0
    idle.outstanding = 1
    backends = {"a": [busy, idle]}
    picks = {
        next_candidate(("a",), backends, [], 0.0, 1, 0.0, weigh, random.Random(seed)).backend.url  # type: ignore[union-attr]
        for seed in range(20)
        for weigh in (True,)
    }
    assert picks == {"idle"}
    unweighed = {
        next_candidate(("a",), backends, [], 0.0, 1, 0.0, False, random.Random(seed)).backend.url  # type: ignore[union-attr]
        for seed in range(20)
    }
    assert unweighed == {"busy"}
