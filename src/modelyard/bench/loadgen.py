"""The load generator: open loop (scheduled arrivals) or closed loop (fixed concurrency).

In open loop every request has a scheduled send time from the arrival process; latencies are
measured from it, so a client that falls behind shows up in the latencies and in the reported
schedule delay, never hides them (the coordinated-omission trap). A failed request is a record
with an error class, not an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson

from modelyard.bench.datasets import Prompt
from modelyard.bench.metrics import RequestRecord
from modelyard.http import pacing
from modelyard.http.client import Pool
from modelyard.http.errors import UpstreamConnectError, UpstreamResetError
from modelyard.http.sse import Kind, SseReader, classify_chunk, decode, error_message, usage_in
from modelyard.http.transport import Response, Transport
from modelyard.workload import Requests

CONNECT_S = 10.0
OOM_MARKERS = (b"out of memory", b"outofmemory", b"no available memory for the cache")


@dataclass(frozen=True)
class Target:
    """Where requests for one traffic share go."""

    name: str
    url: str
    model: str | None = None
    task: str | None = None


@dataclass(frozen=True)
class LoadOptions:
    stream: bool = True
    timeout_s: float = 600.0
    concurrency: int | None = None  # closed loop when set
    token_prompts: bool = True  # prompts as token-id lists (exact lengths) else text
    capture_due: bool = False  # record sim serve's `modelyard_due_monotonic` (accuracy checks)


def _payload(
    target: Target,
    prompt_tokens: int,
    output_tokens: int,
    options: LoadOptions,
    index: int,
    text: Prompt | None = None,
    salt: int = 0,
) -> bytes:
    """One request's body. Synthetic prompts differ from request to request and, through
    `salt`, from run to run in their first two tokens, so no engine's prefix cache (vLLM's is
    on by default) answers a benchmark request from an earlier one."""
    if text is not None:
        prompt: object = text.text
        output_tokens = text.max_tokens or output_tokens
    elif options.token_prompts:
        head = [100 + index % 20000, 100 + (index // 20000 + salt) % 20000]
        body_ids = [100 + ((index * 7 + i) % 20000) for i in range(2, prompt_tokens)]
        prompt = (head + body_ids)[:prompt_tokens]
    else:
        words = [str(index), str(salt)] + ["hello"] * max(prompt_tokens - 2, 0)
        prompt = " ".join(words[:prompt_tokens])
    body: dict[str, object] = {
        "prompt": prompt,
        "max_tokens": output_tokens,
        "min_tokens": output_tokens,
        "ignore_eos": True,
        "stream": options.stream,
        "temperature": 0.0,
    }
    if target.model is not None:
        body["model"] = target.model
    if options.stream:
        body["stream_options"] = {"include_usage": True}
    if target.task is not None:
        body["metadata"] = {"task": target.task}
    return orjson.dumps(body)


async def send_one(
    transport: Transport,
    target: Target,
    payload: bytes,
    record: RequestRecord,
    options: LoadOptions,
) -> None:
    record.sent = time.monotonic()
    try:
        async with asyncio.timeout(options.timeout_s):
            await _exchange(transport, target, payload, record, options)
    except TimeoutError:
        record.error, record.detail, record.end = "timeout", "client timeout", time.monotonic()
    except UpstreamConnectError as exc:
        record.error, record.detail, record.end = "connect", str(exc), time.monotonic()
    except UpstreamResetError as exc:
        record.error = "mid_stream" if record.chunk_times else "connect"
        record.detail, record.end = str(exc), time.monotonic()


async def _exchange(
    transport: Transport,
    target: Target,
    payload: bytes,
    record: RequestRecord,
    options: LoadOptions,
) -> None:
    accept = "text/event-stream" if options.stream else "application/json"
    extra = {"X-Modelyard-Task": target.task} if target.task is not None else None
    response = await transport.request(
        "POST", target.url, "/v1/completions", payload, CONNECT_S, accept, extra
    )
    try:
        if response.status != 200:
            body = await response.read_all()
            record.end = time.monotonic()
            lowered = body.lower()
            if any(marker in lowered for marker in OOM_MARKERS):
                record.error = "oom"
            else:
                record.error = "http_4xx" if response.status < 500 else "http_5xx"
            record.detail = f"HTTP {response.status}: {body[:200].decode(errors='replace')}"
            return
        if options.stream:
            await _read_stream(response, record, options)
        else:
            await _read_answer(response, record)
    finally:
        response.close()


async def _read_answer(response: Response, record: RequestRecord) -> None:
    body = await response.read_all()
    answer = decode(body)
    now = time.monotonic()
    record.end = now
    if answer is None:
        record.error = "protocol"
        record.detail = f"answer is not a JSON object: {body[:200]!r}"
        return
    record.chunk_times.append(now)
    _count(record, answer.get("usage"))


def _count(record: RequestRecord, usage: object) -> None:
    if isinstance(usage, dict):
        record.output_tokens = usage.get("completion_tokens")
        record.prompt_tokens = usage.get("prompt_tokens")


async def _read_stream(response: Response, record: RequestRecord, options: LoadOptions) -> None:
    """Times every event carrying a token; usage from the chunk that reports it; an error
    event, a payload that is not JSON, or an end without [DONE] fails the request."""
    reader = SseReader()
    chunks = record.chunk_times
    while True:
        received = await response.read_any()
        events = reader.feed(received) if received else reader.end()
        now = time.monotonic()  # every event in this read arrived now
        for _, data in events:
            kind, decoded = classify_chunk(data)  # decoded once, when the bytes do not tell
            if kind is Kind.DONE:
                record.end = time.monotonic()
                await response.finish()  # the connection goes back to the pool
                return
            if kind.failed:
                record.end = now
                if kind is Kind.ERROR:
                    record.error, record.detail = "mid_stream", error_message(data)
                else:
                    record.error = "protocol"
                    record.detail = f"event data is not a JSON object: {data[:200]!r}"
                return
            usage = usage_in(data, decoded)
            if usage is not None:
                _count(record, usage)
            if kind is not Kind.TOKEN:
                continue
            chunks.append(now)
            if options.capture_due:
                _capture_due(record, data)
        if not received:
            break
    record.end = time.monotonic()
    record.error, record.detail = "mid_stream", "stream ended without [DONE]"


def _capture_due(record: RequestRecord, data: bytes) -> None:
    stamped = decode(data) or {}
    due = stamped.get("modelyard_due_monotonic")
    if due is not None:
        if record.due_times is None or record.written_times is None:
            record.due_times, record.written_times = [], []
        record.due_times.append(due)
        record.written_times.append(stamped["modelyard_sent_monotonic"])


async def run_load(
    requests: Requests,
    targets: dict[str, Target],
    options: LoadOptions,
    on_progress: Callable[[int], None] | None = None,
    prompts: list[Prompt] | None = None,
    transport: Transport | None = None,
) -> tuple[list[RequestRecord], float]:
    """Send every request; returns the records (in request order) and the start time.

    With `prompts`, request i sends prompts[i % len] (its max_tokens, else the workload's).
    `transport` defaults to a keep-alive HTTP/1.1 pool (modelyard/http/client.py)."""
    count = len(requests)
    records: list[RequestRecord | None] = [None] * count
    sender = transport if transport is not None else Pool()
    with _collector_paused():
        try:
            return await _send_all(
                requests, targets, options, on_progress, prompts, records, sender
            )
        finally:
            sender.close()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection while requests are in flight: a full collection of a long run's
    records stalled the sender and the readers for up to 50 ms (schedule delay p99). Requests
    leave almost no reference cycles (under one object per three requests, measured), so what
    accumulates is collected once the run ends."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
        gc.collect()


async def _send_all(
    requests: Requests,
    targets: dict[str, Target],
    options: LoadOptions,
    on_progress: Callable[[int], None] | None,
    prompts: list[Prompt] | None,
    records: list[RequestRecord | None],
    transport: Transport,
) -> tuple[list[RequestRecord], float]:
    count = len(requests)
    loop = asyncio.get_running_loop()
    salt = int.from_bytes(os.urandom(2), "big") % 20000
    payloads = [
        _payload(
            targets[requests.targets[int(requests.target_index[i])]],
            int(requests.input_tokens[i]),
            int(requests.output_tokens[i]),
            options,
            i,
            prompts[i % len(prompts)] if prompts else None,
            salt,
        )
        for i in range(count)
    ]
    start = time.monotonic() + 0.05
    finished = 0

    async def one(index: int, scheduled: float) -> None:
        nonlocal finished
        target = targets[requests.targets[int(requests.target_index[index])]]
        record = RequestRecord(target=target.name, scheduled=scheduled, sent=scheduled)
        records[index] = record
        await send_one(transport, target, payloads[index], record, options)
        finished += 1
        if on_progress is not None:
            on_progress(finished)

    if options.concurrency:
        queue = iter(range(count))

        async def worker() -> None:
            for index in queue:
                await one(index, time.monotonic())

        await asyncio.gather(*[worker() for _ in range(options.concurrency)])
    else:
        tasks = []
        for index in range(count):
            scheduled = start + float(requests.arrival_s[index])
            await pacing.until(scheduled)
            tasks.append(loop.create_task(one(index, scheduled)))
        await asyncio.gather(*tasks)
    return [r for r in records if r is not None], start
