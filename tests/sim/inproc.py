"""Simulated engines served in this process (`sim serve` without a subprocess): real loopback
HTTP, free ports, the driver on the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from modelyard.engines.launcher import free_port
from modelyard.fleet import LoadedFleet, load_fleet
from modelyard.sim.server import ServeOptions, SimServer, build_models

HOST = "127.0.0.1"
SPEED = 50.0


def fleet_text(
    ports: dict[str, int], routes: str, policy: str = "", engines: dict[str, str] | None = None
) -> str:
    """A fleet of the given models, each at its port; `engines` names another engine kind for
    some (a gateway takes what they serve from that engine's adapter)."""
    kinds = engines or {}
    models = "\n".join(
        f"  {name}: {{catalog: qwen2.5-7b, engine: {kinds.get(name, 'sim')}, gpu: h100-sxm, "
        f'max_model_len: 4096, endpoints: ["http://{HOST}:{port}"]}}'
        for name, port in ports.items()
    )
    return f"name: in-process\nplacement: isolated\nmodels:\n{models}\nroutes:\n{routes}\n{policy}"


@contextlib.asynccontextmanager
async def sim_engines(
    tmp_path: Path,
    models: tuple[str, ...],
    routes: str = "  - {targets: [%s]}",
    policy: str = "",
    engines: dict[str, str] | None = None,
) -> AsyncIterator[tuple[LoadedFleet, dict[str, str]]]:
    """Simulated engines for `models` at SPEED times real time: the fleet naming them at their
    URLs, and each model's URL."""
    ports = {name: free_port(HOST) for name in models}
    if "%s" in routes:
        routes = routes % ", ".join(models)
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_text(ports, routes, policy, engines))
    loaded = load_fleet(path)
    driver, sims = build_models(loaded, ServeOptions(speed=SPEED, cold_start_s=0.0))
    by_name = {sim.served_name: sim for sim in sims}
    server = SimServer([by_name[name] for name in models], driver)
    await server.start(HOST, [ports[name] for name in models])
    driving = asyncio.get_running_loop().create_task(driver.run())
    try:
        yield loaded, {name: f"http://{HOST}:{port}" for name, port in ports.items()}
    finally:
        driving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driving
        await server.stop()
