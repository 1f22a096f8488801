from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelyard import results
from modelyard.bench.metrics import RequestRecord, Slo, summarise
from modelyard.compare import CompareOptions, compare_sim, document
from modelyard.fleet import load_fleet
from modelyard.report.html import ReportError, write_report
from modelyard.results import BenchDocument
from tests.conftest import ROOT


def _bench_file(tmp_path: Path, rate: float, latency: float) -> Path:
    records = [
        RequestRecord(
            target="m",
            scheduled=i,
            sent=i,
            chunk_times=[i + latency, i + 2 * latency],
            end=i + 2 * latency,
            output_tokens=2,
        )
        for i in range(20)
    ]
    summary = summarise(records, 20.0, Slo())
    config = {"load": {"concurrency": None}, "workload": {"arrivals": {"rate": rate}}}
    path = tmp_path / f"b{rate:g}.json"
    results.write(
        path, BenchDocument(config=config, duration_s=20.0, models={"m": summary}, all=summary)
    )
    return path


def test_report_has_tables_plots_and_config(tmp_path: Path) -> None:
    loaded = load_fleet(ROOT / "examples" / "fleet.yaml")
    options = CompareOptions(requests=200, rate=1.0, sim=True)
    outcome = compare_sim(loaded, options)
    compare_path = tmp_path / "c.json"
    results.write(compare_path, document(loaded, options, outcome))
    inputs = [compare_path, _bench_file(tmp_path, 1, 0.1), _bench_file(tmp_path, 4, 0.3)]
    written = write_report(inputs, tmp_path / "out" / "report.html")
    names = {p.name for p in written}
    assert {"report.html", "report-ttft-cdf.png", "report-load.png"} <= names
    page = (tmp_path / "out" / "report.html").read_text()
    assert "shared vs isolated" in page and "chat-prod (simulated)" in page
    assert page.count("data:image/png;base64,") == len(written) - 1  # self-contained
    assert "&quot;rate&quot;: 4" in page  # the runs' configuration, escaped


def test_report_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"schema": "nope"}))
    with pytest.raises(ReportError, match=r"x\.json: not a modelyard result file"):
        write_report([bad], tmp_path / "r.html")


def test_report_shows_a_plan_with_its_sweep(tmp_path: Path) -> None:
    from modelyard.fleet import load_fleet
    from modelyard.plan.cost import Pricing
    from modelyard.plan.demand import demand_from_fleet
    from modelyard.plan.planner import PlanRequest, plan

    loaded = load_fleet(Path(__file__).resolve().parents[1] / "examples" / "fleet.yaml")
    request = PlanRequest(
        demand=demand_from_fleet(loaded.fleet),
        slo=loaded.fleet.slo,
        pricing=Pricing(),
        capacity={"llama-8b": 2.0, "mistral-7b": 2.0},
        sweep=("daily_active_users", [1e3, 1e4, 1e5]),
    )
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan(loaded, request).to_json()))
    written = write_report([path], tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "Capacity and cost plan" in page and 'tr class="better"' in page
    assert page.index("<td>as written</td>") < page.index("fleet layout, resized")
    assert "capacity: llama-8b: 1 replica(s) serve 2.00 req/s" in page  # as written falls short
    assert "The fleet as written:" in page and "$2,203" in page
    assert tmp_path / "r-plan-sweep.png" in written
    assert "Latency summary" not in page  # a plan alone has no latencies
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema": "modelyard.plan/1", "fleet": "f", "options": []}))
    with pytest.raises(ReportError, match=r"a plan from an older modelyard \(modelyard.plan/1\)"):
        write_report([old], tmp_path / "o.html")
