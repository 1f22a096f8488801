"""Starting `sim serve`: engines placed as `sim run` places them, one HTTP port each, served
until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class Endpoint:
    engine: str
    model: str
    url: str
    gpu: str
    cold_start_s: float


def build_models(loaded: Any, options: ServeOptions) -> tuple[RealtimeDriver, list[SimModel]]:
    """Engines placed as `sim run` places them, each wrapped for serving."""
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
    models: list[SimModel] = []
    for device in plan:
        shared = SharedDevice(device.gpu_name, device.engines[0].calibration.contention_slowdown)
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
            )
            listener.model = model
            models.append(model)
            driver.engines.append(engine)
    return driver, models


async def serve(loaded: Any, options: ServeOptions, on_ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    import signal

    driver, models = build_models(loaded, options)
    server = SimServer(models, driver, options.timing_debug)
    ports = [options.port + i for i in range(len(models))]
    await server.start(options.host, ports)
    runner_task = asyncio.get_running_loop().create_task(driver.run())
    # Everything built so far lives as long as the process: out of the collector's sight, a
    # full collection no longer stalls token writes for tens of milliseconds.
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
    if on_ready is not None:
        on_ready(endpoints)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        runner_task.cancel()
        await server.stop()
