"""The load generator against answers that break the OpenAI protocol, and every other way a
request fails: each is a failed request, recorded as data with its error class, and the run goes
on. In process, on the in-memory transport (modelyard.http.fake): no sockets, milliseconds."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from modelyard.bench.loadgen import LoadOptions, Target, run_load
from modelyard.bench.metrics import RequestRecord
from modelyard.http.errors import UpstreamConnectError, UpstreamResetError
from modelyard.http.fake import SSE, FakeTransport, Reply, Request, sse
from modelyard.workload import ArrivalProcess, LengthDist, Workload, generate
from tests.conftest import Cli

TOKEN = b'{"choices":[{"index":0,"text":"a"}]}'
USAGE = b'{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}'
GOOD = sse(TOKEN, TOKEN, USAGE, b"[DONE]")
NOT_JSON = sse(TOKEN, b"not json", b"[DONE]")


def _broken(request: Request) -> bool:
    return bool(request.json()["prompt"][0] % 2 == 1)  # every other request (its first token id)


async def _protocol(request: Request) -> Reply:
    broken = _broken(request)
    if not request.json()["stream"]:
        answer = b"<html>oops</html>" if broken else b'{"choices": [], "usage": {}}'
        return Reply(200, {"content-type": "application/json"}, answer)
    return Reply(200, SSE, NOT_JSON if broken else GOOD)


def _run(
    engine: Callable[[Request], Awaitable[Reply]], stream: bool = True, count: int = 6
) -> tuple[list[RequestRecord], FakeTransport]:
    transport = FakeTransport(engine)
    workload = Workload(
        arrivals=ArrivalProcess("constant", 2000.0),
        input_tokens=LengthDist(mean=4),
        output_tokens=LengthDist(mean=2),
        mix={"m": 1.0},
    )
    targets = {"m": Target("m", "http://engine:8000", "m", task="code")}
    options = LoadOptions(stream=stream)
    records, _ = asyncio.run(
        run_load(generate(workload, count, 0), targets, options, None, None, transport)
    )
    return records, transport


def test_a_non_json_event_fails_that_request_only() -> None:
    records, transport = _run(_protocol)
    assert [r.error for r in records] == [None, "protocol"] * 3
    assert "event data is not a JSON object: b'not json'" in (records[1].detail or "")
    good = records[0]
    assert len(good.chunk_times) == 2 and good.output_tokens == 2 and good.prompt_tokens == 4
    # the task rides in the header and the body; every response was let go
    request = transport.requests[0]
    assert request.headers == {"X-Modelyard-Task": "code"}
    assert request.json()["metadata"] == {"task": "code"}
    assert all(response.closed for response in transport.responses)


def test_a_non_json_answer_fails_that_request_only() -> None:
    records, _ = _run(_protocol, stream=False)
    assert [r.error for r in records] == [None, "protocol"] * 3
    assert "answer is not a JSON object" in (records[1].detail or "")


async def _error_event(request: Request) -> Reply:
    error = orjson.dumps({"error": {"message": "engine died", "type": "server_error"}})
    return Reply(200, SSE, sse(TOKEN, error, b"[DONE]") if _broken(request) else GOOD)


async def _no_done(request: Request) -> Reply:
    return Reply(200, SSE, sse(TOKEN) if _broken(request) else GOOD)


async def _reset_mid_stream(request: Request) -> Reply:
    async def body() -> AsyncIterator[bytes]:
        yield sse(TOKEN)
        raise UpstreamResetError("connection closed mid-body (EOF)", False)

    return Reply(200, SSE, body()) if _broken(request) else Reply(200, SSE, GOOD)


async def _refused(request: Request) -> Reply:
    if _broken(request):
        raise UpstreamConnectError("http://engine:8000: connection refused")
    return Reply(200, SSE, GOOD)


async def _statuses(request: Request) -> Reply:
    if not _broken(request):
        return Reply(200, SSE, GOOD)
    if request.json()["prompt"][0] % 4 == 1:
        return Reply.json({"error": {"message": "CUDA out of memory"}}, status=500)
    return Reply.json({"error": {"message": "bad request"}}, status=400)


@pytest.mark.parametrize(
    ("engine", "error", "detail"),
    [
        (_error_event, "mid_stream", "engine died"),
        (_no_done, "mid_stream", "stream ended without [DONE]"),
        (_reset_mid_stream, "mid_stream", "EOF"),
        (_refused, "connect", "connection refused"),
    ],
)
def test_each_failure_is_a_record_with_its_class(
    engine: Callable[[Request], Awaitable[Reply]], error: str, detail: str
) -> None:
    records, _ = _run(engine)
    assert [r.error for r in records] == [None, error] * 3
    assert all(detail in r.detail for r in records[1::2])
    assert all(r.end is not None for r in records)


def test_http_errors_are_classed_by_status_and_out_of_memory() -> None:
    records, _ = _run(_statuses, count=8)
    assert [r.error for r in records] == [None, "oom", None, "http_4xx"] * 2
    assert records[3].detail.startswith("HTTP 400: ")


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
