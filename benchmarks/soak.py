"""Soak: a fixed rate through the gateway to two models while the primary backend is killed
and restarted every 30 s. Target: no failed request while the fallback is healthy; gateway
RSS growth < 10% after warm-up.

    python benchmarks/soak.py [--minutes 10] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _sim import sim_serve_command
from rich.console import Console
from rich.table import Table

from modelyard.engines.launcher import free_port

GATEWAY = [sys.executable, "-m", "modelyard", "gateway"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_backend(name: str, port: int, folder: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        sim_serve_command("qwen2.5-7b", "h100-sxm", port, "--served-model-name", name),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder,
        start_new_session=True,
    )


async def wait_up(url: str, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < end:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def soak(minutes: float, rate: float, kill_every: float) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp())
    ports = {"primary": free_port("127.0.0.1"), "fallback": free_port("127.0.0.1")}
    backends = {name: start_backend(name, port, folder) for name, port in ports.items()}
    fleet = folder / "fleet.yaml"
    fleet.write_text(f"""\
name: soak
models:
  primary: {{catalog: qwen2.5-7b, engine: sim, gpu: h100-sxm, endpoints: ["http://127.0.0.1:{ports["primary"]}"]}}
  fallback: {{catalog: qwen2.5-7b, engine: sim, gpu: h100-sxm, endpoints: ["http://127.0.0.1:{ports["fallback"]}"]}}
routes:
  - {{targets: [primary, fallback]}}
policy:
  breaker: {{consecutive_failures: 3, open_for: 5s, half_open_probes: 1}}
  timeouts: {{connect: 1s, first_token: 5s, idle: 5s, total: 60s}}
  health: {{interval: 1s, warmup_every: 1m}}
""")
    gateway_port = free_port("127.0.0.1")
    gateway = subprocess.Popen(
        # one worker: the RSS measured below is that process's (gateway.workers: docs/gateway.md)
        [*GATEWAY, str(fleet), "--port", str(gateway_port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder,
    )
    url = f"http://127.0.0.1:{gateway_port}"
    for port in ports.values():
        await wait_up(f"http://127.0.0.1:{port}/health")
    await wait_up(url + "/health")
    counts = {"sent": 0, "ok": 0, "failed": 0, "fallbacks": 0, "kills": 0}
    failures: list[str] = []
    body = {"model": "default", "prompt": "soak", "max_tokens": 16}

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(url + "/v1/completions", json=body) as response:
                await response.read()
                if response.status == 200:
                    counts["ok"] += 1
                    if response.headers.get("X-Modelyard-Model") == "fallback":
                        counts["fallbacks"] += 1
                else:
                    counts["failed"] += 1
                    failures.append(f"HTTP {response.status}")
        except aiohttp.ClientError as exc:
            counts["failed"] += 1
            failures.append(type(exc).__name__)

    start = time.monotonic()
    end = start + minutes * 60
    warm_rss = None
    next_kill = start + kill_every
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        index = 0
        while time.monotonic() < end:
            due = start + index / rate
            await asyncio.sleep(max(due - time.monotonic(), 0))
            task = asyncio.create_task(one(session))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            counts["sent"] += 1
            index += 1
            now = time.monotonic()
            if warm_rss is None and now - start > 30:
                warm_rss = rss_kib(gateway.pid)
            if now >= next_kill:
                backends["primary"].send_signal(signal.SIGKILL)
                backends["primary"].wait()
                counts["kills"] += 1
                await asyncio.sleep(0)
                backends["primary"] = start_backend("primary", ports["primary"], folder)
                next_kill += kill_every
        await asyncio.gather(*tasks)
    end_rss = rss_kib(gateway.pid)
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(timeout=30)
    for process in backends.values():
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
    return {
        **counts,
        "rss_warm_kib": warm_rss or 0,
        "rss_end_kib": end_rss,
        "failure_kinds": sorted(set(failures)),
        "minutes": minutes,
        "rate": rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--kill-every", type=float, default=30)
    args = parser.parse_args()
    result = asyncio.run(soak(args.minutes, args.rate, args.kill_every))
    table = Table(
        title=f"soak: {args.minutes:g} min at {args.rate:g} req/s, primary killed "
        f"every {args.kill_every:g} s",
        title_justify="left",
    )
    for column in (
        "sent",
        "succeeded",
        "failed",
        "fallbacks",
        "kills",
        "RSS after warm-up MiB",
        "RSS end MiB",
        "growth",
    ):
        table.add_column(column, justify="right")
    warm, last = int(result["rss_warm_kib"]), int(result["rss_end_kib"])  # type: ignore[call-overload]
    table.add_row(
        str(result["sent"]),
        str(result["ok"]),
        str(result["failed"]),
        str(result["fallbacks"]),
        str(result["kills"]),
        f"{warm / 1024:.1f}",
        f"{last / 1024:.1f}",
        f"{(last / warm - 1) * 100 if warm else 0:+.1f}%",
    )
    Console(width=140).print(table)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
