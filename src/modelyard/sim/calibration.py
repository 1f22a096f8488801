"""Calibration files: efficiency factors and request-path costs for an engine on a device class.

Each file names the engine and version range it describes (`engine: vllm`,
`versions: ">=0.8"`), the devices it applies to and the devices it was measured on, and says
where its numbers came from. `calibration_for` picks the one for an engine, version and GPU:
the user's files first, then the built-in ones; a file listing the GPU beats one listing `*`,
and among built-in files one measured on that GPU beats one that only lists it.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelyard.sim.errors import CalibrationError
from modelyard.sim.versions import CURRENT_VERSIONS, version_in
from modelyard.yamlsource import YamlDocument, load_yaml, parse_yaml, validation_problems

Scheduler = Literal["chunked", "prefill-first"]


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    where: str = Field(description="hardware and software the factors were measured on")
    how: str = Field(description="the command or harness that measured them")
    when: datetime.date
    source: str = Field(description="URL or repository path of the data")


# how `parameters` notes begin for numbers no measurement of this profile constrains
UNMEASURED_NOTES = ("not constrained", "assumed", "prior", "not measured")


class Calibration(BaseModel):
    """Efficiency factors for one engine (version range) on one device class."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    engine: str = Field(default="vllm", description="engine these numbers describe")
    versions: str = Field(default="*", description="version range, e.g. '>=0.8' or '0.6.*'")
    devices: list[str] = Field(description="GPU names this calibration applies to; '*' = any")
    measured_on: list[str] = Field(
        default_factory=list,
        description="devices whose measurements these factors were fitted to; on the others "
        "they are applied unmeasured and carry `unmeasured_error_band`",
    )
    mfu: float = Field(gt=0, le=1, description="achieved / peak FLOP/s in compute-bound steps")
    fp8_mfu: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="achieved / FP8-peak FLOP/s for FP8 weights and activations (None: mfu "
        "against the FP8 peak, i.e. FP8 assumed twice as fast as bf16)",
    )
    bandwidth_efficiency: float = Field(gt=0, le=1, description="achieved / peak bytes/s")
    step_overhead_ms: float = Field(ge=0, description="fixed cost of every step")
    per_seq_overhead_ms: float = Field(default=0.0, ge=0, description="per sequence per step")
    serial_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="how much of the smaller roofline term adds to the larger one "
        "(0 = perfect overlap, pure roofline; 1 = compute and memory time add up)",
    )
    request_latency_ms: float = Field(
        default=0.0,
        ge=0,
        description="fixed latency every request pays before and after the engine (HTTP, "
        "tokenization, scheduling, first detokenization); it counts in TTFT, not in TPOT",
    )
    frontend_ms_per_request: float = Field(
        default=0.0,
        ge=0,
        description="API-server CPU time per request in the engine's single front-end "
        "process: nothing at low load, a queue when requests arrive faster",
    )
    frontend_queue: Literal["fifo", "processor-sharing"] = Field(
        default="fifo",
        description="how the front end serves the requests inside it: fifo, one at a time; "
        "processor-sharing, all at once, each an equal share (an event loop interleaving "
        "every request: a burst is ingested together and reaches the engine late)",
    )
    scheduler: Scheduler = Field(
        default="chunked",
        description="chunked: decodes and prefill chunks share every step (vLLM V1); "
        "prefill-first: a step with prefills runs no decodes (vLLM V0, SGLang default)",
    )
    async_scheduling: bool = Field(
        default=False,
        description="the scheduler picks step N+1's batch as step N starts (vLLM's "
        "asynchronous scheduling): a request that arrives while the engine is busy waits for "
        "the step after next",
    )
    admission: Literal["on-demand", "reserve-full"] = Field(
        default="on-demand",
        description="on-demand: admit while the KV cache holds the prompt, preempt when it "
        "fills (vLLM); reserve-full: admit only when it holds every running request at its "
        "full length, never preempt (TensorRT-LLM's GUARANTEED_NO_EVICT)",
    )
    max_num_batched_tokens: int | None = Field(
        default=None, gt=0, description="engine default step token budget (None: vLLM V1's)"
    )
    max_num_seqs: int | None = Field(
        default=None, gt=0, description="engine default running-sequence limit"
    )
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="engine default memory fraction (None: 0.9)"
    )
    contention_slowdown: float = Field(
        default=1.0,
        ge=0,
        description="time-sliced sharing: extra step time per other busy engine on the same "
        "device, as a multiple of the step's own time (1.0 = fair time-slicing)",
    )
    contention_prefill_slowdown: float | None = Field(
        default=None,
        ge=0,
        description="time-sliced sharing: the same for a step that prefills (measured on the "
        "H200: slowed less than a decode step); None: contention_slowdown",
    )
    mps_slowdown: float = Field(
        default=0.195,
        ge=0,
        description="MPS sharing: extra step time per other busy engine (kernels run at once, "
        "so much less than time-slicing)",
    )
    mps_measured_on: list[str] = Field(
        default_factory=list,
        description="devices where mps_slowdown was fitted to real engines under MPS (elsewhere "
        "it rests on one published case and figures carry the unmeasured band)",
    )
    mps_prefill_slowdown: float | None = Field(
        default=None,
        ge=0,
        description="MPS sharing: the same for a step that prefills (compute-bound, so slowed "
        "less than a memory-bound decode step); None: mps_slowdown",
    )
    host_bound_batch: int | None = Field(
        default=None,
        gt=0,
        description="from this many sequences in one step, TPOT follows the host's CPU as "
        "much as the GPU: one API server's and one engine core's main threads each take a full "
        "core, and above the engine's largest CUDA graph the forward is launched from the CPU "
        "(None: no such regime modelled)",
    )
    host_bound_error_band: float | None = Field(
        default=None,
        ge=0,
        description="relative error of figures from a run whose steps reached "
        "host_bound_batch sequences (None: error_band)",
    )
    error_band: float = Field(
        default=0.25, ge=0, description="relative error of figures on a measured device"
    )
    unmeasured_error_band: float = Field(
        default=0.35, ge=0, description="relative error of figures on a device not measured"
    )
    load_bandwidth_gbps: float = Field(default=5.0, gt=0, description="weights load, GB/s")
    init_s: float = Field(default=15.0, ge=0, description="engine start besides weights")
    peak_flops_override: float | None = Field(default=None, gt=0, description="FLOP/s (CPUs)")
    bandwidth_override_gbps: float | None = Field(default=None, gt=0, description="GB/s (CPUs)")
    provenance: Provenance
    parameters: dict[str, str] = Field(
        default_factory=dict,
        description="where each number came from: fitted to which cases, or why it is assumed",
    )

    def applies_to(self, engine: str, version: str) -> bool:
        return self.engine == engine and version_in(version, self.versions)

    def measured(self, device: str) -> bool:
        return device in self.measured_on

    def unmeasured(self, field: str) -> bool:
        """Whether `parameters` says the field was assumed or copied, not fitted."""
        note = self.parameters.get(field, "")
        return note.startswith(UNMEASURED_NOTES)


@dataclass(frozen=True)
class CalibrationChoice:
    """The calibration a simulated engine uses and how far its figures can be trusted."""

    calibration: Calibration
    device: str

    @property
    def measured(self) -> bool:
        return self.calibration.measured(self.device)

    @property
    def band(self) -> float:
        c = self.calibration
        return c.error_band if self.measured else c.unmeasured_error_band


def _parse_calibration(doc: YamlDocument) -> Calibration:
    try:
        return Calibration.model_validate(doc.data)
    except ValidationError as exc:
        raise CalibrationError(validation_problems(exc, doc, Calibration)) from exc


def builtin_calibrations() -> list[Calibration]:
    """The calibration files shipped with modelyard (sim/calibrations/*.yaml)."""
    return list(_builtin())


@functools.cache
def _builtin() -> tuple[Calibration, ...]:
    # package data: read once per process (the models are frozen)
    folder = resources.files("modelyard.sim").joinpath("calibrations")
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            doc = parse_yaml(entry.read_text(encoding="utf-8"), f"sim/calibrations/{entry.name}")
            found.append(_parse_calibration(doc))
    return tuple(found)


def load_calibration(path: Path) -> Calibration:
    return _parse_calibration(load_yaml(path))


def choose_calibration(
    device: str,
    extra: list[Calibration] | None = None,
    engine: str = "vllm",
    version: str | None = None,
) -> CalibrationChoice:
    """The calibration for `engine` `version` (default: its current release) on `device`."""
    wanted = version or CURRENT_VERSIONS.get(engine, "0")
    user = [c for c in extra or [] if c.applies_to(engine, wanted)]
    builtin = [c for c in builtin_calibrations() if c.applies_to(engine, wanted)]
    builtin.sort(key=lambda c: not c.measured(device))  # measured on this GPU first (stable)
    candidates = [*user, *builtin]
    for calibration in candidates:
        if device in calibration.devices:
            return CalibrationChoice(calibration, device)
    for calibration in candidates:
        if "*" in calibration.devices:
            return CalibrationChoice(calibration, device)
    raise CalibrationError([f"no calibration applies to {engine} {wanted} on device '{device}'"])


def calibration_for(
    device: str,
    extra: list[Calibration] | None = None,
    engine: str = "vllm",
    version: str | None = None,
) -> Calibration:
    """The most specific calibration for `device` (see `choose_calibration`)."""
    return choose_calibration(device, extra, engine, version).calibration
