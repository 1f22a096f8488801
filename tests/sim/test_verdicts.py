"""sim/verdicts.py: the offered rate, and warnings when the answer is bad."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelyard.fleet import load_fleet
from modelyard.sim.run import SimOptions, simulate
from modelyard.sim.verdicts import offered_rps, warnings
from modelyard.traffic import peak_rate_rps
from tests.conftest import Cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"


def test_an_overloaded_engine_gets_every_warning() -> None:
    # one A10G for Llama at the example's 3.3 req/s: saturated (docs/simulator.md); long enough
    # a run that the backlog outgrows the engine's pace (served ~2.9 of 3.3 req/s)
    result = simulate(load_fleet(EXAMPLE), SimOptions(requests=4000, seed=1))
    offered = offered_rps(result)
    assert sum(offered.values()) == pytest.approx(result.load["rate"])
    text = "\n".join(warnings(result))
    assert "llama-8b: the queue grows without bound" in text
    assert "llama-8b misses the SLO: TTFT p99" in text
    assert "llama-8b: KV cache exhausted" in text
    assert "mistral-7b" not in text  # the fallback's 5% is served well


def test_a_served_load_has_no_warnings() -> None:
    result = simulate(load_fleet(EXAMPLE), SimOptions(requests=400, rate=0.5, seed=1))
    assert warnings(result) == []
    assert offered_rps(result)["llama-8b"] > 0


def test_closed_loop_offers_no_rate_and_never_reports_an_unbounded_queue() -> None:
    result = simulate(load_fleet(EXAMPLE), SimOptions(requests=200, concurrency=64, seed=1))
    assert offered_rps(result) == {}
    assert not any("grows without bound" in w for w in warnings(result))


def test_cli_sim_run_prints_offered_rate_and_warnings(cli: Cli) -> None:
    # long enough that the backlog, not the drain at the end, sets the served rate (at 1,500
    # requests the A10G serves 0.90 of the offered rate by the verdict's estimate: a borderline)
    result = cli("sim", "run", str(EXAMPLE), "--requests", "3000")
    assert result.returncode == 0
    found = re.search(r"offered req/s: llama-8b (\d+\.\d\d), mistral-7b (\d+\.\d\d)", result.stdout)
    assert found, result.stdout
    # the two shares of the fleet's peak rate (printed to two places)
    peak = peak_rate_rps(load_fleet(EXAMPLE).fleet.traffic)
    assert float(found[1]) + float(found[2]) == pytest.approx(peak, abs=0.011)
    assert float(found[1]) > 10 * float(found[2])
    assert "warning: llama-8b: the queue grows without bound" in result.stderr
