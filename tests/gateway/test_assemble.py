"""The assembler in-process: chunks in, the non-streaming answer out (milliseconds).

Three references: hand-written chunk sequences with the answer they must make; the simulated
engine's own streamed chunks against its non-streaming answer (every n, tool and logprobs
combination); and the official `openai` client's stream accumulator on the same chunks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from modelyard.engines import adapter_for
from modelyard.engines.api import CHAT, COMPLETIONS, AnswerShape
from modelyard.gateway.assemble import AnswerKind, ResponsesAssembler, assemble
from modelyard.sim.server import answers, responses

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m"}


def _chunk(*choices: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {**HEAD, "choices": list(choices), **top}


def _delta(
    index: int, finish: str | None = None, logprobs: Any = None, **delta: Any
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


def test_n_choices_are_kept_apart_with_their_own_finish_reasons() -> None:
    chunks = [
        _chunk(_delta(0, role="assistant", content="")),
        _chunk(_delta(1, role="assistant", content="")),
        _chunk(_delta(0, content="Hel")),
        _chunk(_delta(1, content="Bon")),
        _chunk(_delta(1, content="jour", finish="stop")),
        _chunk(_delta(0, content="lo", finish="length")),
        _chunk(usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
    ]
    answer = assemble(chunks, AnswerKind.CHAT)
    assert answer == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 7,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "logprobs": None,
                "finish_reason": "length",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": "Bonjour"},
                "logprobs": None,
                "finish_reason": "stop",
            },
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


def test_tool_calls_are_rebuilt_from_fragments() -> None:
    first = {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_", "arguments": ""},
    }
    second = {
        "index": 1,
        "id": "call_b",
        "type": "function",
        "function": {"name": "now", "arguments": "{}"},
    }
    chunks = [
        _chunk(_delta(0, role="assistant", content=None)),
        _chunk(_delta(0, tool_calls=[first])),
        _chunk(
            _delta(
                0, tool_calls=[{"index": 0, "function": {"name": "weather", "arguments": '{"ci'}}]
            )
        ),
        _chunk(_delta(0, tool_calls=[second])),
        _chunk(_delta(0, tool_calls=[{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}])),
        _chunk(_delta(0, finish="tool_calls")),
    ]
    message = assemble(chunks, AnswerKind.CHAT)["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            },
            {"id": "call_b", "type": "function", "function": {"name": "now", "arguments": "{}"}},
        ],
    }


def test_logprobs_refusal_reasoning_and_unknown_fields_are_carried_over() -> None:
    def entry(token: str) -> dict[str, Any]:
        return {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}

    chunks = [
        _chunk(_delta(0, role="assistant", reasoning_content="Let me", custom="x")),
        _chunk(_delta(0, reasoning_content=" think", logprobs={"content": [entry("a")]})),
        _chunk(_delta(0, refusal="No", logprobs={"content": [entry("b")], "refusal": None})),
        _chunk(_delta(0, finish="stop"), system_fingerprint="fp_1", timings={"n": 1}),
        {**HEAD, "choices": [], "usage": {"prompt_tokens": 1}, "timings": {"n": 2}},
    ]
    answer = assemble(chunks, AnswerKind.CHAT)
    choice = answer["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "reasoning_content": "Let me think",
        "refusal": "No",
        "custom": "x",
    }
    assert choice["logprobs"] == {"content": [entry("a"), entry("b")], "refusal": None}
    assert answer["system_fingerprint"] == "fp_1"
    assert answer["timings"] == {"n": 2}  # the last chunk that set it


def test_completions_text_and_token_arrays() -> None:
    def piece(text: str, offset: int, finish: str | None = None) -> dict[str, Any]:
        logprobs = {
            "tokens": [text],
            "token_logprobs": [-1.0],
            "top_logprobs": [{text: -1.0}],
            "text_offset": [offset],
        }
        return {
            "index": 0,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish,
            "stop_reason": None,
        }

    head = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
    chunks = [{**head, "choices": [piece("A", 0)]}, {**head, "choices": [piece(" b", 1, "length")]}]
    answer = assemble(chunks, AnswerKind.COMPLETION)
    assert answer["object"] == "text_completion"
    assert answer["choices"] == [
        {
            "index": 0,
            "text": "A b",
            "logprobs": {
                "tokens": ["A", " b"],
                "token_logprobs": [-1.0, -1.0],
                "top_logprobs": [{"A": -1.0}, {" b": -1.0}],
                "text_offset": [0, 1],
            },
            "finish_reason": "length",
            "stop_reason": None,
        }
    ]


def test_shape_fills_only_what_the_stream_did_not_set() -> None:
    shape = AnswerShape(
        answer={"prompt_logprobs": None, "system_fingerprint": None},
        choice={"stop_reason": None, "finish_reason": "never"},
        message={"refusal": None, "reasoning": None},
    )
    chunks = [
        _chunk(
            _delta(0, role="assistant", content="hi", reasoning="r", finish="stop"),
            system_fingerprint="fp",
        )
    ]
    answer = assemble(chunks, AnswerKind.CHAT, shape)
    assert answer["prompt_logprobs"] is None and answer["system_fingerprint"] == "fp"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][0]["stop_reason"] is None
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "hi",
        "reasoning": "r",
        "refusal": None,
    }


def _sim_chunks(gen: answers.Generation, rid: int, tokens: int) -> list[dict[str, Any]]:
    kind = "chat.completion.chunk" if gen.chat else "text_completion"
    head = {"id": "x", "object": kind, "created": 1, "model": "sim"}
    chunks = []
    if gen.chat:
        chunks += [{**head, "choices": [answers.first_chat_choice(c)]} for c in range(gen.n)]
    for token in range(tokens):  # choices interleaved token by token, as a batch makes them
        for choice in range(gen.n):
            body = answers.stream_choice(gen, rid, choice, token, token == tokens - 1)
            chunks.append({**head, "choices": [body]})
    return chunks


@settings(max_examples=60, deadline=None)
@given(
    chat=st.booleans(),
    n=st.integers(1, 3),
    tool=st.booleans(),
    top=st.one_of(st.none(), st.integers(0, 3)),
    rid=st.integers(0, 50),
    tokens=st.integers(1, 6),
)
def test_sim_stream_assembles_into_its_own_non_streaming_answer(
    chat: bool, n: int, tool: bool, top: int | None, rid: int, tokens: int
) -> None:
    gen = answers.Generation(
        chat=chat, n=n, tool="lookup" if chat and tool else None, top_logprobs=top, seed=rid * 7
    )
    kind = AnswerKind.CHAT if chat else AnswerKind.COMPLETION
    shape = adapter_for("sim").answer_shapes.get(CHAT if chat else COMPLETIONS)
    built = assemble(_sim_chunks(gen, rid, tokens), kind, shape)
    assert built["choices"] == [answers.answer_choice(gen, rid, c, tokens) for c in range(n)]


@pytest.mark.parametrize("tool", [False, True])
@pytest.mark.parametrize("top", [None, 2])
def test_agrees_with_the_openai_clients_own_accumulator(tool: bool, top: int | None) -> None:
    gen = answers.Generation(chat=True, n=2, tool="lookup" if tool else None, top_logprobs=top)
    chunks = _sim_chunks(gen, rid=3, tokens=4)
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    reference = state.current_completion_snapshot.model_dump(mode="json")
    ours = assemble(chunks, AnswerKind.CHAT)
    for mine, theirs in zip(ours["choices"], reference["choices"], strict=True):
        assert mine["message"]["content"] == theirs["message"]["content"]
        assert mine["finish_reason"] == theirs["finish_reason"]
        assert (mine["logprobs"] or {}).get("content") == (theirs["logprobs"] or {}).get("content")
        assert (mine["logprobs"] is None) == (top is None)

        def calls(message: dict[str, Any]) -> list[tuple[str, str, str]]:
            return [
                (c["id"], c["function"]["name"], c["function"]["arguments"])
                for c in message.get("tool_calls") or []
            ]

        assert calls(mine["message"]) == calls(theirs["message"])
        assert bool(calls(mine["message"])) == tool


def test_responses_answer_is_the_terminal_events_response() -> None:
    import orjson

    reply = responses.Reply(rid=4, seed=9, created=100, model="sim")
    events = [
        *responses.opening(reply),
        *(responses.delta(reply, t) for t in range(3)),
        *responses.closing(reply, 5, 3),
    ]
    assembler = ResponsesAssembler()
    for event in events:
        assembler.add(orjson.loads(event.split(b"data: ", 1)[1]))
    assert assembler.answer() == responses.response(reply, 5, 3, done=True)
    with pytest.raises(ValueError, match="terminal"):
        ResponsesAssembler().answer()
