"""Running the gateway: endpoints from the fleet or a running `up`, graceful shutdown on
SIGTERM/SIGINT (whatever handling the process inherited: a shell's background job starts with
SIGINT ignored), reload on SIGHUP (a bad new fleet file is rejected and the old
one serves on)."""

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
from modelyard.gateway.access_log import AccessLog
from modelyard.gateway.app import create_app
from modelyard.gateway.clock import LoopClock
from modelyard.gateway.errors import GatewayError
from modelyard.gateway.peers import WorkerRole, joined
from modelyard.gateway.state import Gateway
from modelyard.http.client import Pool
from modelyard.signals import stopping_signal

log = logging.getLogger("modelyard.gateway")
# connections the kernel queues before the gateway accepts them: aiohttp's default of 128
# overflowed when hundreds of streams connected at once (benchmarks/gateway_streams.py); the
# kernel caps it at net.core.somaxconn
DEFAULT_BACKLOG = 4096


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
    """Serve the fleet file at `path` anew (gateway/state.py: `Gateway.reconfigure`)."""
    loaded = load_fleet(path)
    gateway.reconfigure(loaded, endpoints_for(loaded, state_dir))


async def serve(
    loaded: LoadedFleet,
    fleet_path: Path,
    host: str,
    port: int,
    state_dir: Path | None,
    grace_s: float = 30.0,
    on_ready: Callable[[str], None] | None = None,
    backlog: int = DEFAULT_BACKLOG,
    worker: WorkerRole | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, then drain (in-flight requests get `grace_s`); returns
    the signal's number. The composition root: the transport, clock and `Gateway` are built
    here, once. `worker`: this process is one of several on the port (gateway/peers.py)."""
    clock = LoopClock()
    access = AccessLog(clock, enabled=log.isEnabledFor(logging.INFO))
    gateway = Gateway.build(loaded, endpoints_for(loaded, state_dir), Pool(), clock, access)
    runner = web.AppRunner(create_app(gateway), access_log=None, shutdown_timeout=grace_s)
    await runner.setup()
    # a worker shares the port with the others (gateway/workers.py)
    reuse_port = worker is not None
    site = web.TCPSite(
        runner, host, port, reuse_address=True, reuse_port=reuse_port, backlog=backlog
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise GatewayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    # Everything built so far (catalog, fleet, app) lives as long as the process: move it out
    # of the collector's sight so full collections stay short on the request path.
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        try:
            reload(gateway, fleet_path, state_dir)
            log.warning('{"event": "reload", "outcome": "ok"}')
        except ModelyardError as exc:
            log.error('{"event": "reload", "outcome": "rejected", "why": %r}', str(exc))

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    with joined(gateway, worker), stopping_signal(loop) as stopped:
        if on_ready is not None:
            on_ready(f"http://{host}:{port}")
        try:
            signum = await stopped
            await site.stop()  # stop accepting; in-flight requests finish within the grace
        finally:
            await runner.cleanup()  # a second signal while draining changes nothing
            loop.remove_signal_handler(signal.SIGHUP)
    return signum
