"""Running the gateway: endpoints from the fleet or a running `up`, graceful shutdown on
SIGTERM/SIGINT, reload on SIGHUP (a bad new fleet file is rejected and the old one serves on)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from modelyard.engines.state import read_state
from modelyard.errors import ModelyardError
from modelyard.fleet import LoadedFleet, load_fleet
from modelyard.gateway.app import Gateway, create_app
from modelyard.gateway.errors import GatewayError
from modelyard.gateway.routing import Router

log = logging.getLogger("modelyard.gateway")


def endpoints_for(loaded: LoadedFleet, state_dir: Path | None) -> dict[str, list[str]]:
    """Each model's backend URLs: the fleet's `endpoints`, else what `up` started."""
    started: dict[str, list[str]] = {}
    if state_dir is not None:
        for process in read_state(state_dir):
            started.setdefault(process.model, []).append(process.url)
    endpoints: dict[str, list[str]] = {}
    missing = []
    for name, model in loaded.fleet.models.items():
        urls = list(model.endpoints) or started.get(name, [])
        if not urls:
            missing.append(name)
        endpoints[name] = urls
    if missing:
        raise GatewayError(
            f"no endpoints for {', '.join(missing)}: list `endpoints:` in the fleet or start "
            "the engines with `modelyard up` (and pass its --state-dir)"
        )
    return endpoints


def reload(gateway: Gateway, path: Path, state_dir: Path | None) -> None:
    """Swap in a new fleet file; keep breakers of backends that stay."""
    loaded = load_fleet(path)
    fresh = Gateway.build(loaded, endpoints_for(loaded, state_dir))
    old = {(b.model, b.url): b for replicas in gateway.backends.values() for b in replicas}
    for replicas in fresh.backends.values():
        for index, backend in enumerate(replicas):
            kept = old.get((backend.model, backend.url))
            if kept is not None:
                replicas[index] = kept
    gateway.loaded = loaded
    gateway.backends = fresh.backends
    gateway.router = Router(loaded.fleet)
    gateway.cards.clear()  # engines' model entries are fetched again, from the new endpoints


async def serve(
    loaded: LoadedFleet,
    fleet_path: Path,
    host: str,
    port: int,
    state_dir: Path | None,
    grace_s: float = 30.0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    gateway = Gateway.build(loaded, endpoints_for(loaded, state_dir))
    app = create_app(gateway)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace_s)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise GatewayError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    # Everything built so far (catalog, fleet, app) lives as long as the process: move it out
    # of the collector's sight so full collections stay short on the request path.
    gc.collect()
    gc.freeze()
    if on_ready is not None:
        on_ready(f"http://{host}:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def on_hup() -> None:
        try:
            reload(gateway, fleet_path, state_dir)
            log.warning('{"event": "reload", "outcome": "ok"}')
        except ModelyardError as exc:
            log.error('{"event": "reload", "outcome": "rejected", "why": %r}', str(exc))

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    await site.stop()  # stop accepting; in-flight requests finish within the grace period
    await runner.cleanup()
    gateway.access.flush()
