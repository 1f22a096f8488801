"""Per kind of upstream stream: how its events are read (http/sse.py: chat and completion
chunks end with `data: [DONE]`, Responses API events with a terminal event that carries the
whole response) and how a streaming client is told that its stream failed part-way."""

from __future__ import annotations

import orjson

from modelyard.gateway.endpoints import Upstream
from modelyard.gateway.upstream import KindOf
from modelyard.http.sse import classify_chunk, classify_event


def kind_for(upstream: Upstream) -> KindOf:
    return classify_event if upstream is Upstream.EVENTS else classify_chunk


def failure_event(upstream: Upstream, message: str) -> bytes:
    """The event that tells a streaming client its stream failed part-way (then it closes,
    never with a clean end): an `error` event for the Responses API, else an OpenAI error
    object as data."""
    if upstream is Upstream.EVENTS:
        data = {"type": "error", "code": "upstream_error", "message": message, "param": None}
        return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"
    error = {"error": {"message": message, "type": "upstream_error", "code": 502}}
    return b"data: " + orjson.dumps(error) + b"\n\n"
