"""Non-streaming answers built from an upstream's stream, as the upstream would have sent them.

The gateway always streams from the upstream (so its deadlines cover every request), and a
client that did not ask for a stream gets the answer these assemblers build from the chunks:

- one choice per `index` (`n > 1`), each with its own text or message, `logprobs` and
  finish reason;
- a chat message's string fields (`content`, `refusal`, `reasoning`, `reasoning_content`, any
  other) concatenated from its deltas, `tool_calls` rebuilt from their fragments (id, type,
  name, arguments concatenated per tool-call `index`);
- `logprobs` lists concatenated per choice (chat `content`/`refusal`; completions' `tokens`,
  `token_logprobs`, `top_logprobs`, `text_offset`);
- the answer's `id`, `created` and `model` from the first chunk; `usage`,
  `system_fingerprint` and every other field from the last chunk that set it;
- a field is in the answer when some chunk had it (a choice's `logprobs` too: llama.cpp's
  answers have none unless asked), except what every answer has: `role` and `content` in a
  message, `finish_reason` in a choice;
- fields nobody streams but an engine's non-streaming answers carry (vLLM's `stop_reason`,
  `prompt_logprobs`, ...) from that engine's `AnswerShape` (engines/api.py).

Pure: decoded chunks in, the answer (a JSON object) out. The chunks and answers are the
OpenAI wire format with whatever an engine adds, so they stay JSON objects here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelyard.engines.api import NOW, AnswerShape
from modelyard.http.sse import TERMINAL_RESPONSE_EVENTS

JSON = dict[str, Any]
FIRST_WINS = frozenset({"id", "created", "model"})


class AnswerKind(enum.Enum):
    CHAT = "chat.completion"
    COMPLETION = "text_completion"


def _merge_logprobs(into: JSON | None, piece: Any) -> JSON | None:
    """Lists (per-token entries) concatenate; other values: the last one set."""
    if not isinstance(piece, Mapping):
        return into
    merged = dict(into) if into is not None else {}
    for key, value in piece.items():
        known = merged.get(key)
        if isinstance(value, list) and isinstance(known, list):
            merged[key] = known + value
        elif value is not None or key not in merged:
            merged[key] = list(value) if isinstance(value, list) else value
    return merged


@dataclass
class _ToolCall:
    id: str | None = None
    type: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    extra: JSON = field(default_factory=dict)  # fields of the call an engine adds
    function_extra: JSON = field(default_factory=dict)

    def add(self, fragment: Mapping[str, Any]) -> None:
        for key, value in fragment.items():
            if key == "index" or value is None:
                continue
            if key == "id":
                self.id = self.id or value
            elif key == "type":
                self.type = value
            elif key == "function" and isinstance(value, Mapping):
                self._add_function(value)
            else:
                self.extra[key] = value

    def _add_function(self, function: Mapping[str, Any]) -> None:
        for key, value in function.items():
            if value is None:
                continue
            if key == "name":
                self.name = (self.name or "") + value
            elif key == "arguments":
                self.arguments.append(value)
            else:
                self.function_extra[key] = value

    def build(self) -> JSON:
        function = {"name": self.name, "arguments": "".join(self.arguments), **self.function_extra}
        return {"id": self.id, "type": self.type or "function", "function": function, **self.extra}


@dataclass
class _Choice:
    """One choice's state: concatenated strings, tool calls by index, logprobs, the rest."""

    index: int
    strings: dict[str, list[str]] = field(default_factory=dict)  # delta (or text) fields
    values: JSON = field(default_factory=dict)  # other delta fields: the last one set
    fields: JSON = field(default_factory=dict)  # choice-level fields: the last one set
    tool_calls: dict[int, _ToolCall] = field(default_factory=dict)
    logprobs: JSON | None = None
    saw_logprobs: bool = False
    role: str | None = None

    def add_delta(self, delta: Mapping[str, Any]) -> None:
        for key, value in delta.items():
            if key == "role":
                self.role = self.role or value
            elif key == "tool_calls":
                for position, fragment in enumerate(value or ()):
                    index = fragment.get("index", position)
                    self.tool_calls.setdefault(index, _ToolCall()).add(fragment)
            elif isinstance(value, str):
                self.strings.setdefault(key, []).append(value)
            elif value is not None or key not in self.values:
                self.values[key] = value

    def add_fields(self, choice: Mapping[str, Any], skip: str) -> None:
        for key, value in choice.items():
            if key in ("index", skip):
                continue
            if key == "logprobs":
                self.saw_logprobs = True
                self.logprobs = _merge_logprobs(self.logprobs, value)
            elif isinstance(value, list) and isinstance(self.fields.get(key), list):
                self.fields[key] = self.fields[key] + value  # e.g. token ids, streamed per chunk
            elif value is not None or key not in self.fields:
                self.fields[key] = value

    def joined(self) -> JSON:
        """The delta fields: strings concatenated (one that got only "" and nulls, as vLLM
        streams a tool call's `content`, is null), the rest as last set."""
        joined: JSON = dict(self.values)
        for key, parts in self.strings.items():
            text = "".join(parts)
            joined[key] = None if not text and key in self.values else text
        return joined

    def build(self, kind: AnswerKind, shape: AnswerShape, now_s: int) -> JSON:
        built: JSON = {"index": self.index}
        if kind is AnswerKind.CHAT:
            message: JSON = {"role": self.role or "assistant", "content": None, **self.joined()}
            if self.tool_calls:
                message["tool_calls"] = [
                    self.tool_calls[i].build() for i in sorted(self.tool_calls)
                ]
            built["message"] = _with_defaults(message, shape.message, now_s)
        else:
            built["text"] = self.joined().get("text", "")
        if self.saw_logprobs:
            built["logprobs"] = self.logprobs
        built["finish_reason"] = None
        built.update(self.fields)
        return _with_defaults(built, shape.choice, now_s)


def _with_defaults(body: JSON, defaults: Mapping[str, Any], now_s: int) -> JSON:
    """The shape's fields where the stream left them out or null."""
    for key, value in defaults.items():
        if body.get(key) is None:
            body[key] = now_s if value is NOW else value
    return body


class StreamAssembler:
    """Chat or completion chunks in (`add`, in arrival order), one answer out (`answer`)."""

    def __init__(self, kind: AnswerKind, shape: AnswerShape | None = None) -> None:
        self.kind = kind
        self.shape = shape or AnswerShape()
        self.top: JSON = {}
        self.choices: dict[int, _Choice] = {}

    def add(self, chunk: Mapping[str, Any]) -> None:
        for key, value in chunk.items():
            if key == "choices":
                for choice in value or ():
                    self._add_choice(choice)
            elif key == "object":
                continue
            elif key in FIRST_WINS:
                self.top.setdefault(key, value)
            elif value is not None or key not in self.top:
                self.top[key] = value

    def _add_choice(self, choice: Mapping[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self.choices.get(index)
        if state is None:
            state = self.choices[index] = _Choice(index)
        if self.kind is AnswerKind.CHAT:
            state.add_delta(choice.get("delta") or {})
            state.add_fields(choice, skip="delta")
        else:
            text = choice.get("text")
            if isinstance(text, str):
                state.strings.setdefault("text", []).append(text)
            state.add_fields(choice, skip="text")

    def answer(self, now_s: int = 0) -> JSON:
        """The answer; `now_s` (seconds since the epoch) for the shape's NOW fields."""
        body: JSON = {"object": self.kind.value, **self.top}
        body["choices"] = [
            self.choices[i].build(self.kind, self.shape, now_s) for i in sorted(self.choices)
        ]
        if isinstance(body.get("usage"), dict):
            body["usage"] = _with_defaults(dict(body["usage"]), self.shape.usage, now_s)
        return _with_defaults(body, self.shape.answer, now_s)


def assemble(
    chunks: Iterable[Mapping[str, Any]],
    kind: AnswerKind,
    shape: AnswerShape | None = None,
    now_s: int = 0,
) -> JSON:
    """The non-streaming answer that these streamed chunks make up."""
    assembler = StreamAssembler(kind, shape)
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.answer(now_s)


class ResponsesAssembler:
    """A Responses API stream's events in; the response its terminal event carries out (the
    API streams the whole response object in `response.completed`, `.incomplete`, `.failed`),
    with the shape's top-level fields added."""

    def __init__(self, shape: AnswerShape | None = None) -> None:
        self.shape = shape or AnswerShape()
        self.response: JSON | None = None

    def add(self, event: Mapping[str, Any]) -> None:
        if event.get("type") in TERMINAL_RESPONSE_EVENTS:
            response = event.get("response")
            if not isinstance(response, Mapping):
                raise ValueError(f"a {event['type']} event without its response")
            self.response = dict(response)

    def answer(self, now_s: int = 0) -> JSON:
        if self.response is None:
            raise ValueError("the stream ended without a terminal response event")
        return _with_defaults(dict(self.response), self.shape.answer, now_s)


_NOT_IN_CHUNKS = frozenset({"choices", "usage", "object"})


def chunks_of(answer: Mapping[str, Any], kind: AnswerKind, include_usage: bool) -> list[JSON]:
    """A whole chat or completion answer as the stream it would have been: one chunk with
    every choice's message (as a delta) or text, logprobs and finish reason, and, when the
    client asked for usage, the usage chunk."""
    top = {key: value for key, value in answer.items() if key not in _NOT_IN_CHUNKS}
    chunk_object = "chat.completion.chunk" if kind is AnswerKind.CHAT else "text_completion"
    choices = []
    for position, choice in enumerate(answer.get("choices") or ()):
        if not isinstance(choice, Mapping):
            continue
        piece: JSON = {"index": choice.get("index", position)}
        if kind is AnswerKind.CHAT:
            delta = dict(choice.get("message") or {})
            if isinstance(delta.get("tool_calls"), list):
                delta["tool_calls"] = [
                    {"index": i, **call} for i, call in enumerate(delta["tool_calls"])
                ]
            piece["delta"] = delta
        else:
            piece["text"] = choice.get("text", "")
        rest = {k: v for k, v in choice.items() if k not in ("index", "message", "text")}
        choices.append({**piece, "logprobs": None, **rest})
    chunks: list[JSON] = [{**top, "object": chunk_object, "choices": choices}]
    if include_usage and isinstance(answer.get("usage"), Mapping):
        chunks.append({**top, "object": chunk_object, "choices": [], "usage": answer["usage"]})
    return chunks


def terminal_event_of(response: Mapping[str, Any]) -> tuple[str, JSON]:
    """A whole Responses API answer as the terminal event of its stream."""
    status = response.get("status")
    kind = "response.incomplete" if status == "incomplete" else "response.completed"
    if status == "failed":
        kind = "response.failed"
    return kind, {"type": kind, "response": dict(response)}
