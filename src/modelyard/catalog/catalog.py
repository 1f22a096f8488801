"""Loading and looking up the catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from modelyard.catalog.entries import Alias, CatalogFile, GpuSpec, ModelSpec, QuantProfile
from modelyard.errors import CatalogError, UnknownNameError
from modelyard.names import unknown_name_message
from modelyard.yamlsource import YamlDocument, load_yaml, parse_yaml, validation_problems

BUILTIN_FILES = ("models.yaml", "gpus.yaml", "quant.yaml")


def _parse(doc: YamlDocument) -> CatalogFile:
    if doc.data is None:
        return CatalogFile()
    if not isinstance(doc.data, dict):
        raise CatalogError([f"{doc.filename}:1: a catalog file must be a mapping"])
    try:
        return CatalogFile.model_validate(doc.data)
    except ValidationError as exc:
        raise CatalogError(validation_problems(exc, doc, CatalogFile)) from exc


@dataclass
class Catalog:
    """Every model, GPU, quantization profile and alias known to this run."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    gpus: dict[str, GpuSpec] = field(default_factory=dict)
    quants: dict[str, QuantProfile] = field(default_factory=dict)
    aliases: dict[str, Alias] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, extra: list[Path] | None = None) -> Catalog:
        """The built-in catalog, then each file in `extra` adding or replacing entries."""
        catalog = cls()
        package = resources.files("modelyard.catalog")
        for name in BUILTIN_FILES:
            text = package.joinpath(name).read_text(encoding="utf-8")
            catalog.merge(_parse(parse_yaml(text, f"catalog/{name}")), f"catalog/{name}")
        for path in extra or []:
            catalog.merge(_parse(load_yaml(path)), str(path))
        catalog._check_aliases()
        return catalog

    def merge(self, part: CatalogFile, origin: str) -> None:
        self.models.update(part.models)
        self.gpus.update(part.gpus)
        self.quants.update(part.quants)
        self.aliases.update(part.aliases)
        self.sources.append(origin)

    def _check_aliases(self) -> None:
        problems = [
            f"catalog alias '{alias}': {unknown_name_message('model', target.model, self.models)}"
            for alias, target in self.aliases.items()
            if target.model not in self.models
        ]
        if problems:
            raise CatalogError(problems)

    def resolve_model_name(self, name: str) -> str:
        """The catalog slug for `name`, following aliases (case-insensitive)."""
        key = name.lower()
        if key in self.models:
            return key
        if key in self.aliases:
            return self.aliases[key].model
        raise UnknownNameError(unknown_name_message("model", name, self.models))

    def model(self, name: str) -> ModelSpec:
        return self.models[self.resolve_model_name(name)]

    def gpu(self, name: str) -> GpuSpec:
        if name not in self.gpus:
            raise UnknownNameError(unknown_name_message("GPU", name, self.gpus))
        return self.gpus[name]

    def quant(self, name: str) -> QuantProfile:
        if name not in self.quants:
            raise UnknownNameError(unknown_name_message("quantization", name, self.quants))
        return self.quants[name]
