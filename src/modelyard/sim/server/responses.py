"""The simulated engine's Responses API (`POST /v1/responses`): one message of words, streamed
as the API's events or answered whole.

The model never emits an end of sequence, so every response stops at `max_output_tokens`
(default 16) and is `incomplete` (`incomplete_details.reason: max_output_tokens`); a stream
therefore ends with `response.incomplete`, which carries the whole response.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from modelyard.sim.server import answers

JSON = dict[str, Any]
DEFAULT_MAX_OUTPUT_TOKENS = 16


def input_text(body: Mapping[str, Any]) -> str:
    """The text of `input`: a string, or messages whose content is a string or text parts."""
    given = body.get("input", "")
    if isinstance(given, str):
        return given
    if not isinstance(given, list):
        raise ValueError("input must be a string or a list of messages")
    pieces: list[str] = []
    for item in given:
        content = item.get("content") if isinstance(item, Mapping) else None
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            pieces += [p.get("text", "") for p in content if isinstance(p, Mapping)]
    return " ".join(pieces)


def max_output_tokens(body: Mapping[str, Any]) -> int:
    value = body.get("max_output_tokens")
    value = DEFAULT_MAX_OUTPUT_TOKENS if value is None else value
    if not isinstance(value, int) or value < 1:
        raise ValueError("max_output_tokens must be a positive integer")
    return value


@dataclass(frozen=True)
class Reply:
    """One response being made: its id number, word seed, creation time and model."""

    rid: int
    seed: int
    created: int
    model: str


def _message(reply: Reply, tokens: int, done: bool) -> JSON:
    part = {"type": "output_text", "text": answers.text(reply.seed, 0, tokens), "annotations": []}
    return {
        "id": f"msg_{reply.rid}",
        "type": "message",
        "role": "assistant",
        "status": "completed" if done else "in_progress",
        "content": [part] if done else [],
    }


def response(reply: Reply, input_tokens: int, tokens: int, done: bool) -> JSON:
    """The response object: in progress (no output yet), or finished after `tokens` tokens."""
    body: JSON = {
        "id": f"resp_{reply.rid}",
        "object": "response",
        "created_at": reply.created,
        "model": reply.model,
        "status": "incomplete" if done else "in_progress",
        "incomplete_details": {"reason": "max_output_tokens"} if done else None,
        "error": None,
        "output": [_message(reply, tokens, done=True)] if done else [],
        "usage": None,
    }
    if done:
        body["usage"] = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + tokens,
        }
    return body


def event(kind: str, sequence: int, **fields: Any) -> bytes:
    """One SSE event, named by its type as the Responses API streams them."""
    data = orjson.dumps({"type": kind, "sequence_number": sequence, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def opening(reply: Reply) -> list[bytes]:
    """The events before the first token (sequence numbers 0-3)."""
    started = response(reply, 0, 0, done=False)
    item = _message(reply, 0, done=False)
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": item["id"], "output_index": 0}
    return [
        event("response.created", 0, response=started),
        event("response.in_progress", 1, response=started),
        event("response.output_item.added", 2, output_index=0, item=item),
        event("response.content_part.added", 3, **where, content_index=0, part=part),
    ]


def delta(reply: Reply, token: int) -> bytes:
    """Token `token` (sequence number 4 + token)."""
    return event(
        "response.output_text.delta",
        4 + token,
        item_id=f"msg_{reply.rid}",
        output_index=0,
        content_index=0,
        delta=answers.word(reply.seed, 0, token),
        logprobs=[],
    )


def closing(reply: Reply, input_tokens: int, tokens: int) -> list[bytes]:
    """The events after the last token, ending with the terminal `response.incomplete`."""
    finished = response(reply, input_tokens, tokens, done=True)
    item = finished["output"][0]
    where = {"item_id": item["id"], "output_index": 0}
    sequence = 4 + tokens
    return [
        event(
            "response.output_text.done",
            sequence,
            **where,
            content_index=0,
            text=item["content"][0]["text"],
            logprobs=[],
        ),
        event(
            "response.content_part.done",
            sequence + 1,
            **where,
            content_index=0,
            part=item["content"][0],
        ),
        event("response.output_item.done", sequence + 2, output_index=0, item=item),
        event("response.incomplete", sequence + 3, response=finished),
    ]
