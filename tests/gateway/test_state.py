"""Reloading the fleet file (SIGHUP runs `server.reload`): everything the file says is
replaced at once — routes, API keys, the rate limit, deadlines — and backends that stay keep
their breakers."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.errors import ConfigError
from modelyard.gateway.auth import hash_key
from modelyard.gateway.server import reload
from tests.gateway.fakes import fleet_text, run, running

SMALL = {"model": "chat", "prompt": "x", "max_tokens": 1}


def _keys(*keys: str, rate: str = "") -> str:
    hashes = ", ".join(f'"{hash_key(k)}"' for k in keys)
    return f"gateway:\n  api_key_hashes: [{hashes}]\n{rate}"


def test_a_reload_replaces_api_keys_and_the_rate_limit(tmp_path: Path) -> None:
    async def scenario() -> None:
        limited = "  rate_limit: {requests_per_second: 1, burst: 1}\n"
        async with running(tmp_path, extra=_keys("sk-old", rate=limited)) as system:
            old = {"Authorization": "Bearer sk-old"}
            new = {"Authorization": "Bearer sk-new"}
            assert (await system.post("/v1/completions", SMALL, headers=old))[0] == 200
            assert (await system.post("/v1/completions", SMALL, headers=old))[0] == 429
            system.fleet_path.write_text(fleet_text(_keys("sk-new")))
            reload(system.gateway, system.fleet_path, None)
            assert (await system.post("/v1/completions", SMALL, headers=old))[0] == 401
            codes = [
                (await system.post("/v1/completions", SMALL, headers=new))[0] for _ in range(3)
            ]
            assert codes == [200, 200, 200]  # no rate limit any more

    run(scenario)


def test_a_reload_keeps_the_breakers_of_backends_that_stay(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            system.engine("primary").faults.status = 500
            await system.post("/v1/completions", SMALL)
            kept = system.gateway.backends["primary"][0]
            assert kept.breaker.failures == 1
            system.gateway.cards["primary"] = {"id": "primary"}
            routes = "  - {name: quick, match: {task: quick}, targets: [fallback]}\n"
            system.fleet_path.write_text(
                fleet_text(routes=routes, fallback='"http://fallback:8000", "http://other:8000"')
            )
            reload(system.gateway, system.fleet_path, None)
            assert system.gateway.backends["primary"][0] is kept
            assert [b.url for b in system.gateway.backends["fallback"]] == [
                "http://fallback:8000",
                "http://other:8000",
            ]
            assert system.gateway.cards == {}  # fetched again, from the new endpoints
            status, headers, _ = await system.post("/v1/completions", {**SMALL, "model": "quick"})
            assert status == 200 and headers["X-Modelyard-Model"] == "fallback"

    run(scenario)


def test_a_fleet_file_that_does_not_validate_is_rejected_and_the_old_one_serves(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            config = system.gateway.config
            system.fleet_path.write_text("name: [broken\n")
            with pytest.raises(ConfigError):
                reload(system.gateway, system.fleet_path, None)
            assert system.gateway.config is config
            assert (await system.post("/v1/completions", SMALL))[0] == 200

    run(scenario)
