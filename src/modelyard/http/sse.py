"""Reading an engine's server-sent events: THE reader of the gateway and the load generator.

`SseReader.feed` takes body bytes as they arrive and returns each complete `data:` line's
payload with the `event:` line before it (Responses API streams name their events); comments
and other fields are skipped; `\\r\\n` line ends are accepted. `chunk_kind` and `event_kind` say
what one payload is (`classify_chunk` and `classify_event` also hand back the object when they
decoded it):

- TOKEN: output — text, content, a refusal, reasoning or a tool-call fragment (Responses API:
  any `*.delta` event);
- FINISH: a choice's finish reason without new output;
- USAGE: usage without output (the last chunk of a stream that asked for it);
- OTHER: nothing of the above (a role-only first chunk, an empty delta, a Responses event
  that only announces);
- ERROR: the engine reports an error (`{"error": ...}`, vLLM's `{"object": "error", ...}`,
  the Responses API's `error` event);
- MALFORMED: not a JSON object;
- DONE: the stream's end (`[DONE]`; Responses API: a terminal event, which carries the
  whole response and so is output too).

Most chunks carry one token and their bytes show it plainly, so JSON is decoded only for the
few that do not (usage, errors, empty deltas, odd spacing).
"""

from __future__ import annotations

import enum
from typing import Any

import orjson

DONE_DATA = b"[DONE]"
TERMINAL_RESPONSE_EVENTS = frozenset(
    {"response.completed", "response.incomplete", "response.failed"}
)
OUTPUT_DELTA_FIELDS = ("content", "refusal", "reasoning", "reasoning_content", "tool_calls")
_HINTS = (b'"text":"', b'"content":"')
_EMPTY = (b'"text":""', b'"content":""')
_USAGE = b'"usage":{'
_ERROR = b'"error"'
_ERROR_WITHIN = 48  # an error object names itself early; a chunk's text comes later


class Kind(enum.IntEnum):
    OTHER = 0
    TOKEN = 1
    FINISH = 2
    USAGE = 3
    DONE = 4
    ERROR = 5
    MALFORMED = 6

    @property
    def failed(self) -> bool:
        return self >= Kind.ERROR


class SseReader:
    """Splits a body into events as its bytes arrive."""

    __slots__ = ("_buffer", "_named")

    def __init__(self) -> None:
        self._buffer = b""
        self._named = b""  # the `event:` line of the event being read

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """(event line or b"", data payload) for each `data:` line completed by `data`."""
        buffer = self._buffer + data if self._buffer else data
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()  # an incomplete last line waits for more
        return self._events(lines)

    def end(self) -> list[tuple[bytes, bytes]]:
        """At the end of the body: the last line, if it came without its newline."""
        if not self._buffer:
            return []
        lines, self._buffer = [self._buffer], b""
        return self._events(lines)

    def _events(self, lines: list[bytes]) -> list[tuple[bytes, bytes]]:
        events = []
        for line in lines:
            if line.startswith(b"data:"):
                events.append((self._named, line[5:].strip()))
                self._named = b""
            elif line.startswith(b"event:"):
                self._named = line.rstrip(b"\r") + b"\n"
        return events


def as_event(named: bytes, payload: bytes) -> bytes:
    """One event's bytes to relay: its `event:` line if it had one, its data, a blank line."""
    return named + b"data: " + payload + b"\n\n" if named else b"data: " + payload + b"\n\n"


def plainly_has_token(data: bytes) -> bool:
    """True when the bytes alone show a non-empty text or content field (no decoding)."""
    return (_HINTS[0] in data or _HINTS[1] in data) and not (_EMPTY[0] in data or _EMPTY[1] in data)


def decode(data: bytes) -> dict[str, Any] | None:
    """The JSON object in `data`; None when it is not one."""
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None


def is_error(chunk: dict[str, Any]) -> bool:
    """A decoded object is an error report, not output."""
    return bool(chunk.get("error")) or (chunk.get("object") == "error" and "choices" not in chunk)


def _output_of(chunk: dict[str, Any]) -> Kind:
    finished = False
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if choice.get("text"):
            return Kind.TOKEN
        delta = choice.get("delta")
        if isinstance(delta, dict) and any(delta.get(name) for name in OUTPUT_DELTA_FIELDS):
            return Kind.TOKEN
        finished = finished or bool(choice.get("finish_reason"))
    if finished:
        return Kind.FINISH
    return Kind.USAGE if isinstance(chunk.get("usage"), dict) else Kind.OTHER


Classified = tuple[Kind, dict[str, Any] | None]
_DONE: Classified = (Kind.DONE, None)
_TOKEN: Classified = (Kind.TOKEN, None)
_MALFORMED: Classified = (Kind.MALFORMED, None)


def classify_chunk(data: bytes) -> Classified:
    """What one chat or completion chunk's payload is, with the object when it had to be
    decoded to tell (None for a plain token chunk), so that no reader decodes it again."""
    if data == DONE_DATA:
        return _DONE
    suspect = data.find(_ERROR, 0, _ERROR_WITHIN) >= 0
    if not suspect and plainly_has_token(data):
        return _TOKEN
    chunk = decode(data)
    if chunk is None:
        return _MALFORMED
    if suspect and is_error(chunk):
        return Kind.ERROR, chunk
    return _output_of(chunk), chunk


def classify_event(data: bytes) -> Classified:
    """What one Responses API event's payload is, with the decoded event."""
    event = decode(data)
    if event is None:
        return _MALFORMED
    kind = event.get("type")
    if not isinstance(kind, str):
        return (Kind.ERROR if is_error(event) else Kind.OTHER), event
    if kind in TERMINAL_RESPONSE_EVENTS:
        return Kind.DONE, event
    if kind == "error":
        return Kind.ERROR, event
    return (Kind.TOKEN if kind.endswith(".delta") else Kind.OTHER), event


def chunk_kind(data: bytes) -> Kind:
    """What one chat or completion chunk's payload is."""
    return classify_chunk(data)[0]


def event_kind(data: bytes) -> Kind:
    """What one Responses API event's payload is."""
    return classify_event(data)[0]


def usage_from(answer: dict[str, Any]) -> dict[str, Any] | None:
    """The usage object of a decoded chunk or answer, if it has one."""
    usage = answer.get("usage")
    return usage if isinstance(usage, dict) else None


def usage_of(data: bytes) -> dict[str, Any] | None:
    """The usage a chunk reports, decoding only chunks whose bytes show one."""
    if _USAGE not in data:
        return None
    chunk = decode(data)
    return usage_from(chunk) if chunk is not None else None


def usage_in(data: bytes, decoded: dict[str, Any] | None) -> dict[str, Any] | None:
    """The usage a chunk reports, from its object when the reader already decoded it."""
    return usage_of(data) if decoded is None else usage_from(decoded)


def error_message(data: bytes) -> str:
    """An error event's message, for logs and failed-request records."""
    event = decode(data) or {}
    error = event.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if event.get("message"):
        return str(event["message"])
    return data[:200].decode(errors="replace")
