from __future__ import annotations

import random
from pathlib import Path

import pytest

from modelyard.fleet import load_fleet
from modelyard.gateway.routing import RouteNotFoundError, Router, pick_replica
from tests.conftest import ROOT


@pytest.fixture
def router() -> Router:
    return Router(load_fleet(ROOT / "examples" / "fleet.yaml").fleet)


def test_task_routes(router: Router) -> None:
    assert router.resolve(None, "short_qa").models == ("mistral-7b", "llama-8b")
    assert router.resolve("llama-8b", "long_form").route == "task:long_form"


def test_alias_default_and_models(router: Router) -> None:
    assert router.resolve(None, None).models == ("llama-8b", "mistral-7b")
    assert router.resolve("chat", None).models == ("llama-8b", "mistral-7b")
    assert router.resolve("default", None).route == "chat"
    assert router.resolve("mistral-7b", None).models == ("mistral-7b", "llama-8b")
    assert router.resolve("llama-8b", "unknown-task").models == ("llama-8b", "mistral-7b")


def test_unknown_model(router: Router) -> None:
    with pytest.raises(RouteNotFoundError):
        router.resolve("gpt-4", None)


def test_model_without_route_is_alone(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(
        "name: x\nmodels:\n  a: {catalog: qwen2.5-7b, engine: sim, gpu: l4}\n"
        "  b: {catalog: qwen2.5-7b, engine: sim, gpu: l4}\nroutes:\n  - {targets: [a]}\n"
    )
    router = Router(load_fleet(path).fleet)
    assert router.resolve("b", None).models == ("b",)
    assert router.names() == ["a", "b", "default"]


def test_power_of_two_choices_prefers_less_loaded() -> None:
    rng = random.Random(1)
    picks = [pick_replica(["x", "y"], {"x": 5, "y": 0}, rng) for _ in range(50)]
    assert set(picks) == {"y"}
    assert pick_replica([], {}, rng) is None
    assert pick_replica(["x"], {"x": 9}, rng) == "x"
