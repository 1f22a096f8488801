"""YAML loading that remembers where every value came from, so errors can say `file:line`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from modelyard.errors import ConfigError

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDocument:
    """Parsed YAML data plus the 1-based line of every mapping key and sequence item."""

    data: Any
    filename: str
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        """Line of the deepest prefix of `path` that exists in the file (1 if none)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1

    def locate(self, loc: tuple[Any, ...]) -> Path_:
        """Keep the components of a validator's `loc` that walk the data (drops union tags)."""
        path: list[str | int] = []
        node = self.data
        for part in loc:
            in_mapping = isinstance(node, dict) and part in node
            in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            if in_mapping or in_list:
                path.append(part)
                node = node[part]
        return tuple(path)


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last."""


def _record(node: yaml.Node, path: Path_, lines: dict[Path_, int], filename: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                raise ConfigError(
                    [
                        f"{filename}:{line}: {dotted}: duplicate key (first defined on line "
                        f"{seen[key]})"
                    ]
                )
            seen[key] = line
            lines[(*path, key)] = line
            _record(value_node, (*path, key), lines, filename)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _record(item, (*path, index), lines, filename)


def parse_yaml(text: str, filename: str) -> YamlDocument:
    """Parse YAML text; syntax errors and duplicate keys become a ConfigError with a line."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([f"{filename}:{line}: invalid YAML: {exc.problem}"]) from exc
    if root is None:
        return YamlDocument(data=None, filename=filename)
    lines: dict[Path_, int] = {(): root.start_mark.line + 1}
    _record(root, (), lines, filename)
    data = yaml.load(text, Loader=_Loader)
    return YamlDocument(data=data, filename=filename, lines=lines)


def load_yaml(path: Path) -> YamlDocument:
    """Read and parse a YAML file; a missing or unreadable file is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError([f"{path}: no such file"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from exc
    return parse_yaml(text, str(path))


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated/Optional wrappers down to the type that holds fields or items."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (Union, UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the model that owns the last component of a pydantic `loc`."""
    annotation: Any = root
    for part in loc[:-1]:
        annotation = _unwrap(annotation)
        origin = get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field_info = annotation.model_fields.get(str(part))
            if field_info is None:
                return None
            annotation = field_info.annotation
        elif origin is dict:
            annotation = get_args(annotation)[1]
        elif origin is list:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            named = {getattr(a, "__name__", ""): a for a in get_args(annotation)}
            if part not in named:
                return None
            annotation = named[part]
        else:
            return None
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return None


def _describe(error: ErrorDetails, root: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        fields = _fields_at(root, tuple(error["loc"]))
        valid = f" (valid: {', '.join(fields)})" if fields else ""
        return f"unknown field{valid}"
    if kind == "missing":
        return "required field is missing"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def validation_problems(
    exc: ValidationError, doc: YamlDocument, root: type[BaseModel]
) -> list[str]:
    """One `file:line: dotted.path: message` line per pydantic error, in file order."""
    problems: list[tuple[int, str]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        path = doc.locate(loc)
        if error["type"] in ("extra_forbidden", "missing") and loc and loc[-1] not in path:
            path = (*path, str(loc[-1]))
        line = doc.line_of(path)
        dotted = ".".join(str(p) for p in path) or "(top level)"
        problems.append((line, f"{doc.filename}:{line}: {dotted}: {_describe(error, root)}"))
    problems.sort(key=lambda item: item[0])
    return [text for _, text in problems]
