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
from modelyard.memory import FitSettings
from modelyard.sim.calibration import Calibration, choose_calibration
from modelyard.sim.errors import SimError
from modelyard.sim.gpu import DeviceSharing, EngineSpec, device_sharing
from modelyard.sim.result import FP8_UNMEASURED_BAND, Accuracy
from modelyard.sim.versions import EngineVersion, resolve_engine_version
from modelyard.yamlsource import YamlDocument, validation_problems

Placement = Literal["fleet", "shared", "isolated"]
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


def engine_version_of(loaded: LoadedFleet, name: str, override: str | None) -> EngineVersion:
    entry = loaded.fleet.models[name]
    return resolve_engine_version(entry.engine, override or entry.engine_version)


def _settings(
    loaded: LoadedFleet, name: str, calibration: Calibration, fraction: float
) -> FitSettings:
    entry = loaded.fleet.models[name]
    max_model_len = entry.max_model_len or loaded.model_spec(name).max_context
    batched = entry.max_num_batched_tokens or calibration.max_num_batched_tokens
    if batched is None and calibration.scheduler == "prefill-first":
        batched = max(max_model_len, V0_MIN_BATCHED_TOKENS)
    return FitSettings(
        gpu_memory_utilization=fraction,
        max_model_len=entry.max_model_len,
        max_num_batched_tokens=batched,
        max_num_seqs=entry.max_num_seqs or calibration.max_num_seqs,
        kv_cache_dtype=entry.kv_cache_dtype,
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
    if not version.stated:
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


def plan_devices(loaded: LoadedFleet, options: DeviceRequest) -> list[PlannedDevice]:
    """Devices and the engines on each, as the placement (or its override) puts them."""
    fleet = loaded.fleet
    catalog = loaded.catalog

    def spec_for(name: str, replica: int, gpu_name: str, fraction: float) -> EngineSpec:
        entry = fleet.models[name]
        version = engine_version_of(loaded, name, options.engine_version)
        choice = choose_calibration(
            gpu_name, list(options.calibrations), version.engine, version.version
        )
        calibration = choice.calibration
        if entry.gpu_memory_utilization is None and fraction == _DEFAULT_FRACTION:
            fraction = calibration.gpu_memory_utilization or fraction
        return EngineSpec(
            name=f"{name}/{replica}",
            model_name=catalog.resolve_model_name(entry.catalog),
            model=loaded.model_spec(name),
            quant_name=entry.quant_name,
            quant=loaded.quant(name),
            gpu_name=gpu_name,
            gpu=catalog.gpu(gpu_name),
            calibration=calibration,
            settings=_settings(loaded, name, calibration, fraction),
        )

    def gpu_of(name: str) -> str:
        gpu = options.gpu or loaded.gpu_name(name)
        if gpu is None:
            raise SimError(f"model '{name}' has no GPU to simulate: give it one or pass --gpu")
        return gpu

    groups: list[list[str]]
    if options.placement == "isolated":
        groups = [[name] for name in fleet.models]
    elif options.placement == "shared":
        groups = [list(fleet.models)]
    else:
        grouped = {m for g in fleet.shared_groups() for m in g.models}
        groups = [list(g.models) for g in fleet.shared_groups()]
        groups += [[name] for name in fleet.models if name not in grouped]

    devices: list[PlannedDevice] = []
    for members in groups:
        gpus = {gpu_of(m) for m in members}
        if len(gpus) > 1:
            raise SimError(
                f"models {', '.join(members)} cannot share one device: they name GPUs "
                f"{', '.join(sorted(gpus))} (pass --gpu)"
            )
        gpu_name = gpus.pop()
        group = fleet.group_of(members[0])
        whole = group is not None and set(group.models) == set(members)
        mode: Sharing = options.sharing or (group.sharing if group and whole else "time-sliced")
        fractions = _fractions(loaded, members)
        replicas = max(fleet.models[m].replicas for m in members)
        for replica in range(replicas):
            present = [m for m in members if replica < fleet.models[m].replicas]
            specs = [spec_for(m, replica, gpu_name, fractions[m]) for m in present]
            if len(specs) == 1:
                devices.append(_alone(loaded, options, specs[0], present[0]))
                continue
            sharing = device_sharing(
                mode,
                gpu_name,
                catalog.gpu(gpu_name),
                present,
                specs[0].calibration,
                group.mig_profiles if group and whole else None,
                options.mps_compute_share,
            )
            devices.append(_shared(loaded, options, specs, present, sharing))
    return devices


_DEFAULT_FRACTION = 0.9


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
            fraction = loaded.fleet.models[name].gpu_memory_utilization or _DEFAULT_FRACTION
            spec = replace(
                spec,
                gpu_name=piece.gpu_name,
                gpu=piece.gpu,
                settings=replace(spec.settings, gpu_memory_utilization=fraction),
            )
            note = f"MIG slice {piece.profile}: {gpu_name}'s calibration scaled to the slice"
        elif sharing.mode == "mps":
            spec = replace(spec, compute_share=sharing.compute_share)
            note = "MPS penalty from one published case (docs/simulator.md)"
        placed.append(spec)
        accuracy[name] = _accuracy(spec, version, gpu_name, note)
    return PlannedDevice(gpu_name, placed, sharing.slowdown, sharing.mode, accuracy)


def _fractions(loaded: LoadedFleet, members: list[str]) -> dict[str, float]:
    if len(members) == 1:
        stated = loaded.fleet.models[members[0]].gpu_memory_utilization
        return {members[0]: stated or _DEFAULT_FRACTION}
    group = loaded.fleet.group_of(members[0])
    if group is not None and set(group.models) == set(members):
        return loaded.memory_fractions(group)
    share = _DEFAULT_FRACTION / len(members)
    return {m: loaded.fleet.models[m].gpu_memory_utilization or share for m in members}


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
