"""The HTTP side of `sim serve`: vLLM's OpenAI endpoints over the simulated engines.

Chat and completions (stream or not, `n` choices, tool calls, log-probabilities: what they say
is in sim/server/answers.py), embeddings, the Responses API, models, health, metrics, and the
fault controls (`/_sim/faults`). Prompt tokens are counted by the documented rule in
sim/server/tokens.py; a stream carries usage only when the request asks
(`stream_options.include_usage`), as vLLM's does.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import generate_latest

from modelyard.sim.engine import SimRequest
from modelyard.sim.faults import CONTEXT_LENGTH_BODY, parse_faults
from modelyard.sim.server import answers, responses, tokens
from modelyard.sim.server.clock import RealtimeDriver
from modelyard.sim.server.listeners import Listeners
from modelyard.sim.server.metrics import SimModel
from modelyard.sim.server.sinks import CountSink, Frame, StreamSink

JSON = dict[str, Any]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(message: str, status: int, kind: str = "BadRequestError") -> web.Response:
    return _json(
        {"object": "error", "message": message, "type": kind, "param": None, "code": status}, status
    )


def _sse(data: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


class SimServer:
    """All served models of one `sim serve` process."""

    def __init__(
        self, models: list[SimModel], driver: RealtimeDriver, timing_debug: bool = False
    ) -> None:
        self.models = models
        self.driver = driver
        self.timing_debug = timing_debug
        self._ids = itertools.count()
        self.listeners = Listeners()

    def app_for(self, model: SimModel) -> web.Application:
        async def completions(http: web.Request) -> web.StreamResponse:
            return await self._generate(http, model, chat=False)

        async def chat(http: web.Request) -> web.StreamResponse:
            return await self._generate(http, model, chat=True)

        async def embeddings(http: web.Request) -> web.Response:
            return await self._embeddings(http, model)

        async def responses_(http: web.Request) -> web.StreamResponse:
            return await self._responses(http, model)

        async def models(http: web.Request) -> web.Response:
            return await self._models(model)

        async def health(http: web.Request) -> web.Response:
            return await self._health(model)

        async def metrics(http: web.Request) -> web.Response:
            return await self._metrics(model)

        async def get_faults(http: web.Request) -> web.Response:
            return await self._get_faults(model)

        async def set_faults(http: web.Request) -> web.Response:
            return await self._set_faults(http, model)

        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.add_routes(
            [
                web.post("/v1/completions", completions),
                web.post("/v1/chat/completions", chat),
                web.post("/v1/embeddings", embeddings),
                web.post("/v1/responses", responses_),
                web.get("/v1/models", models),
                web.get("/health", health),
                web.get("/metrics", metrics),
                web.get("/_sim/faults", get_faults),
                web.post("/_sim/faults", set_faults),
            ]
        )
        return app

    async def start(self, host: str, ports: list[int]) -> None:
        """Listen on one port per engine; SimError naming the port when one is taken."""
        for model, port in zip(self.models, ports, strict=True):
            await self.listeners.add(model.name, self.app_for(model), host, port)
            refuse_s = model.faults.faults.refuse_connections_s
            if refuse_s > 0:
                asyncio.get_running_loop().create_task(
                    self.listeners.refuse(model.name, refuse_s / self.speed, listening=False)
                )
            else:
                await self.listeners.listen(model.name)

    async def stop(self) -> None:
        await self.listeners.close()

    @property
    def speed(self) -> float:
        return self.driver.clock.speed

    async def _get_faults(self, model: SimModel) -> web.Response:
        return _json(model.faults.faults.model_dump())

    async def _set_faults(self, request: web.Request, model: SimModel) -> web.Response:
        try:
            faults = parse_faults(await request.json())
        except Exception as exc:
            return _error(str(exc), 400)
        model.faults.set(faults)
        if faults.refuse_connections_s > 0:
            refuse_s = faults.refuse_connections_s / self.speed
            asyncio.get_running_loop().create_task(self.listeners.refuse(model.name, refuse_s))
        return _json(faults.model_dump())

    def _cold(self, model: SimModel) -> bool:
        return self.driver.clock.now() < model.cold_start_s

    async def _health(self, model: SimModel) -> web.Response:
        if self._cold(model):
            return web.Response(status=503, text="loading")
        return web.Response(status=200)

    async def _models(self, model: SimModel) -> web.Response:
        return _json(
            {
                "object": "list",
                "data": [
                    {
                        "id": model.served_name,
                        "object": "model",
                        "created": 0,
                        "owned_by": "modelyard-sim",
                        "root": model.served_name,
                        "max_model_len": model.max_model_len,
                    }
                ],
            }
        )

    async def _metrics(self, model: SimModel) -> web.Response:
        return web.Response(
            body=generate_latest(model.registry), content_type="text/plain", charset="utf-8"
        )

    async def _admit(self, http: web.Request, model: SimModel) -> JSON | web.Response:
        """The request's body, or the answer that refuses it (loading, crash, bad JSON)."""
        if self._cold(model):
            return _error("model is loading", 503, "ServiceUnavailableError")
        faults = model.faults
        faults.requests += 1
        limit = faults.faults.crash_after_requests
        if limit is not None and faults.requests > limit:
            os._exit(1)  # an engine crash: no clean shutdown, connections reset
        try:
            body = orjson.loads(await http.read())
        except orjson.JSONDecodeError as exc:
            return _error(f"invalid request: {exc}", 400)
        if not isinstance(body, dict):
            return _error("invalid request: the request body must be a JSON object", 400)
        return body

    async def _inject(self, model: SimModel) -> web.Response | None:
        """Injected faults before the answer starts: a hang, an error, a slow first token."""
        faults = model.faults
        if faults.draw_hang():
            await asyncio.Event().wait()  # never answers; ends when the client goes away
        if faults.draw_error():
            payload = faults.faults.error_body
            if payload == "context_length":
                return _json(
                    {**CONTEXT_LENGTH_BODY, "message": "injected context length error"}, 400
                )
            status = faults.faults.error_status
            return _json(
                payload
                or {
                    "object": "error",
                    "message": "injected fault",
                    "type": "InternalServerError",
                    "param": None,
                    "code": status,
                },
                status,
            )
        slow_s = faults.faults.slow_first_token_s
        if slow_s > 0:
            await asyncio.sleep(slow_s / self.driver.clock.speed)
        return None

    async def _generate(self, http: web.Request, model: SimModel, chat: bool) -> web.StreamResponse:
        received = self.driver.clock.now()  # the request's arrival, as an engine would stamp it
        body = await self._admit(http, model)
        if isinstance(body, web.Response):
            return body
        try:
            prompt_tokens = tokens.count_prompt_tokens(body, chat)
            generation = answers.parse_generation(body, chat)
        except ValueError as exc:
            return _error(f"invalid request: {exc}", 400)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = 16 if not chat else model.default_max_tokens
        min_tokens = body.get("min_tokens", 0) or 0
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error("max_tokens must be a positive integer", 400)
        if not isinstance(min_tokens, int) or min_tokens > max_tokens:
            return _error("min_tokens must be an integer no larger than max_tokens", 400)
        requested = prompt_tokens + max_tokens
        if requested > model.max_model_len:
            text = CONTEXT_LENGTH_BODY["message"]
            assert isinstance(text, str)
            return _json(
                {
                    **CONTEXT_LENGTH_BODY,
                    "message": text.format(
                        max_len=model.max_model_len,
                        requested=requested,
                        prompt=prompt_tokens,
                        completion=max_tokens,
                    ),
                },
                400,
            )
        injected = await self._inject(model)
        if injected is not None:
            return injected
        rid = next(self._ids)
        stream = bool(body.get("stream"))
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
        head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{rid}",
            "object": ("chat.completion.chunk" if chat else "text_completion")
            if stream
            else ("chat.completion" if chat else "text_completion"),
            "created": int(time.time()),
            "model": model.served_name,
        }
        arrival = received + model.faults.faults.slow_first_token_s
        requests = [
            SimRequest(
                rid=rid * answers.MAX_CHOICES + choice,
                arrival=arrival,
                prompt_tokens=prompt_tokens,
                output_tokens=max_tokens,
            )
            for choice in range(generation.n)
        ]
        try:
            if stream:
                return await self._stream(
                    http, model, requests, head, generation, rid, include_usage
                )
            return await self._complete(model, requests, head, generation, rid)
        finally:
            for request in requests:
                if request.finished != request.finished:  # NaN: not finished, client left
                    model.engine.abort(request)

    def _usage(self, prompt_tokens: int, completion_tokens: int) -> JSON:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    async def _complete(
        self,
        model: SimModel,
        requests: list[SimRequest],
        head: JSON,
        generation: answers.Generation,
        rid: int,
    ) -> web.Response:
        sinks = [CountSink() for _ in requests]
        for request, sink in zip(requests, sinks, strict=True):
            request.payload = sink
            self.driver.submit(model.engine, request)
        await asyncio.gather(*(sink.done for sink in sinks))
        choices = [
            answers.answer_choice(generation, rid, choice, sink.tokens)
            for choice, sink in enumerate(sinks)
        ]
        usage = self._usage(requests[0].prompt_tokens, sum(sink.tokens for sink in sinks))
        return _json({**head, "choices": choices, "usage": usage})

    def _frame(self, head: JSON, generation: answers.Generation, rid: int, choice: int) -> Frame:
        """How each token of one choice is written: pre-built bytes for one plain choice (the
        timing-critical path), an encoded chunk otherwise."""
        head_bytes = orjson.dumps(head)[:-1] + b","
        if not generation.plain:

            def encoded(token: int, last: bool, time_s: float) -> bytes:
                return (
                    b"data: "
                    + head_bytes
                    + b'"choices":['
                    + orjson.dumps(answers.stream_choice(generation, rid, choice, token, last))
                    + b"]}\n\n"
                )

            return encoded
        chat = generation.chat
        opening = (
            head_bytes
            + b'"choices":[{"index":0,'
            + (b'"delta":{"content":"' if chat else b'"text":"')
        )
        close = b'"}' if chat else b'"'
        end_more = close + b',"logprobs":null,"finish_reason":null}]'
        end_last = close + b',"logprobs":null,"finish_reason":"length"}]'
        due = self.driver.clock.wall if self.timing_debug else None
        words, first = answers.WORD_BYTES, answers.word_index(generation.seed, 0, 0)
        count = len(words)

        def plain(token: int, last: bool, time_s: float) -> bytes:
            piece = words[(first + token) % count]  # answers.word_index, inlined: per token
            extra = b""
            if due is not None:  # when this token was due, on time.monotonic()
                extra = b',"modelyard_sent_monotonic":%r,"modelyard_due_monotonic":%r' % (
                    time.monotonic(),
                    due(time_s),
                )
            return b"data: " + opening + piece + (end_last if last else end_more) + extra + b"}\n\n"

        return plain

    async def _open_stream(self, http: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        await response.prepare(http)
        return response

    async def _stream(
        self,
        http: web.Request,
        model: SimModel,
        requests: list[SimRequest],
        head: JSON,
        generation: answers.Generation,
        rid: int,
        include_usage: bool,
    ) -> web.StreamResponse:
        response = await self._open_stream(http)
        if generation.chat:
            for choice in range(generation.n):
                await response.write(_sse({**head, "choices": [answers.first_chat_choice(choice)]}))
        assert http.transport is not None
        sinks = []
        for choice, request in enumerate(requests):
            frame = self._frame(head, generation, rid, choice)
            sink = StreamSink(http.transport, frame, request.output_tokens, model.faults.faults)
            request.payload = sink
            sinks.append(sink)
            self.driver.submit(model.engine, request)
        if model.faults.faults.stall_after_tokens is not None:
            await asyncio.Event().wait()  # a stalled stream ends only when the client leaves
        outcomes = await asyncio.gather(*(sink.done for sink in sinks))
        if "closed" in outcomes:
            return response
        if include_usage:
            usage = self._usage(requests[0].prompt_tokens, sum(sink.sent for sink in sinks))
            await response.write(_sse({**head, "choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, http: web.Request, model: SimModel) -> web.Response:
        body = await self._admit(http, model)
        if isinstance(body, web.Response):
            return body
        try:
            answer = tokens.embeddings_answer(body, model.served_name)
        except ValueError as exc:
            return _error(f"invalid request: {exc}", 400)
        injected = await self._inject(model)
        return injected if injected is not None else _json(answer)

    async def _responses(self, http: web.Request, model: SimModel) -> web.StreamResponse:
        received = self.driver.clock.now()
        body = await self._admit(http, model)
        if isinstance(body, web.Response):
            return body
        try:
            input_tokens = tokens.text_tokens(responses.input_text(body))
            output_tokens = responses.max_output_tokens(body)
        except ValueError as exc:
            return _error(f"invalid request: {exc}", 400)
        injected = await self._inject(model)
        if injected is not None:
            return injected
        rid = next(self._ids)
        reply = responses.Reply(
            rid, answers.content_seed(body), int(time.time()), model.served_name
        )
        request = SimRequest(
            rid=rid * answers.MAX_CHOICES,
            arrival=received + model.faults.faults.slow_first_token_s,
            prompt_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        try:
            if not body.get("stream"):
                sink = CountSink()
                request.payload = sink
                self.driver.submit(model.engine, request)
                await sink.done
                return _json(responses.response(reply, input_tokens, sink.tokens, done=True))
            response = await self._open_stream(http)
            for event in responses.opening(reply):
                await response.write(event)
            assert http.transport is not None
            stream = StreamSink(
                http.transport,
                lambda token, last, time_s: responses.delta(reply, token),
                output_tokens,
                model.faults.faults,
            )
            request.payload = stream
            self.driver.submit(model.engine, request)
            if model.faults.faults.stall_after_tokens is not None:
                await asyncio.Event().wait()
            if await stream.done == "closed":
                return response
            for event in responses.closing(reply, input_tokens, stream.sent):
                await response.write(event)
            await response.write_eof()
            return response
        finally:
            if request.finished != request.finished:
                model.engine.abort(request)
