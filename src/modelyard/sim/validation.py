"""The simulator against published measurements: the validation set and how it is replayed.

`catalog/validation.yaml` lists sources (who published what, where, when, and whether the
source is in the fit set or held out) and cases (one published measurement each: model,
precision, GPU, engine version, lengths, load and the figures as published). `replay` builds a
one-model fleet for a case, simulates it with the calibration of its engine version and GPU,
and compares each published figure with the simulated one.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelyard.catalog import Catalog
from modelyard.errors import ConfigError, ModelyardError
from modelyard.fleet import LoadedFleet
from modelyard.sim.calibration import Calibration, choose_calibration
from modelyard.sim.devices import one_model_fleet
from modelyard.sim.result import ModelResult, SimResult
from modelyard.sim.run import SimOptions, simulate
from modelyard.sim.versions import resolve_engine_version
from modelyard.workload import LengthDist
from modelyard.yamlsource import YamlDocument, load_yaml, parse_yaml, validation_problems

Metric = Literal[
    "ttft_median_ms",
    "tpot_median_ms",
    "output_tokens_per_s",
    "batch_latency_ms",
    "decode_tokens_per_s",
]
METRICS: tuple[Metric, ...] = (
    "ttft_median_ms",
    "tpot_median_ms",
    "output_tokens_per_s",
    "batch_latency_ms",
    "decode_tokens_per_s",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    publisher: str
    title: str
    url: str
    published: str = Field(description="publication date as stated, or why none is shown")
    retrieved: datetime.date
    set: Literal["fit", "held-out"]
    notes: str = ""


class CaseLoad(_Strict):
    kind: Literal["open", "closed", "offline"]
    rate: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> CaseLoad:
        if self.kind == "open" and self.rate is None:
            raise ValueError("an open-loop case needs rate")
        if self.kind == "closed" and self.concurrency is None:
            raise ValueError("a closed-loop case needs concurrency")
        return self


class Measured(_Strict):
    """Figures as published; only those the source gives."""

    ttft_median_ms: float | None = Field(default=None, gt=0)
    tpot_median_ms: float | None = Field(default=None, gt=0)
    output_tokens_per_s: float | None = Field(default=None, gt=0)
    batch_latency_ms: float | None = Field(default=None, gt=0)
    decode_tokens_per_s: float | None = Field(default=None, gt=0)


class Case(_Strict):
    id: str
    source: str
    url: str = Field(description="the page the figures are quoted from")
    model: str = Field(description="catalog model")
    quant: str = "bf16"
    gpu: str
    engine_version: str = Field(description="e.g. 'vllm 0.11.0', 'tensorrt-llm 1.0'")
    input_tokens: int = Field(gt=0, description="requested (or, with a spread, mean) length")
    output_tokens: int = Field(gt=0)
    length_spread: float = Field(
        default=0.0,
        ge=0,
        description="0: fixed lengths; else lognormal lengths with this std / mean (a "
        "dataset such as ShareGPT, whose per-request lengths the source does not list)",
    )
    requests: int = Field(gt=0)
    load: CaseLoad
    server: bool = Field(
        default=True,
        description="False: the engine measured in-process, without an API server (vLLM's "
        "benchmark_latency, trtllm-bench), so no request path",
    )
    max_model_len: int | None = Field(default=None, gt=0)
    max_num_seqs: int | None = Field(default=None, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    measured: Measured
    quote: str = Field(description="the published line or cell the figures come from")
    approximate: bool = Field(default=False, description="the source gives a rounded figure")
    notes: str = ""


class ValidationSet(_Strict):
    sources: dict[str, Source]
    cases: list[Case]

    @model_validator(mode="after")
    def _sources_known(self) -> ValidationSet:
        for case in self.cases:
            if case.source not in self.sources:
                raise ValueError(f"case {case.id} names unknown source '{case.source}'")
        return self

    def split(self, which: Literal["fit", "held-out"]) -> list[Case]:
        return [c for c in self.cases if self.sources[c.source].set == which]


def _parse(doc: YamlDocument) -> ValidationSet:
    try:
        return ValidationSet.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, doc, ValidationSet)) from exc


def load_validation_set(path: Path | None = None) -> ValidationSet:
    """The built-in validation set (catalog/validation.yaml), or the file at `path`."""
    if path is not None:
        return _parse(load_yaml(path))
    text = resources.files("modelyard.catalog").joinpath("validation.yaml").read_text("utf-8")
    return _parse(parse_yaml(text, "catalog/validation.yaml"))


@dataclass(frozen=True)
class Comparison:
    metric: Metric
    published: float
    simulated: float

    @property
    def error(self) -> float:
        return self.simulated / self.published - 1.0


@dataclass(frozen=True)
class Replay:
    case: Case
    calibration: str
    comparisons: list[Comparison]
    result: SimResult


def case_fleet(case: Case, catalog: Catalog | None = None) -> LoadedFleet:
    """A one-model fleet on the simulated engine, as the case was run."""
    entry: dict[str, Any] = {
        "catalog": case.model,
        "gpu": case.gpu,
        "quant": case.quant,
        "engine_version": case.engine_version,
    }
    for key in (
        "max_model_len",
        "max_num_seqs",
        "max_num_batched_tokens",
        "gpu_memory_utilization",
    ):
        if getattr(case, key) is not None:
            entry[key] = getattr(case, key)
    if case.kv_cache_dtype != "auto":
        entry["kv_cache_dtype"] = case.kv_cache_dtype
    return one_model_fleet(entry, f"(case {case.id})", catalog)


def case_calibration(case: Case, extra: tuple[Calibration, ...] = ()) -> Calibration:
    """The calibration a case runs with; without an API server, no request path."""
    version = resolve_engine_version("sim", case.engine_version)
    chosen = choose_calibration(case.gpu, list(extra), version.engine, version.version)
    calibration = chosen.calibration
    if not case.server:
        calibration = calibration.model_copy(
            update={"request_latency_ms": 0.0, "frontend_ms_per_request": 0.0}
        )
    devices = calibration.devices if case.gpu in calibration.devices else [case.gpu]
    return calibration.model_copy(update={"devices": devices})


def replay(
    case: Case,
    extra: tuple[Calibration, ...] = (),
    seed: int = 0,
    catalog: Catalog | None = None,
) -> Replay:
    """Simulate one case and compare it with what was published."""
    loaded = case_fleet(case, catalog)
    calibration = case_calibration(case, extra)
    options = SimOptions(
        requests=case.requests,
        rate=case.load.rate,
        concurrency=case.load.concurrency,
        offline=case.load.kind == "offline",
        input_tokens=_lengths(case.input_tokens, case.length_spread),
        output_tokens=_lengths(case.output_tokens, case.length_spread),
        seed=seed,
        calibrations=(calibration,),
    )
    result = simulate(loaded, options)
    model = result.models[0]
    comparisons = [
        Comparison(metric, published, _simulated(metric, model, result))
        for metric in METRICS
        if (published := getattr(case.measured, metric)) is not None
    ]
    return Replay(case, calibration.name, comparisons, result)


def _lengths(mean: int, spread: float) -> LengthDist:
    if spread == 0:
        return LengthDist(mean=mean)
    return LengthDist(kind="lognormal", mean=mean, std=spread * mean)


def _simulated(metric: Metric, model: ModelResult, result: SimResult) -> float:
    if metric == "ttft_median_ms":
        return model.ttft_ms["p50"]
    if metric == "tpot_median_ms":
        return model.tpot_ms["p50"]
    if metric == "output_tokens_per_s":
        return model.output_tokens_per_s
    if metric == "batch_latency_ms":
        return result.duration_s * 1000.0
    return 1000.0 / model.tpot_ms["p50"]


def replay_all(
    cases: list[Case], extra: tuple[Calibration, ...] = ()
) -> tuple[list[Replay], list[str]]:
    """Replays of every case that can run, and one line for each that cannot."""
    replays, problems = [], []
    catalog = Catalog.load()
    for case in cases:
        try:
            replays.append(replay(case, extra, catalog=catalog))
        except ModelyardError as exc:
            problems.append(f"{case.id}: {exc}")
    return replays, problems
