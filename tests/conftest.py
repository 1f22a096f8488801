from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.catalog import Catalog

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture
def write_fleet(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "fleet.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
