"""The one SSE reader: events split wherever the bytes break, and one rule for what a payload
is, the same for the gateway and the load generator."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.http.sse import (
    DONE_DATA,
    Kind,
    SseReader,
    as_event,
    chunk_kind,
    classify_chunk,
    error_message,
    event_kind,
    usage_in,
    usage_of,
)

BODY = (
    b": a comment\n"
    b'data: {"choices":[{"index":0,"text":"a"}]}\n\n'
    b"event: response.output_text.delta\r\n"
    b'data: {"type":"response.output_text.delta","delta":"b"}\r\n\r\n'
    b"id: 7\n"
    b"data: [DONE]\n\n"
)
EVENTS = [
    (b"", b'{"choices":[{"index":0,"text":"a"}]}'),
    (b"event: response.output_text.delta\n", b'{"type":"response.output_text.delta","delta":"b"}'),
    (b"", b"[DONE]"),
]


def _read(pieces: list[bytes]) -> list[tuple[bytes, bytes]]:
    reader = SseReader()
    events = [event for piece in pieces for event in reader.feed(piece)]
    return events + reader.end()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(BODY)), max_size=8))
def test_events_are_the_same_wherever_the_body_is_cut(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(BODY)]
    pieces = [BODY[a:b] for a, b in itertools.pairwise(bounds)]
    assert _read(pieces) == EVENTS


def test_a_last_line_without_its_newline_is_read_at_the_end() -> None:
    assert _read([b"data: [DONE]"]) == [(b"", DONE_DATA)]
    assert SseReader().end() == []


def test_an_event_is_relayed_with_its_name() -> None:
    assert as_event(b"", b"x") == b"data: x\n\n"
    assert as_event(b"event: error\n", b"x") == b"event: error\ndata: x\n\n"


def _chunk(**choice: object) -> bytes:
    return orjson.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, **choice}]})


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"[DONE]", Kind.DONE),
        (b'{"choices":[{"index":0,"text":"hi"}]}', Kind.TOKEN),
        (b'{"choices": [{"index": 0, "text": "hi"}]}', Kind.TOKEN),  # other spacing: decoded
        (_chunk(delta={"content": "hi"}), Kind.TOKEN),
        (_chunk(delta={"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}), Kind.TOKEN),
        (_chunk(delta={"reasoning_content": "hmm"}), Kind.TOKEN),
        (_chunk(delta={"role": "assistant", "content": ""}), Kind.OTHER),
        (_chunk(delta={}, finish_reason="stop"), Kind.FINISH),
        (b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}', Kind.USAGE),
        (b'{"error":{"message":"boom","type":"server_error","code":500}}', Kind.ERROR),
        (b'{"object":"error","message":"out of memory","type":"InternalError"}', Kind.ERROR),
        # an error object is an error however its text reads
        (b'{"error":{"message":"x","text":"y"},"choices":[{"text":"z"}]}', Kind.ERROR),
        # a token whose text mentions errors is a token
        (_chunk(text='the "error" was mine ' * 4), Kind.TOKEN),
        (b"not json", Kind.MALFORMED),
        (b"[1, 2]", Kind.MALFORMED),
    ],
)
def test_chunk_kinds(data: bytes, kind: Kind) -> None:
    assert chunk_kind(data) is kind
    assert kind.failed == (kind in (Kind.ERROR, Kind.MALFORMED))


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b'{"type":"response.output_text.delta","delta":"a"}', Kind.TOKEN),
        (b'{"type":"response.created","response":{}}', Kind.OTHER),
        (b'{"type":"response.completed","response":{"id":"r"}}', Kind.DONE),
        (b'{"type":"response.failed","response":{"id":"r"}}', Kind.DONE),
        (b'{"type":"error","code":"x","message":"boom"}', Kind.ERROR),
        (b'{"error":{"message":"boom"}}', Kind.ERROR),
        (b"oops", Kind.MALFORMED),
    ],
)
def test_responses_event_kinds(data: bytes, kind: Kind) -> None:
    assert event_kind(data) is kind


def test_usage_and_error_messages() -> None:
    assert usage_of(b'{"choices":[],"usage":{"completion_tokens":2}}') == {"completion_tokens": 2}
    assert usage_of(b'{"choices":[{"text":"usage"}]}') is None
    assert error_message(b'{"error":{"message":"boom"}}') == "boom"
    assert error_message(b'{"type":"error","message":"bad"}') == "bad"
    assert error_message(b"not json") == "not json"


@pytest.mark.parametrize(
    "data",
    [
        b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}',
        b'{"choices":[{"delta":{"content":"hi"}}]}',
        b'{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}',
    ],
)
def test_usage_from_the_classified_object_equals_usage_from_the_bytes(data: bytes) -> None:
    kind, decoded = classify_chunk(data)
    assert kind is chunk_kind(data)
    assert usage_in(data, decoded) == usage_of(data)
