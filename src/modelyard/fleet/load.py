"""Reading a fleet file: YAML, then the schema, then the cross-checks; every problem comes back
as `file:line: dotted.path: message`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelyard.catalog import Catalog, GpuSpec, ModelSpec, QuantProfile
from modelyard.errors import ConfigError, FleetError
from modelyard.fleet.checks import Problem, check_fleet
from modelyard.fleet.schema import Fleet, SharedGroup
from modelyard.yamlsource import YamlDocument, load_yaml, validation_problems


@dataclass(frozen=True)
class LoadedFleet:
    """A validated fleet with the catalog it was checked against."""

    fleet: Fleet
    catalog: Catalog
    path: Path

    def model_spec(self, name: str) -> ModelSpec:
        return self.catalog.model(self.fleet.models[name].catalog)

    def quant(self, name: str) -> QuantProfile:
        return self.catalog.quant(self.fleet.models[name].quant_name)

    def gpu_name(self, name: str) -> str | None:
        """The GPU a model runs on: its shared group's, else its own (None: CPU)."""
        group = self.fleet.group_of(name)
        return group.gpu if group is not None and group.gpu else self.fleet.models[name].gpu

    def gpu(self, name: str) -> GpuSpec | None:
        gpu_name = self.gpu_name(name)
        return self.catalog.gpu(gpu_name) if gpu_name else None

    def memory_fractions(self, group: SharedGroup) -> dict[str, float]:
        """Each member's share of GPU memory: stated, else its gpu_memory_utilization, else an
        equal split of what the group's memory_limit leaves."""
        stated = {
            name: group.memory_fractions.get(name, self.fleet.models[name].gpu_memory_utilization)
            for name in group.models
        }
        given = {name: f for name, f in stated.items() if f is not None}
        rest = [name for name, f in stated.items() if f is None]
        left = max(group.memory_limit - sum(given.values()), 0.0)
        return {**given, **{name: left / len(rest) for name in rest}}


def _format(problems: list[Problem], doc: YamlDocument) -> list[str]:
    located = []
    for path, message in problems:
        line = doc.line_of(path)
        dotted = ".".join(str(p) for p in path)
        located.append((line, f"{doc.filename}:{line}: {dotted}: {message}"))
    located.sort(key=lambda item: item[0])
    return [text for _, text in located]


def parse_fleet(doc: YamlDocument, extra_catalogs: list[Path] | None = None) -> LoadedFleet:
    """Validate a parsed fleet document; raises FleetError listing every problem."""
    if not isinstance(doc.data, dict):
        raise FleetError(
            [f"{doc.filename}:1: a fleet file must be a YAML mapping (name:, models:, ...)"]
        )
    try:
        fleet = Fleet.model_validate(doc.data)
    except ValidationError as exc:
        raise FleetError(validation_problems(exc, doc, Fleet)) from exc
    base = Path(doc.filename).parent
    catalog_paths = [base / p for p in fleet.catalog] + list(extra_catalogs or [])
    try:
        catalog = Catalog.load(catalog_paths)
    except ConfigError as exc:
        raise FleetError(exc.problems) from exc
    problems = check_fleet(fleet, catalog)
    if problems:
        raise FleetError(_format(problems, doc))
    return LoadedFleet(fleet=fleet, catalog=catalog, path=Path(doc.filename))


def load_fleet(path: Path, extra_catalogs: list[Path] | None = None) -> LoadedFleet:
    """Read, validate and cross-check a fleet file."""
    try:
        doc = load_yaml(path)
    except ConfigError as exc:
        raise FleetError(exc.problems) from exc
    return parse_fleet(doc, extra_catalogs)


def single_model_fleet(
    model: str,
    gpu: str,
    max_model_len: int | None = None,
    extra_catalogs: list[Path] | None = None,
    served_name: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> LoadedFleet:
    """A one-model fleet on the simulated engine, for `sim serve --model M --gpu G`;
    `settings`: more fields of its fleet entry (quant, kv_cache_dtype, ...), validated as the
    fleet file's are."""
    entry: dict[str, Any] = {"catalog": model, "engine": "sim", "gpu": gpu, **(settings or {})}
    if max_model_len is not None:
        entry["max_model_len"] = max_model_len
    else:
        catalog = Catalog.load(extra_catalogs)
        entry["max_model_len"] = min(catalog.model(model).max_context, 8192)
    name = served_name or model.lower().replace("/", "-")
    doc = YamlDocument(data={"name": "sim", "models": {name: entry}}, filename="(--model)")
    return parse_fleet(doc, extra_catalogs)


def fleet_json_schema() -> dict[str, Any]:
    """JSON Schema of the fleet file, for editor completion."""
    schema = Fleet.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "modelyard fleet file"
    return schema
