"""What `sim serve` answers beyond plain text, through the official `openai` client, served in
this process: `n` choices, tool calls, log-probabilities, usage only when asked, the same
answer to the same request, embeddings and the Responses API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from modelyard.sim.server import answers
from tests.sim.inproc import sim_engines

Check = Callable[[openai.AsyncOpenAI], Awaitable[None]]
MESSAGES = [{"role": "user", "content": "What is the weather in Oslo?"}]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


def _run(tmp_path: Path, check: Check) -> None:
    async def go() -> None:
        async with sim_engines(tmp_path, ("sim",)) as (_, urls):
            client = openai.AsyncOpenAI(base_url=urls["sim"] + "/v1", api_key="x", max_retries=0)
            async with client:
                await check(client)

    asyncio.run(go())


def test_n_choices_say_different_words_and_usage_counts_all(tmp_path: Path) -> None:
    async def check(client: openai.AsyncOpenAI) -> None:
        reply = await client.chat.completions.create(
            model="sim", messages=MESSAGES, max_tokens=4, n=3
        )
        texts = [c.message.content for c in reply.choices]
        assert [c.index for c in reply.choices] == [0, 1, 2]
        assert len(set(texts)) == 3 and all(len((t or "").split()) == 4 for t in texts)
        assert reply.usage is not None and reply.usage.completion_tokens == 12
        text = await client.completions.create(model="sim", prompt="x", max_tokens=2, n=2)
        assert len(text.choices) == 2 and text.usage is not None
        assert text.usage.completion_tokens == 4
        with pytest.raises(openai.BadRequestError, match="n must be"):
            await client.completions.create(model="sim", prompt="x", max_tokens=2, n=0)

    _run(tmp_path, check)


def test_the_same_request_gets_the_same_answer(tmp_path: Path) -> None:
    async def check(client: openai.AsyncOpenAI) -> None:
        async def say(prompt: str, seed: int | None = None) -> str:
            reply = await client.completions.create(
                model="sim", prompt=prompt, max_tokens=5, seed=seed
            )
            return reply.choices[0].text

        first = await say("The sky is")
        assert await say("The sky is") == first
        assert await say("The sea is") != first
        assert await say("The sky is", seed=1) != first

    _run(tmp_path, check)


def test_tool_calls_whole_and_as_fragments(tmp_path: Path) -> None:
    async def check(client: openai.AsyncOpenAI) -> None:
        request: dict[str, Any] = {"model": "sim", "messages": MESSAGES, "max_tokens": 3}
        reply = await client.chat.completions.create(**request, tools=TOOLS)
        choice = reply.choices[0]
        (call,) = choice.message.tool_calls or []
        assert choice.finish_reason == "tool_calls" and call.type == "function"
        assert call.function.name == "get_weather"  # the first tool, when none is named
        assert len(json.loads(call.function.arguments)["words"].split()) == 3
        named = {"type": "function", "function": {"name": "get_time"}}
        stream = await client.chat.completions.create(
            **request, tools=TOOLS, tool_choice=named, stream=True
        )
        fragments = [
            tool
            async for chunk in stream
            for tool in (chunk.choices[0].delta.tool_calls or [] if chunk.choices else [])
        ]
        assert (
            len(fragments) == 3
            and fragments[0].function
            and fragments[0].function.name == "get_time"
        )
        assert all(f.id is None for f in fragments[1:])  # id and name come once
        arguments = "".join((f.function.arguments or "") for f in fragments if f.function)
        assert json.loads(arguments)["words"]
        plain = await client.chat.completions.create(**request, tools=TOOLS, tool_choice="none")
        assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content

    _run(tmp_path, check)


def test_logprobs_per_token(tmp_path: Path) -> None:
    async def check(client: openai.AsyncOpenAI) -> None:
        chat = await client.chat.completions.create(
            model="sim", messages=MESSAGES, max_tokens=3, logprobs=True, top_logprobs=2
        )
        content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
        assert content is not None and len(content) == 3
        assert "".join(t.token for t in content) == chat.choices[0].message.content
        assert all(len(t.top_logprobs) == 2 and t.logprob < 0 for t in content)
        text = await client.completions.create(model="sim", prompt="x", max_tokens=3, logprobs=1)
        logprobs = text.choices[0].logprobs
        assert logprobs is not None and logprobs.tokens is not None
        assert "".join(logprobs.tokens) == text.choices[0].text
        assert logprobs.text_offset == [0, *[len("".join(logprobs.tokens[:i])) for i in (1, 2)]]
        assert chat.choices[0].logprobs is not None
        plain = await client.completions.create(model="sim", prompt="x", max_tokens=1)
        assert plain.choices[0].logprobs is None

    _run(tmp_path, check)


def test_streams_carry_usage_only_when_asked(tmp_path: Path) -> None:
    async def check(client: openai.AsyncOpenAI) -> None:
        for options in (None, {"include_usage": False}, {"include_usage": True}):
            extra = {"stream_options": options} if options is not None else {}
            stream = await client.chat.completions.create(
                model="sim", messages=MESSAGES, max_tokens=2, stream=True, **extra
            )
            chunks = [chunk async for chunk in stream]
            asked = bool(options and options["include_usage"])
            assert (chunks[-1].choices == []) == asked
            assert (chunks[-1].usage is not None) == asked

    _run(tmp_path, check)


def test_embeddings(tmp_path: Path) -> None:
    async def check(client: openai.AsyncOpenAI) -> None:
        reply = await client.embeddings.create(model="sim", input=["a", "bb", "a"])
        vectors = [d.embedding for d in reply.data]
        assert [d.index for d in reply.data] == [0, 1, 2] and reply.model == "sim"
        assert vectors[0] == vectors[2] != vectors[1] and len(vectors[0]) == 8
        assert reply.usage.prompt_tokens == 3
        with pytest.raises(openai.BadRequestError, match="input"):
            await client.embeddings.create(model="sim", input=[])

    _run(tmp_path, check)


def test_responses_whole_and_streamed(tmp_path: Path) -> None:
    async def check(client: openai.AsyncOpenAI) -> None:
        whole = await client.responses.create(model="sim", input="Hi", max_output_tokens=3)
        assert whole.status == "incomplete" and len(whole.output_text.split()) == 3
        assert whole.usage is not None and whole.usage.output_tokens == 3
        stream = await client.responses.create(
            model="sim", input="Hi", max_output_tokens=3, stream=True
        )
        events = [event async for event in stream]
        kinds = [e.type for e in events]
        assert kinds[:4] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        assert kinds.count("response.output_text.delta") == 3
        assert kinds[-1] == "response.incomplete"
        assert [e.sequence_number for e in events] == list(range(len(events)))
        final = events[-1].response  # type: ignore[union-attr]
        assert final.output_text == whole.output_text  # the same request, the same words

    _run(tmp_path, check)


def test_generation_options_are_validated() -> None:
    with pytest.raises(ValueError, match="top_logprobs needs logprobs"):
        answers.parse_generation({"top_logprobs": 2}, chat=True)
    with pytest.raises(ValueError, match="log-probabilities"):
        answers.parse_generation({"logprobs": 99}, chat=False)
    with pytest.raises(ValueError, match=r"function\.name"):
        answers.parse_generation({"tools": [{"type": "function"}]}, chat=True)
    assert answers.parse_generation({"tools": TOOLS, "tool_choice": "none"}, chat=True).plain
