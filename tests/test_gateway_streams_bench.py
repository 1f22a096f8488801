"""The stream-capacity benchmark's native tools (benchmarks/native/, run by
benchmarks/gateway_streams.py): built with gcc, the upstream streams every chunk in order at the
asked interval over real loopback, the client records it, and the checks on its records catch
a lost, repeated or reordered chunk."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


tools_module = _module("stream_tools", BENCHMARKS / "native" / "stream_tools.py")
procfs = _module("procfs", BENCHMARKS / "native" / "procfs.py")
INTERVAL_S = 0.02


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tools_module.build(tmp_path_factory.mktemp("native"))


@pytest.fixture
def upstream(tools: Any) -> Iterator[Any]:
    running = tools_module.start_upstream(tools, INTERVAL_S)
    yield running
    running.stop()
    assert running.process.returncode is not None


@pytest.mark.process
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_upstream_streams_every_chunk_in_order_at_the_interval(
    tools: Any, upstream: Any, path: str
) -> None:
    streams, chunks = 4, 12
    plan = tools_module.StreamPlan(streams, chunks, ramp_s=0.0, path=path)
    began = time.monotonic_ns()
    records = tools_module.run_client(tools, upstream.port, plan, timeout_s=10)

    assert records.chunks_per_stream == chunks
    assert list(records.streams["status"]) == [200] * streams
    assert list(records.streams["chunks"]) == [chunks] * streams
    assert tools_module.complete(records).all()
    for stream in range(streams):
        mine = records.chunks[records.chunks["stream"] == stream]
        assert list(mine["seq"]) == list(range(chunks))
        # due times are exact multiples of the interval from the request's arrival
        assert set(np.diff(mine["due_ns"])) == {round(INTERVAL_S * 1e9)}
        assert mine["due_ns"][0] >= records.streams["connected_ns"][stream] >= began
        assert (mine["written_ns"] >= mine["due_ns"]).all()
        assert (mine["arrival_ns"] >= mine["written_ns"]).all()
    gaps = tools_module.gaps_ns(records)
    assert gaps.size == streams * (chunks - 1)
    # never faster than asked (written >= due), and on time at the median
    assert np.median(gaps) == pytest.approx(INTERVAL_S * 1e9, abs=3e6)
    spans = [
        np.ptp(records.chunks["arrival_ns"][records.chunks["stream"] == s]) for s in range(streams)
    ]
    assert min(spans) >= (chunks - 1) * INTERVAL_S * 1e9 - 3e6


@pytest.mark.process
def test_upstream_answers_health(upstream: Any) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{upstream.port}/health", timeout=5) as reply:
        assert reply.status == 200
        assert reply.read() == b"ok"


@pytest.mark.process
def test_client_stops_at_its_deadline_and_marks_what_did_not_finish(
    tools: Any, upstream: Any
) -> None:
    deadline = time.monotonic_ns() + 150_000_000
    plan = tools_module.StreamPlan(3, 200, ramp_s=0.0, deadline_ns=deadline)
    records = tools_module.run_client(tools, upstream.port, plan, timeout_s=10)
    assert time.monotonic_ns() - deadline < 2e9  # 200 chunks would take 4 s
    assert set(records.streams["error"]) == {tools_module.StreamError.DEADLINE}
    assert 0 < records.streams["chunks"].min() < 200
    assert not tools_module.complete(records).any()


@pytest.mark.process
def test_client_records_a_refused_connection(tools: Any) -> None:
    with socket.socket() as bound:  # bound, not listening: connecting is refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        records = tools_module.run_client(tools, port, tools_module.StreamPlan(2, 3, 0.0))
    assert set(records.streams["error"]) == {tools_module.StreamError.CONNECT}
    assert records.chunks.size == 0


def _records(seqs: list[list[int]], chunks_per_stream: int) -> Any:
    """Records of streams that each ended cleanly and received `seqs[i]` in that order."""
    streams = np.zeros(len(seqs), tools_module.STREAM_DTYPE)
    streams["status"] = 200
    streams["flags"] = tools_module.FLAG_DONE_EVENT | tools_module.FLAG_BODY_END
    streams["chunks"] = [len(s) for s in seqs]
    # the streams' chunks interleaved as in a real run: every stream's first, then seconds...
    rows = sorted(
        (position, stream, seq)
        for stream, got in enumerate(seqs)
        for position, seq in enumerate(got)
    )
    chunks = np.zeros(len(rows), tools_module.CHUNK_DTYPE)
    chunks["stream"] = [stream for _, stream, _ in rows]
    chunks["seq"] = [seq for _, _, seq in rows]
    chunks["arrival_ns"] = np.arange(len(rows)) * 1000
    return tools_module.Records(streams, chunks, chunks_per_stream)


def test_complete_catches_lost_repeated_and_reordered_chunks() -> None:
    records = _records([[0, 1, 2], [0, 2, 1], [0, 1], [0, 1, 1], [0, 1, 2], [1, 2]], 3)
    assert list(tools_module.complete(records)) == [True, False, False, False, True, False]
    # a stream cut short is not complete, but what did arrive was in order
    assert list(tools_module.in_order(records)) == [True, False, True, False, True, False]
    assert tools_module.summarise(records).out_of_order == 3


def test_complete_needs_the_done_event_and_a_clean_end() -> None:
    records = _records([[0, 1], [0, 1]], 2)
    streams = records.streams.copy()
    streams["flags"][1] = tools_module.FLAG_BODY_END
    broken = tools_module.Records(streams, records.chunks, 2)
    assert list(tools_module.complete(broken)) == [True, False]


def test_gaps_stay_within_each_stream_and_the_window() -> None:
    records = _records([[0, 1, 2], [0, 1, 2]], 3)
    # arrivals (µs): stream 0 at 0, 2, 4; stream 1 at 1, 3, 5
    assert sorted(tools_module.gaps_ns(records)) == [2000] * 4
    assert sorted(tools_module.gaps_ns(records, (1500, 5000))) == [2000]


def test_procfs_reads_this_process_cpu_time_and_memory() -> None:
    assert os.getpid() in procfs.process_group(os.getpgid(0))
    before, started = procfs.usage([os.getpid()]), time.process_time()
    while time.process_time() - started < 0.2:
        pass
    after = procfs.usage([os.getpid()])
    assert after.cpu_s - before.cpu_s == pytest.approx(0.2, abs=0.03)  # clock ticks: 10 ms
    assert after.rss_bytes > 20 * 2**20  # an interpreter with numpy
    assert after.runnable_wait_s >= before.runnable_wait_s


@pytest.fixture(scope="module")
def harness() -> Iterator[ModuleType]:
    """benchmarks/gateway_streams.py, imported as its script sees its siblings."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module("gateway_streams")


def _point(harness: ModuleType, streams: int, complete: int, added_gap_p99_ms: float) -> Any:
    latencies = [float("nan")] * (len(dataclasses.fields(harness.StreamSummary)) - 5)
    seen = harness.StreamSummary(streams, 80, complete, 0, {}, *latencies)
    return harness.Point("modelyard", seen, added={"gap_p99_ms": added_gap_p99_ms})


def test_most_streams_is_the_highest_count_held_below_the_lowest_not_held(
    harness: ModuleType,
) -> None:
    points = [
        _point(harness, 100, 100, 0.4),
        _point(harness, 400, 400, 0.9),
        _point(harness, 700, 700, 1.2),  # gap over the bar
        _point(harness, 1000, 990, 0.5),  # incomplete
    ]
    assert harness.bracket(points, "modelyard") == (400, 700)
    assert harness.most_streams(points, "modelyard") == "400 (held; 700 did not)"
    assert harness.most_streams(points[:2], "modelyard") == ">= 400 (held at every count tried)"
    assert harness.most_streams(points[2:], "modelyard") == "< 700"
    assert harness.most_streams(points, "nginx proxy") == "not measured"


def test_a_plan_holds_every_stream_open_for_the_hold_window(harness: ModuleType) -> None:
    plan = harness.Settings().plan(5000, start_ns=0)
    assert plan.ramp_s == 5.0  # 1,000 new streams a second
    # the last stream starts at the end of the ramp and still has 3 s of chunks to go
    assert (plan.chunks - 1) / harness.TOKENS_PER_S >= plan.ramp_s + 3.0
    assert plan.deadline_ns == round((5.0 + (plan.chunks - 1) / 20 + 3.0) * 1e9)
