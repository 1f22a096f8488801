"""Where a committed attempt's answer goes: a client that hangs up mid-stream, an upstream that
answers `stream: true` with one JSON body, events that are not JSON — in this process, on fake
engines and a fake clock."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
import pytest

from modelyard.engines.api import CHAT, COMPLETIONS, RESPONSES
from modelyard.gateway.endpoints import ROUTED
from modelyard.gateway.errors import MalformedStream
from modelyard.gateway.relay import AnswerSink
from tests.gateway.fakes import Faults, eventually, run, running

ONE_MODEL = """\
  - {name: solo, match: {task: solo}, targets: [primary]}
"""


def test_a_client_hanging_up_mid_stream_is_recorded_not_an_unhandled_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            primary = system.engine("primary")
            primary.faults = Faults(token_gap_s=0.1)
            body = {"model": "chat", "prompt": "x", "max_tokens": 50, "stream": True}
            response = await system.client.post("/v1/completions", json=body)
            assert response.status == 200
            first = await response.content.readline()
            assert first.startswith(b"data: {")
            response.close()  # the client goes away
            for _ in range(50):  # tokens keep coming until the gateway notices
                sent = primary.tokens_sent
                system.clock.advance(0.1)
                await eventually(
                    lambda: primary.tokens_sent > sent or bool(system.access_lines()),  # noqa: B023
                    "the next token or the end",
                )
                if system.access_lines():
                    break
            [line] = system.access_lines()
            assert line["status"] == 200 and line["outcome"] == "client_disconnected"
            assert primary.tokens_sent < 50
            assert system.transport.responses[0].closed  # the upstream was told to stop
            assert (
                system.metric(
                    "modelyard_gateway_attempts_total",
                    model="primary",
                    backend="http://primary:8000",
                    outcome="client_disconnected",
                )
                == 1.0
            )
            breaker = system.gateway.backends["primary"][0].breaker
            assert breaker.state.value == "closed" and breaker.failures == 0
            assert system.engine("fallback").generations() == []

    with caplog.at_level(logging.ERROR, logger="modelyard.gateway"):
        run(scenario)
    assert not [r for r in caplog.records if r.name == "modelyard.gateway"]


@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
def test_an_upstream_answering_a_stream_request_with_one_json_body_has_answered(
    tmp_path: Path, path: str
) -> None:
    """Some OpenAI-compatible servers and proxies ignore `stream: true`: their whole answer is
    the answer (as is for a client that wanted it whole, one chunk for a streaming one), not a
    failed stream that opens the breaker of a one-model route."""

    async def scenario() -> None:
        async with running(tmp_path, routes=ONE_MODEL) as system:
            primary = system.engine("primary")
            primary.faults = Faults(whole_json=True)
            request = {"model": "solo", "max_tokens": 3}
            request |= (
                {"messages": [{"role": "user", "content": "hi"}]}
                if path == CHAT
                else {"prompt": "x"}
            )
            for _ in range(3):  # more than consecutive_failures
                status, headers, answer = await system.post(path, request)
                assert status == 200 and headers["X-Modelyard-Model"] == "primary"
                assert answer["usage"]["completion_tokens"] == 3
                text = (
                    answer["choices"][0]["message"]["content"]
                    if path == CHAT
                    else answer["choices"][0]["text"]
                )
                assert text == "w0 w1 w2 "
            lines = await system.stream(
                {**request, "stream_options": {"include_usage": True}}, path=path
            )
            assert lines[-1] == b"data: [DONE]"
            chunks = [orjson.loads(line.removeprefix(b"data: ")) for line in lines[:-1]]
            assert len(chunks) == 2 and chunks[1]["choices"] == []
            assert chunks[1]["usage"]["completion_tokens"] == 3
            choice = chunks[0]["choices"][0]
            piece = choice["delta"]["content"] if path == CHAT else choice["text"]
            assert piece == "w0 w1 w2 " and choice["finish_reason"] == "length"
            assert chunks[0]["object"] == (
                "chat.completion.chunk" if path == CHAT else "text_completion"
            )
            breaker = system.gateway.backends["primary"][0].breaker
            assert breaker.state.value == "closed" and breaker.failures == 0
            assert system.engine("fallback").generations() == []

    run(scenario)


def test_an_event_that_is_not_json_fails_the_attempt_not_the_gateway(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            system.engine("primary").faults = Faults(malformed_after_tokens=2)
            status, headers, body = await system.post(
                "/v1/completions", {"model": "chat", "prompt": "x", "max_tokens": 4}
            )
            assert status == 200 and headers["X-Modelyard-Model"] == "fallback"
            assert body["choices"][0]["text"] == "w0 w1 w2 w3 "
            assert system.gateway.backends["primary"][0].last_error == (
                "server_error: malformed event in the stream"
            )

    with caplog.at_level(logging.ERROR, logger="modelyard.gateway"):
        run(scenario)
    assert not [r for r in caplog.records if r.name == "modelyard.gateway"]


@pytest.mark.parametrize(
    ("path", "data"),
    [
        (COMPLETIONS, b"not json"),
        (COMPLETIONS, b"[1, 2]"),
        (COMPLETIONS, b'{"choices": 7}'),
        (RESPONSES, b'{"type": "response.completed"}'),
    ],
)
def test_the_assembler_refuses_what_is_not_the_apis_shape(path: str, data: bytes) -> None:
    sink = AnswerSink(ROUTED[path], None)
    with pytest.raises(MalformedStream):
        asyncio.run(sink.event(b"", data, None))


def test_a_committed_stream_is_piped_whole_and_in_order_past_the_write_limit(
    tmp_path: Path,
) -> None:
    """After the first token the relay hands the rest of the stream on from the upstream's own
    callback (`pipe`); a stream well past aiohttp's 64 KiB write limit (the drain in between)
    arrives whole and in order."""

    async def scenario() -> None:
        async with running(tmp_path) as system:
            body = {"model": "chat", "prompt": "x", "max_tokens": 2000, "stream": True}
            lines = await system.stream(body)
            assert lines[-1] == b"data: [DONE]"
            assert sum(len(line) for line in lines) > 0x10000 * 2
            chunks = [orjson.loads(line.removeprefix(b"data: ")) for line in lines[:-1]]
            assert len([c for c in chunks if c["choices"] and c["choices"][0]["text"]]) == 2000
            assert system.transport.responses[0].pipes >= 2  # piped, and again after a drain
            [line] = system.access_lines()
            assert line["status"] == 200 and line["outcome"] == "ok"

    run(scenario)
