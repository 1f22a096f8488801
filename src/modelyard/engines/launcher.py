"""Start, watch and stop local engine processes for a fleet (`modelyard up` / `status` / `down`).

Placement (modelyard.placement): isolated engines each get their own CPU set (and GPU, through
CUDA_VISIBLE_DEVICES); members of a shared group share one, and those sharing a GPU start one
after another. Every engine runs in its own process group so `down` can stop it and everything
it spawned; the state file lists exactly what `up` started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from modelyard.engines.adapters import SimAdapter, adapter_for
from modelyard.engines.base import EngineAdapter, LaunchSpec
from modelyard.engines.errors import EngineError, EngineStartupError
from modelyard.engines.models import default_weights
from modelyard.engines.state import EngineProcess, read_state, state_path, write_state
from modelyard.fleet import LoadedFleet
from modelyard.placement import PlacementOverride, device_plans

LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class PlannedEngine:
    name: str
    adapter: EngineAdapter
    spec: LaunchSpec
    device: int = 0  # the device plan it is placed on (modelyard.placement)
    shared: bool = False  # other engines share that device


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def plan(
    loaded: LoadedFleet,
    host: str = "127.0.0.1",
    cores: list[int] | None = None,
    override: PlacementOverride | None = None,
) -> list[PlannedEngine]:
    """Every engine replica with its port, CPU set, GPU and memory fraction, placed by the
    fleet's placement (modelyard.placement, with `override`): one device unit per plan."""
    fleet = loaded.fleet
    cores = cores if cores is not None else sorted(os.sched_getaffinity(0))
    devices = device_plans(loaded, override)
    planned = []
    gpu_index = 0
    # A CPU engine computes on its cores: one each. A GPU engine's cores run its API server,
    # scheduler and tokenizer, which one core cannot keep up with: the cores are split evenly.
    cores_per_unit = max(len(cores) // max(len(devices), 1), 1)
    for device in devices:
        index = device.index
        uses_gpu = device.gpu is not None
        cpus = (
            tuple(cores[(index * cores_per_unit + k) % len(cores)] for k in range(cores_per_unit))
            if uses_gpu
            else (cores[index % len(cores)],)
        )
        gpu_devices = tuple(range(gpu_index, gpu_index + device.gpu_count))
        gpu_index += device.gpu_count
        for placed in device.engines:
            name = placed.model
            entry = fleet.models[name]
            slug = loaded.catalog.resolve_model_name(entry.catalog)
            spec_model = loaded.model_spec(name)
            spec = LaunchSpec(
                name=name,
                catalog_model=slug,
                model=spec_model,
                quant_name=entry.quant_name,
                quant=loaded.quant(name),
                weights=entry.weights or default_weights(slug, entry.engine, spec_model.hf_id),
                host=host,
                port=free_port(host),
                gpu=device.gpu,
                max_model_len=entry.max_model_len,
                gpu_memory_utilization=placed.memory_fraction if uses_gpu else None,
                max_num_seqs=entry.max_num_seqs,
                max_num_batched_tokens=entry.max_num_batched_tokens,
                kv_cache_dtype=entry.kv_cache_dtype,
                tensor_parallel_size=entry.tensor_parallel_size,
                cpus=cpus,
                gpu_devices=gpu_devices,
                extra_args=tuple(entry.engine_args),
            )
            adapter = adapter_for(entry.engine)
            planned.append(PlannedEngine(placed.name, adapter, spec, index, device.shared))
    return planned


def processes(
    loaded: LoadedFleet, planned: list[PlannedEngine], layout: str = "fleet"
) -> list[tuple[list[PlannedEngine], list[str]]]:
    """The processes `up` starts, in order: the engines each serves and its command. One per
    engine, except the simulated engines of a shared device: one `sim serve` of the fleet file
    runs them all, so that they contend for the device as `sim run` simulates them."""
    out: list[tuple[list[PlannedEngine], list[str]]] = []
    grouped: set[int] = set()
    for item in planned:
        group = [p for p in planned if p.device == item.device]
        simulated = all(isinstance(p.adapter, SimAdapter) for p in group)
        if not (item.shared and simulated):
            out.append(([item], item.adapter.command(item.spec)))
        elif item.device not in grouped:
            grouped.add(item.device)
            assert isinstance(item.adapter, SimAdapter)
            members = [(p.name, p.spec) for p in group]
            out.append((group, item.adapter.group_command(loaded.path, members, layout)))
    return out


def is_running(process: EngineProcess) -> bool:
    """True if the pid is alive and still the engine we started (pids are reused)."""
    try:
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].decode(errors="replace") == process.command[0]


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _http(url: str, body: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _start(
    item: PlannedEngine, state_dir: Path, command: list[str], log_name: str
) -> EngineProcess:
    spec = item.spec
    log = state_dir / "logs" / f"{log_name.replace('/', '-')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **item.adapter.env(spec)}
    cpus = set(spec.cpus)
    # posix_spawn, not Popen: the engine outlives this process and no Popen object is left
    # to warn about it; setsid gives it its own process group for `down`.
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        pid = os.posix_spawnp(
            command[0],
            command,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
            ],
            setsid=True,
        )
    except OSError as exc:
        raise EngineStartupError(f"{item.name}: cannot start {command[0]}: {exc}") from exc
    finally:
        os.close(out)
    if cpus:
        with contextlib.suppress(OSError):  # before the engine starts its threads
            os.sched_setaffinity(pid, cpus)
    return EngineProcess(
        name=item.name,
        model=spec.name,
        engine=item.adapter.name,
        pid=pid,
        port=spec.port,
        url=f"http://{spec.host}:{spec.port}",
        log=str(log),
        command=command,
        cpus=sorted(cpus),
        gpu_devices=list(spec.gpu_devices),
        started_at=time.time(),
    )


def _failure(process: EngineProcess, adapter: EngineAdapter, why: str) -> EngineStartupError:
    tail = log_tail(process.log)
    kind = "out of memory" if adapter.is_oom(tail) else why
    return EngineStartupError(
        f"{process.name} ({process.engine}) {kind} during start; last lines of {process.log}:\n"
        + "\n".join(f"  {line}" for line in tail.splitlines())
    )


def wait_ready(
    process: EngineProcess,
    adapter: EngineAdapter,
    started_monotonic: float,
    deadline_s: float,
    on_wait: Callable[[str], None] | None = None,
) -> float:
    """Poll health, then send one completion; return the cold start (start to first answer)."""
    end = started_monotonic + deadline_s
    ready = False
    while time.monotonic() < end:
        if not is_running(process) and _exited(process.pid):
            raise _failure(process, adapter, "exited")
        try:
            if not ready:
                status, body = _http(process.url + adapter.health_path)
                ready = adapter.is_ready(status, body)
            if ready:
                payload = json.dumps(
                    {"model": process.model, "prompt": "Hello", "max_tokens": 1}
                ).encode()
                status, _ = _http(process.url + "/v1/completions", payload, timeout=60)
                if status == 200:
                    return time.monotonic() - started_monotonic
        except (OSError, urllib.error.URLError):
            pass
        if on_wait is not None:
            on_wait(process.name)
        time.sleep(0.2)
    raise _failure(process, adapter, f"was not ready after {deadline_s:.0f} s")


def _exited(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return finished != 0


def up(
    loaded: LoadedFleet,
    state_dir: Path,
    host: str = "127.0.0.1",
    timeout_s: float = 600.0,
    on_event: Callable[[str, EngineProcess | None], None] | None = None,
    override: PlacementOverride | None = None,
) -> list[EngineProcess]:
    """Start every engine, wait until each answers a completion, record cold starts.

    On any failure (or Ctrl-C) everything started so far is stopped before raising."""
    state_dir.mkdir(parents=True, exist_ok=True)
    running = [p for p in read_state(state_dir) if is_running(p)]
    if running:
        raise EngineError(
            f"{len(running)} engines from an earlier `up` are still running in {state_dir}: "
            "run `modelyard down` first"
        )
    planned = plan(loaded, host, override=override)
    layout = override.layout if override is not None else "fleet"
    started: list[EngineProcess] = []
    pending: list[tuple[PlannedEngine, EngineProcess, float]] = []

    def wait_for(waiting: list[tuple[PlannedEngine, EngineProcess, float]]) -> None:
        for item, process, clock in waiting:
            process.cold_start_s = wait_ready(process, item.adapter, clock, timeout_s)
            pending.remove((item, process, clock))
            write_state(state_dir, loaded.fleet.name, started)
            if on_event:
                on_event("ready", process)

    try:
        for items, command in processes(loaded, planned, layout):
            # Engines sharing a GPU start one after another: each sizes its memory from what
            # is free when it starts (vLLM refuses to start when less than its fraction is).
            first = items[0]
            devices = set(first.spec.gpu_devices)
            wait_for([p for p in pending if devices & set(p[1].gpu_devices)])
            process = _start(first, state_dir, command, "+".join(i.name for i in items))
            # one process serving several engines (a shared device's simulated engines):
            # one record per engine, each with its own port, all with the one pid
            for item in items:
                record = replace(
                    process,
                    name=item.name,
                    model=item.spec.name,
                    port=item.spec.port,
                    url=f"http://{item.spec.host}:{item.spec.port}",
                )
                pending.append((item, record, time.monotonic()))
                started.append(record)
                write_state(state_dir, loaded.fleet.name, started)
                if on_event:
                    on_event("started", record)
        wait_for(list(pending))
    except BaseException:
        stop(started)
        with contextlib.suppress(OSError):
            state_path(state_dir).unlink()
        raise
    return started


def stop(processes: list[EngineProcess], grace_s: float = 10.0) -> list[str]:
    """SIGTERM each engine's process group, then SIGKILL what is left after `grace_s`."""
    stopped = []
    live = [p for p in processes if is_running(p)]
    for process in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:  # leads no group: a `sim serve` started by hand
                os.kill(process.pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    for process in live:
        while time.monotonic() < end:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(process.pid, os.WNOHANG)  # reap it if it is our child
            if not is_running(process):
                break
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group, if any
        stopped.append(process.name)
    return stopped


def down(state_dir: Path) -> list[str]:
    """Stop everything the last `up` in `state_dir` started, and nothing else."""
    processes = read_state(state_dir)
    stopped = stop(processes)
    with contextlib.suppress(OSError):
        state_path(state_dir).unlink()
    return stopped


@dataclass(frozen=True)
class EngineStatus:
    process: EngineProcess
    alive: bool
    health: int | None


def status(state_dir: Path) -> list[EngineStatus]:
    rows = []
    for process in read_state(state_dir):
        alive = is_running(process)
        health = None
        if alive:
            with contextlib.suppress(OSError, urllib.error.URLError):
                health, _ = _http(process.url + adapter_for(process.engine).health_path)
        rows.append(EngineStatus(process, alive, health))
    return rows
