"""The layering in docs/architecture.md, checked on the code's imports (module level and inside
functions alike): a module imports only its own package, lower layers, and — for the shared
layers, which build on one another — modules of its own layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "modelyard"

# lowest first; a name is a top-level module or package of modelyard, or a dotted module
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"__init__", "errors", "units", "names", "yamlsource", "catalog", "fleet"}),
    (
        "shared",
        {
            "placement",
            "traffic",
            "workload",
            "results",
            "memory",
            "quant",
            "signals",
            "http",
            # what every part knows of engines: adapters, model files, errors
            "engines.adapters",
            "engines.base",
            "engines.errors",
            "engines.models",
            "engines.gguf",
            "engines.gguf_to_hf",
            "engines.api",
            "engines.chat_templates",
            "engines.state",
        },
    ),
    ("capability", {"bench", "sim", "gateway", "deploy", "engines.launcher"}),
    ("orchestration", {"compare", "plan"}),
    ("report", {"report"}),
    ("cli", {"cli", "__main__"}),
]
SIBLINGS_MAY_IMPORT = {"foundation", "shared", "cli"}


def _unit(module: str) -> str:
    """The layer entry a dotted module (without `modelyard.`) belongs to."""
    parts = module.split(".")
    for length in (2, 1):
        name = ".".join(parts[:length])
        if any(name in members for _, members in LAYERS):
            return name
    if parts[0] == "engines":
        return "engines.launcher" if parts[:2] == ["engines", "launcher"] else "engines.base"
    raise AssertionError(f"modelyard.{module} is in no layer of tests/test_architecture.py")


def _layer(unit: str) -> int:
    return next(i for i, (_, members) in enumerate(LAYERS) if unit in members)


def _package(unit: str) -> str:
    return unit.split(".")[0] if unit not in ("engines.launcher",) else unit


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "modelyard":  # a submodule, or a name of the package's face
                found += [
                    (node.lineno, a.name if _is_module(a.name) else "__init__") for a in node.names
                ]
            elif node.module.startswith("modelyard."):
                found.append((node.lineno, node.module.removeprefix("modelyard.")))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name.removeprefix("modelyard."))
                for a in node.names
                if a.name.startswith("modelyard.")
            ]
    return found


def _is_module(name: str) -> bool:
    return (SRC / f"{name}.py").exists() or (SRC / name).is_dir()


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _name(path: Path) -> str:
    relative = path.relative_to(SRC).with_suffix("")
    parts = [p for p in relative.parts if p != "__init__"] or ["__init__"]
    return ".".join(parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    here = _unit(_name(path))
    problems = []
    for line, imported in _imports(path):
        there = _unit(imported)
        if _package(there) == _package(here):
            continue
        below = _layer(there) < _layer(here)
        sibling = _layer(there) == _layer(here) and LAYERS[_layer(here)][0] in SIBLINGS_MAY_IMPORT
        if not (below or sibling):
            problems.append(
                f"{path.relative_to(SRC)}:{line}: {here} ({LAYERS[_layer(here)][0]}) imports "
                f"{imported} ({LAYERS[_layer(there)][0]})"
            )
    assert problems == []


def test_every_module_has_a_layer() -> None:
    for path in _modules():
        _unit(_name(path))
