"""The OpenAI endpoints the gateway routes, and what it changes in a request it sends on.

Each routed endpoint says how its upstream answers (a stream of chat/completion chunks, a
stream of Responses API events, or one JSON body) and, for chunk streams, which answer the
assembler builds. What a request gains on its way upstream (docs/gateway.md):

- `model` becomes the fleet model the route picked (a route alias is not an engine's name);
- chunk and event endpoints are always streamed from the upstream (`stream: true`), so the
  gateway's deadlines cover every request; chunk streams also ask for usage
  (`stream_options.include_usage`), which the relay removes again unless the client asked;
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


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether a streaming client asked for the usage chunk."""
    options = body.get("stream_options")
    return isinstance(options, Mapping) and bool(options.get("include_usage"))


def upstream_body(endpoint: Endpoint, body: Mapping[str, Any], model: str) -> bytes:
    """The request as sent to an engine serving `model` (see the module docstring)."""
    if endpoint.upstream is Upstream.WHOLE:
        return orjson.dumps({**body, "model": model})
    if endpoint.upstream is Upstream.EVENTS:
        return orjson.dumps({**body, "model": model, "stream": True})
    given = body.get("stream_options")
    options: dict[str, Any] = dict(given) if isinstance(given, Mapping) else {}
    if not (wants_stream(body) and wants_usage(body)):
        # the engine would have sent no usage at all, so none per chunk either
        options.pop("continuous_usage_stats", None)
    options["include_usage"] = True
    return orjson.dumps({**body, "model": model, "stream": True, "stream_options": options})
