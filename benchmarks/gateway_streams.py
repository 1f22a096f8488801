"""How many concurrent token streams does one gateway core relay, and what does it add to each?
100 / 1,000 / 5,000 streams at 20 tokens/s each, directly and through `modelyard gateway` (and
nginx and LiteLLM for reference, while they keep up), side by side in one run, on loopback.

The upstream and the client are native (benchmarks/native/: C, one thread each on epoll and a
timerfd, compiled here with the machine's gcc into benchmarks/native/build/): 5,000 streams at
20 tokens/s are 100,000 chunks/s, which a Python upstream and client cannot drive from one core.
The upstream writes OpenAI-style chunks (`data: {...}`, then `data: [DONE]`) at absolute due
times, each carrying its sequence number, due time and write time; the client times every
chunk's arrival (CLOCK_MONOTONIC) and the harness checks every stream is complete and in order.

Layout: the proxy under test on core 0 (with `--workers N`, cores 0..N-1: with fewer than N + 1
cores, the last of them is the load side's too); the upstream, the client and this harness on
the last core (with two or more cores left, the upstream and the client get one each). On 2
cores the load side tops out below 5,000 streams:
it spends 11-23 µs of CPU per chunk, mostly in loopback TCP. Streams start evenly over
max(1 s, N / 1,000 s), all N are then held for 3 s, and the proxy's CPU time (/proc/PID/stat)
and RSS are sampled at the start, middle and end of that hold window:

- added TTFT / gap p50, p99: through the proxy minus direct at the same N, same run. TTFT is
  from a stream's scheduled start to its first content chunk (so it includes the ramp's
  connection and request load); gaps are between successive chunk arrivals within a stream,
  pooled, inside the hold window (the JSON also has them over whole streams, as `all_gap_*`);
- CPU µs/chunk: the proxy's CPU time over the hold window / chunks that arrived in it;
- KiB/stream: the proxy's RSS growth from before the streams to mid-window, / N;
- busy / waited: a process's CPU time, and its time runnable while another task had its core
  (/proc/PID/task/*/schedstat: other processes on a shared machine), over the window;
- "upstream late" (write - due, p99) and the load side's busy share say whether it kept up;
  rows where it did not are starred.

The most streams modelyard holds (all complete, added gap p99 <= 1 ms) is then bisected between
the highest level that held and the next one (3 steps). `--workers N` writes `gateway.workers:
N` into the gateway's fleet (only a gateway that supports it accepts the fleet).

    python benchmarks/gateway_streams.py            # about 3.5 minutes
    python benchmarks/gateway_streams.py --quick    # 100 and 1,000 streams, no bisection
    python benchmarks/gateway_streams.py --levels 300,600 --only direct,modelyard --logs DIR
    python benchmarks/gateway_streams.py --quick --only direct,modelyard --baseline /tmp/base/src

Needs gcc; nginx and LiteLLM (`make bench-deps`) are skipped with a note when missing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from gateway_overhead import BASELINE, Server, start_target, stop
from native.procfs import listen_overflows, process_group, usage
from native.stream_tools import (
    LATENCIES,
    NativeTools,
    StreamPlan,
    StreamSummary,
    build,
    client,
    run_client,
    start_upstream,
    summarise,
)
from rich.console import Console
from rich.table import Table

TOKENS_PER_S = 20.0
PATHS = ("direct", "modelyard", "nginx proxy", "litellm")
ORDER = (*PATHS[:2], BASELINE, *PATHS[2:])  # the report's rows
GAP_TARGET_MS = 1.0  # the bar for "holds"
KEEP_UP_GAP_MS = 1000 / TOKENS_PER_S  # a reference proxy adding a whole token interval is dropped
LOAD_LATE_MS = 1.0  # upstream writes later than this (p99) say the load core was not ours
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Settings:
    levels: tuple[int, ...] = (100, 1000, 5000)
    hold_s: float = 3.0
    ramp_streams_per_s: float = 1000.0
    min_ramp_s: float = 1.0
    drain_s: float = 3.0
    search_steps: int = 3
    workers: int | None = None
    baseline: str | None = None  # another checkout's `src`, run as the "modelyard baseline" path

    def plan(self, streams: int, start_ns: int) -> StreamPlan:
        ramp_s = max(self.min_ramp_s, streams / self.ramp_streams_per_s)
        chunks = math.ceil((ramp_s + self.hold_s) * TOKENS_PER_S) + 1
        last_due_ns = start_ns + round((ramp_s + (chunks - 1) / TOKENS_PER_S) * 1e9)
        return StreamPlan(
            streams, chunks, ramp_s, start_ns, last_due_ns + round(self.drain_s * 1e9)
        )


QUICK = Settings(levels=(100, 1000), hold_s=1.5, min_ramp_s=0.5, drain_s=1.5, search_steps=0)


@dataclass(frozen=True)
class Layout:
    """Which cores run what: the proxy on its own; the upstream and the client on the rest (on
    2 cores they share one, with this harness)."""

    proxy_cores: str
    upstream_core: str
    client_core: str
    workers: int | None = None

    @classmethod
    def for_machine(cls, workers: int | None) -> Layout:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            raise SystemExit("needs 2 cores: the proxy on one, the upstream and client on another")
        count = max(1, min(workers or 1, len(cores)))
        # more workers than spare cores: they take every core, the load side shares the last
        rest = cores[count:] or cores[-1:]
        client_core = rest[-2] if len(rest) > 1 else rest[-1]
        proxy = ",".join(map(str, cores[:count]))
        return cls(proxy, str(rest[-1]), str(client_core), workers)

    @property
    def load_cores(self) -> int:
        return len({self.upstream_core, self.client_core})

    def describe(self) -> str:
        load = (
            f"upstream + client + harness on core {self.client_core}"
            if self.load_cores == 1
            else f"upstream on core {self.upstream_core}, client + harness on {self.client_core}"
        )
        workers = f" ({self.workers} gateway workers)" if self.workers else ""
        shared = self.client_core in self.proxy_cores.split(",")
        sharing = " (sharing the load side's core)" if shared else ""
        return f"proxy under test on core {self.proxy_cores}{workers}{sharing}; {load}"


@dataclass
class Point:
    """One path at one stream count: what the client saw, and what the processes used over the
    hold window."""

    path: str
    seen: StreamSummary
    window_s: float = math.nan
    load_busy: float = math.nan  # upstream + client CPU time / window (1.0 = one core)
    load_waited: float = math.nan  # their time runnable but waiting for a CPU / window
    load_cpu_us_per_chunk: float = math.nan
    proxy_cpu_us_per_chunk: float | None = None
    proxy_busy: float | None = None
    proxy_waited: float | None = None
    proxy_kib_per_stream: float | None = None
    listen_overflows: int = 0  # machine-wide, during the run
    added: dict[str, float] = field(default_factory=dict)  # over direct, same count

    @property
    def streams(self) -> int:
        return self.seen.streams


def sleep_until(monotonic_ns: int) -> None:
    time.sleep(max(0.0, (monotonic_ns - time.monotonic_ns()) / 1e9))


def run_point(
    tools: NativeTools,
    path: str,
    streams: int,
    settings: Settings,
    layout: Layout,
    directory: Path,
    console: Console,
) -> Point | None:
    """One path at one stream count: a fresh upstream (and proxy), a short warm-up, the run."""
    upstream = start_upstream(tools, 1 / TOKENS_PER_S, layout.upstream_core)
    proxy: Server | None = None
    try:
        if path != "direct":
            extra = f"gateway:\n  workers: {settings.workers}\n" if settings.workers else ""
            proxy = start_target(
                path,
                directory,
                upstream.port,
                console,
                streaming=True,
                fleet_extra=extra,
                connections=4 * streams + 1024,  # nginx counts idle keep-alives too
                core=layout.proxy_cores,
                baseline=Path(settings.baseline) if settings.baseline else None,
            )
            if proxy is None:
                return None
        port = proxy.port if proxy else upstream.port
        warm = StreamPlan(10, 5, 0.05, deadline_ns=time.monotonic_ns() + 10_000_000_000)
        run_client(tools, port, warm, layout.client_core)
        members = process_group(proxy.process.pid) if proxy else []
        before = usage(members)
        plan = settings.plan(streams, time.monotonic_ns() + 300_000_000)
        window = (
            plan.start_ns + round((plan.ramp_s + 0.1) * 1e9),
            plan.start_ns + round(((plan.chunks - 1) / TOKENS_PER_S - 0.1) * 1e9),
        )
        console.print(
            f"[dim]{path}: {streams} streams x {plan.chunks} chunks, ramp {plan.ramp_s:g} s[/]"
        )
        overflows = listen_overflows()
        with client(tools, port, plan, layout.client_core) as run:
            load = [upstream.process.pid, run.process.pid]
            sleep_until(window[0])
            start_proxy, start_load = usage(members), usage(load)
            sleep_until((window[0] + window[1]) // 2)
            middle = usage(members)
            sleep_until(window[1])
            end_proxy, end_load = usage(members), usage(load)
            records = run.records(timeout_s=(plan.deadline_ns - time.monotonic_ns()) / 1e9 + 30)
        overflows = listen_overflows() - overflows
    finally:
        if proxy is not None:
            stop(proxy)
        upstream.stop()
    point = Point(path, summarise(records, window))
    point.window_s = seconds = (window[1] - window[0]) / 1e9
    point.listen_overflows = overflows
    arrivals = records.chunks["arrival_ns"]
    relayed = int(np.sum((arrivals >= window[0]) & (arrivals < window[1])))
    point.load_busy = (end_load.cpu_s - start_load.cpu_s) / seconds
    point.load_waited = (end_load.runnable_wait_s - start_load.runnable_wait_s) / seconds
    point.load_cpu_us_per_chunk = point.load_busy * seconds / max(relayed, 1) * 1e6
    if proxy is not None:
        cpu_s = end_proxy.cpu_s - start_proxy.cpu_s
        point.proxy_cpu_us_per_chunk = cpu_s / relayed * 1e6 if relayed else None
        point.proxy_busy = cpu_s / seconds
        point.proxy_waited = (end_proxy.runnable_wait_s - start_proxy.runnable_wait_s) / seconds
        point.proxy_kib_per_stream = (middle.rss_bytes - before.rss_bytes) / streams / 1024
    return point


def add_over(point: Point, direct: Point) -> Point:
    point.added = {
        name: getattr(point.seen, name) - getattr(direct.seen, name) for name in LATENCIES
    }
    return point


def holds(point: Point) -> bool:
    """Every stream complete and in order, and at most 1 ms added to the gap p99."""
    gap_p99_ms = point.added.get("gap_p99_ms", math.inf)
    return point.seen.complete == point.streams and gap_p99_ms <= GAP_TARGET_MS


def keeps_up(point: Point) -> bool:
    return point.seen.complete == point.streams and point.added["gap_p99_ms"] <= KEEP_UP_GAP_MS


def measure(
    tools: NativeTools,
    paths: list[str],
    settings: Settings,
    layout: Layout,
    console: Console,
    logs: Path | None = None,
) -> tuple[list[Point], dict[str, str]]:
    """Every path at every level (references only while they keep up), then modelyard's most
    streams bisected. The proxies' configs and logs go to `logs` (default: a temporary
    directory)."""
    points: list[Point] = []
    dropped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = logs or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)  # nginx's workers write their temp files here

        def level(streams: int, chosen: list[str]) -> dict[str, Point]:
            direct = run_point(tools, "direct", streams, settings, layout, directory, console)
            assert direct is not None
            found = {"direct": direct}
            points.append(direct)
            for path in chosen:
                point = run_point(tools, path, streams, settings, layout, directory, console)
                if point is None:
                    dropped[path] = "not installed"
                    continue
                found[path] = add_over(point, direct)
                points.append(found[path])
            return found

        for streams in settings.levels:
            chosen = [p for p in paths if p != "direct" and p not in dropped]
            for path, point in level(streams, chosen).items():
                if path not in ("direct", "modelyard") and not keeps_up(point):
                    dropped[path] = f"did not keep up at {streams} streams"
        if "modelyard" in paths:
            low, high = bracket(points, "modelyard")
            for _ in range(settings.search_steps if high is not None else 0):
                assert high is not None
                middle = int(round((low + high) / 2, -1 if high - low < 500 else -2))
                if middle in (low, high):
                    break
                if holds(level(middle, ["modelyard"])["modelyard"]):
                    low = middle
                else:
                    high = middle
    return points, dropped


def bracket(points: list[Point], path: str) -> tuple[int, int | None]:
    """The most streams `path` held (0: none), and the fewest above that it did not (None:
    none did not)."""
    low = max((p.streams for p in points if p.path == path and holds(p)), default=0)
    above = [p.streams for p in points if p.path == path and not holds(p) and p.streams > low]
    return low, min(above, default=None)


def most_streams(points: list[Point], path: str) -> str:
    low, high = bracket(points, path)
    if high is None:
        return f">= {low:,} (held at every count tried)" if low else "not measured"
    return f"{low:,} (held; {high:,} did not)" if low else f"< {high:,}"


def _f(value: float | None, digits: int = 2) -> str:
    return "" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def load_fell_behind(point: Point, layout: Layout) -> bool:
    """The upstream wrote late, or the load side's cores were (nearly) full: such a run
    measures the load side as much as the proxy."""
    late = point.seen.upstream_late_p99_ms > LOAD_LATE_MS
    return late or point.load_busy > 0.9 * layout.load_cores


def _share(busy: float | None, waited: float | None) -> str:
    return "" if busy is None or waited is None else f"{busy:.0%} / {waited:.0%}"


def report(points: list[Point], dropped: dict[str, str], layout: Layout, console: Console) -> None:
    table = Table(
        title="concurrent streams at 20 tokens/s: added = through the proxy - direct, same "
        "count, same run (direct rows: absolute)",
        title_justify="left",
    )
    columns = (
        "streams",
        "path",
        "complete",
        "TTFT p50 / p99 ms",
        "gap p50 / p99 ms",
        "CPU µs/chunk",
        "KiB/stream",
        "proxy busy / waited",
        "upstream late p99 ms",
        "load busy / waited",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "path" else "right")
    for point in sorted(points, key=lambda p: (p.streams, ORDER.index(p.path))):
        direct = point.path == "direct"
        source = asdict(point.seen) if direct else point.added
        table.add_row(
            f"{point.streams:,}" + "*" * load_fell_behind(point, layout),
            point.path if direct else f"+ {point.path}",
            f"{point.seen.complete:,}/{point.streams:,}"
            + (f" {point.seen.errors}" if point.seen.errors else "")
            + (f" {point.seen.out_of_order} OUT OF ORDER" if point.seen.out_of_order else ""),
            f"{_f(source['ttft_p50_ms'])} / {_f(source['ttft_p99_ms'])}",
            f"{_f(source['gap_p50_ms'], 3)} / {_f(source['gap_p99_ms'], 3)}",
            _f(point.proxy_cpu_us_per_chunk, 1),
            _f(point.proxy_kib_per_stream, 1),
            _share(point.proxy_busy, point.proxy_waited),
            _f(point.seen.upstream_late_p99_ms),
            _share(point.load_busy, point.load_waited),
        )
    console.print(table)
    console.print(
        f"layout: {layout.describe()}. busy: CPU time / hold window; waited: time runnable "
        "while another task had the core / hold window (other processes on a shared machine)"
    )
    if any(load_fell_behind(p, layout) for p in points):
        console.print(
            f"[yellow]*: the load side fell behind (upstream write p99 > {LOAD_LATE_MS:g} ms "
            "after due, or its cores > 90% busy): the run measures it as much as the proxy[/]"
        )
    for point in points:
        if point.listen_overflows:
            console.print(
                f"{point.path} at {point.streams:,} streams: {point.listen_overflows:,} "
                "connections dropped from a full listen queue (machine-wide count; a client "
                "retries its SYN after 1 s, then 3 s)"
            )
    for path in PATHS[1:]:
        if any(p.path == path for p in points):
            console.print(
                f"most streams with added gap p99 <= 1 ms, {path}: {most_streams(points, path)}"
            )
    for path, why in dropped.items():
        console.print(f"[yellow]{path}: {why}[/]")


def write_json(
    points: list[Point], layout: Layout, settings: Settings, started: float, folder: Path
) -> Path:
    now = datetime.datetime.now(datetime.UTC)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"gateway_streams_{now:%Y-%m-%dT%H%M%S}.json"
    document = {
        "benchmark": "gateway_streams",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": now.isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "load_average_1m_at_start_and_end": [started, os.getloadavg()[0]],
            "note": "absolute figures from a shared machine are noisy; compare paths side by side",
        },
        "layout": layout.describe(),
        "settings": asdict(settings),
        "most_streams_added_gap_p99_le_1ms": {
            path: most_streams(points, path)
            for path in PATHS[1:]
            if any(p.path == path for p in points)
        },
        "points": [asdict(p) for p in points],
    }
    out.write_text(json.dumps(document, indent=1) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 streams, shorter")
    parser.add_argument("--levels", help="comma-separated stream counts (default 100,1000,5000)")
    parser.add_argument("--only", help=f"comma-separated paths of {','.join(PATHS)}")
    parser.add_argument("--workers", type=int, help="gateway.workers for modelyard's gateway")
    parser.add_argument("--logs", type=Path, help="keep the proxies' configs and logs here")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="folder for the result JSON (default benchmarks/results; on the GPU machine: $OUT)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help=f"another checkout's src: adds the path {BASELINE!r} (the change side by side)",
    )
    args = parser.parse_args()
    settings = replace(
        QUICK if args.quick else Settings(),
        workers=args.workers,
        baseline=str(args.baseline) if args.baseline else None,
    )
    if args.levels:
        settings = replace(settings, levels=tuple(int(n) for n in args.levels.split(",")))
    paths = args.only.split(",") if args.only else list(PATHS)
    if args.baseline is not None and BASELINE not in paths:
        paths.insert(paths.index("modelyard") + 1 if "modelyard" in paths else 0, BASELINE)
    console = Console(width=170)
    if "nginx proxy" in paths and shutil.which("nginx") is None:
        console.print("[yellow]nginx not found (make bench-deps): skipped[/]")
        paths.remove("nginx proxy")
    layout = Layout.for_machine(settings.workers)
    os.sched_setaffinity(0, {int(layout.client_core)})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every process
    if hard < 2 * max(settings.levels) + 256:
        raise SystemExit(f"RLIMIT_NOFILE is {hard}: a proxy holding N streams needs 2N sockets")
    started = os.getloadavg()[0]
    console.print(f"layout: {layout.describe()}; load average {started:.1f} at start")
    points, dropped = measure(build(), paths, settings, layout, console, args.logs)
    report(points, dropped, layout, console)
    console.print(f"wrote {write_json(points, layout, settings, started, args.out)}")


if __name__ == "__main__":
    main()
