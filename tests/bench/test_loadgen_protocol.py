"""The load generator against answers that break the OpenAI protocol: each is a failed request,
recorded as data, and the run goes on (an in-process aiohttp server on a free port)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from aiohttp import web

from modelyard.bench.loadgen import LoadOptions, Target, run_load
from modelyard.bench.metrics import RequestRecord
from modelyard.workload import ArrivalProcess, LengthDist, Workload, generate
from tests.conftest import Cli

GOOD = b'data: {"choices":[{"index":0,"text":"a"}]}\n\ndata: [DONE]\n\n'
NOT_JSON = b'data: {"choices":[{"index":0,"text":"a"}]}\n\ndata: not json\n\ndata: [DONE]\n\n'


async def _handler(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    broken = body["prompt"][0] % 2 == 1  # every other request (the prompt's first token id)
    if not body["stream"]:
        return web.Response(body=b"<html>oops</html>" if broken else b'{"choices": []}')
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(NOT_JSON if broken else GOOD)
    await response.write_eof()
    return response


async def _run(stream: bool) -> list[RequestRecord]:
    app = web.Application()
    app.router.add_post("/v1/completions", _handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        workload = Workload(
            arrivals=ArrivalProcess("constant", 200.0),
            input_tokens=LengthDist(mean=4),
            output_tokens=LengthDist(mean=1),
            mix={"m": 1.0},
        )
        targets = {"m": Target("m", f"http://127.0.0.1:{port}", "m")}
        records, _ = await run_load(generate(workload, 6, 0), targets, LoadOptions(stream=stream))
        return records
    finally:
        await runner.cleanup()


def test_a_non_json_event_fails_that_request_only() -> None:
    records = asyncio.run(_run(stream=True))
    assert [r.error for r in records] == [None, "protocol"] * 3
    assert "event data is not a JSON object: b'not json'" in (records[1].detail or "")


def test_a_non_json_answer_fails_that_request_only() -> None:
    records = asyncio.run(_run(stream=False))
    assert [r.error for r in records] == [None, "protocol"] * 3
    assert "answer is not a JSON object" in (records[1].detail or "")


def test_bench_exits_3_when_every_request_fails(tmp_path: Path, cli: Cli) -> None:
    with socket.socket() as probe:  # a port nothing listens on (bound, never listening)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        done = cli(
            "bench",
            "--target",
            f"http://127.0.0.1:{port}",
            "--rate",
            "50",
            "--requests",
            "5",
            "--results",
            str(tmp_path / "r.json"),
        )
    assert done.returncode == 3, done.stderr
    assert "5 of 5 requests failed at 50" in done.stderr
    assert (tmp_path / "r.json").exists()  # the results are written all the same
