"""Result documents that capabilities hand each other: typed, tagged with their schema, read and
written here (docs/metrics.md describes the fields).

    modelyard.bench/1     `bench`: one load level against one or more targets
    modelyard.compare/1   `compare`: the same workload shared and isolated
    modelyard.plan/1|2    `plan`: options, the recommendation, a sweep

Reading validates the whole document, so a file of the wrong kind, a truncated one or one that
lacks a field is one line naming the file and the field, never a traceback later. Documents keep
fields this version does not know (a newer writer's), so reading and writing again loses
nothing.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from modelyard.errors import ModelyardError

BENCH_SCHEMA = "modelyard.bench/1"
COMPARE_SCHEMA = "modelyard.compare/1"
PLAN_SCHEMAS = ("modelyard.plan/1", "modelyard.plan/2")


class ResultsError(ModelyardError):
    """A results file that cannot be read, or is not the kind of result asked for."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, allow_inf_nan=True)


class Percentiles(_Doc):
    """Milliseconds (NaN where there were no values)."""

    mean: float
    p50: float
    p90: float
    p95: float | None = None
    p99: float


class Samples(_Doc):
    """Per-request values for CDFs (the first requests of the run)."""

    ttft_ms: list[float] = Field(default_factory=list)
    e2e_ms: list[float] = Field(default_factory=list)
    tpot_ms: list[float] = Field(default_factory=list)


class ServerView(_Doc):
    """An engine's /metrics sampled during the run (None: the engine has no such metric)."""

    engine: str
    samples: int
    scrape_failures: int
    kv_usage_max: float | None = None
    kv_usage_mean: float | None = None
    waiting_max: float | None = None
    running_max: float | None = None
    preemptions: float | None = None
    server_generation_tokens: float | None = None
    server_prompt_tokens: float | None = None


class LatencySummary(_Doc):
    """What every summary of a model's requests has, measured or simulated (docs/metrics.md)."""

    requests: int
    completed: int
    errors: dict[str, int]
    ttft_ms: Percentiles
    tpot_ms: Percentiles
    e2e_ms: Percentiles
    throughput_rps: float
    goodput_rps: float
    samples: Samples = Field(default_factory=Samples)
    server: ServerView | None = None

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


class TargetSummary(LatencySummary):
    """One target's metrics over a bench run's measured window."""

    itl_ms: Percentiles
    schedule_delay_ms: Percentiles
    output_tokens_per_s: float
    usage_missing: int = 0
    usage_chunk_mismatch: int = 0


class BenchDocument(_Doc):
    schema_: Literal["modelyard.bench/1"] = Field("modelyard.bench/1", alias="schema")
    created: str = Field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )
    config: dict[str, Any]
    duration_s: float
    models: dict[str, TargetSummary]
    all: TargetSummary


class ComparedModel(LatencySummary):
    """One model in one placement of a comparison: measured (a bench summary) or simulated."""

    cold_start_s: float | None = None
    memory_mib: float | None = None
    preemptions: float | None = None


class ComparedPlacement(_Doc):
    placement: str
    models: dict[str, ComparedModel]
    gpus: dict[str, int] = Field(default_factory=dict)
    monthly_usd: float | None = None


class CompareDocument(_Doc):
    schema_: Literal["modelyard.compare/1"] = Field("modelyard.compare/1", alias="schema")
    fleet: str
    simulated: bool
    options: dict[str, Any] = Field(default_factory=dict)
    placements: list[ComparedPlacement]


class PlanDocument(_Doc):
    """The planner's output; its options are described in docs/planning.md."""

    schema_: Literal["modelyard.plan/1", "modelyard.plan/2"] = Field(alias="schema")
    fleet: str
    options: list[dict[str, Any]]
    recommended: str | None = None
    why: str = ""
    sweep: dict[str, Any] | None = None


Document = Annotated[BenchDocument | CompareDocument | PlanDocument, Field(discriminator="schema_")]
_ANY = TypeAdapter(Document)
KINDS: dict[str, type[_Doc]] = {
    "bench": BenchDocument,
    "compare": CompareDocument,
    "plan": PlanDocument,
}


KINDS_TAGS = {BENCH_SCHEMA, COMPARE_SCHEMA, *PLAN_SCHEMAS}


def _where(error: ValidationError) -> str:
    """The first problem as `dotted.path: message` (the discriminator's tag left out)."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"] if part not in KINDS_TAGS)
    return f"{location}: {first['msg'].lower()}" if location else first["msg"].lower()


def _raw(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read results: {exc}") from exc
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("modelyard."):
        raise ResultsError(
            f"{path}: not a modelyard result file (no `schema` tag; bench, compare and plan "
            "write one)"
        )
    if data["schema"] not in KINDS_TAGS:
        known = ", ".join(sorted(KINDS_TAGS))
        raise ResultsError(f"{path}: schema {data['schema']} is not one of {known}")
    return data


def read(path: Path, *kinds: str) -> BenchDocument | CompareDocument | PlanDocument:
    """Read and validate a result document; `kinds` (bench, compare, plan) limits which."""
    data = _raw(path)
    try:
        document = _ANY.validate_python(data)
    except ValidationError as exc:
        raise ResultsError(f"{path}: {data['schema']}: {_where(exc)}") from exc
    if kinds and not any(isinstance(document, KINDS[k]) for k in kinds):
        wanted = " or ".join(kinds)
        raise ResultsError(f"{path}: a {data['schema']} file, where a {wanted} result is needed")
    return document


def read_bench(path: Path) -> BenchDocument:
    document = read(path, "bench")
    assert isinstance(document, BenchDocument)
    return document


def write(path: Path, document: BaseModel | dict[str, Any]) -> None:
    """Write a document atomically (a partial file never replaces a good one)."""
    data = document.model_dump(by_alias=True) if isinstance(document, BaseModel) else document
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps(data, indent=2, allow_nan=True))
        partial.replace(path)
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc}") from exc
