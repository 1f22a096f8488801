"""Health checks (all backends at once, each with its own timeout), the engines' queues, and
warm-up, in this process on fake engines and a fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

from modelyard.gateway.health import check_all, read_engine_load
from modelyard.gateway.server import reload
from tests.gateway.fakes import System, eventually, fleet_text, run, running

TWO_FALLBACKS = '"http://fallback:8000", "http://other:8000"'


def _health_checks(system: System, name: str) -> int:
    return sum(r.path == "/health" for r in system.engine(name).requests)


def test_one_hung_backend_does_not_delay_the_others(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            system.fleet_path.write_text(fleet_text(fallback=TWO_FALLBACKS))
            reload(system.gateway, system.fleet_path, None)
            system.engine("other").faults.health_hang = True
            checking = asyncio.create_task(check_all(system.gateway))
            backends = {b.url: b for bs in system.gateway.backends.values() for b in bs}
            await eventually(
                lambda: (
                    backends["http://primary:8000"].healthy is True
                    and backends["http://fallback:8000"].healthy is True
                ),
                "the responsive backends checked",
            )
            assert not checking.done() and backends["http://other:8000"].healthy is None
            system.clock.advance(4.999)
            await asyncio.sleep(0)
            assert not checking.done()
            system.clock.advance(0.001)  # the check's timeout: min(interval, 5 s)
            await checking
            hung = backends["http://other:8000"]
            assert hung.healthy is False and hung.breaker.failures == 1
            assert (
                system.metric(
                    "modelyard_gateway_backend_healthy", model="fallback", backend=hung.url
                )
                == 0.0
            )

    run(scenario)


def test_checks_run_every_interval_and_a_dead_backend_is_skipped_without_a_request(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with running(tmp_path, background=True) as system:
            await eventually(lambda: _health_checks(system, "primary") == 1, "the first check")
            system.engine("primary").faults.health_status = 503
            system.clock.advance(29.9)
            await asyncio.sleep(0)
            assert _health_checks(system, "primary") == 1
            system.clock.advance(0.1)  # health.interval: 30s
            await eventually(lambda: _health_checks(system, "primary") == 2, "the second check")
            await eventually(
                lambda: system.gateway.backends["primary"][0].healthy is False, "marked unhealthy"
            )
            assert system.gateway.backends["primary"][0].breaker.failures == 1
            system.clock.advance(30.0)
            await eventually(lambda: _health_checks(system, "primary") == 3, "the third check")
            await eventually(
                lambda: system.gateway.backends["primary"][0].breaker.state.value == "open",
                "two failed checks open the breaker",
            )
            generations = len(system.engine("primary").generations())
            status, headers, _ = await system.post(
                "/v1/completions", {"model": "chat", "prompt": "x", "max_tokens": 1}
            )
            assert status == 200 and headers["X-Modelyard-Model"] == "fallback"
            assert headers["X-Modelyard-Attempts"] == "1"
            assert len(system.engine("primary").generations()) == generations  # not asked

    run(scenario)


def test_with_every_backend_down_health_says_503_and_requests_get_reasons(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            for name in ("primary", "fallback"):
                system.engine(name).faults.refuse = True
            async with system.client.get("/health") as response:
                assert response.status == 200  # not checked yet: nothing known to be down
            await check_all(system.gateway)
            async with system.client.get("/health") as response:
                body = await response.json()
            assert response.status == 503
            assert body["status"] == "unavailable" and body["serving"] is False
            assert body["routes"] == {"task:summary": False, "chat": False}
            assert all(b["healthy"] is False for b in body["backends"])
            status, _, answer = await system.post(
                "/v1/completions", {"model": "chat", "prompt": "x"}
            )
            assert status == 503 and "all candidates failed" in answer["error"]["message"]
            assert "primary:8000" not in str(answer)

    run(scenario)


def test_the_engines_queue_is_read_through_its_adapter(tmp_path: Path) -> None:
    async def scenario() -> None:
        extra = "gateway: {weight_by_engine_load: true}\n"
        async with running(tmp_path, extra=extra) as system:
            backend = system.gateway.backends["primary"][0]
            system.engine("primary").faults.waiting = 7.0
            await check_all(system.gateway)
            assert backend.engine_waiting == 7.0
            system.engine("primary").faults.refuse = True
            metrics = await read_engine_load(system.gateway, backend)
            assert metrics is None and backend.engine_waiting == 0.0  # unread: no weight

    run(scenario)


def test_warm_up_reaches_every_fallback_at_start_and_every_warmup_every(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path, background=True) as system:
            # both are a fallback in some route (primary in `summary`); no client sent anything
            for name in ("primary", "fallback"):
                await eventually(
                    lambda n=name: len(system.engine(n).generations()) == 1,
                    f"{name} warmed",  # type: ignore[misc]
                )
            warm = system.engine("fallback").generations()[0].json()
            assert warm["max_tokens"] == 1 and warm["model"] == "fallback"
            assert (
                system.metric("modelyard_gateway_warmups_total", model="fallback", outcome="ok")
                == 1.0
            )
            # the warm-up loop asleep for its hour (both warm-ups done), then the hour passes
            hour_from_now = system.clock.now() + 3600.0
            await eventually(
                lambda: system.clock.sleeping_until(hour_from_now), "the warm-up loop asleep"
            )
            system.clock.advance(3600.0)  # health.warmup_every: 1h
            await eventually(
                lambda: len(system.engine("fallback").generations()) == 2, "warmed again"
            )

    run(scenario)
