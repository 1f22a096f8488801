"""One gateway worker among several (gateway/workers.py starts them): what it shares.

- **Backend state.** A change to a backend's breaker, back-off or health-check result is sent at
  once to every other worker, which adopts it by the rules of gateway/sharing.py (of each part,
  the latest change wins); a worker that joins (at start, or started again) asks the others for
  all they know. So a primary whose breaker one worker opens is open in the whole gateway, until
  the same moment. What stays per worker: the count of consecutive failures toward a trip, the
  half-open probes each lets through. Messages are Unix datagrams, one socket per worker in the
  shared directory: sending never blocks, and a change a worker misses (its queue was full) is
  made good by its own requests and health checks, which see the same backend.
- **/health.** Each worker's answer is the gateway's: the shared state above, and the requests
  in flight to each backend summed over the workers (asked over the same sockets).
- **Metrics.** Each worker writes its counters and histograms to the shared directory
  (prometheus_client's multiprocess mode: the supervisor sets PROMETHEUS_MULTIPROC_DIR), and
  `/metrics` on any worker answers with every worker's values combined (gateway/metrics.py
  says how each gauge combines).
- **The supervisor.** A worker's stdin is a pipe from the supervisor: when it closes (the
  supervisor died), the worker drains and stops, as on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from modelyard.gateway.errors import GatewayError
from modelyard.gateway.sharing import BackendChange, BackendSharing
from modelyard.gateway.state import BackendState, Gateway

log = logging.getLogger("modelyard.gateway")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_CHANGE_BYTES = 65536


@dataclass(frozen=True)
class WorkerRole:
    """Worker `index` of `count`, sharing `shared_dir` with the others and the supervisor."""

    index: int
    count: int
    shared_dir: Path

    @property
    def metrics_dir(self) -> Path:
        return self.shared_dir / "metrics"

    def socket_path(self, index: int) -> Path:
        return self.shared_dir / "peers" / f"worker-{index}.sock"


HELLO = b"hello"  # a worker that joins asks the others for what they know
ASK = b"ask:"  # + a number: how many requests does each backend have in flight with you?
ANSWER = b"in-flight:"  # + the number asked + ":" + [[model, url, requests], ...]
ASK_TIMEOUT_S = 0.5


class Peers:
    """This worker's datagram socket and the other workers' addresses."""

    def __init__(self, role: WorkerRole, sharing: BackendSharing) -> None:
        self.role = role
        self.sharing = sharing
        self.others = [str(role.socket_path(i)) for i in range(role.count) if i != role.index]
        path = role.socket_path(role.index)
        path.unlink(missing_ok=True)  # left by this index's previous process
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(str(path))
        self.asks = itertools.count()
        self.answers: dict[int, tuple[asyncio.Future[None], list[Any], int]] = {}

    def _send(self, data: bytes, to: str) -> bool:
        try:
            self.sock.sendto(data, to)
        except OSError:  # not started yet, restarting, or its queue is full
            return False
        return True

    async def whole_health(self, body: dict[str, Any]) -> dict[str, Any]:
        """`/health`'s body (gateway/handlers.py) for the whole gateway: each backend's
        requests in flight summed over the workers that answer within ASK_TIMEOUT_S, and how
        many did (`workers`). Everything else in it every worker already shares."""
        number = next(self.asks)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asked = sum(self._send(ASK + str(number).encode(), other) for other in self.others)
        answers: list[Any] = []
        self.answers[number] = (done, answers, asked)
        try:
            if asked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done, ASK_TIMEOUT_S)
        finally:
            del self.answers[number]
        for answer in answers:
            elsewhere = {(model, url): requests for model, url, requests in answer}
            for backend in body["backends"]:
                backend["outstanding"] += elsewhere.get((backend["model"], backend["url"]), 0)
        body["workers"] = {"count": self.role.count, "answered": 1 + len(answers)}
        return body

    def _answer(self, number: bytes, sender: str) -> None:
        gateway = self.sharing.gateway
        rows = [[b.model, b.url, b.outstanding] for bs in gateway.backends.values() for b in bs]
        self._send(ANSWER + number + b":" + orjson.dumps(rows), sender)

    def _answered(self, data: bytes) -> None:
        number, _, rows = data.removeprefix(ANSWER).partition(b":")
        waiting = self.answers.get(int(number))
        if waiting is None:  # too late
            return
        done, answers, asked = waiting
        answers.append(orjson.loads(rows))
        if len(answers) == asked and not done.done():
            done.set_result(None)

    def hello(self) -> None:
        for other in self.others:
            self._send(HELLO, other)

    def tell(self, backend: BackendState) -> None:
        change = self.sharing.changed(backend)
        if change is None:
            return
        data = change.encode()
        for other in self.others:
            self._send(data, other)

    def on_readable(self) -> None:
        while True:
            try:
                data, sender = self.sock.recvfrom(MAX_CHANGE_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            if data == HELLO:
                for change in self.sharing.everything():
                    self._send(change.encode(), sender)
                continue
            if data.startswith(ASK):
                self._answer(data.removeprefix(ASK), sender)
                continue
            if data.startswith(ANSWER):
                self._answered(data)
                continue
            try:
                change = BackendChange.decode(data)
            except ValueError as exc:
                log.error('{"event": "peer_message", "outcome": "rejected", "why": %r}', str(exc))
                continue
            self.sharing.receive(change)

    def close(self) -> None:
        self.sock.close()
        self.role.socket_path(self.role.index).unlink(missing_ok=True)


def gateway_registry(role: WorkerRole) -> CollectorRegistry:
    """A registry answering with every worker's metrics, from the shared directory."""
    if os.environ.get(MULTIPROC_ENV) != str(role.metrics_dir):
        raise GatewayError(
            f"a gateway worker needs {MULTIPROC_ENV}={role.metrics_dir} in its environment "
            "(the supervisor sets it: start the gateway without --worker-index)"
        )
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(role.metrics_dir))  # type: ignore[no-untyped-call]
    return registry


def _stop_when_closed(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    try:
        data = os.read(fd, 4096)
    except BlockingIOError:
        return
    if not data:
        loop.remove_reader(fd)
        os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def joined(gateway: Gateway, role: WorkerRole | None) -> Iterator[None]:
    """Within the block, `gateway` runs as worker `role` (nothing, for a lone gateway):
    sharing backend state and metrics with the other workers, stopping if the supervisor dies.
    Entered on the running loop, before the worker serves its first request."""
    if role is None:
        yield
        return
    loop = asyncio.get_running_loop()
    gateway.metrics.registry = gateway_registry(role)  # what /metrics exposes
    peers = Peers(role, BackendSharing(gateway))
    gateway.on_backend_change = peers.tell
    gateway.whole_health = peers.whole_health
    loop.add_reader(peers.sock.fileno(), peers.on_readable)
    peers.hello()
    stdin = 0
    os.set_blocking(stdin, False)
    loop.add_reader(stdin, _stop_when_closed, loop, stdin)
    try:
        yield
    finally:
        loop.remove_reader(stdin)
        loop.remove_reader(peers.sock.fileno())
        gateway.on_backend_change = None
        gateway.whole_health = None
        peers.close()
