"""One gateway worker among several (gateway/workers.py starts them): what it shares.

- **Backend state.** A change to a backend's breaker (opened, and at which moment; closed), its
  back-off after a 429 (until when) or its health-check result is sent at once to every other
  worker, which adopts it; of each of the three, the latest change wins (changes carry the
  host's monotonic time, which every worker's event loop reads). A worker that joins (at
  start, or started again) asks the others for all they know. So a primary whose breaker one
  worker opens is open in the whole gateway, until the same moment. What stays per worker: the
  count of consecutive failures toward a trip, the half-open probes each lets through, requests
  in flight. Changes travel as Unix datagrams, one socket per worker in the shared directory:
  sending never blocks, and a change a worker misses (its queue was full) is made good by its
  own requests and health checks, which see the same backend.
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
import logging
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import astuple, dataclass, replace
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from modelyard.gateway.breaker import State
from modelyard.gateway.errors import GatewayError
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


@dataclass(frozen=True, slots=True)
class SharedState:
    """What the workers agree on about one backend, each part with the moment it last
    changed (`*_at`, the host's monotonic seconds; 0: never): the breaker (open since
    `opened_at`, or closed; half-open is still the open one, which every worker reaches at the
    same moment), the back-off after a 429, the last health check's result."""

    open: bool = False
    opened_at: float = 0.0
    breaker_at: float = 0.0
    backoff_until: float = 0.0
    backoff_at: float = 0.0
    healthy: bool | None = None
    healthy_at: float = 0.0

    def updated(self, backend: BackendState, now: float) -> SharedState:
        """These parts, with what changed in `backend` since stamped `now`."""
        breaker = backend.breaker
        opened = breaker.state is not State.CLOSED
        opened_at = breaker.opened_at if opened else 0.0
        new = self
        if (opened, opened_at) != (self.open, self.opened_at):
            new = replace(new, open=opened, opened_at=opened_at, breaker_at=now)
        if backend.backoff_until != self.backoff_until:
            new = replace(new, backoff_until=backend.backoff_until, backoff_at=now)
        if backend.healthy != self.healthy:
            new = replace(new, healthy=backend.healthy, healthy_at=now)
        return new

    def merged(self, news: SharedState) -> SharedState:
        """These parts, each replaced by the one in `news` where that changed later."""
        new = self
        if news.breaker_at > self.breaker_at:
            new = replace(new, open=news.open, opened_at=news.opened_at, breaker_at=news.breaker_at)
        if news.backoff_at > self.backoff_at:
            new = replace(new, backoff_until=news.backoff_until, backoff_at=news.backoff_at)
        if news.healthy_at > self.healthy_at:
            new = replace(new, healthy=news.healthy, healthy_at=news.healthy_at)
        return new


HELLO = b"hello"  # a worker that joins asks the others for what they know


@dataclass(frozen=True, slots=True)
class BackendChange:
    """One worker's news about one backend."""

    model: str
    url: str
    state: SharedState
    last_error: str

    def encode(self) -> bytes:
        return orjson.dumps([self.model, self.url, *astuple(self.state), self.last_error])

    @classmethod
    def decode(cls, data: bytes) -> BackendChange:
        """The change in `data`; ValueError if it is not one."""
        try:
            model, url, *parts, error = orjson.loads(data)
            opened, opened_at, breaker_at, until, backoff_at, healthy, healthy_at = parts
            state = SharedState(
                bool(opened),
                float(opened_at),
                float(breaker_at),
                float(until),
                float(backoff_at),
                None if healthy is None else bool(healthy),
                float(healthy_at),
            )
            return cls(str(model), str(url), state, str(error))
        except (TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"not a backend change: {data[:80]!r}") from exc


def adopt(backend: BackendState, known: SharedState, news: SharedState) -> None:
    """Make `backend` (whose shared parts were `known`) what the later parts of `news` say."""
    breaker = backend.breaker
    if news.breaker_at > known.breaker_at:
        if news.open:
            breaker.adopt_open(news.opened_at)
        else:
            breaker.adopt_closed()
    if news.backoff_at > known.backoff_at:
        backend.backoff_until = news.backoff_until
    if news.healthy_at > known.healthy_at:
        backend.healthy = news.healthy


class BackendSharing:
    """The pure part of sharing: which local changes to tell, which news to adopt."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.known: dict[tuple[str, str], SharedState] = {}

    def changed(self, backend: BackendState) -> BackendChange | None:
        """The news to send after `backend` was updated here, if any (Gateway.on_backend_change)."""
        key = (backend.model, backend.url)
        known = self.known.get(key, SharedState())
        state = known.updated(backend, self.gateway.clock.now())
        if state == known:
            return None
        self.known[key] = state
        return BackendChange(backend.model, backend.url, state, backend.last_error)

    def everything(self) -> list[BackendChange]:
        """All this worker knows, for a worker that joins."""
        backends = {(b.model, b.url): b for bs in self.gateway.backends.values() for b in bs}
        return [
            BackendChange(model, url, state, backends[model, url].last_error)
            for (model, url), state in self.known.items()
            if (model, url) in backends
        ]

    def receive(self, change: BackendChange) -> None:
        """Adopt what in `change` is later than what this worker knows (nothing, about a
        backend it no longer routes to: the fleet was reloaded)."""
        key = (change.model, change.url)
        backend = next(
            (b for b in self.gateway.backends.get(change.model, ()) if b.url == change.url), None
        )
        if backend is None:
            return
        known = self.known.get(key, SharedState())
        merged = known.merged(change.state)
        if merged == known:
            return
        self.known[key] = merged
        adopt(backend, known, change.state)
        if change.state.breaker_at > known.breaker_at and change.last_error:
            backend.last_error = change.last_error
        self.gateway.update_gauge(backend)  # the gauge; `changed` then finds nothing new


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
        self.dropped = 0

    def _send(self, data: bytes, to: str) -> None:
        try:
            self.sock.sendto(data, to)
        except OSError:  # not started yet, restarting, or its queue is full
            self.dropped += 1

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
        peers.close()
