"""Several gateway workers on one port (`gateway.workers`, `--workers`): the supervisor.

The supervisor holds the port — bound with SO_REUSEPORT but not listening, so a port that is
taken is one clear error before any worker starts, and port 0 is resolved once — and starts N
workers: `modelyard gateway` processes that each bind the same host:port with SO_REUSEPORT and
run their own event loop. The kernel spreads new connections over the workers' listening
sockets (by a hash of each connection's addresses); a keep-alive connection stays with its
worker. The supervisor forwards SIGHUP (reload) and SIGTERM/SIGINT (drain) to every worker,
reaps them, and starts a worker again when it dies, after a pause that grows while workers die
young. gateway/peers.py is the workers' side: what they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from modelyard.gateway.errors import GatewayError
from modelyard.gateway.peers import MULTIPROC_ENV, WorkerRole
from modelyard.signals import stopping_signal

log = logging.getLogger("modelyard.gateway")
YOUNG_S = 10.0  # a worker that dies sooner than this after its start died young
FIRST_RESTART_PAUSE_S = 0.5
MAX_RESTART_PAUSE_S = 30.0
STOP_MARGIN_S = 5.0  # past the drain's grace, a worker that has not exited is killed


def cores_available(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a
    container's CPU limit), rounded up."""
    cores = len(os.sched_getaffinity(0))
    quota: float | None = None
    with contextlib.suppress(OSError, ValueError):
        limit, period = (cgroup_root / "cpu.max").read_text().split()  # cgroup v2
        quota = None if limit == "max" else int(limit) / int(period)
    if quota is None:
        with contextlib.suppress(OSError, ValueError):
            limit_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())  # v1
            period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            quota = limit_us / period_us if limit_us > 0 else None
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def restart_pause_s(young_deaths: int) -> float:
    """Seconds to wait before starting a worker again after it died young `young_deaths`
    times in a row: none after one that lived long, then 0.5, 1, 2, ... up to 30."""
    if young_deaths <= 0:
        return 0.0
    return float(min(FIRST_RESTART_PAUSE_S * 2 ** (young_deaths - 1), MAX_RESTART_PAUSE_S))


def hold_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT, not listening: the port is ours (the
    workers bind it too), and connections go only to the workers' listening sockets."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise GatewayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise GatewayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


@dataclass(frozen=True)
class WorkersPlan:
    """What the supervisor runs: `count` copies of `command` (a `modelyard gateway` command
    line, to which each worker's port, index and shared directory are added)."""

    command: list[str]
    host: str
    port: int
    count: int
    grace_s: float


@dataclass
class Slot:
    """One worker's place: its process now, and how its previous ones died."""

    index: int
    process: asyncio.subprocess.Process | None = None
    young_deaths: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    def __init__(self, plan: WorkersPlan, port: int, shared_dir: Path) -> None:
        self.plan = plan
        self.port = port
        self.shared_dir = shared_dir
        self.slots = [Slot(index) for index in range(plan.count)]
        self.stopping = False
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def role(self, index: int) -> WorkerRole:
        return WorkerRole(index, self.plan.count, self.shared_dir)

    async def _start(self, slot: Slot) -> asyncio.subprocess.Process:
        role = self.role(slot.index)
        command = [*self.plan.command, "--port", str(self.port), "--workers", str(role.count)]
        command += ["--worker-index", str(role.index), "--shared-dir", str(role.shared_dir)]
        env = {**os.environ, MULTIPROC_ENV: str(role.metrics_dir), "PYTHONUNBUFFERED": "1"}
        # stdin: a pipe the worker watches (it stops when the supervisor is gone);
        # stdout: its one "ready" line; stderr: the supervisor's, for its log
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
        )
        log.warning('{"event": "worker_started", "worker": %d, "pid": %d}', slot.index, process.pid)
        return process

    async def _keep(self, slot: Slot) -> None:
        """Run the slot's worker, and again whenever it dies, until the gateway stops."""
        loop = asyncio.get_running_loop()
        while not self.stopping:
            started = loop.time()
            process = slot.process = await self._start(slot)
            assert process.stdout is not None
            if await process.stdout.readline():
                slot.ready.set()
            code = await process.wait()
            metrics_dir = str(self.role(slot.index).metrics_dir)
            mark_process_dead(process.pid, metrics_dir)  # type: ignore[no-untyped-call]
            if self.stopping:
                return
            if not slot.ready.is_set() and not self.failed.done():
                self.failed.set_result(f"gateway worker {slot.index} exited with code {code}")
                return
            young = loop.time() - started < YOUNG_S
            slot.young_deaths = slot.young_deaths + 1 if young else 0
            pause = restart_pause_s(slot.young_deaths)
            log.error(
                '{"event": "worker_exited", "worker": %d, "pid": %d, "code": %d, '
                '"restart_in_s": %.1f}',
                slot.index,
                process.pid,
                code,
                pause,
            )
            await asyncio.sleep(pause)

    def forward(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                slot.process.send_signal(signum)

    async def run(self, on_ready: Callable[[str], None] | None) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.forward, int(signal.SIGHUP))
        with stopping_signal(loop) as stopped:
            keepers = [asyncio.create_task(self._keep(slot)) for slot in self.slots]
            try:
                all_ready = asyncio.gather(*(slot.ready.wait() for slot in self.slots))
                ends: list[asyncio.Future[Any]] = [self.failed, stopped]
                await asyncio.wait([all_ready, *ends], return_when=asyncio.FIRST_COMPLETED)
                all_ready.cancel()
                if not stopped.done() and not self.failed.done() and on_ready is not None:
                    on_ready(f"http://{self.plan.host}:{self.port}")
                await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
                signum = stopped.result() if stopped.done() else int(signal.SIGTERM)
            finally:
                self.stopping = True
                self.forward(int(stopped.result()) if stopped.done() else int(signal.SIGTERM))
                killed = await self._reap(keepers)
                loop.remove_signal_handler(signal.SIGHUP)
        if self.failed.done():
            raise GatewayError(self.failed.result() + " before it was ready (its error is above)")
        if killed:
            raise GatewayError(
                f"gateway workers {', '.join(map(str, killed))} did not stop within "
                f"{self.plan.grace_s + STOP_MARGIN_S:g} s and were killed"
            )
        return signum

    async def _reap(self, keepers: list[asyncio.Task[None]]) -> list[int]:
        """Wait for every worker to exit (the grace and a margin), kill those that do not;
        the indexes of the killed."""
        _, late = await asyncio.wait(keepers, timeout=self.plan.grace_s + STOP_MARGIN_S)
        killed = []
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                killed.append(slot.index)
                process.kill()
                await process.wait()
        for keeper in late:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        return killed


def say_ready(url: str) -> None:
    """A worker's readiness, to the supervisor (the first line on its stdout)."""
    sys.stdout.write(f"listening on {url}\n")
    sys.stdout.flush()


def worker_command(fleet: Path, host: str, grace_s: float, backlog: int, *extra: str) -> list[str]:
    """The command line each worker runs (`extra`: options passed through, e.g. --catalog)."""
    command = [sys.executable, "-m", "modelyard", "gateway", str(fleet), "--host", host]
    return [*command, "--grace", f"{grace_s:g}", "--backlog", str(backlog), *extra]


async def supervise(plan: WorkersPlan, on_ready: Callable[[str], None] | None = None) -> int:
    """Run `plan.count` workers on host:port until SIGTERM or SIGINT, then drain them all;
    returns the signal's number."""
    holder = hold_port(plan.host, plan.port)
    shared_dir = Path(tempfile.mkdtemp(prefix="modelyard-gateway-"))
    try:
        (shared_dir / "metrics").mkdir()
        (shared_dir / "peers").mkdir()
        supervisor = Supervisor(plan, holder.getsockname()[1], shared_dir)
        return await supervisor.run(on_ready)
    finally:
        holder.close()
        shutil.rmtree(shared_dir, ignore_errors=True)
