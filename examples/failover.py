"""Demo: the gateway keeps requests alive while the primary engine is killed.

Starts the fleet's engines (`modelyard up`), the gateway in front of them, sends a steady
stream of requests, kills the primary engine part-way, and prints who answered what.

    python examples/failover.py examples/local-llamacpp.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from modelyard.engines import launcher
from modelyard.engines.launcher import free_port
from modelyard.fleet import load_fleet


async def drive(
    url: str, seconds: float, rate: float, kill_at: float, kill: object
) -> list[tuple[float, int, str]]:
    outcomes: list[tuple[float, int, str]] = []
    start = time.monotonic()
    killed = False
    body = {"model": "default", "prompt": "The capital of France is", "max_tokens": 8}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(at: float) -> None:
            try:
                async with session.post(url + "/v1/completions", json=body) as r:
                    await r.read()
                    outcomes.append((at, r.status, r.headers.get("X-Modelyard-Model", "-")))
            except aiohttp.ClientError as exc:
                outcomes.append((at, 0, type(exc).__name__))

        tasks = []
        index = 0
        while time.monotonic() - start < seconds:
            due = start + index / rate
            await asyncio.sleep(max(due - time.monotonic(), 0))
            if not killed and time.monotonic() - start >= kill_at:
                kill()  # type: ignore[operator]
                killed = True
            tasks.append(asyncio.create_task(one(time.monotonic() - start)))
            index += 1
        await asyncio.gather(*tasks)
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fleet", type=Path)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=2)
    parser.add_argument("--kill-at", type=float, default=8)
    args = parser.parse_args()
    console = Console(width=120)
    loaded = load_fleet(args.fleet)
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "state"
        started = launcher.up(loaded, state)
        port = free_port("127.0.0.1")
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelyard",
                "gateway",
                str(args.fleet.resolve()),
                "--port",
                str(port),
                "--state-dir",
                str(state),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.1)
            primary = started[0]
            console.print(
                f"gateway on {url}; killing {primary.name} (pid {primary.pid}) "
                f"after {args.kill_at:g} s"
            )
            outcomes = asyncio.run(
                drive(
                    url,
                    args.seconds,
                    args.rate,
                    args.kill_at,
                    lambda: os.killpg(primary.pid, signal.SIGKILL),
                )
            )
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=30)
            launcher.down(state)
    table = Table(title="requests through the gateway while the primary dies", title_justify="left")
    for column in ("window", "sent", "ok", "answered by primary", "answered by fallback", "failed"):
        table.add_column(column, justify="right")
    for label, low, high in (
        ("before the kill", 0, args.kill_at),
        ("after the kill", args.kill_at, 1e9),
    ):
        window = [o for o in outcomes if low <= o[0] < high]
        table.add_row(
            label,
            str(len(window)),
            str(sum(1 for o in window if o[1] == 200)),
            str(sum(1 for o in window if o[2] == "primary")),
            str(sum(1 for o in window if o[2] == "fallback")),
            str(sum(1 for o in window if o[1] != 200)),
        )
    console.print(table)


if __name__ == "__main__":
    main()
