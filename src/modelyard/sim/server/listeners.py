"""The ports of one `sim serve` process: one listening socket per engine, and the fault that
closes one for a while (`refuse_connections_s`: open connections dropped, new ones refused,
then it listens again)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from modelyard.sim.errors import SimError


@dataclass
class _Port:
    runner: web.AppRunner
    host: str
    port: int
    site: web.TCPSite


class Listeners:
    """Each engine's application on its port, by engine name."""

    def __init__(self) -> None:
        self._ports: dict[str, _Port] = {}

    async def add(self, name: str, app: web.Application, host: str, port: int) -> None:
        """Set `app` up on `host:port`, not listening yet (`listen`)."""
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._ports[name] = _Port(runner, host, port, web.TCPSite(runner, host, port))

    async def listen(self, name: str) -> None:
        """SimError naming the port when it is taken."""
        entry = self._ports[name]
        entry.site = web.TCPSite(entry.runner, entry.host, entry.port, reuse_address=True)
        try:
            await entry.site.start()
        except OSError as exc:
            raise SimError(
                f"{name}: cannot listen on {entry.host}:{entry.port}: {exc.strerror or exc}"
                " (is another server running there? pick another --port)"
            ) from exc

    async def refuse(self, name: str, wall_s: float, listening: bool = True) -> None:
        """Refuse connections for `wall_s` seconds (dropping those open), then listen again."""
        entry = self._ports[name]
        if listening:
            await entry.site.stop()
            server = entry.runner.server
            for handler in server.connections if server is not None else []:
                handler.force_close()
        await asyncio.sleep(wall_s)
        await self.listen(name)

    async def close(self) -> None:
        for entry in self._ports.values():
            await entry.runner.cleanup()
