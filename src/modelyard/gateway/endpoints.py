"""The OpenAI endpoints the gateway routes, and what it changes in a request it sends on.

Each routed endpoint says how its upstream answers (a stream of chat/completion chunks, a
stream of Responses API events, or one JSON body) and, for chunk streams, which answer the
assembler builds. What a request gains on its way upstream (docs/gateway.md):

- `model` becomes the fleet model the route picked (a route alias is not an engine's name);
- a request the client wants answered whole is streamed from the upstream all the same
  (`stream: true`, and for chat and completions `stream_options: {include_usage: true}`), so
  the gateway's deadlines cover every request and the assembled answer has its usage;
- a streaming request goes as the client sent it, `stream_options` included. (Asking for usage
  the client did not want would change more than the one usage chunk: vLLM then moves its
  `system_fingerprint` off each choice's last chunk onto the usage chunk, llama.cpp its
  `timings`, which no relay could put back without reordering the chunks.)
- everything else the client sent is passed on as it is.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from modelyard.engines.api import CHAT, COMPLETIONS, EMBEDDINGS, MODELS, RESPONSES
from modelyard.gateway.assemble import AnswerKind


class Upstream(enum.Enum):
    """How an upstream answers an endpoint."""

    CHUNKS = "chunks"  # SSE chat/completion chunks ending with [DONE]
    EVENTS = "events"  # SSE Responses API events ending with a terminal event
    WHOLE = "whole"  # one JSON body


@dataclass(frozen=True)
class Endpoint:
    path: str
    upstream: Upstream
    answer: AnswerKind | None = None  # for chunk streams: what a non-streaming client gets


ROUTED: dict[str, Endpoint] = {
    CHAT: Endpoint(CHAT, Upstream.CHUNKS, AnswerKind.CHAT),
    COMPLETIONS: Endpoint(COMPLETIONS, Upstream.CHUNKS, AnswerKind.COMPLETION),
    EMBEDDINGS: Endpoint(EMBEDDINGS, Upstream.WHOLE),
    RESPONSES: Endpoint(RESPONSES, Upstream.EVENTS),
}
# everything the gateway answers, for the 404 that names them
ANSWERED = (
    *(f"POST {path}" for path in ROUTED),
    f"GET {MODELS}",
    f"GET {MODELS}/{{model}}",
    "GET /health",
    "GET /metrics",
)


def wants_stream(body: Mapping[str, Any]) -> bool:
    return bool(body.get("stream"))


def upstream_body(endpoint: Endpoint, body: Mapping[str, Any], model: str) -> bytes:
    """The request as sent to an engine serving `model` (see the module docstring)."""
    named = {**body, "model": model}
    if endpoint.upstream is Upstream.WHOLE or wants_stream(body):
        return orjson.dumps(named)
    if endpoint.upstream is Upstream.EVENTS:
        return orjson.dumps({**named, "stream": True})
    # a non-streaming answer has usage, so the stream it is built from must carry it
    return orjson.dumps({**named, "stream": True, "stream_options": {"include_usage": True}})
