"""What the simulated engine says: deterministic words, tool calls and log-probabilities for
each choice of a chat or completion request, streamed or not.

Choice `c` of a request says word `(seed + 5c + t) mod 18` of WORDS as its token `t`, where the
seed comes from the request's prompt (and its `seed` field), so the same request always gets
the same answer, as from an engine sampling at temperature 0. A chat
request with `tools` (and `tool_choice` not "none") calls a function instead: the named
`tool_choice`, else the first tool, with arguments `{"words": "<its words>"}` streamed one
fragment per token. Log-probabilities are made up but fixed: token `t` has
`-((seed + 3c + t) mod 10 + 1) / 10`, its alternatives half a nat less each.
Pure: the server (sim/server/app.py) decides when each token is due.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

WORDS = (
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
)
WORD_BYTES = tuple((" " + word).encode() for word in WORDS)  # JSON-safe as they are
MAX_CHOICES = 16
MAX_TOP_LOGPROBS = 20
ARGUMENTS_OPEN = '{"words": "'
ARGUMENTS_CLOSE = '"}'
JSON = dict[str, Any]


@dataclass(frozen=True)
class Generation:
    """What a chat or completion request asks for, beyond its token counts."""

    chat: bool
    n: int = 1
    tool: str | None = None  # the function each choice calls (chat with tools)
    top_logprobs: int | None = None  # None: no log-probabilities asked for
    seed: int = 0  # what the words depend on (content_seed)

    @property
    def plain(self) -> bool:
        """One choice of text without log-probabilities (the server's fast path)."""
        return self.n == 1 and self.tool is None and self.top_logprobs is None

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool is not None else "length"


def _tool_name(body: Mapping[str, Any]) -> str | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str):
            return name
    first = tools[0] if isinstance(tools, list) else None
    name = (first.get("function") or {}).get("name") if isinstance(first, Mapping) else None
    if not isinstance(name, str):
        raise ValueError("each tool needs function.name")
    return name


def parse_generation(body: Mapping[str, Any], chat: bool) -> Generation:
    """The request's `n`, tool and log-probability options; ValueError names a bad one."""
    n = body.get("n", 1)
    n = 1 if n is None else n
    if not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        raise ValueError(f"n must be an integer from 1 to {MAX_CHOICES}")
    if chat:
        top: int | None = None
        if body.get("logprobs"):
            top = body.get("top_logprobs") or 0
        elif body.get("top_logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        tool = _tool_name(body)
    else:
        top, tool = body.get("logprobs"), None
    if top is not None and (not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise ValueError(f"the number of log-probabilities must be from 0 to {MAX_TOP_LOGPROBS}")
    return Generation(chat=chat, n=n, tool=tool, top_logprobs=top, seed=content_seed(body))


def content_seed(body: Mapping[str, Any]) -> int:
    """What a request's words depend on: its prompt, messages or input, and `seed`."""
    said = body.get("messages", body.get("prompt", body.get("input", "")))
    seed = body.get("seed")
    return zlib.crc32(orjson.dumps(said)) + (seed if isinstance(seed, int) else 0)


def word_index(seed: int, choice: int, token: int) -> int:
    return (seed + 5 * choice + token) % len(WORDS)


def word(seed: int, choice: int, token: int) -> str:
    return " " + WORDS[word_index(seed, choice, token)]


def text(seed: int, choice: int, tokens: int) -> str:
    return "".join(word(seed, choice, t) for t in range(tokens))


def arguments_fragment(seed: int, choice: int, token: int, last: bool) -> str:
    piece = word(seed, choice, token)
    return (ARGUMENTS_OPEN if token == 0 else "") + piece + (ARGUMENTS_CLOSE if last else "")


def tool_call_id(rid: int, choice: int) -> str:
    return f"call_{rid}_{choice}"


def _logprob(seed: int, choice: int, token: int) -> float:
    return -(((seed + 3 * choice + token) % 10) + 1) / 10


def _alternatives(seed: int, choice: int, token: int, count: int) -> list[tuple[str, float]]:
    base, sampled = _logprob(seed, choice, token), word_index(seed, choice, token)
    return [(" " + WORDS[(sampled + j) % len(WORDS)], base - 0.5 * j) for j in range(1, count + 1)]


def chat_logprob(seed: int, choice: int, token: int, top: int) -> JSON:
    def entry(piece: str, value: float) -> JSON:
        return {"token": piece, "logprob": value, "bytes": list(piece.encode())}

    sampled = word(seed, choice, token)
    return {
        **entry(sampled, _logprob(seed, choice, token)),
        "top_logprobs": [entry(p, v) for p, v in _alternatives(seed, choice, token, top)],
    }


def completion_logprobs(seed: int, choice: int, tokens: range, top: int) -> JSON:
    """Completions' logprobs object for `tokens` of one choice (offsets from its start)."""
    pieces = [word(seed, choice, t) for t in tokens]
    start = len(text(seed, choice, tokens.start))
    offsets = [start + len("".join(pieces[:i])) for i in range(len(pieces))]
    return {
        "text_offset": offsets,
        "token_logprobs": [_logprob(seed, choice, t) for t in tokens],
        "tokens": pieces,
        "top_logprobs": [
            {
                word(seed, choice, t): _logprob(seed, choice, t),
                **dict(_alternatives(seed, choice, t, top)),
            }
            for t in tokens
        ],
    }


def stream_choice(gen: Generation, rid: int, choice: int, token: int, last: bool) -> JSON:
    """The choice object of the chunk that carries token `token` of choice `choice`."""
    logprobs: JSON | None = None
    if gen.chat:
        if gen.tool is not None:
            fragment = arguments_fragment(gen.seed, choice, token, last)
            call: JSON = {"index": 0, "function": {"arguments": fragment}}
            if token == 0:
                call = {
                    "index": 0,
                    "id": tool_call_id(rid, choice),
                    "type": "function",
                    "function": {"name": gen.tool, "arguments": fragment},
                }
            delta: JSON = {"tool_calls": [call]}
        else:
            delta = {"content": word(gen.seed, choice, token)}
        if gen.top_logprobs is not None:
            logprobs = {"content": [chat_logprob(gen.seed, choice, token, gen.top_logprobs)]}
        body: JSON = {"index": choice, "delta": delta}
    else:
        if gen.top_logprobs is not None:
            logprobs = completion_logprobs(
                gen.seed, choice, range(token, token + 1), gen.top_logprobs
            )
        body = {"index": choice, "text": word(gen.seed, choice, token)}
    return {**body, "logprobs": logprobs, "finish_reason": gen.finish_reason if last else None}


def first_chat_choice(choice: int) -> JSON:
    """The chunk a chat stream opens each choice with (the role), as vLLM sends it."""
    return {
        "index": choice,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }


def answer_choice(gen: Generation, rid: int, choice: int, tokens: int) -> JSON:
    """One choice of the non-streaming answer, `tokens` tokens long."""
    logprobs: JSON | None = None
    if gen.chat:
        message: JSON = {"role": "assistant", "content": text(gen.seed, choice, tokens)}
        if gen.tool is not None:
            arguments = "".join(
                arguments_fragment(gen.seed, choice, t, t == tokens - 1) for t in range(tokens)
            )
            message["content"] = ""
            message["tool_calls"] = [
                {
                    "id": tool_call_id(rid, choice),
                    "type": "function",
                    "function": {"name": gen.tool, "arguments": arguments},
                }
            ]
        if gen.top_logprobs is not None:
            entries = [chat_logprob(gen.seed, choice, t, gen.top_logprobs) for t in range(tokens)]
            logprobs = {"content": entries}
        body: JSON = {"index": choice, "message": message}
    else:
        if gen.top_logprobs is not None:
            logprobs = completion_logprobs(gen.seed, choice, range(tokens), gen.top_logprobs)
        body = {"index": choice, "text": text(gen.seed, choice, tokens)}
    return {**body, "logprobs": logprobs, "finish_reason": gen.finish_reason}
