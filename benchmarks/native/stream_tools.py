"""The native stream tools from Python: build them with the machine's gcc, run them, and read
what the client recorded (stream_common.h's layout) into numpy arrays.

stream_upstream.c streams OpenAI-style chunks at a fixed interval; stream_client.c opens N
streams against a port and times every chunk. Both are one thread on epoll and a timerfd, so
one core drives ~100,000 chunks/s, which a Python client and upstream cannot on one core.
"""

from __future__ import annotations

import hashlib
import math
import os
import select
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

SOURCES = Path(__file__).resolve().parent
BUILD_ROOT = SOURCES / "build"  # ignored by git
CFLAGS = ("-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wpedantic", "-Werror")
PROGRAMS = ("stream_upstream", "stream_client")
MAGIC = b"MYSTRM1\0"

HEADER_DTYPE = np.dtype(
    [("magic", "S8"), ("streams", "<u4"), ("chunks_per_stream", "<u4"), ("chunk_records", "<u8")]
)
STREAM_DTYPE = np.dtype(
    [
        ("scheduled_ns", "<i8"),
        ("connected_ns", "<i8"),
        ("sent_ns", "<i8"),
        ("headers_ns", "<i8"),
        ("first_chunk_ns", "<i8"),
        ("done_ns", "<i8"),
        ("chunks", "<u4"),
        ("status", "<u4"),
        ("error", "<u4"),
        ("flags", "<u4"),
    ]
)
CHUNK_DTYPE = np.dtype(
    [
        ("arrival_ns", "<i8"),
        ("due_ns", "<i8"),
        ("written_ns", "<i8"),
        ("stream", "<u4"),
        ("seq", "<u4"),
    ]
)


class StreamError(IntEnum):
    """How a stream ended (stream_common.h's enum stream_error)."""

    OK = 0
    CONNECT = 1
    RESET = 2
    STATUS = 3
    PARSE = 4
    DEADLINE = 5


FLAG_DONE_EVENT = 1  # `data: [DONE]` arrived
FLAG_BODY_END = 2  # the HTTP body ended cleanly


class NativeToolError(Exception):
    """The tools could not be built or did not behave."""


@dataclass(frozen=True)
class NativeTools:
    upstream: Path
    client: Path


def build(build_root: Path = BUILD_ROOT) -> NativeTools:
    """Compile both programs (once per source, flag and compiler version) and return them."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise NativeToolError("gcc not found: the stream benchmark compiles its native tools")
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=True)
    digest = hashlib.sha256(version.stdout.encode() + " ".join(CFLAGS).encode())
    for source in sorted(SOURCES.glob("*.[ch]")):
        digest.update(source.name.encode() + source.read_bytes())
    directory = build_root / digest.hexdigest()[:16]
    directory.mkdir(parents=True, exist_ok=True)
    for program in PROGRAMS:
        target = directory / program
        if target.exists():
            continue
        # compile beside the target, then rename: concurrent builds never see half a binary
        handle, partial = tempfile.mkstemp(dir=directory, prefix=f".{program}.")
        os.close(handle)
        done = subprocess.run(
            [gcc, *CFLAGS, "-o", partial, str(SOURCES / f"{program}.c")],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            os.unlink(partial)
            raise NativeToolError(f"gcc failed on {program}.c:\n{done.stderr}")
        os.replace(partial, target)
    return NativeTools(directory / "stream_upstream", directory / "stream_client")


def pinned(command: list[str], core: str | None) -> list[str]:
    return ["taskset", "-c", core, *command] if core is not None else command


@dataclass
class Upstream:
    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_upstream(
    tools: NativeTools, interval_s: float, core: str | None = None, timeout_s: float = 10.0
) -> Upstream:
    """The upstream on a port of its choosing (it prints it), chunks `interval_s` apart."""
    command = [str(tools.upstream), "--port", "0", "--interval-us", str(round(interval_s * 1e6))]
    process = subprocess.Popen(pinned(command, core), stdout=subprocess.PIPE)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline().decode() if ready else ""
    if not line.startswith("listening "):
        process.kill()
        process.wait()
        process.stdout.close()
        raise NativeToolError(f"stream_upstream did not start: {line!r}")
    return Upstream(process, int(line.split()[1]))


@dataclass(frozen=True)
class StreamPlan:
    """`streams` streams of `chunks` chunks each, started evenly over `ramp_s` from `start_ns`
    (CLOCK_MONOTONIC, as `time.monotonic_ns()`); the client stops at `deadline_ns` (0: never)."""

    streams: int
    chunks: int
    ramp_s: float
    start_ns: int = 0
    deadline_ns: int = 0
    path: str = "/v1/chat/completions"


def client_command(tools: NativeTools, port: int, plan: StreamPlan, out: Path) -> list[str]:
    return [
        str(tools.client),
        "--port",
        str(port),
        "--streams",
        str(plan.streams),
        "--chunks",
        str(plan.chunks),
        "--ramp-us",
        str(round(plan.ramp_s * 1e6)),
        "--start-ns",
        str(plan.start_ns),
        "--deadline-ns",
        str(plan.deadline_ns),
        "--path",
        plan.path,
        "--out",
        str(out),
    ]


@dataclass(frozen=True)
class Records:
    """What the client saw: one row per stream (STREAM_DTYPE), one per content chunk
    (CHUNK_DTYPE, in arrival order); times in CLOCK_MONOTONIC ns."""

    streams: npt.NDArray[np.void]
    chunks: npt.NDArray[np.void]
    chunks_per_stream: int


def read_records(data: bytes) -> Records:
    header = np.frombuffer(data, HEADER_DTYPE, count=1)[0]
    if header["magic"] != MAGIC.rstrip(b"\0"):
        raise NativeToolError("not a stream_client record file")
    count = int(header["streams"])
    streams = np.frombuffer(data, STREAM_DTYPE, count=count, offset=HEADER_DTYPE.itemsize)
    offset = HEADER_DTYPE.itemsize + count * STREAM_DTYPE.itemsize
    chunks = np.frombuffer(data, CHUNK_DTYPE, count=int(header["chunk_records"]), offset=offset)
    return Records(streams, chunks, int(header["chunks_per_stream"]))


@contextmanager
def client(
    tools: NativeTools, port: int, plan: StreamPlan, core: str | None = None
) -> Iterator[ClientRun]:
    """The client running `plan` in the background; always reaped on leaving."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.bin"
        command = pinned(client_command(tools, port, plan, out), core)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            yield ClientRun(process, out)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            assert process.stderr is not None
            process.stderr.close()


@dataclass
class ClientRun:
    process: subprocess.Popen[bytes]
    out: Path

    def records(self, timeout_s: float) -> Records:
        """Wait for the client to end (it stops by itself at its deadline) and read them."""
        assert self.process.stderr is not None
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise NativeToolError(f"stream_client still running after {timeout_s:g} s") from exc
        if self.process.returncode != 0:
            error = self.process.stderr.read().decode(errors="replace")
            raise NativeToolError(f"stream_client failed ({self.process.returncode}): {error}")
        return read_records(self.out.read_bytes())


def run_client(
    tools: NativeTools, port: int, plan: StreamPlan, core: str | None = None, timeout_s: float = 60
) -> Records:
    """Run the client to the end (or its deadline) and read its records."""
    with client(tools, port, plan, core) as run:
        return run.records(timeout_s)


def by_stream(records: Records) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.void]]:
    """The chunks ordered by stream, each stream's in arrival order, and their stream ids."""
    order = np.argsort(records.chunks["stream"], kind="stable")
    chunks = records.chunks[order]
    return chunks["stream"], chunks


def in_order(records: Records) -> npt.NDArray[np.bool_]:
    """Per stream: the chunks that arrived are 0, 1, ... k-1 in that order (none lost, repeated
    or reordered so far), however the stream ended."""
    ordered = np.ones(len(records.streams), dtype=bool)
    ids, chunks = by_stream(records)
    if ids.size:
        position = np.arange(ids.size) - np.searchsorted(ids, ids, side="left")
        ordered[np.unique(ids[chunks["seq"] != position])] = False
    return ordered


def complete(records: Records) -> npt.NDArray[np.bool_]:
    """Per stream: HTTP 200, ended cleanly with [DONE], and exactly chunks 0, 1, ... C-1 in
    that order."""
    streams = records.streams
    return (
        (streams["status"] == 200)
        & (streams["error"] == StreamError.OK)
        & ((streams["flags"] & (FLAG_DONE_EVENT | FLAG_BODY_END)) == 3)
        & (streams["chunks"] == records.chunks_per_stream)
        & in_order(records)
    )


def gaps_ns(records: Records, window_ns: tuple[int, int] | None = None) -> npt.NDArray[np.int64]:
    """Every gap between successive chunk arrivals within a stream, pooled; with `window_ns`
    (CLOCK_MONOTONIC), only gaps that begin and end inside it."""
    ids, chunks = by_stream(records)
    arrivals = chunks["arrival_ns"]
    keep = ids[1:] == ids[:-1]
    if window_ns is not None:
        keep &= (arrivals[:-1] >= window_ns[0]) & (arrivals[1:] < window_ns[1])
    return np.diff(arrivals)[keep]


def _ms(values_ns: npt.NDArray[np.int64], q: float) -> float:
    return float(np.percentile(values_ns, q)) / 1e6 if values_ns.size else math.nan


@dataclass(frozen=True)
class StreamSummary:
    """What a client run saw: how many streams completed, how the rest ended, and latency
    percentiles in ms."""

    streams: int
    chunks_per_stream: int
    complete: int
    out_of_order: int  # streams whose chunks so far were not 0, 1, ... in order
    errors: dict[str, int]  # how the incomplete streams ended
    ttft_p50_ms: float  # scheduled start -> first content chunk
    ttft_p99_ms: float
    gap_p50_ms: float  # between successive chunks of a stream, inside the window
    gap_p99_ms: float
    all_gap_p50_ms: float  # the same over whole streams
    all_gap_p99_ms: float
    relay_p50_ms: float  # chunk arrival - upstream write
    relay_p99_ms: float
    upstream_late_p99_ms: float  # upstream write - due


LATENCIES = tuple(
    name
    for name in StreamSummary.__dataclass_fields__
    if name.endswith("_ms") and "late" not in name
)


def summarise(records: Records, window_ns: tuple[int, int] | None = None) -> StreamSummary:
    """Completeness and percentiles of a run; gaps inside `window_ns` (CLOCK_MONOTONIC)."""
    streams, chunks = records.streams, records.chunks
    started = streams["chunks"] > 0
    ttft = (streams["first_chunk_ns"] - streams["scheduled_ns"])[started]
    gaps, all_gaps = gaps_ns(records, window_ns), gaps_ns(records)
    relay = chunks["arrival_ns"] - chunks["written_ns"]
    ok = complete(records)
    errors = {e.name.lower(): int(np.sum(streams["error"] == e)) for e in StreamError if e}
    errors["ended_incomplete"] = int(np.sum(~ok & (streams["error"] == 0)))
    return StreamSummary(
        len(streams),
        records.chunks_per_stream,
        int(ok.sum()),
        int(np.sum(~in_order(records))),
        {name: count for name, count in errors.items() if count},
        _ms(ttft, 50),
        _ms(ttft, 99),
        _ms(gaps, 50),
        _ms(gaps, 99),
        _ms(all_gaps, 50),
        _ms(all_gaps, 99),
        _ms(relay, 50),
        _ms(relay, 99),
        _ms(chunks["written_ns"] - chunks["due_ns"], 99),
    )
