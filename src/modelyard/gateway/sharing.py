"""What gateway workers agree on about each backend, and the pure rules for it: which local
changes to tell the others, which news to adopt (gateway/peers.py carries the messages).

Three parts are shared — the breaker (open since when, or closed), the back-off after a 429,
the last health check's result — each stamped with the moment it last changed, in the host's
monotonic seconds, which every worker's event loop reads; of each part the latest change wins.
A half-open breaker is still the open one: every worker reaches half-open at the same moment.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, replace

import orjson

from modelyard.gateway.breaker import State
from modelyard.gateway.state import BackendState, Gateway


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
