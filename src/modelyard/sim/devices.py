"""Which simulated engines run where: one engine per model replica, on the device the
placement (or an override) puts it, with the calibration of its engine version and GPU and the
sharing mode of its group."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from modelyard.catalog import Catalog
from modelyard.errors import ConfigError
from modelyard.fleet import Fleet, LoadedFleet, Sharing, check_fleet, parse_fleet
from modelyard.memory import FitSettings, fleet_settings
from modelyard.placement import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    Layout,
    PlacedEngine,
    PlacementOverride,
    device_plans,
    isolated_fraction,
)
from modelyard.sim.calibration import Calibration, choose_calibration
from modelyard.sim.errors import SimError
from modelyard.sim.gpu import DeviceSharing, EngineSpec, device_sharing
from modelyard.sim.result import FP8_UNMEASURED_BAND, Accuracy
from modelyard.sim.versions import EngineVersion, resolve_engine_version
from modelyard.yamlsource import YamlDocument, validation_problems

Placement = Layout  # fleet (as written), shared (one group of all) or isolated
# vLLM V0 without chunked prefill schedules a whole prompt in one step: its budget is at least
# max_model_len (vllm/config.py SchedulerConfig, 0.6.x)
V0_MIN_BATCHED_TOKENS = 2048


@dataclass(frozen=True)
class DeviceRequest:
    """What `plan_devices` needs from the simulation options."""

    placement: Placement = "fleet"
    gpu: str | None = None
    calibrations: tuple[Calibration, ...] = ()
    engine_version: str | None = None  # overrides every model's engine_version
    sharing: Sharing | None = None  # overrides every shared group's sharing mode
    mps_compute_share: float = 1.0


@dataclass(frozen=True)
class PlannedDevice:
    gpu_name: str
    engines: list[EngineSpec]
    slowdown: float = 0.0  # extra step time per other busy engine on this device
    sharing: Sharing | Literal["isolated"] = "isolated"
    accuracy: dict[str, Accuracy] = field(default_factory=dict)
    gpu_count: int = 1  # GPUs of one node the device's engines span (tensor parallelism)
    prefill_slowdown: float | None = None  # `slowdown` for a step that prefills (None: the same)


def engine_version_of(loaded: LoadedFleet, name: str, override: str | None) -> EngineVersion:
    entry = loaded.fleet.models[name]
    return resolve_engine_version(entry.engine, override or entry.engine_version)


def _settings(
    loaded: LoadedFleet, name: str, calibration: Calibration, fraction: float
) -> FitSettings:
    """The fleet's engine settings, with the engine version's defaults where it sets none."""
    settings = fleet_settings(loaded, name, fraction)
    max_model_len = settings.max_model_len or loaded.model_spec(name).max_context
    batched = settings.max_num_batched_tokens or calibration.max_num_batched_tokens
    if batched is None and calibration.scheduler == "prefill-first":
        batched = max(max_model_len, V0_MIN_BATCHED_TOKENS)
    return replace(
        settings,
        max_num_batched_tokens=batched,
        max_num_seqs=settings.max_num_seqs or calibration.max_num_seqs,
    )


def _accuracy(
    spec: EngineSpec, version: EngineVersion, measured_device: str, extra_note: str = ""
) -> Accuracy:
    cal = spec.calibration
    measured = cal.measured(measured_device) and not extra_note
    band = cal.error_band if measured else cal.unmeasured_error_band
    notes = [] if measured else [f"{cal.name} was not measured on {spec.gpu_name}"]
    if extra_note:
        notes.append(extra_note)
    if version.stands_in_for is not None:
        notes.append(f"no {version.stands_in_for} profile: simulated as {version}")
        band = max(band, cal.unmeasured_error_band)
    elif not version.stated:
        notes.append(f"engine version not given: {version} assumed")
    if cal.request_latency_ms and cal.unmeasured("request_latency_ms"):
        band = max(band, cal.unmeasured_error_band)
        notes.append(
            f"request path (API server latency) not measured for {cal.name}: "
            "low-load TTFT may be off by tens of ms"
        )
    fp8_compute = spec.quant_name == "fp8" and spec.gpu.fp8_tflops is not None
    if fp8_compute and cal.fp8_mfu is None:
        band = max(band, FP8_UNMEASURED_BAND)
        notes.append("FP8 compute taken as the FP8 peak with bf16-measured efficiency")
    return Accuracy(cal.name, str(version), spec.gpu_name, measured, band, tuple(notes))


def host_bound_accuracy(accuracy: Accuracy, cal: Calibration, batch_max: int) -> Accuracy:
    """`accuracy` for a run whose steps reached `batch_max` sequences: from the calibration's
    host-bound batch on, the figures follow the host's CPU, so they carry the wider band of
    that regime and say why."""
    limit = cal.host_bound_batch
    if limit is None or batch_max < limit:
        return accuracy
    band = max(accuracy.band, cal.host_bound_error_band or cal.error_band)
    note = f"steps of up to {batch_max} sequences: from {limit} on, TPOT follows the host's CPU"
    return replace(accuracy, band=band, notes=(*accuracy.notes, note))


def plan_devices(loaded: LoadedFleet, options: DeviceRequest) -> list[PlannedDevice]:
    """Devices and the engines on each, as the placement layer puts them (with the override's
    layout, GPU and sharing mode), each engine with its version's calibration."""
    fleet = loaded.fleet
    catalog = loaded.catalog

    def spec_for(placed: PlacedEngine, gpu_name: str) -> EngineSpec:
        name = placed.model
        entry = fleet.models[name]
        version = engine_version_of(loaded, name, options.engine_version)
        choice = choose_calibration(
            gpu_name, list(options.calibrations), version.engine, version.version
        )
        calibration = choice.calibration
        fraction = placed.memory_fraction
        if entry.gpu_memory_utilization is None and fraction == DEFAULT_GPU_MEMORY_UTILIZATION:
            fraction = calibration.gpu_memory_utilization or fraction
        return EngineSpec(
            name=placed.name,
            model_name=catalog.resolve_model_name(entry.catalog),
            model=loaded.model_spec(name),
            quant_name=entry.quant_name,
            quant=loaded.quant(name),
            gpu_name=gpu_name,
            gpu=catalog.gpu(gpu_name),
            calibration=calibration,
            settings=_settings(loaded, name, calibration, fraction),
        )

    override = PlacementOverride(layout=options.placement, gpu=options.gpu, sharing=options.sharing)
    devices: list[PlannedDevice] = []
    for plan in device_plans(loaded, override):
        gpu_name = plan.gpu
        if gpu_name is None:
            name = plan.engines[0].model
            raise SimError(f"model '{name}' has no GPU to simulate: give it one or pass --gpu")
        present = list(plan.models)
        specs = [spec_for(placed, gpu_name) for placed in plan.engines]
        if not plan.shared:
            alone = _alone(loaded, options, specs[0], present[0])
            devices.append(replace(alone, gpu_count=plan.gpu_count))
            continue
        mode: Sharing = plan.sharing if plan.sharing in ("mps", "mig") else "time-sliced"
        profiles = {e.model: e.mig_profile for e in plan.engines if e.mig_profile is not None}
        sharing = device_sharing(
            mode,
            gpu_name,
            catalog.gpu(gpu_name),
            present,
            specs[0].calibration,
            profiles,
            options.mps_compute_share,
        )
        shared = _shared(loaded, options, specs, present, sharing)
        devices.append(replace(shared, gpu_count=plan.gpu_count))
    return devices


def _alone(
    loaded: LoadedFleet, options: DeviceRequest, spec: EngineSpec, name: str
) -> PlannedDevice:
    version = engine_version_of(loaded, name, options.engine_version)
    accuracy = {name: _accuracy(spec, version, spec.gpu_name)}
    return PlannedDevice(spec.gpu_name, [spec], 0.0, "isolated", accuracy)


def _shared(
    loaded: LoadedFleet,
    options: DeviceRequest,
    specs: list[EngineSpec],
    members: list[str],
    sharing: DeviceSharing,
) -> PlannedDevice:
    gpu_name = specs[0].gpu_name
    placed: list[EngineSpec] = []
    accuracy: dict[str, Accuracy] = {}
    for spec, name in zip(specs, members, strict=True):
        version = engine_version_of(loaded, name, options.engine_version)
        note = ""
        if sharing.mode == "mig":
            piece = sharing.slices[name]
            fraction = isolated_fraction(loaded, name)
            spec = replace(
                spec,
                gpu_name=piece.gpu_name,
                gpu=piece.gpu,
                settings=replace(spec.settings, gpu_memory_utilization=fraction),
            )
            note = f"MIG slice {piece.profile}: {gpu_name}'s calibration scaled to the slice"
        elif sharing.mode == "mps":
            spec = replace(spec, compute_share=sharing.compute_share)
            if gpu_name not in spec.calibration.mps_measured_on:
                note = "MPS penalty from one published case (docs/simulator.md)"
            elif sharing.compute_share < 1:
                note = f"MPS penalty measured on {gpu_name} with no SM limit, not at this share"
        placed.append(spec)
        accuracy[name] = _accuracy(spec, version, gpu_name, note)
    return PlannedDevice(
        gpu_name,
        placed,
        sharing.slowdown,
        sharing.mode,
        accuracy,
        prefill_slowdown=sharing.prefill_slowdown,
    )


def one_model_fleet(
    entry: dict[str, Any],
    label: str,
    catalog: Catalog | None = None,
    extra_catalogs: list[Path] | None = None,
) -> LoadedFleet:
    """A fleet of one simulated model (`entry` as a fleet file's model entry), checked like a
    fleet file; `catalog` skips reloading the catalog (for many cases in one process)."""
    doc = YamlDocument({"name": "sim", "models": {"m": {"engine": "sim", **entry}}}, label)
    if catalog is None:
        return parse_fleet(doc, extra_catalogs)
    try:
        fleet = Fleet.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, doc, Fleet)) from exc
    problems = check_fleet(fleet, catalog)
    if problems:
        raise ConfigError([f"{label}: {'.'.join(map(str, at))}: {m}" for at, m in problems])
    return LoadedFleet(fleet=fleet, catalog=catalog, path=Path(label))
