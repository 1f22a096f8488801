"""What does a gateway add to every request? modelyard's gateway vs LiteLLM's proxy vs nginx,
side by side in one run, everything on loopback.

Upstream: nginx returning a fixed completion (`/json/...`) or a fixed SSE stream (`/sse/...`);
nginx is faster than the simulated engine at zero latency, and is pinned to the load generator's
core. The gateway under test is pinned to the other core. Targets: the upstream directly;
modelyard's gateway (it always streams from the upstream and assembles non-streaming answers,
so its upstream is `/sse`); LiteLLM's proxy (own virtual environment, one worker, retries 2 like
ours, logging and database off); nginx as a plain reverse proxy (keep-alive upstream,
proxy_buffering off); and "aiohttp floor", not a proxy: aiohttp (the gateway's server framework)
answering a fixed completion itself, the floor for any gateway built on it. Load: an open-loop
constant-rate client (raw asyncio protocol with
keep-alive connections, latency from each request's *scheduled* time) so the client is not the
bottleneck at 2,000 req/s; `schedule p99` shows its own lateness. `target CPU µs/req`: the
CPU time the gateway's process used per request sent (modelyard and the aiohttp floor, which
are one process each): steadier than latency on a busy machine, and what sets the sustainable
rate.

Streaming: the simulated engine (`sim serve`) streams 64 tokens with real gaps; the table shows
the added time to the first chunk and added inter-chunk gap, and the fraction of a stream's
duration that passed before its first chunk arrived (≈ 1 would mean the proxy buffered).

    python benchmarks/gateway_overhead.py            # full run (about 10 minutes)
    python benchmarks/gateway_overhead.py --quick    # fewer seconds per point
    # this checkout's gateway beside another's (a regression check, same run):
    git archive main src | tar -x -C /tmp/base
    python benchmarks/gateway_overhead.py --quick --only direct,modelyard --baseline /tmp/base/src
    python benchmarks/gateway_overhead.py --quick --baseline /tmp/base/src --alternate 8  # CPU
    # where the gateway's CPU goes (py-spy, this checkout's gateway alone):
    python benchmarks/gateway_overhead.py --profile request --rate 500

Needs nginx (`apt-get install nginx-light`) and LiteLLM (`make litellm-env`); a missing one is
skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import uvloop
from _sim import sim_serve_command
from native.procfs import process_group
from rich.console import Console
from rich.table import Table

CACHE = Path(os.environ.get("MODELYARD_CACHE", Path.home() / ".cache" / "modelyard"))
LITELLM = CACHE / "litellm-1.79.0" / "bin" / "litellm"
GATEWAY_CORE, CLIENT_CORE = "0", "1"
RATES = (100, 500, 1000, 2000)
STREAM_TOKENS = 64  # tokens per streamed answer

COMPLETION = json.dumps(
    {
        "id": "cmpl-bench",
        "object": "chat.completion",
        "created": 1764300000,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The quick brown fox jumps."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14},
    }
)


def _sse() -> str:
    events = []
    for piece in ("The", " quick", " brown", " fox", " jumps", "."):
        events.append(
            {
                "id": "cmpl-bench",
                "object": "chat.completion.chunk",
                "created": 1764300000,
                "model": "bench",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
        )
    events[-1]["choices"][0]["finish_reason"] = "stop"
    usage = {
        "id": "cmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1764300000,
        "model": "bench",
        "choices": [],
        "usage": {"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14},
    }
    lines = [f"data: {json.dumps(e)}\n\n" for e in [*events, usage]]
    return "".join(lines) + "data: [DONE]\n\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nginx_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def nginx_conf(directory: Path, port: int, body: str, connections: int = 4096) -> Path:
    temp = directory / f"nginx-{port}"
    temp.mkdir()
    temp.chmod(0o777)
    conf = temp / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
worker_rlimit_nofile {connections + 64};
daemon off;
error_log {temp}/error.log warn;
pid {temp}/nginx.pid;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fcgi; uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
    keepalive_requests 1000000; keepalive_timeout 300s;
    {body}
}}
"""
    )
    return conf


def upstream_conf(directory: Path, port: int) -> Path:
    return nginx_conf(
        directory,
        port,
        f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /json/ {{
            default_type application/json; return 200 '{_nginx_escape(COMPLETION)}';
        }}
        location /sse/health {{ return 200 'ok'; }}
        location /sse/ {{ default_type text/event-stream; return 200 '{_nginx_escape(_sse())}'; }}
    }}""",
    )


def proxy_conf(
    directory: Path, port: int, upstream: int, path: str, connections: int = 4096
) -> Path:
    return nginx_conf(
        directory,
        port,
        f"""
    upstream backend {{ server 127.0.0.1:{upstream}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend{path};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}""",
        connections,
    )


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int


def start(
    name: str,
    command: list[str],
    port: int,
    core: str,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Server:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        ["taskset", "-c", core, *command],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text()[-2000:] if log else ""
            raise SystemExit(f"{name} exited with {process.returncode}\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return Server(name, process, port)
        time.sleep(0.2)
    raise SystemExit(f"{name} did not listen on {port} within 120 s")


def stop(server: Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()


# --- an open-loop HTTP/1.1 client on raw asyncio protocols ---


@dataclass
class Sample:
    scheduled: float
    sent: float = 0.0
    first: float = 0.0  # first body byte (streaming: first SSE event)
    done: float = 0.0
    status: int = 0
    events: list[float] = field(default_factory=list)
    error: str = ""


class Conn(asyncio.Protocol):
    """One keep-alive connection: one request at a time, response parsed incrementally."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.WriteTransport | None = None
        self.buffer = bytearray()
        self.sample: Sample | None = None
        self.state = "idle"
        self.remaining = 0
        self.chunked = False
        self.close_after = False
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, sample: Sample, request: bytes) -> None:
        assert self.transport is not None
        self.sample, self.state = sample, "head"
        self.buffer.clear()
        self.tail = b""
        sample.sent = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        sample = self.sample
        if sample is None:
            return
        self.buffer += data
        if self.state == "head":
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            del self.buffer[: end + 4]
            sample.status = int(head[9:12])
            self.chunked = b"transfer-encoding: chunked" in head
            self.close_after = b"connection: close" in head
            self.remaining = 0
            if not self.chunked:
                at = head.find(b"content-length:")
                if at >= 0:
                    end = head.find(b"\r\n", at)
                    self.remaining = int(head[at + 15 : end if end > 0 else None])
            self.state = "body"
        if self.state != "body":
            return
        if self.buffer and not sample.first:
            sample.first = now
        if not self.chunked:
            if len(self.buffer) >= self.remaining:
                self._count_events(bytes(self.buffer[: self.remaining]), now)
                self._finish(now)
            return
        while True:  # chunked: <hex>\r\n<data>\r\n ... 0\r\n\r\n
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self.buffer[:line_end].split(b";")[0], 16)
            if size == 0:
                if len(self.buffer) >= line_end + 4:
                    self._finish(now)
                return
            if len(self.buffer) < line_end + 2 + size + 2:
                return
            self._count_events(bytes(self.buffer[line_end + 2 : line_end + 2 + size]), now)
            del self.buffer[: line_end + 2 + size + 2]

    def _count_events(self, data: bytes, now: float) -> None:
        """Time every SSE event that carries content (a role-only first chunk is not a token,
        as for TTFT in `vllm bench serve`)."""
        assert self.sample is not None
        text = self.tail + data
        *events, self.tail = text.split(b"\n\n")
        for event in events:
            if (b'"content":"' in event and b'"content":""' not in event) or (
                b'"text":"' in event and b'"text":""' not in event
            ):
                self.sample.events.append(now)

    def _finish(self, now: float) -> None:
        assert self.sample is not None
        self.sample.done = now
        self.sample, self.state = None, "idle"
        self.pool.release(self, reuse=not self.close_after)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sample is not None:
            self.sample.error = f"connection lost: {exc}"
            self.sample.done = time.perf_counter()
            self.sample = None
            self.pool.release(self, reuse=False)
        else:
            self.pool.forget(self)


class Pool:
    def __init__(self, port: int, request: bytes, limit: int = 2048) -> None:
        self.port, self.request, self.limit = port, request, limit
        self.idle: list[Conn] = []
        self.open = 0
        self.waiting: list[Sample] = []
        self.connecting: set[asyncio.Future[None]] = set()

    def dispatch(self, sample: Sample) -> None:
        if self.idle:
            self.idle.pop().send(sample, self.request)
        elif self.open < self.limit:
            self.open += 1
            task = asyncio.ensure_future(self._connect(sample))
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)
        else:
            self.waiting.append(sample)

    async def _connect(self, sample: Sample) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Conn(self), "127.0.0.1", self.port)
        except OSError as exc:
            self.open -= 1
            sample.error, sample.done = f"connect: {exc}", time.perf_counter()
            return
        conn.send(sample, self.request)

    def release(self, conn: Conn, reuse: bool) -> None:
        if not reuse:
            self.open -= 1
            if conn.transport is not None:
                conn.transport.close()
            if self.waiting:
                self.dispatch(self.waiting.pop(0))
            return
        if self.waiting:
            conn.send(self.waiting.pop(0), self.request)
        else:
            self.idle.append(conn)

    def forget(self, conn: Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
            self.open -= 1


def http_request(path: str, body: dict[str, object]) -> bytes:
    payload = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer sk-bench\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


async def open_loop(
    port: int, request: bytes, rate: float, seconds: float, warmup: float
) -> list[Sample]:
    """Send at a constant `rate`; latencies count from each scheduled time."""
    pool = Pool(port, request)
    interval = 1.0 / rate
    total = int((seconds + warmup) * rate)
    samples: list[Sample] = []
    begin = time.perf_counter() + 0.05
    for index in range(total):
        due = begin + index * interval
        delay = due - time.perf_counter()
        if delay > 0.0015:  # the loop's timers have millisecond resolution: sleep short of it
            await asyncio.sleep(delay - 0.0012)
        while time.perf_counter() < due:
            # poll: let the loop read responses, and the upstream on this core run
            await asyncio.sleep(0)
            os.sched_yield()
        sample = Sample(scheduled=due)
        samples.append(sample)
        pool.dispatch(sample)
        await asyncio.sleep(0)  # read what has arrived before the next send
    limit = time.perf_counter() + 30
    while any(s.done == 0 for s in samples) and time.perf_counter() < limit:
        await asyncio.sleep(0.01)
    for conn in pool.idle:
        if conn.transport is not None:
            conn.transport.close()
    skip = int(warmup * rate)
    return samples[skip:]


@dataclass
class Point:
    target: str
    rate: float
    p50_ms: float
    p99_ms: float
    schedule_p99_ms: float
    achieved_rps: float
    errors: int
    ttft_p50_ms: float = float("nan")
    ttft_p99_ms: float = float("nan")
    gap_p99_ms: float = float("nan")
    first_fraction: float = float("nan")
    cpu_us_per_request: float = float("nan")  # the target process's CPU time per request sent


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the processes of group `pid` (a gateway's supervisor and
    its workers, or one process) have used so far (/proc/PID/stat)."""
    total = 0
    for member in process_group(pid) or [pid]:
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def summarise(target: str, rate: float, samples: list[Sample]) -> Point:
    ok = [s for s in samples if not s.error and s.status == 200 and s.done > 0]
    errors = len(samples) - len(ok)
    if not ok:
        return Point(target, rate, float("nan"), float("nan"), float("nan"), 0.0, errors)
    latency = np.array([s.done - s.scheduled for s in ok]) * 1000
    schedule = np.array([s.sent - s.scheduled for s in ok]) * 1000
    span = max(s.done for s in ok) - min(s.scheduled for s in ok)
    point = Point(
        target,
        rate,
        float(np.percentile(latency, 50)),
        float(np.percentile(latency, 99)),
        float(np.percentile(schedule, 99)),
        len(ok) / span if span > 0 else 0.0,
        errors,
    )
    streams = [s for s in ok if len(s.events) > 2]
    if streams:
        ttft = np.array([s.events[0] - s.scheduled for s in streams]) * 1000
        gaps = np.concatenate([np.diff(s.events[:-2]) for s in streams if len(s.events) > 3]) * 1000
        fraction = np.array([(s.events[0] - s.sent) / max(s.done - s.sent, 1e-9) for s in streams])
        point.ttft_p50_ms = float(np.percentile(ttft, 50))
        point.ttft_p99_ms = float(np.percentile(ttft, 99))
        point.gap_p99_ms = float(np.percentile(gaps, 99)) if gaps.size else float("nan")
        point.first_fraction = float(np.median(fraction))
    return point


def measure(
    target: str,
    port: int,
    path: str,
    rate: float,
    seconds: float,
    stream: bool = False,
    pid: int | None = None,
) -> Point:
    body: dict[str, object] = {
        "model": "bench",
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": STREAM_TOKENS if stream else 16,
    }
    if stream:
        body["stream"] = True
    request = http_request(path, body)
    warmup = min(1.0, seconds / 4)
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    samples = uvloop.run(open_loop(port, request, rate, seconds, warmup))
    point = summarise(target, rate, samples)
    if pid is not None:
        sent = int((seconds + warmup) * rate)
        point.cpu_us_per_request = (cpu_seconds(pid) - cpu_before) / sent * 1e6
    return point


def _holds(point: Point) -> bool:
    return not point.errors and point.achieved_rps >= 0.97 * point.rate and point.p99_ms < 100


def sustainable(
    target: str, port: int, path: str, seconds: float, start: float = 50, ceiling: float = 30000
) -> float:
    """The highest constant rate served with no errors, >= 97% of offered and p99 under
    100 ms: x1.5 steps from `start`, then two refinements (x1.22, x1.1) past the last good."""
    best, rate = 0.0, start
    while rate <= ceiling and _holds(measure(target, port, path, rate, seconds)):
        best, rate = rate, rate * 1.5
    for factor in (1.22, 1.1):
        if best and _holds(measure(target, port, path, best * factor, seconds)):
            best *= factor
    return best


AIOHTTP_FLOOR = f"""
import sys
from aiohttp import web
import uvloop
BODY = {COMPLETION.encode()!r}
async def handle(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application()
app.router.add_post("/v1/chat/completions", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            loop=uvloop.new_event_loop())
"""


def start_target(
    name: str,
    directory: Path,
    upstream: int,
    console: Console,
    streaming: bool = False,
    fleet_extra: str = "",
    connections: int = 4096,
    core: str = GATEWAY_CORE,
    baseline: Path | None = None,
) -> Server | None:
    """The gateway `name`, pinned to `core`, in front of the nginx upstream (its `/sse`
    location for modelyard, which always streams upstream, and `/json` for the others) or,
    `streaming`, in front of a streaming upstream on `upstream`. `fleet_extra` is YAML appended
    to modelyard's fleet; `connections` is nginx's worker_connections; `baseline` is the
    source folder (`src`) the "modelyard baseline" target runs from."""
    port = free_port()
    sse, json_base = ("", "") if streaming else ("/sse", "/json")
    tag = "-stream" if streaming else ""
    if name == "aiohttp floor":  # the server framework alone: a fixed reply, no proxying
        script = directory / "aiohttp_floor.py"
        script.write_text(AIOHTTP_FLOOR)
        return start(name, [sys.executable, str(script), str(port)], port, core)
    workers = _workers_of(name)
    if workers > 1:  # `modelyard xN`: N workers, on as many cores as there are (at most N)
        core = ",".join(map(str, range(min(workers, os.cpu_count() or 1))))
        fleet_extra += f"gateway:\n  workers: {workers}\n"
        name = "modelyard"
    if name in ("modelyard", BASELINE):
        fleet = directory / f"fleet{tag}.yaml"
        fleet.write_text(
            "name: bench\nmodels:\n  bench:\n    catalog: llama-3.1-8b\n    engine: vllm\n"
            f"    gpu: a10g\n    endpoints: ['http://127.0.0.1:{upstream}{sse}']\n"
            "policy:\n  retry: {attempts: 2, backoff: 50ms}\n  health: {interval: 5s}\n"
            + fleet_extra
        )
        other = name == BASELINE and baseline is not None
        return start(
            name,
            [sys.executable, "-m", "modelyard", "gateway", str(fleet), "--port", str(port)],
            port,
            core,
            env={"PYTHONPATH": str(baseline)} if other else None,
            log=directory / f"{name.replace(' ', '-')}{tag}.log",
        )
    if name == "nginx proxy":
        conf = proxy_conf(directory, port, upstream, f"{json_base}/", connections)
        return start("nginx proxy", ["nginx", "-c", str(conf)], port, core)
    if name == "litellm":
        if not LITELLM.exists():
            console.print(f"[yellow]LiteLLM not found at {LITELLM}: run `make litellm-env`[/]")
            return None
        config = directory / f"litellm{tag}.yaml"
        config.write_text(
            "model_list:\n  - model_name: bench\n    litellm_params:\n"
            f"      model: openai/bench\n      api_base: http://127.0.0.1:{upstream}{json_base}/v1\n"
            "      api_key: sk-bench\n"
            "litellm_settings:\n  num_retries: 2\n  request_timeout: 600\n"
            "  turn_off_message_logging: true\n  callbacks: []\n"
            "general_settings:\n  disable_spend_logs: true\n  disable_error_logs: true\n"
        )
        return start(
            "litellm proxy",
            [str(LITELLM), "--config", str(config), "--port", str(port), "--num_workers", "1"],
            port,
            core,
            env={"LITELLM_LOG": "ERROR", "DISABLE_ADMIN_UI": "True"},
            log=directory / f"litellm{tag}.log",
        )
    return None


def streaming(
    directory: Path,
    seconds: float,
    console: Console,
    chosen: list[str],
    baseline: Path | None = None,
) -> list[Point]:
    """Stream 64 tokens from the simulated engine, direct and through each proxy in turn."""
    points: list[Point] = []
    sim_port = free_port()
    sim = start(
        "sim engine",
        # it shares the client's core: no spinning to due times, which would take the core
        # from the client just as tokens arrive
        sim_serve_command(
            "llama-3.1-8b", "h100-sxm", sim_port, "--served-model-name", "bench", "--coarse-timing"
        ),
        sim_port,
        CLIENT_CORE,
        log=directory / "sim.log",
    )
    try:
        time.sleep(0.5)
        for name in [t for t in TARGETS if t in chosen and t != "aiohttp floor"]:
            server = (
                None
                if name == "direct"
                else start_target(
                    name, directory, sim_port, console, streaming=True, baseline=baseline
                )
            )
            if server is None and name != "direct":
                continue
            try:
                console.print(f"[dim]streaming: {name}[/]")
                port = server.port if server else sim_port
                measure(name, port, "/v1/chat/completions", 5, 1.0, stream=True)
                points.append(measure(name, port, "/v1/chat/completions", 20, seconds, stream=True))
            finally:
                if server is not None:
                    stop(server)
    finally:
        stop(sim)
    return points


ONE_PROCESS = ("modelyard", "modelyard baseline", "aiohttp floor")  # for the CPU column
BASELINE = "modelyard baseline"  # the gateway from another checkout's sources (--baseline)
TARGETS = ("litellm", "direct", "modelyard", BASELINE, "nginx proxy", "aiohttp floor")


def _workers_of(target: str) -> int:
    """N for the target `modelyard xN` (the gateway with N workers), else 1."""
    count = target.removeprefix("modelyard x")
    return int(count) if count != target and count.isdigit() else 1


def _order(target: str) -> tuple[int, int]:
    """Where `target` goes in the tables: `modelyard xN` right after `modelyard`."""
    workers = _workers_of(target)
    return (TARGETS.index("modelyard" if workers > 1 else target), workers)


def _targets(chosen: list[str], workers: list[int]) -> list[str]:
    """The targets to measure, in order, with `modelyard xN` for each N > 1 of `workers`."""
    extra = [f"modelyard x{n}" for n in workers if n > 1] if "modelyard" in chosen else []
    return sorted([t for t in TARGETS if t in chosen] + extra, key=_order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per point instead of 8")
    parser.add_argument("--only", help="comma-separated targets (default: all)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a source folder (another checkout's src/): its gateway is measured too, as "
        f"'{BASELINE}', right after this one's",
    )
    parser.add_argument(
        "--alternate",
        type=int,
        metavar="ROUNDS",
        help="with --baseline: only measure the two gateways in turn, ROUNDS times each at "
        "--rate, and compare their CPU per request (minimum and median over the rounds)",
    )
    parser.add_argument(
        "--rate", type=float, default=500.0, help="with --alternate or --profile (req/s)"
    )
    parser.add_argument(
        "--profile",
        choices=("request", "stream"),
        help="only profile this checkout's gateway at --rate with py-spy: non-streaming "
        "requests (nginx upstream) or 64-token streams (sim upstream)",
    )
    parser.add_argument(
        "--workers",
        default="1",
        help="comma-separated gateway.workers counts: modelyard's gateway is measured with "
        "each, as `modelyard xN` for N > 1 (on N cores, the load generator's included)",
    )
    args = parser.parse_args()
    seconds = 3.0 if args.quick else 8.0
    chosen = args.only.split(",") if args.only else [t for t in TARGETS if t != BASELINE]
    if args.baseline is not None:
        if not (args.baseline / "modelyard" / "__init__.py").exists():
            raise SystemExit(f"--baseline {args.baseline}: no modelyard package there")
        chosen.append(BASELINE)
    console = Console(width=160)
    if shutil.which("nginx") is None:
        raise SystemExit("nginx not found: apt-get install nginx-light (it is the upstream)")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores: the gateway on one, the load generator on the other")
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    if args.profile:
        profile(args.rate, seconds, console, stream=args.profile == "stream")
        return
    if args.alternate:
        if args.baseline is None:
            raise SystemExit("--alternate compares with --baseline SRC: give it")
        alternate(args.baseline, args.alternate, args.rate, seconds, console)
        return
    points: list[Point] = []
    maxima: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        directory.chmod(0o777)
        up = free_port()
        upstream = start(
            "nginx upstream", ["nginx", "-c", str(upstream_conf(directory, up))], up, CLIENT_CORE
        )
        try:
            rates = list(RATES)
            for name in _targets(chosen, [int(n) for n in args.workers.split(",")]):
                server = (
                    None
                    if name == "direct"
                    else start_target(name, directory, up, console, baseline=args.baseline)
                )
                if server is None and name != "direct":
                    continue
                port = server.port if server else up
                path = "/v1/chat/completions" if server else "/json/v1/chat/completions"
                try:
                    measure(name, port, path, 50, 1.0)  # warm connections and code paths
                    console.print(f"[dim]{name}: searching the highest sustainable rate[/]")
                    maxima[name] = sustainable(name, port, path, max(seconds / 2, 2.0))
                    if name == "litellm" and maxima[name]:
                        rates = sorted({*rates, round(maxima[name])})
                    for rate in rates:
                        if name != "direct" and rate > 1.1 * maxima[name]:
                            points.append(Point(name, rate, *(float("nan"),) * 3, 0.0, -1))
                            continue
                        console.print(f"[dim]{name} at {rate} req/s[/]")
                        # one process does all the work (nginx's workers and LiteLLM's
                        # server are other processes than the one started)
                        one = name in ONE_PROCESS or _workers_of(name) > 1
                        pid = server.process.pid if server and one else None
                        points.append(measure(name, port, path, rate, seconds, pid=pid))
                finally:
                    if server is not None:
                        stop(server)
        finally:
            stop(upstream)
        stream_points = streaming(directory, seconds, console, chosen, args.baseline)
    report(points, maxima, stream_points, console)


def alternate(baseline: Path, rounds: int, rate: float, seconds: float, console: Console) -> None:
    """This checkout's gateway and the baseline's in turn at `rate`, `rounds` times each: on a
    machine others use, the CPU per request of rounds measured seconds apart is the fairest
    comparison (its minimum the least disturbed)."""
    names = ("modelyard", BASELINE)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        directory.chmod(0o777)
        up = free_port()
        conf = upstream_conf(directory, up)
        upstream = start("nginx upstream", ["nginx", "-c", str(conf)], up, CLIENT_CORE)
        servers: list[Server] = []
        try:
            for name in names:
                server = start_target(name, directory, up, console, baseline=baseline)
                assert server is not None
                servers.append(server)
                measure(name, server.port, "/v1/chat/completions", 50, 1.0)  # warm it
            for round_index in range(rounds):
                for name, server in zip(names, servers, strict=True):
                    console.print(f"[dim]round {round_index + 1}: {name}[/]")
                    point = measure(
                        name,
                        server.port,
                        "/v1/chat/completions",
                        rate,
                        seconds,
                        pid=server.process.pid,
                    )
                    cpu[name].append(point.cpu_us_per_request)
        finally:
            for server in servers:
                stop(server)
            stop(upstream)
    table = Table(
        title=f"gateway CPU µs per request at {rate:g} req/s, {rounds} rounds in turn",
        title_justify="left",
    )
    for column in ("target", "each round", "min", "median"):
        table.add_column(column, justify="left" if column in ("target", "each round") else "right")
    for name in names:
        values = cpu[name]
        rows = " ".join(f"{v:.0f}" for v in values)
        table.add_row(name, rows, f"{min(values):.0f}", f"{np.median(values):.0f}")
    console.print(table)
    ours, theirs = cpu["modelyard"], cpu[BASELINE]
    console.print(
        f"modelyard / baseline: {min(ours) / min(theirs):.3f} (minima), "
        f"{np.median(ours) / np.median(theirs):.3f} (medians)"
    )


def _frames(line: str) -> tuple[list[str], int]:
    """One py-spy raw line (`frame;frame;... count`): its frames, outermost first, and count."""
    stack, _, count = line.rpartition(" ")
    return stack.split(";"), int(count)


def _where(frame: str) -> tuple[str, str]:
    """(module, function) of a py-spy frame `function (path/to/file.py:line)`: modelyard's
    modules by name, anything else by its top package (aiohttp, asyncio, ...)."""
    function, _, location = frame.partition(" (")
    path = location.rsplit(":", 1)[0]
    if path.startswith("modelyard/") or "/modelyard/" in path:
        module = "modelyard/" + path.split("modelyard/", 1)[1]
        return module.removesuffix(".py").replace("/", "."), function
    return path.split("/", 1)[0].removesuffix(".py") or "native", function


def profile(rate: float, seconds: float, console: Console, stream: bool) -> None:
    """This checkout's gateway at `rate` for `seconds` under py-spy (sampling, native frames
    off): where its CPU goes, by the innermost frame's module and by modelyard function
    (inclusive). The profile is of the gateway process alone (py-spy leaves idle samples out;
    `asyncio` innermost is the event loop's own native work: uvloop's I/O and callbacks)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy not found: pip install py-spy (a dev dependency)")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        directory.chmod(0o777)
        upstream_port = free_port()
        if stream:
            command = sim_serve_command(
                "llama-3.1-8b",
                "h100-sxm",
                upstream_port,
                "--served-model-name",
                "bench",
                "--coarse-timing",
            )
            upstream = start("sim engine", command, upstream_port, CLIENT_CORE)
        else:
            conf = upstream_conf(directory, upstream_port)
            upstream = start(
                "nginx upstream", ["nginx", "-c", str(conf)], upstream_port, CLIENT_CORE
            )
        server = None
        try:
            server = start_target("modelyard", directory, upstream_port, console, streaming=stream)
            assert server is not None
            path = "/v1/chat/completions"
            measure("modelyard", server.port, path, 50, 1.0, stream=stream)  # warm it
            raw = directory / "profile.txt"
            spy_process = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(server.process.pid),
                    "--rate",
                    "500",
                    "--duration",
                    str(int(seconds + 2)),
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)  # py-spy attaches
            point = measure(
                "modelyard",
                server.port,
                path,
                rate,
                seconds,
                stream=stream,
                pid=server.process.pid,
            )
            spy_process.wait(seconds + 30)
            lines = raw.read_text().splitlines() if raw.exists() else []
            kept = Path(tempfile.gettempdir()) / "gateway-profile.txt"
            kept.write_text("\n".join(lines) + "\n")  # for flamegraph tools
        finally:
            if server is not None:
                stop(server)
            stop(upstream)
    by_group: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in lines:
        frames, count = _frames(line)
        inner = _where(frames[-1])
        total += count
        by_group[inner[0]] = by_group.get(inner[0], 0) + count
        seen = set()
        for frame in frames:
            group, function = _where(frame)
            if (
                group.startswith("modelyard.")
                and (group, function) not in seen
                and (not group.startswith("modelyard.cli") and group != "modelyard.__main__")
            ):
                seen.add((group, function))
                key = f"{group}.{function}"
                inclusive[key] = inclusive.get(key, 0) + count
    console.print(
        f"gateway at {rate:g} req/s ({'streaming 64 tokens' if stream else 'non-streaming'}): "
        f"{point.cpu_us_per_request:.0f} µs CPU per request"
        f"{f' ({point.cpu_us_per_request / STREAM_TOKENS:.0f} µs per token)' if stream else ''}, "
        f"{'stream' if stream else 'request'} p50 {point.p50_ms:.2f} ms; "
        f"{total} busy samples"
    )
    for title, counts, limit in (
        ("busy CPU by the innermost frame's module", by_group, 15),
        ("busy CPU inside each modelyard function (inclusive)", inclusive, 25),
    ):
        table = Table(title=title, title_justify="left")
        table.add_column("where")
        table.add_column("share", justify="right")
        for key, count in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]:
            table.add_row(key, f"{count / max(total, 1):.1%}")
        console.print(table)


def report(
    points: list[Point], maxima: dict[str, float], streams: list[Point], console: Console
) -> None:
    direct = {p.rate: p for p in points if p.target == "direct"}
    points = sorted(points, key=lambda p: (p.rate, _order(p.target)))
    table = Table(
        title="gateway overhead, non-streaming (added = target - direct, same run)",
        title_justify="left",
    )
    for column in (
        "target",
        "req/s",
        "achieved",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "added p99 ms",
        "client schedule p99 ms",
        "target CPU µs/req",
        "errors",
    ):
        table.add_column(column, justify="left" if column == "target" else "right")
    for point in points:
        base = direct.get(point.rate)
        if point.errors < 0:
            table.add_row(point.target, f"{point.rate:g}", "over capacity", *[""] * 7)
            continue
        if base is None:
            continue
        added = point.target != "direct"
        table.add_row(
            point.target,
            f"{point.rate:g}",
            f"{point.achieved_rps:,.0f}",
            f"{point.p50_ms:.2f}",
            f"{point.p99_ms:.2f}",
            f"{point.p50_ms - base.p50_ms:.2f}" if added else "",
            f"{point.p99_ms - base.p99_ms:.2f}" if added else "",
            f"{point.schedule_p99_ms:.2f}",
            "" if np.isnan(point.cpu_us_per_request) else f"{point.cpu_us_per_request:.0f}",
            str(point.errors),
        )
    console.print(table)
    limits = Table(
        title="highest sustainable rate on one core (no errors, >=97% achieved, "
        "p99 < 100 ms; x1.5 steps from 50, refined to 10%)",
        title_justify="left",
    )
    for column in ("target", "req/s", "vs litellm"):
        limits.add_column(column, justify="left" if column == "target" else "right")
    for name, rate in maxima.items():
        ratio = f"{rate / maxima['litellm']:.1f}x" if maxima.get("litellm") else ""
        limits.add_row(name, f"{rate:,.0f}", ratio)
    console.print(limits)
    base = next((p for p in streams if p.target == "direct"), None)
    table = Table(
        title="streaming, 64 tokens from the simulated engine at 20 streams/s", title_justify="left"
    )
    for column in (
        "target",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "added TTFT p50 ms",
        "inter-chunk gap p99 ms",
        "added gap p99 ms",
        "first chunk at (share of stream)",
        "errors",
    ):
        table.add_column(column, justify="left" if column == "target" else "right")
    for point in streams:
        added = base is not None and point.target != "direct"
        table.add_row(
            point.target,
            f"{point.ttft_p50_ms:.2f}",
            f"{point.ttft_p99_ms:.2f}",
            f"{point.ttft_p50_ms - base.ttft_p50_ms:.2f}" if added and base else "",
            f"{point.gap_p99_ms:.3f}",
            f"{point.gap_p99_ms - base.gap_p99_ms:.3f}" if added and base else "",
            f"{point.first_fraction:.3f}",
            str(point.errors),
        )
    console.print(table)


if __name__ == "__main__":
    main()
