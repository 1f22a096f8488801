"""Starting `sim serve`: engines placed and built as `sim run` builds them (the same device
plans, memory fractions, quantization, KV cache dtype and contention between engines of one
GPU), one HTTP port each, served until SIGINT or SIGTERM — whatever handling the process
inherited (a shell's background job starts with SIGINT ignored). With a state file, the
endpoints are written in `up`'s format (engines/state.py) once every port listens, so the
gateway, `status` and `bench --fleet` read them, and the file is removed on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.engines.state import EngineProcess, write_state_file
from modelyard.signals import stopping_signal
from modelyard.sim.engine import Engine
from modelyard.sim.fixed import FixedLatencyEngine
from modelyard.sim.server.app import SimServer
from modelyard.sim.server.clock import Clock, RealtimeDriver
from modelyard.sim.server.metrics import SimModel
from modelyard.sim.server.sinks import Listener


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
    state: Path | None = None  # write the endpoints here, in `up`'s state format
    # serve only these engines (replica names, e.g. llama-8b/0), each on its port: whole
    # devices only, so a shared group's members contend as in `sim run` (what `up` starts)
    ports: dict[str, int] | None = None


@dataclass(frozen=True)
class Endpoint:
    engine: str
    model: str
    url: str
    gpu: str
    cold_start_s: float


def build_models(loaded: Any, options: ServeOptions) -> tuple[RealtimeDriver, list[SimModel]]:
    """Engines placed as `sim run` places them, each wrapped for serving."""
    from modelyard.sim.engine import BLOCK_TOKENS
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
    if options.ports is not None:
        plan = _devices_serving(plan, options.ports)
    models: list[SimModel] = []
    for device in plan:
        # as sim run: by sharing mode
        shared = SharedDevice(device.gpu_name, device.slowdown, device.prefill_slowdown)
        for spec in device.engines:
            listener = Listener()
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
                cache_config={
                    "block_size": str(BLOCK_TOKENS),
                    "gpu_memory_utilization": f"{started.fit.gpu_memory_utilization:g}",
                    "num_gpu_blocks": str(started.engine.kv_blocks),
                },
            )
            listener.model = model
            models.append(model)
            driver.engines.append(engine)
    return driver, models


def _devices_serving(plan: list[Any], ports: dict[str, int]) -> list[Any]:
    """The devices whose engines `ports` names, every engine of each; one clear error for a
    name the fleet does not place, or for part of a device (its members would not contend)."""
    from modelyard.sim.errors import SimError

    chosen = [d for d in plan if any(spec.name in ports for spec in d.engines)]
    placed = {spec.name for d in chosen for spec in d.engines}
    unknown = sorted(set(ports) - {spec.name for d in plan for spec in d.engines})
    if unknown:
        known = ", ".join(spec.name for d in plan for spec in d.engines)
        raise SimError(f"--ports names {', '.join(unknown)}: the fleet places {known}")
    missing = sorted(placed - set(ports))
    if missing:
        raise SimError(
            f"--ports: {', '.join(missing)} share a device with the engines named; "
            "give every engine of a shared device"
        )
    return chosen


def engine_processes(endpoints: list[Endpoint], speed: float) -> list[EngineProcess]:
    """The endpoints as `up` records the engines it started: one process (this one) serving
    them all; cold starts in wall-clock seconds."""
    command = _own_command()
    started_at = time.time()
    return [
        EngineProcess(
            name=endpoint.engine,
            model=endpoint.model,
            engine="sim",
            pid=os.getpid(),
            port=int(endpoint.url.rsplit(":", 1)[1]),
            url=endpoint.url,
            log="",  # this process's own output
            command=command,
            cpus=sorted(os.sched_getaffinity(0)),
            gpu_devices=[],
            started_at=started_at,
            cold_start_s=endpoint.cold_start_s / speed,
        )
        for endpoint in endpoints
    ]


def _own_command() -> list[str]:
    """This process's command line as /proc shows it (what `status` compares to tell a live
    engine from a reused pid)."""
    try:
        raw = Path(f"/proc/{os.getpid()}/cmdline").read_bytes()
    except OSError:
        return [sys.executable, *sys.argv]
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


async def serve(loaded: Any, options: ServeOptions, on_ready: Any = None) -> int:
    """Serve until SIGINT or SIGTERM; returns the signal's number."""
    driver, models = build_models(loaded, options)
    server = SimServer(models, driver, options.timing_debug)
    if options.ports is not None:
        ports = [options.ports[m.name] for m in models]
    else:
        ports = [options.port + i for i in range(len(models))]
    loop = asyncio.get_running_loop()
    runner_task: asyncio.Task[None] | None = None
    with stopping_signal(loop) as stopped:
        try:
            await server.start(options.host, ports)
            runner_task = loop.create_task(driver.run())
            # Everything built so far lives as long as the process: out of the collector's
            # sight, a full collection no longer stalls token writes for tens of milliseconds.
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
            if options.state is not None:
                processes = engine_processes(endpoints, options.speed)
                write_state_file(options.state, loaded.fleet.name, processes)
            if on_ready is not None:
                on_ready(endpoints)
            return await stopped
        finally:
            if runner_task is not None:
                runner_task.cancel()
            await server.stop()
            if options.state is not None and runner_task is not None:
                with contextlib.suppress(OSError):
                    options.state.unlink()
