"""`modelyard gateway` and `hash-key`."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli.common import DEFAULT_STATE_DIR, CatalogOption, app, run_async_value
from modelyard.fleet import load_fleet
from modelyard.gateway import peers as gateway_peers
from modelyard.gateway import server as gateway_server
from modelyard.gateway import workers as gateway_workers


@app.command("gateway")
def gateway_command(
    fleet: Annotated[Path, typer.Argument(help="Fleet file.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8080,
    state_dir: Annotated[
        Path | None, typer.Option(help="Take endpoints from this `modelyard up` state dir.")
    ] = None,
    grace: Annotated[
        float, typer.Option(min=0, help="Seconds in-flight requests get on stop.")
    ] = 30,
    backlog: Annotated[
        int, typer.Option(min=1, help="Connections queued before they are accepted.")
    ] = gateway_server.DEFAULT_BACKLOG,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Processes sharing the port (default: gateway.workers, else one per core)."
        ),
    ] = None,
    worker_index: Annotated[int | None, typer.Option(hidden=True)] = None,
    shared_dir: Annotated[Path | None, typer.Option(hidden=True)] = None,
    catalog: CatalogOption = None,
) -> None:
    """Run the OpenAI-compatible gateway: routing, fallback, breakers, health, warm-up."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    loaded = load_fleet(fleet, catalog)
    if state_dir is None and DEFAULT_STATE_DIR.exists():
        state_dir = DEFAULT_STATE_DIR

    count = workers or loaded.fleet.gateway.workers or gateway_workers.cores_available()
    if worker_index is not None and shared_dir is not None:  # one of a supervisor's workers
        role = gateway_peers.WorkerRole(worker_index, count, shared_dir)
        serving = gateway_server.serve(
            loaded, fleet, host, port, state_dir, grace, gateway_workers.say_ready, backlog, role
        )
        run_async_value(serving)
        return

    def ready(url: str) -> None:
        many = f" ({count} workers)" if count > 1 else ""
        sys.stdout.write(f"gateway for '{loaded.fleet.name}' on {url}{many}\n")
        sys.stdout.flush()

    if count > 1:
        gateway_server.endpoints_for(loaded, state_dir)  # none: one line, before any worker
        extra = ["--state-dir", str(state_dir)] if state_dir else []
        for path in catalog or []:
            extra += ["--catalog", str(path)]
        command = gateway_workers.worker_command(fleet, host, grace, backlog, *extra)
        plan = gateway_workers.WorkersPlan(command, host, port, count, grace)
        signum = run_async_value(gateway_workers.supervise(plan, ready))
    else:
        signum = run_async_value(
            gateway_server.serve(loaded, fleet, host, port, state_dir, grace, ready, backlog)
        )
    # a server's normal end: drained cleanly, exit 0 (as Kubernetes and systemd expect)
    sys.stderr.write(f"gateway stopped on {signal.Signals(signum).name}, requests drained\n")


@app.command("hash-key")
def hash_key_command(
    key: Annotated[str, typer.Argument(help="An API key to store hashed.")],
) -> None:
    """Print the SHA-256 digest to put under gateway.api_key_hashes (never store the key)."""
    from modelyard.gateway.auth import hash_key

    sys.stdout.write(hash_key(key) + "\n")
