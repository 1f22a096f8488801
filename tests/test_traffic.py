"""modelyard.traffic: the one traffic rule (peak rate, route and model shares)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.errors import FleetError
from modelyard.fleet import load_fleet
from modelyard.traffic import model_shares, peak_rate_rps, reached_models, route_shares
from tests.conftest import ROOT

HEAD = """\
name: t
models:
  a: {catalog: llama-3.1-8b, gpu: l4}
  b: {catalog: mistral-7b-instruct-v0.2, gpu: l4}
  c: {catalog: qwen2.5-7b, gpu: l4}
"""


def _shares(tmp_path: Path, text: str) -> dict[str, float]:
    path = tmp_path / "fleet.yaml"
    path.write_text(HEAD + text)
    return model_shares(load_fleet(path).fleet)


def test_peak_rate_of_the_example() -> None:
    traffic = load_fleet(ROOT / "examples" / "fleet.yaml").fleet.traffic
    # 10,000 users x 10 requests / 86,400 s x peak factor 3
    assert peak_rate_rps(traffic) == pytest.approx(10_000 * 10 / 86_400 * 3)


def test_without_routes_every_model_gets_an_equal_share(tmp_path: Path) -> None:
    assert _shares(tmp_path, "") == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


def test_fallback_serves_only_failures_by_default(tmp_path: Path) -> None:
    shares = _shares(tmp_path, "routes: [{targets: [a, b]}]\n")
    assert shares == {"a": 1.0, "b": 0.0, "c": 0.0}


def test_tasks_and_fallback_rate(tmp_path: Path) -> None:
    text = """\
routes:
  - {match: {task: code}, targets: [c, a]}
  - {targets: [a, b]}
traffic: {fallback_rate: 0.1, tasks: {code: 0.2}}
"""
    shares = _shares(tmp_path, text)
    assert shares == pytest.approx({"a": 0.8 * 0.9 + 0.2 * 0.1, "b": 0.8 * 0.1, "c": 0.2 * 0.9})
    assert sum(shares.values()) == pytest.approx(1.0)


def test_without_a_default_route_task_shares_are_scaled(tmp_path: Path) -> None:
    text = """\
routes:
  - {match: {task: code}, targets: [c]}
  - {match: {task: chat}, targets: [a]}
traffic: {tasks: {code: 0.1, chat: 0.3}}
"""
    assert _shares(tmp_path, text) == pytest.approx({"a": 0.75, "b": 0.0, "c": 0.25})
    path = tmp_path / "fleet.yaml"
    fleet = load_fleet(path).fleet
    assert [s.label for s in route_shares(fleet)] == ["task code", "task chat"]
    assert reached_models(fleet) == ["a", "c"]


def test_unstated_tasks_get_nothing_but_their_models_are_reached(tmp_path: Path) -> None:
    text = """\
routes:
  - {match: {task: code}, targets: [c]}
  - {targets: [a, b]}
"""
    assert _shares(tmp_path, text) == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert reached_models(load_fleet(tmp_path / "fleet.yaml").fleet) == ["a", "b", "c"]


def test_task_shares_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        HEAD
        + "routes: [{match: {task: code}, targets: [c]}, {targets: [a]}]\n"
        + "traffic: {tasks: {cod: 0.2}}\n"
    )
    with pytest.raises(FleetError, match=r"fleet.yaml:\d+: traffic.tasks.cod: no route matches"):
        load_fleet(path)
