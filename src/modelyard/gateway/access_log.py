"""The gateway's log of requests: one compact JSON line per answered request (`access`) and
per failed upstream attempt (`attempt_failed`), on stderr, written in batches (one write per
`interval_s` on the gateway's clock) rather than a formatted log record and a flush per
request. The composition root says whether it is on (the CLI: when logging is at INFO)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from modelyard.gateway.clock import Clock, Timer

BATCH_S = 0.05


@dataclass(slots=True)
class RequestLog:
    """What the access line says of one request beyond method, path and status."""

    request_id: str
    caller: str | None = None  # the API key's hash, or the client's address
    route: str | None = None  # None: no route was resolved (not a generation request)
    model: str = ""
    backend: str = ""
    attempts: int = 0
    outcome: str = ""

    def answered(self, route: str, model: str, backend: str, attempts: int, outcome: str) -> None:
        self.route, self.model, self.backend = route, model, backend
        self.attempts, self.outcome = attempts, outcome


def _stderr(data: bytes) -> None:
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


class AccessLog:
    def __init__(
        self,
        clock: Clock,
        write: Callable[[bytes], None] = _stderr,
        interval_s: float = BATCH_S,
        enabled: bool = True,
    ) -> None:
        self.clock = clock
        self.enabled = enabled
        self.write_out = write
        self.interval_s = interval_s
        self.lines: list[bytes] = []
        self.timer: Timer | None = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.lines.append(orjson.dumps(record))
        if self.timer is None:
            self.timer = self.clock.call_at(self.clock.now() + self.interval_s, self.flush)

    def access(
        self,
        entry: RequestLog,
        method: str,
        path: str,
        status: int,
        elapsed_ms: float,
        show_key: bool,
    ) -> None:
        record: dict[str, Any] = {
            "event": "access",
            "request_id": entry.request_id,
            "method": method,
            "path": path,
            "status": status,
            "ms": round(elapsed_ms, 2),
            "key": entry.caller[:8] if entry.caller and show_key else None,
        }
        if entry.route is not None:
            record["route"] = entry.route
            record["model"] = entry.model
            record["backend"] = entry.backend
            record["attempts"] = entry.attempts
            record["outcome"] = entry.outcome
        self.write(record)

    def attempt_failed(self, request_id: str, model: str, backend: str, why: str) -> None:
        self.write(
            {
                "event": "attempt_failed",
                "request_id": request_id,
                "model": model,
                "backend": backend,
                "why": why,
            }
        )

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.lines:
            lines, self.lines = self.lines, []
            with contextlib.suppress(OSError, ValueError):
                self.write_out(b"\n".join(lines) + b"\n")
