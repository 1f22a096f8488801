"""Reading an upstream's server-sent events, per kind of stream: which event carries the first
output (from then on the attempt is committed: nothing can move to another candidate), which
event ends the stream, and which one reports an error instead of output.

Chat and completion chunks end with `data: [DONE]`; their output starts with the first text,
content, refusal, reasoning or tool-call fragment, or a finish reason. Responses API events
(`event: response.output_text.delta` ...) end with the terminal `response.completed`,
`response.incomplete` or `response.failed`, which carries the whole response; output starts
with the first `*.delta` or a terminal event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from modelyard.chunks import decode, has_output, plainly_has_token
from modelyard.gateway.assemble import TERMINAL_RESPONSE_EVENTS
from modelyard.gateway.endpoints import Upstream

DONE = b"[DONE]"


@dataclass(frozen=True)
class StreamRules:
    """Predicates over one event's data payload (bytes after `data:`)."""

    starts_output: Callable[[bytes], bool]
    is_error: Callable[[bytes], bool]
    is_end: Callable[[bytes], bool]


def _chunk_starts_output(data: bytes) -> bool:
    """Decodes JSON only when the bytes do not show a token plainly."""
    if plainly_has_token(data):
        return True
    chunk = decode(data)
    return chunk is not None and has_output(chunk)


def _chunk_is_error(data: bytes) -> bool:
    return data.startswith(b'{"error"') or (b'"error"' in data[:40] and b'"choices"' not in data)


def _event_type(data: bytes) -> str:
    event = decode(data)
    kind = event.get("type") if event is not None else None
    return kind if isinstance(kind, str) else ""


def _event_starts_output(data: bytes) -> bool:
    kind = _event_type(data)
    return kind.endswith(".delta") or kind in TERMINAL_RESPONSE_EVENTS


def _event_is_error(data: bytes) -> bool:
    return _event_type(data) == "error" or data.startswith(b'{"error"')


def _event_is_end(data: bytes) -> bool:
    return _event_type(data) in TERMINAL_RESPONSE_EVENTS


CHUNK_RULES = StreamRules(_chunk_starts_output, _chunk_is_error, lambda data: data == DONE)
EVENT_RULES = StreamRules(_event_starts_output, _event_is_error, _event_is_end)


def rules_for(upstream: Upstream) -> StreamRules:
    return EVENT_RULES if upstream is Upstream.EVENTS else CHUNK_RULES


def failure_event(upstream: Upstream, message: str) -> bytes:
    """The event that tells a streaming client its stream failed part-way (then it closes,
    never with a clean end): an `error` event for the Responses API, else an OpenAI error
    object as data."""
    if upstream is Upstream.EVENTS:
        data = {"type": "error", "code": "upstream_error", "message": message, "param": None}
        return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"
    error = {"error": {"message": message, "type": "upstream_error", "code": 502}}
    return b"data: " + orjson.dumps(error) + b"\n\n"
