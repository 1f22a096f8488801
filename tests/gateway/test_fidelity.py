"""What a client sees through the gateway is what it sees from the engine directly: the same
request sent both ways with the official `openai` client, compared field by field (ids and
timestamps aside). The gateway and simulated engines run in this process (harness.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from modelyard.engines.api import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES
from modelyard.gateway.endpoints import ROUTED, upstream_body
from tests.gateway.compare import assert_same
from tests.gateway.harness import Running, running

ROUTES = """\
  - {name: chat, match: {task: chat}, targets: [primary, fallback]}
  - {targets: [primary, fallback]}"""
POLICY = """\
policy:
  retry: {attempts: 1, backoff: 10ms}
  timeouts: {connect: 1s, first_token: 2s, idle: 2s, total: 30s}
  health: {interval: 1h, warmup_every: 1h}
"""
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
MESSAGES = [{"role": "user", "content": "What is the weather in Oslo?"}]
CHAT_CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "tools": {"tools": TOOLS},
    "named-tool": {
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    "n=2": {"n": 2},
    "logprobs": {"logprobs": True, "top_logprobs": 2},
}
COMPLETION_CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "n=2": {"n": 2},
    "logprobs": {"logprobs": 2},
}

Scenario = Callable[[Running], Awaitable[None]]


def _run(tmp_path: Path, scenario: Scenario, engines: dict[str, str] | None = None) -> None:
    async def go() -> None:
        models = ("primary", "fallback")
        async with running(tmp_path, models, ROUTES, POLICY, engines) as system:
            await scenario(system)

    asyncio.run(go())


def _clients(system: Running) -> tuple[openai.AsyncOpenAI, openai.AsyncOpenAI]:
    def client(url: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

    return client(system.engines["primary"]), client(system.gateway_url)


async def _chat_both(system: Running, **request: Any) -> tuple[Any, Any]:
    direct, through = _clients(system)
    async with direct, through:
        results = []
        for client in (direct, through):
            reply = await client.chat.completions.create(model="primary", **request)
            if request.get("stream"):
                reply = [chunk async for chunk in reply]
            results.append(reply)
    return results[0], results[1]


async def _completion_both(system: Running, **request: Any) -> tuple[Any, Any]:
    direct, through = _clients(system)
    async with direct, through:
        results = []
        for client in (direct, through):
            reply = await client.completions.create(model="primary", **request)
            if request.get("stream"):
                reply = [chunk async for chunk in reply]
            results.append(reply)
    return results[0], results[1]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_chat_direct_and_through_the_gateway_are_equal(tmp_path: Path, stream: bool) -> None:
    async def scenario(system: Running) -> None:
        for name, extra in CHAT_CASES.items():
            direct, through = await _chat_both(
                system, messages=MESSAGES, max_tokens=5, stream=stream, **extra
            )
            assert_same(direct, through)
            if not stream:  # the cases do what they say, so the comparison means something
                choices = direct.choices
                assert len(choices) == (2 if name == "n=2" else 1)
                assert bool(choices[0].message.tool_calls) == ("tool" in name)
                assert (choices[0].logprobs is not None) == (name == "logprobs")
                assert direct.usage.completion_tokens == 5 * len(choices)

    _run(tmp_path, scenario)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_completions_direct_and_through_the_gateway_are_equal(tmp_path: Path, stream: bool) -> None:
    async def scenario(system: Running) -> None:
        for name, extra in COMPLETION_CASES.items():
            direct, through = await _completion_both(
                system, prompt="The sky is", max_tokens=4, stream=stream, **extra
            )
            assert_same(direct, through)
            if not stream:
                assert len(direct.choices) == (2 if name == "n=2" else 1)
                assert (direct.choices[0].logprobs is not None) == (name == "logprobs")

    _run(tmp_path, scenario)


def test_streams_carry_usage_only_when_the_client_asks(tmp_path: Path) -> None:
    async def scenario(system: Running) -> None:
        direct, through = _clients(system)
        async with direct, through:
            # the openai docs' own loop: every chunk has a choice unless usage was asked for
            stream = await through.chat.completions.create(
                model="chat", messages=MESSAGES, max_tokens=6, stream=True
            )
            text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
            assert len(text.split()) == 6
            for options in ({"include_usage": False}, {"include_usage": True}):
                one, other = await _chat_both(
                    system, messages=MESSAGES, max_tokens=3, stream=True, stream_options=options
                )
                assert_same(one, other)
                assert (one[-1].usage is not None) == options["include_usage"]
                assert (other[-1].choices == []) == options["include_usage"]
        _, metrics = await _get(system.gateway_url + "/metrics")
        assert 'modelyard_gateway_tokens_total{kind="completion",model="primary"}' in metrics

    _run(tmp_path, scenario)


def test_what_the_gateway_sends_upstream() -> None:
    chat, completions = ROUTED[CHAT], ROUTED[COMPLETIONS]
    streamed = {
        "model": "chat",
        "stream": True,
        "stream_options": {"include_usage": False, "continuous_usage_stats": True},
        "seed": 3,
    }
    # a stream goes as the client asked for it, only the model named for the engine
    assert orjson.loads(upstream_body(chat, streamed, "primary")) == {
        **streamed,
        "model": "primary",
    }
    # an answer wanted whole is streamed, with usage (the answer has it)
    assert orjson.loads(upstream_body(completions, {"prompt": "x", "n": 2}, "m")) == {
        "prompt": "x",
        "n": 2,
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    responses = orjson.loads(upstream_body(ROUTED[RESPONSES], {"input": "x"}, "m"))
    assert responses == {"input": "x", "model": "m", "stream": True}
    embeddings = orjson.loads(upstream_body(ROUTED[EMBEDDINGS], {"input": "x"}, "m"))
    assert embeddings == {"input": "x", "model": "m"}


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        return response.status, dict(response.headers), orjson.loads(await response.read())


def test_embeddings_are_relayed_and_fail_over_before_any_byte(tmp_path: Path) -> None:
    async def scenario(system: Running) -> None:
        direct, through = _clients(system)
        async with direct, through:
            request = {"model": "primary", "input": ["first text", "second"]}
            one = await direct.embeddings.create(**request)
            other = await through.embeddings.create(**request)
            assert_same(one, other)
            assert len(one.data) == 2 and len(one.data[0].embedding) == 8
            # the refusal comes last: a refusing engine cannot be told to stop
            for fault in ({"error_rate": 1.0, "error_status": 500}, {"refuse_connections_s": 500}):
                await system.faults("primary", **fault)
                status, headers, body = await _post(
                    system.gateway_url + "/v1/embeddings", {"model": "chat", "input": "x"}
                )
                assert status == 200, body
                assert headers["X-Modelyard-Model"] == "fallback"
                assert body["model"] == "fallback" and len(body["data"]) == 1
                if "error_rate" in fault:
                    await system.faults("primary")

    _run(tmp_path, scenario)


def test_responses_stream_and_not(tmp_path: Path) -> None:
    async def scenario(system: Running) -> None:
        direct, through = _clients(system)
        async with direct, through:
            request: dict[str, Any] = {"model": "primary", "input": "Hi", "max_output_tokens": 4}
            one = await direct.responses.create(**request)
            other = await through.responses.create(**request)
            assert_same(one, other)
            assert one.output_text and len(one.output_text.split()) == 4
            streams = []
            for client in (direct, through):
                events = await client.responses.create(**request, stream=True)
                streams.append([event async for event in events])
            assert_same(streams[0], streams[1])
            assert streams[1][-1].type == "response.incomplete"
            await system.faults("primary", error_rate=1.0, error_status=503)
            status, headers, body = await _post(
                system.gateway_url + "/v1/responses", {"model": "chat", "input": "Hi"}
            )
            assert status == 200 and headers["X-Modelyard-Model"] == "fallback"
            assert body["object"] == "response" and body["model"] == "fallback"

    _run(tmp_path, scenario)


def test_models_list_and_retrieve(tmp_path: Path) -> None:
    async def scenario(system: Running) -> None:
        direct, through = _clients(system)
        async with direct, through:
            engine_entry = (await direct.models.list()).data[0]
            assert_same(engine_entry, await through.models.retrieve("primary"))
            listed = {m.id: m for m in (await through.models.list()).data}
            assert set(listed) == {"chat", "default", "primary", "fallback"}
            assert_same(engine_entry, listed["primary"])
            assert listed["chat"].owned_by == "modelyard"
            with pytest.raises(openai.NotFoundError) as missing:
                await through.models.retrieve("gpt-9")
            assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]

    _run(tmp_path, scenario)


def test_unknown_urls_get_an_openai_404_naming_what_is_served(tmp_path: Path) -> None:
    async def scenario(system: Running) -> None:
        for method, path in (("POST", "/v1/audio/speech"), ("GET", "/v1/chat/completions")):
            async with (
                aiohttp.ClientSession() as session,
                session.request(method, system.gateway_url + path, json={}) as response,
            ):
                body = await response.json()
            assert response.status == 404
            assert body["error"]["type"] == "invalid_request_error"
            assert f"{method} {path}" in body["error"]["message"]
            assert "POST /v1/embeddings" in body["error"]["message"]
            assert "GET /v1/models/{model}" in body["error"]["message"]

    _run(tmp_path, scenario)


def test_503_names_models_and_reasons_and_health_says_503(tmp_path: Path) -> None:
    async def scenario(system: Running) -> None:
        status, _ = await _get(system.gateway_url + "/health")
        assert status == 200
        await system.faults("primary", error_rate=1.0, error_status=502)
        await system.faults("fallback", refuse_connections_s=500)
        status, _, body = await _post(
            system.gateway_url + "/v1/completions", {"model": "chat", "prompt": "x"}
        )
        assert status == 503
        assert body["error"]["tried"] == [
            {"model": "primary", "error": "server_error: HTTP 502"},
            {"model": "fallback", "error": "connect_error: cannot connect"},
        ]
        assert "127.0.0.1" not in orjson.dumps(body).decode()  # addresses go to /health only
        for backend in system.gateway.backends["primary"] + system.gateway.backends["fallback"]:
            backend.healthy = False  # as the health loop finds them
        status, text = await _get(system.gateway_url + "/health")
        health = orjson.loads(text)
        assert status == 503 and health["serving"] is False
        assert health["routes"] == {"task:chat": False, "chat": False, "default": False}
        assert "127.0.0.1" in health["backends"][1]["last_error"]  # the full reason is here

    _run(tmp_path, scenario)


def test_an_endpoint_no_engine_of_the_route_serves_is_a_404(tmp_path: Path) -> None:
    """TGI serves no /v1/embeddings (its adapter says so): a route's TGI model is skipped
    without counting as a failure, and a route of TGI models only answers 404."""

    async def skipped(system: Running) -> None:
        status, headers, _ = await _post(
            system.gateway_url + "/v1/embeddings", {"model": "chat", "input": "x"}
        )
        assert status == 200 and headers["X-Modelyard-Model"] == "fallback"
        assert headers["X-Modelyard-Attempts"] == "1"

    async def refused(system: Running) -> None:
        status, _, body = await _post(
            system.gateway_url + "/v1/embeddings", {"model": "chat", "input": "x"}
        )
        assert status == 404 and body["error"]["code"] == "endpoint_not_served"
        assert "primary (tgi), fallback (tgi)" in body["error"]["message"]

    _run(tmp_path, skipped, engines={"primary": "tgi"})
    _run(tmp_path, refused, engines={"primary": "tgi", "fallback": "tgi"})


def test_a_responses_stream_that_fails_part_way_ends_with_an_error_event(tmp_path: Path) -> None:
    async def scenario(system: Running) -> None:
        await system.faults("primary", close_after_tokens=2)
        body = {"model": "primary", "input": "Hi", "max_output_tokens": 5, "stream": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(system.gateway_url + "/v1/responses", json=body) as response,
        ):
            lines = [line.strip() async for line in response.content if line.strip()]
        kinds = [line.removeprefix(b"event: ") for line in lines if line.startswith(b"event:")]
        assert kinds.count(b"response.output_text.delta") == 2
        assert kinds[-1] == b"error" and b"response.incomplete" not in kinds
        error = orjson.loads(lines[-1].removeprefix(b"data: "))
        assert error["type"] == "error" and "failed mid-stream" in error["message"]

    _run(tmp_path, scenario)
