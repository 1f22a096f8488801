"""The gateway and simulated engines in this process, over real loopback HTTP: one event loop,
no subprocesses, ports picked free. For tests that compare what a client gets from an engine
directly with what it gets through the gateway."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from modelyard.engines.launcher import free_port
from modelyard.gateway.app import create_app
from modelyard.gateway.clock import LoopClock
from modelyard.gateway.server import endpoints_for
from modelyard.gateway.state import Gateway
from modelyard.http.client import Pool
from tests.sim.inproc import HOST, sim_engines


@dataclass
class Running:
    gateway_url: str
    engines: dict[str, str]  # fleet model -> its sim engine's URL
    gateway: Gateway

    async def faults(self, model: str, **values: object) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.engines[model] + "/_sim/faults", json=values) as response,
        ):
            assert response.status == 200, await response.text()


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    models: tuple[str, ...],
    routes: str,
    policy: str = "",
    engines: dict[str, str] | None = None,
) -> AsyncIterator[Running]:
    """Simulated engines for `models` and a gateway before them."""
    async with sim_engines(tmp_path, models, routes, policy, engines) as (loaded, urls):
        gateway = Gateway.build(loaded, endpoints_for(loaded, None), Pool(), LoopClock())
        runner = web.AppRunner(create_app(gateway), access_log=None)
        await runner.setup()
        port = free_port(HOST)
        await web.TCPSite(runner, HOST, port).start()
        try:
            yield Running(f"http://{HOST}:{port}", urls, gateway)
        finally:
            await runner.cleanup()
