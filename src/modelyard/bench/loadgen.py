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
from modelyard.chunks import decode, has_content, plainly_has_token
from modelyard.http.client import Pool, UpstreamConnectError, UpstreamResetError
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
    pool: Pool,
    target: Target,
    payload: bytes,
    record: RequestRecord,
    options: LoadOptions,
) -> None:
    record.sent = time.monotonic()
    try:
        async with asyncio.timeout(options.timeout_s):
            await _exchange(pool, target, payload, record, options)
    except TimeoutError:
        record.error, record.detail, record.end = "timeout", "client timeout", time.monotonic()
    except UpstreamConnectError as exc:
        record.error, record.detail, record.end = "connect", str(exc), time.monotonic()
    except UpstreamResetError as exc:
        record.error = "mid_stream" if record.chunk_times else "connect"
        record.detail, record.end = str(exc), time.monotonic()


async def _exchange(
    pool: Pool, target: Target, payload: bytes, record: RequestRecord, options: LoadOptions
) -> None:
    accept = "text/event-stream" if options.stream else "application/json"
    extra = {"X-Modelyard-Task": target.task} if target.task is not None else None
    response = await pool.post(target.url, "/v1/completions", payload, CONNECT_S, accept, extra)
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
        if not options.stream:
            body = await response.read_all()
            answer = decode(body)
            now = time.monotonic()
            if answer is None:
                record.error, record.end = "protocol", now
                record.detail = f"answer is not a JSON object: {body[:200]!r}"
                return
            record.chunk_times.append(now)
            record.end = now
            usage = answer.get("usage") or {}
            record.output_tokens = usage.get("completion_tokens")
            record.prompt_tokens = usage.get("prompt_tokens")
            return
        done = False
        chunks = record.chunk_times
        buffer = b""
        while not done:
            received = await response.read_any()
            if not received:
                break
            now = time.monotonic()  # every event in this read arrived now
            buffer = buffer + received if buffer else received
            lines = buffer.split(b"\n")
            buffer = lines.pop()
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                # Most chunks carry one token: decide from the bytes and parse JSON only for
                # the rare ones (usage, errors, empty deltas), so the client stays cheap.
                marked = (
                    data.startswith(b'{"error"')
                    or b'"usage":{' in data
                    or b'"object":"error"' in data
                )
                chunk = decode(data) if marked or not plainly_has_token(data) else None
                if chunk is None and (marked or not plainly_has_token(data)):
                    record.error, record.end = "protocol", now
                    record.detail = f"event data is not a JSON object: {data[:200]!r}"
                    return
                if chunk is not None and marked:
                    if chunk.get("error") or chunk.get("object") == "error":
                        record.error = "mid_stream"
                        record.detail = str(chunk.get("error") or chunk)[:200]
                        record.end = now
                        return
                    usage = chunk.get("usage") or {}
                    record.output_tokens = usage.get("completion_tokens")
                    record.prompt_tokens = usage.get("prompt_tokens")
                    if not has_content(chunk):
                        continue
                elif chunk is not None and not has_content(chunk):
                    continue
                chunks.append(now)
                if options.capture_due:
                    stamped = chunk or decode(data) or {}
                    due = stamped.get("modelyard_due_monotonic")
                    if due is not None:
                        if record.due_times is None or record.written_times is None:
                            record.due_times, record.written_times = [], []
                        record.due_times.append(due)
                        record.written_times.append(stamped["modelyard_sent_monotonic"])
        record.end = time.monotonic()
        if not done:
            record.error, record.detail = "mid_stream", "stream ended without [DONE]"
        else:
            await response.finish()  # the connection goes back to the pool
    finally:
        response.close()


async def run_load(
    requests: Requests,
    targets: dict[str, Target],
    options: LoadOptions,
    on_progress: Callable[[int], None] | None = None,
    prompts: list[Prompt] | None = None,
) -> tuple[list[RequestRecord], float]:
    """Send every request; returns the records (in request order) and the start time.

    With `prompts`, request i sends prompts[i % len] (its max_tokens, else the workload's)."""
    count = len(requests)
    records: list[RequestRecord | None] = [None] * count
    pool = (
        Pool()
    )  # keep-alive HTTP/1.1 on asyncio protocols: cheap per chunk (modelyard/http/client.py)
    with _collector_paused():
        try:
            return await _send_all(requests, targets, options, on_progress, prompts, records, pool)
        finally:
            pool.close()


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
    pool: Pool,
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
        await send_one(pool, target, payloads[index], record, options)
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
            await _until(scheduled)
            tasks.append(loop.create_task(one(index, scheduled)))
        await asyncio.gather(*tasks)
    return [r for r in records if r is not None], start


async def _until(due: float) -> None:
    """Wait until `due` on the monotonic clock. The loop's timers have millisecond resolution,
    so sleep to just short of it, then poll the loop (reading responses meanwhile) and yield the
    core until it comes."""
    delay = due - time.monotonic()
    if delay > 0.0015:
        await asyncio.sleep(delay - 0.0012)
    while time.monotonic() < due:
        await asyncio.sleep(0)
        os.sched_yield()
