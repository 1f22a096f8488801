"""The gateway and simulated engines in this process, over real loopback HTTP: one event loop,
no subprocesses, ports picked free. For tests that compare what a client gets from an engine
directly with what it gets through the gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from modelyard.engines.launcher import free_port
from modelyard.fleet import load_fleet
from modelyard.gateway.app import Gateway, create_app
from modelyard.gateway.server import endpoints_for
from modelyard.sim.server import ServeOptions, SimServer, build_models

HOST = "127.0.0.1"
SPEED = 50.0


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


def fleet_text(
    ports: dict[str, int], routes: str, policy: str = "", engines: dict[str, str] | None = None
) -> str:
    """A fleet of the given models, each at its port; `engines` names another engine kind for
    some (the gateway takes what they serve from that engine's adapter)."""
    kinds = engines or {}
    models = "\n".join(
        f"  {name}: {{catalog: qwen2.5-7b, engine: {kinds.get(name, 'sim')}, gpu: h100-sxm, "
        "max_model_len: 4096, "
        f'endpoints: ["http://{HOST}:{port}"]}}'
        for name, port in ports.items()
    )
    return f"name: in-process\nplacement: isolated\nmodels:\n{models}\nroutes:\n{routes}\n{policy}"


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    models: tuple[str, ...],
    routes: str,
    policy: str = "",
    engines: dict[str, str] | None = None,
) -> AsyncIterator[Running]:
    """Simulated engines for `models` (at SPEED times real time) and a gateway before them."""
    ports = {name: free_port(HOST) for name in models}
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_text(ports, routes, policy, engines))
    loaded = load_fleet(path)
    driver, sims = build_models(loaded, ServeOptions(speed=SPEED, cold_start_s=0.0))
    by_name = {sim.served_name: sim for sim in sims}
    server = SimServer([by_name[name] for name in models], driver)
    await server.start(HOST, [ports[name] for name in models])
    driving = asyncio.get_running_loop().create_task(driver.run())
    gateway = Gateway.build(loaded, endpoints_for(loaded, None))
    runner = web.AppRunner(create_app(gateway), access_log=None)
    await runner.setup()
    port = free_port(HOST)
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    try:
        yield Running(
            f"http://{HOST}:{port}",
            {name: f"http://{HOST}:{p}" for name, p in ports.items()},
            gateway,
        )
    finally:
        await runner.cleanup()
        driving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driving
        await server.stop()
