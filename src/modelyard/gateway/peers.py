"""One gateway worker among several (gateway/workers.py starts them): what it shares.

- **Backend state.** A change to a backend's breaker (opened, and at which moment; closed), its
  back-off after a 429 (until when) or its health-check result is sent at once to every other
  worker, which adopts it; the latest change wins (changes carry the host's monotonic time,
  which every worker's event loop reads). So a primary whose breaker one worker opens is open
  in the whole gateway, until the same moment. What stays per worker: the count of consecutive
  failures toward a trip, the half-open probes each lets through, requests in flight. Changes
  travel as Unix datagrams, one socket per worker in the shared directory: sending never
  blocks, and a change a worker misses (its queue full, or it was restarting) is made good by
  its own requests and health checks, which see the same backend.
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
from dataclasses import dataclass
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
    """What the workers agree on about one backend. A half-open breaker is still the open
    one (every worker reaches half-open at the same moment, from `opened_at`)."""

    open: bool = False
    opened_at: float = 0.0
    backoff_until: float = 0.0
    healthy: bool | None = None

    @classmethod
    def of(cls, backend: BackendState) -> SharedState:
        breaker = backend.breaker
        opened = breaker.state is not State.CLOSED
        return cls(
            opened, breaker.opened_at if opened else 0.0, backend.backoff_until, backend.healthy
        )


@dataclass(frozen=True, slots=True)
class BackendChange:
    """One worker's news about one backend, made at `at` (the host's monotonic seconds)."""

    model: str
    url: str
    state: SharedState
    last_error: str
    at: float

    def encode(self) -> bytes:
        s = self.state
        return orjson.dumps(
            [
                self.model,
                self.url,
                s.open,
                s.opened_at,
                s.backoff_until,
                s.healthy,
                self.last_error,
                self.at,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> BackendChange:
        """The change in `data`; ValueError if it is not one."""
        try:
            model, url, opened, opened_at, backoff, healthy, error, at = orjson.loads(data)
            return cls(
                str(model),
                str(url),
                SharedState(bool(opened), float(opened_at), float(backoff), healthy),
                str(error),
                float(at),
            )
        except (TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"not a backend change: {data[:80]!r}") from exc


def adopt(backend: BackendState, state: SharedState, last_error: str) -> None:
    """Make `backend` what another worker says it is."""
    breaker = backend.breaker
    if state.open and (breaker.state is State.CLOSED or breaker.opened_at != state.opened_at):
        breaker.adopt_open(state.opened_at)
    elif not state.open and breaker.state is not State.CLOSED:
        breaker.adopt_closed()
    backend.backoff_until = state.backoff_until
    backend.healthy = state.healthy
    if last_error:
        backend.last_error = last_error


class BackendSharing:
    """The pure part of sharing: which local changes to tell, which news to adopt. `send` gets
    each change to tell the others."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.known: dict[tuple[str, str], tuple[SharedState, float]] = {}

    def changed(self, backend: BackendState) -> BackendChange | None:
        """The news to send after `backend` was updated here, if any (Gateway.on_backend_change)."""
        key = (backend.model, backend.url)
        state = SharedState.of(backend)
        known = self.known.get(key)
        if (known[0] if known else SharedState()) == state:
            return None
        now = self.gateway.clock.now()
        self.known[key] = (state, now)
        return BackendChange(backend.model, backend.url, state, backend.last_error, now)

    def receive(self, change: BackendChange) -> None:
        """Adopt `change` unless this worker knows of a later one about the same backend (or
        no longer routes to it: the fleet was reloaded)."""
        key = (change.model, change.url)
        known = self.known.get(key)
        if known is not None and known[1] > change.at:
            return
        backend = next(
            (b for b in self.gateway.backends.get(change.model, ()) if b.url == change.url), None
        )
        if backend is None:
            return
        self.known[key] = (change.state, change.at)
        adopt(backend, change.state, change.last_error)
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

    def tell(self, backend: BackendState) -> None:
        change = self.sharing.changed(backend)
        if change is None:
            return
        data = change.encode()
        for other in self.others:
            try:
                self.sock.sendto(data, other)
            except OSError:  # not started yet, restarting, or its queue is full
                self.dropped += 1

    def on_readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(MAX_CHANGE_BYTES)
            except (BlockingIOError, InterruptedError):
                return
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
