"""Upstream outcomes and what the gateway does with each (the failure-policy table of
docs/gateway.md):

| outcome                                   | retry next candidate | counts toward breaker |
|-------------------------------------------|----------------------|-----------------------|
| connect error, reset before headers, 5xx  | yes                  | yes                   |
| no first token before the deadline        | yes (cancel)         | yes                   |
| 429                                       | yes                  | no                    |
| other 4xx, 501, context-length errors     | no (client's error)  | no                    |
| failure after the first byte to the client| never                | yes                   |
| the client hung up                        | never                | no                    |

    ModelyardError
    └── GatewayError          the gateway cannot start or reload (bad fleet, no port)
        ├── ClientGone        the client hung up while its stream was written
        └── MalformedStream   an upstream's event is not the JSON object it must be
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from modelyard.errors import ModelyardError

NOT_IMPLEMENTED = 501


class GatewayError(ModelyardError):
    """The gateway cannot start or reload (bad fleet, no port)."""


class ClientGone(GatewayError):
    """The client closed its connection while the gateway wrote to it."""


class MalformedStream(GatewayError):
    """An upstream's event could not be read as the JSON object the API says it is."""


class Outcome(enum.Enum):
    OK = "ok"
    CONNECT = "connect_error"
    RESET = "reset_before_headers"
    SERVER_ERROR = "server_error"
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    TOTAL_TIMEOUT = "total_timeout"
    RATE_LIMITED = "rate_limited"
    CLIENT_ERROR = "client_error"
    MID_STREAM = "mid_stream_failure"
    CLIENT_GONE = "client_disconnected"


@dataclass(frozen=True)
class Policy:
    retry: bool
    counts: bool


_POLICY = {
    Outcome.OK: Policy(retry=False, counts=False),
    Outcome.CONNECT: Policy(retry=True, counts=True),
    Outcome.RESET: Policy(retry=True, counts=True),
    Outcome.SERVER_ERROR: Policy(retry=True, counts=True),
    Outcome.FIRST_TOKEN_TIMEOUT: Policy(retry=True, counts=True),
    Outcome.IDLE_TIMEOUT: Policy(retry=True, counts=True),
    Outcome.TOTAL_TIMEOUT: Policy(retry=True, counts=True),
    Outcome.RATE_LIMITED: Policy(retry=True, counts=False),
    Outcome.CLIENT_ERROR: Policy(retry=False, counts=False),
    Outcome.MID_STREAM: Policy(retry=False, counts=True),
    Outcome.CLIENT_GONE: Policy(retry=False, counts=False),
}


def policy(outcome: Outcome) -> Policy:
    return _POLICY[outcome]


def classify_status(status: int, body: bytes = b"") -> Outcome:
    """An HTTP status (and error body) from an upstream before any token was relayed."""
    if status < 400:
        return Outcome.OK
    if status == 429:
        return Outcome.RATE_LIMITED
    # 501: the engine does not do this (llama.cpp's embeddings without --embeddings), which
    # another try would not change and which says nothing about the backend's health
    if status < 500 or status == NOT_IMPLEMENTED or is_context_length_error(body):
        return Outcome.CLIENT_ERROR
    return Outcome.SERVER_ERROR


def is_context_length_error(body: bytes) -> bool:
    """vLLM reports a too-long prompt as 400 (and older versions as 500); either way it is
    the client's request that is wrong, not the backend."""
    text = body.lower()
    return b"maximum context length" in text or (b"context length" in text and b"token" in text)
