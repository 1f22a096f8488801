"""Reading OpenAI-style completion chunks cheaply: most carry one token, and their bytes show it
plainly, so JSON is decoded only for the few that do not (usage, empty deltas, odd spacing).
Used on the hot paths of the gateway (first-token detection) and the load generator."""

from __future__ import annotations

from typing import Any

import orjson

_HINTS = (b'"text":"', b'"content":"')
_EMPTY = (b'"text":""', b'"content":""')


def plainly_has_token(data: bytes) -> bool:
    """True when the bytes alone show a non-empty text or content field (no decoding)."""
    return (_HINTS[0] in data or _HINTS[1] in data) and not (_EMPTY[0] in data or _EMPTY[1] in data)


def has_content(chunk: dict[str, Any]) -> bool:
    """A decoded chunk carries text (completions) or delta content (chat)."""
    for choice in chunk.get("choices") or ():
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            return True
    return False


OUTPUT_DELTA_FIELDS = ("content", "refusal", "reasoning", "reasoning_content", "tool_calls")


def has_output(chunk: dict[str, Any]) -> bool:
    """A decoded chunk carries output of any kind: text, content, a refusal, reasoning, a
    tool-call fragment, or a choice's finish reason (the gateway's first-output rule)."""
    for choice in chunk.get("choices") or ():
        if choice.get("text") or choice.get("finish_reason"):
            return True
        delta = choice.get("delta") or {}
        if any(delta.get(name) for name in OUTPUT_DELTA_FIELDS):
            return True
    return False


def decode(data: bytes) -> dict[str, Any] | None:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None
