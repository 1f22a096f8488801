"""`sim serve`: OpenAI-compatible servers driven in real time by the engine simulation.

One HTTP port per simulated engine; engines placed on one simulated GPU share it exactly as in
`sim run`. Tokens leave when the simulated engine produces them (`--speed K` runs K times
faster than real time). The API, health and metric names follow vLLM's OpenAI server, and
faults can be injected per model (sim/faults.py).

Prompt tokens are counted by a fixed rule (docs/simulator.md): one token per 4 UTF-8 bytes of
text, at least 1, plus 4 per chat message; a list of token ids counts its length. The model
never emits an end-of-sequence token, so every request generates exactly `max_tokens`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from modelyard.sim.engine import Engine, SimRequest
from modelyard.sim.faults import CONTEXT_LENGTH_BODY, Faults, FaultState, parse_faults
from modelyard.sim.fixed import FixedLatencyEngine
from modelyard.sim.loop import EventLoop

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
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
DONE = None
WORD_BYTES = tuple((" " + word).encode() for word in WORDS)  # JSON-safe as they are


class Clock:
    """Simulation seconds from a monotonic wall clock running `speed` times faster."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._start = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._start) * self.speed

    def wall(self, sim_s: float) -> float:
        """The time.monotonic() value at which simulation time `sim_s` is due."""
        return self._start + sim_s / self.speed


class RealtimeDriver:
    """Runs the event loop in step with the clock; submissions wake it.

    Two things keep emitted tokens on time at a few hundred streams on one core
    (benchmarks/sim_serve_timing.py). The asyncio loop's timers fire up to a millisecond early
    or late (libuv counts whole milliseconds), so when `precise` the driver sleeps until
    `SPIN_S` before a due time, then yields the loop with `sleep(0)` (sockets are still served)
    and the core with `sched_yield` until it is due. And a step that ends with n tokens takes
    n socket writes, one after another; the step's outcome is fixed when it starts, so the
    driver starts writing half that long before the step ends (`Engine.announce`, the cost per
    token a moving average of measured writes), which centres the burst on the due time
    instead of trailing it. Tokens still carry the simulated time; the engine's state changes
    only when the step is done.
    """

    SPIN_S = 0.002
    MAX_LEAD_S = 0.005

    def __init__(self, clock: Clock, precise: bool | None = None) -> None:
        self.clock = clock
        self.loop = EventLoop()
        self.engines: list[Engine | FixedLatencyEngine] = []
        self.precise = clock.speed <= 1 if precise is None else precise
        self.token_write_s = 10e-6  # wall seconds to hand one token to its socket
        self._wake = asyncio.Event()

    def submit(self, engine: Engine | FixedLatencyEngine, request: SimRequest) -> None:
        self.loop.schedule(engine.submit(self.clock.now(), request))
        self._wake.set()

    def _next_announcement(self) -> tuple[float, Engine | FixedLatencyEngine | None, int]:
        """The earliest simulated time at which an engine's step should start being written,
        that engine, and how many tokens its step ends with."""
        best, chosen, count = math.inf, None, 0
        for engine in self.engines:
            tokens = engine.tokens_in_flight()
            if tokens and engine.in_flight is not None:
                lead = min(tokens * self.token_write_s / 2, self.MAX_LEAD_S)
                at = engine.in_flight.end - lead * self.clock.speed
                if at < best:
                    best, chosen, count = at, engine, tokens
        return best, chosen, count

    def _announce(self, engine: Engine | FixedLatencyEngine, tokens: int) -> None:
        started = time.perf_counter()
        engine.announce()
        per_token = (time.perf_counter() - started) / tokens
        self.token_write_s = 0.9 * self.token_write_s + 0.1 * min(per_token, 1e-3)

    async def run(self) -> None:
        clock, loop, precise = self.clock, self.loop, self.precise
        while True:
            self._wake.clear()
            due = loop.next_time()
            early, engine, tokens = self._next_announcement() if precise else (math.inf, None, 0)
            now = clock.now()
            if due <= now:
                loop.run(until=now)
                continue
            if engine is not None and early <= now:
                self._announce(engine, tokens)
                continue
            wait = (min(due, early) - now) / clock.speed
            if precise and wait <= self.SPIN_S:
                await asyncio.sleep(0)  # lets sockets be served while the due time nears
                os.sched_yield()  # and a process sharing this core run
                continue
            timeout = None if math.isinf(wait) else wait - (self.SPIN_S if precise else 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


class _Listener:
    """Hands tokens to the requests' sinks and keeps vLLM-style metrics."""

    def __init__(self, model: SimModel) -> None:
        self.model = model

    def on_first_token(self, request: SimRequest, time_s: float) -> None:
        request.payload.token(time_s)
        self.model.ttft.observe(time_s - request.arrival)

    def on_tokens(self, requests: Iterable[SimRequest], time_s: float) -> None:
        for request in requests:
            request.payload.token(time_s)

    def on_finished(self, request: SimRequest, time_s: float) -> None:
        request.payload.finish()
        model = self.model
        model.prompt_tokens += request.prompt_tokens
        model.generation_tokens += request.output_tokens
        model.finished += 1
        model.e2e.observe(time_s - request.arrival)


class _CountSink:
    """A non-streaming request: count tokens, wake the handler when done."""

    def __init__(self) -> None:
        self.tokens = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def token(self, time_s: float) -> None:
        self.tokens += 1

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _StreamSink:
    """A streaming request: each token is written to the socket the moment the simulation
    produces it, as one HTTP chunk, without waking the handler. At a few hundred streams a
    coroutine switch and a dict encoded per token would cost more than the simulation."""

    def __init__(
        self,
        transport: asyncio.Transport,
        head: bytes,
        chat: bool,
        rid: int,
        output_tokens: int,
        faults: Faults,
        due: Callable[[float], float] | None,
    ) -> None:
        self.transport = transport
        self.head = (
            head + b'"choices":[{"index":0,' + (b'"delta":{"content":"' if chat else b'"text":"')
        )
        close = b'"}' if chat else b'"'
        self.end_more = close + b',"logprobs":null,"finish_reason":null}]'
        self.end_last = close + b',"logprobs":null,"finish_reason":"length"}]'
        self.rid = rid
        self.output_tokens = output_tokens
        self.faults = faults
        self.due = due
        self.sent = 0
        self.stalled = False
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def _write(self, data: bytes) -> None:
        self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))  # one chunked-encoding frame

    def token(self, time_s: float) -> None:
        if self.stalled or self.done.done():
            return
        faults = self.faults
        if faults.close_after_tokens is not None and self.sent >= faults.close_after_tokens:
            self.transport.close()
            self.done.set_result("closed")
            return
        if faults.stall_after_tokens is not None and self.sent >= faults.stall_after_tokens:
            self.stalled = True  # send nothing more; the handler waits for the client to leave
            return
        last = self.sent + 1 == self.output_tokens
        word = WORD_BYTES[(self.rid + self.sent) % len(WORD_BYTES)]
        extra = b""
        if self.due is not None:  # when this token was due, on time.monotonic()
            extra = b',"modelyard_sent_monotonic":%r,"modelyard_due_monotonic":%r' % (
                time.monotonic(),
                self.due(time_s),
            )
        self._write(
            b"data: "
            + self.head
            + word
            + (self.end_last if last else self.end_more)
            + extra
            + b"}\n\n"
        )
        self.sent += 1

    def finish(self) -> None:
        if not self.done.done() and not self.stalled:
            self.done.set_result("finished")


class _EngineCollector(Collector):
    def __init__(self, model: SimModel) -> None:
        self.model = model

    def collect(self) -> Iterable[Any]:
        model = self.model
        engine = model.engine
        labels = ["model_name", "engine"]
        values = [model.served_name, "0"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric(values, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=labels)
            family.add_metric(values, value)
            return family

        yield gauge(
            "vllm:num_requests_running", "Requests in model execution batches.", engine.running
        )
        yield gauge(
            "vllm:num_requests_waiting", "Requests waiting to be processed.", len(engine.waiting)
        )
        yield gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            engine.used_blocks() / engine.kv_blocks,
        )
        yield counter(
            "vllm:num_preemptions", "Cumulative number of preemptions.", engine.stats.preemptions
        )
        yield counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", model.prompt_tokens
        )
        yield counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            model.generation_tokens,
        )
        yield counter(
            "vllm:request_success", "Count of successfully processed requests.", model.finished
        )


@dataclass(eq=False)
class SimModel:
    """One served engine: its HTTP identity, engine, faults and metrics."""

    name: str
    served_name: str
    engine: Engine | FixedLatencyEngine
    max_model_len: int
    cold_start_s: float
    faults: FaultState
    default_max_tokens: int
    gpu: str = ""
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: int = 0
    requests_seen: int = 0

    def __post_init__(self) -> None:
        labels = ["model_name", "engine"]
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            registry=self.registry,
            buckets=TTFT_BUCKETS,
        ).labels(self.served_name, "0")
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            labels,
            registry=self.registry,
            buckets=E2E_BUCKETS,
        ).labels(self.served_name, "0")
        self.registry.register(_EngineCollector(self))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(message: str, status: int, kind: str = "BadRequestError") -> web.Response:
    return _json(
        {"object": "error", "message": message, "type": kind, "param": None, "code": status}, status
    )


def _text_tokens(text: str) -> int:
    return max(1, -(-len(text.encode("utf-8")) // 4))


def count_prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    """The documented prompt-token rule (see the module docstring)."""
    if chat:
        total = 0
        for message in body.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            total += 4 + _text_tokens(content if isinstance(content, str) else "")
        return max(total, 1)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise ValueError("sim serve takes one prompt per request")
        prompt = prompt[0]
    if isinstance(prompt, list):
        return max(len(prompt), 1)
    return _text_tokens(str(prompt))


class SimServer:
    """All served models of one `sim serve` process."""

    def __init__(
        self, models: list[SimModel], driver: RealtimeDriver, timing_debug: bool = False
    ) -> None:
        self.models = models
        self.driver = driver
        self.timing_debug = timing_debug
        self._ids = itertools.count()
        self._sites: dict[str, web.TCPSite] = {}
        self._runners: list[web.AppRunner] = []

    def app_for(self, model: SimModel) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.add_routes(
            [
                web.post("/v1/completions", lambda r: self._generate(r, model, chat=False)),
                web.post("/v1/chat/completions", lambda r: self._generate(r, model, chat=True)),
                web.get("/v1/models", lambda r: self._models(model)),
                web.get("/health", lambda r: self._health(model)),
                web.get("/metrics", lambda r: self._metrics(model)),
                web.get("/_sim/faults", lambda r: self._get_faults(model)),
                web.post("/_sim/faults", lambda r: self._set_faults(r, model)),
            ]
        )
        return app

    async def start(self, host: str, ports: list[int]) -> None:
        for model, port in zip(self.models, ports, strict=True):
            runner = web.AppRunner(self.app_for(model), access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            self._runners.append(runner)
            site = web.TCPSite(runner, host, port, reuse_address=True)
            self._sites[model.name] = site
            if model.faults.faults.refuse_connections_s > 0:
                asyncio.get_running_loop().create_task(
                    self._refuse(model, model.faults.faults.refuse_connections_s, start=True)
                )
            else:
                await site.start()

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    async def _refuse(self, model: SimModel, seconds: float, start: bool = False) -> None:
        site = self._sites[model.name]
        if not start:
            await site.stop()
            server = site._runner.server
            for handler in server.connections if server is not None else []:
                handler.force_close()
        await asyncio.sleep(seconds / self.driver.clock.speed)
        runner, host, port = site._runner, site._host, site._port
        fresh = web.TCPSite(runner, host, port, reuse_address=True)
        self._sites[model.name] = fresh
        await fresh.start()

    async def _get_faults(self, model: SimModel) -> web.Response:
        return _json(model.faults.faults.model_dump())

    async def _set_faults(self, request: web.Request, model: SimModel) -> web.Response:
        try:
            faults = parse_faults(await request.json())
        except Exception as exc:
            return _error(str(exc), 400)
        model.faults.set(faults)
        if faults.refuse_connections_s > 0:
            asyncio.get_running_loop().create_task(self._refuse(model, faults.refuse_connections_s))
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

    async def _generate(self, http: web.Request, model: SimModel, chat: bool) -> web.StreamResponse:
        received = self.driver.clock.now()  # the request's arrival, as an engine would stamp it
        if self._cold(model):
            return _error("model is loading", 503, "ServiceUnavailableError")
        faults = model.faults
        faults.requests += 1
        limit = faults.faults.crash_after_requests
        if limit is not None and faults.requests > limit:
            os._exit(1)  # an engine crash: no clean shutdown, connections reset
        try:
            body = orjson.loads(await http.read())
            if not isinstance(body, dict):
                raise ValueError("the request body must be a JSON object")
            prompt_tokens = count_prompt_tokens(body, chat)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return _error(f"invalid request: {exc}", 400)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = 16 if not chat else model.default_max_tokens
        min_tokens = body.get("min_tokens", 0) or 0
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error("max_tokens must be a positive integer", 400)
        if not isinstance(min_tokens, int) or min_tokens > max_tokens:
            return _error("min_tokens must be an integer no larger than max_tokens", 400)
        if (body.get("n") or 1) != 1:
            return _error("sim serve supports n=1 only", 400)
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
        rid = next(self._ids)
        stream = bool(body.get("stream"))
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
        created = int(time.time())
        head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{rid}",
            "object": ("chat.completion.chunk" if chat else "text_completion")
            if stream
            else ("chat.completion" if chat else "text_completion"),
            "created": created,
            "model": model.served_name,
        }
        sim_request = SimRequest(
            rid=rid,
            arrival=received + slow_s,
            prompt_tokens=prompt_tokens,
            output_tokens=max_tokens,
        )
        try:
            if stream:
                return await self._stream(http, model, sim_request, head, chat, include_usage)
            return await self._complete(model, sim_request, head, chat)
        finally:
            if sim_request.finished != sim_request.finished:  # NaN: not finished, client left
                model.engine.abort(sim_request)

    def _word(self, rid: int, index: int) -> str:
        return " " + WORDS[(rid + index) % len(WORDS)]

    async def _complete(
        self, model: SimModel, request: SimRequest, head: dict[str, Any], chat: bool
    ) -> web.Response:
        sink = _CountSink()
        request.payload = sink
        self.driver.submit(model.engine, request)
        await sink.done
        produced = sink.tokens
        text = "".join(self._word(request.rid, i) for i in range(produced))
        usage = {
            "prompt_tokens": request.prompt_tokens,
            "completion_tokens": produced,
            "total_tokens": request.prompt_tokens + produced,
        }
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text}
        choice.update(logprobs=None, finish_reason="length")
        return _json({**head, "choices": [choice], "usage": usage})

    async def _stream(
        self,
        http: web.Request,
        model: SimModel,
        request: SimRequest,
        head: dict[str, Any],
        chat: bool,
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        await response.prepare(http)
        if chat:
            await response.write(
                _sse(
                    {
                        **head,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": ""},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ],
                    }
                )
            )
        assert http.transport is not None
        head_bytes = orjson.dumps(head)[:-1] + b","
        due = self.driver.clock.wall if self.timing_debug else None
        sink = _StreamSink(
            http.transport,
            head_bytes,
            chat,
            request.rid,
            request.output_tokens,
            model.faults.faults,
            due,
        )
        request.payload = sink
        self.driver.submit(model.engine, request)
        if model.faults.faults.stall_after_tokens is not None:
            await asyncio.Event().wait()  # a stalled stream ends only when the client leaves
        outcome = await sink.done
        if outcome == "closed":
            return response
        if include_usage:
            await response.write(
                _sse(
                    {
                        **head,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": request.prompt_tokens,
                            "completion_tokens": sink.sent,
                            "total_tokens": request.prompt_tokens + sink.sent,
                        },
                    }
                )
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8100
    speed: float = 1.0
    faults: dict[str, Any] = field(default_factory=dict)
    default_max_tokens: int = 256
    cold_start_s: float | None = None
    placement: str = "fleet"
    gpu: str | None = None
    calibrations: tuple[Any, ...] = ()
    timing_debug: bool = False
    precise: bool | None = None  # spin to due times (default: in real time, speed <= 1)
    fixed_latency_s: tuple[float, float] | None = None  # (TTFT, ITL): exact, no batching


@dataclass(frozen=True)
class Endpoint:
    engine: str
    model: str
    url: str
    gpu: str
    cold_start_s: float


def build_models(loaded: Any, options: ServeOptions) -> tuple[RealtimeDriver, list[SimModel]]:
    """Engines placed as `sim run` places them, each wrapped for serving."""
    from modelyard.sim.faults import Faults, FaultState
    from modelyard.sim.gpu import SharedDevice, start_engine
    from modelyard.sim.run import SimOptions, plan_devices

    driver = RealtimeDriver(Clock(options.speed), options.precise)
    plan = plan_devices(
        loaded,
        SimOptions(
            placement=options.placement,  # type: ignore[arg-type]
            gpu=options.gpu,
            calibrations=options.calibrations,
        ),
    )
    models: list[SimModel] = []
    for device in plan:
        shared = SharedDevice(device.gpu_name, device.engines[0].calibration.contention_slowdown)
        for spec in device.engines:
            listener = _Listener.__new__(_Listener)
            started = start_engine(spec, listener, shared, per_token=True)
            engine: Engine | FixedLatencyEngine = started.engine
            if options.fixed_latency_s is not None:
                engine = FixedLatencyEngine(spec.name, *options.fixed_latency_s, listener)
            served = spec.name.split("/")[0]
            faults = options.faults.get(served, Faults())
            model = SimModel(
                name=spec.name,
                served_name=served,
                engine=engine,
                gpu=device.gpu_name,
                max_model_len=started.fit.max_model_len,
                cold_start_s=started.cold_start_s
                if options.cold_start_s is None
                else options.cold_start_s,
                faults=FaultState(faults),
                default_max_tokens=options.default_max_tokens,
            )
            listener.model = model
            models.append(model)
            driver.engines.append(engine)
    return driver, models


async def serve(loaded: Any, options: ServeOptions, on_ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    import signal

    driver, models = build_models(loaded, options)
    server = SimServer(models, driver, options.timing_debug)
    ports = [options.port + i for i in range(len(models))]
    await server.start(options.host, ports)
    runner_task = asyncio.get_running_loop().create_task(driver.run())
    # Everything built so far lives as long as the process: out of the collector's sight, a
    # full collection no longer stalls token writes for tens of milliseconds.
    gc.collect()
    gc.freeze()
    endpoints = [
        Endpoint(
            engine=m.name,
            model=m.served_name,
            url=f"http://{options.host}:{port}",
            gpu=m.gpu,
            cold_start_s=m.cold_start_s,
        )
        for m, port in zip(models, ports, strict=True)
    ]
    if on_ready is not None:
        on_ready(endpoints)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        runner_task.cancel()
        await server.stop()
