"""modelyard.results: typed result documents, read and validated with one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from modelyard import results
from modelyard.bench.metrics import RequestRecord, Slo, summarise
from modelyard.results import BenchDocument, ResultsError
from tests.conftest import bench_file, target_summary


def test_a_bench_document_round_trips(tmp_path: Path) -> None:
    record = RequestRecord("m", 0.0, 0.0, chunk_times=[0.1, 0.2], end=0.3, output_tokens=2)
    summary = summarise([record], 1.0, Slo())
    path = tmp_path / "r.json"
    results.write(
        path,
        BenchDocument(config={"requests": 1}, duration_s=1.0, models={"m": summary}, all=summary),
    )
    loaded = results.read_bench(path)
    assert json.loads(path.read_text())["schema"] == "modelyard.bench/1"
    assert loaded.models["m"].throughput_rps == 1.0
    assert loaded.models["m"].ttft_ms.p50 == pytest.approx(100.0)
    assert math.isnan(loaded.models["m"].tpot_ms.p99) is False
    assert loaded.config == {"requests": 1}


def test_unknown_fields_are_kept(tmp_path: Path) -> None:
    path = bench_file(tmp_path / "r.json", {"m": target_summary()})
    data = json.loads(path.read_text())
    data["models"]["m"]["from_a_newer_version"] = 7
    data["note"] = "kept"
    path.write_text(json.dumps(data))
    again = tmp_path / "again.json"
    results.write(again, results.read(path))
    rewritten = json.loads(again.read_text())
    assert rewritten["models"]["m"]["from_a_newer_version"] == 7 and rewritten["note"] == "kept"


def test_nan_percentiles_survive(tmp_path: Path) -> None:
    empty = summarise([], 1.0, Slo())
    path = tmp_path / "r.json"
    results.write(path, BenchDocument(config={}, duration_s=1.0, models={"m": empty}, all=empty))
    assert math.isnan(results.read_bench(path).models["m"].ttft_ms.p99)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "r.json: not a modelyard result file (no `schema` tag"),
        ('{"fleet": "x", "engines": []}', "r.json: not a modelyard result file"),  # up's state
        ('{"schema": "modelyard.nope/9"}', "r.json: schema modelyard.nope/9 is not one of"),
        ("{not json", "r.json: cannot read results:"),
        (
            '{"schema": "modelyard.bench/1", "config": {}, "duration_s": 1, "models": {}}',
            "r.json: modelyard.bench/1: all: field required",
        ),
    ],
)
def test_bad_files_are_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(ResultsError) as caught:
        results.read(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_field_names_its_place(tmp_path: Path) -> None:
    path = bench_file(tmp_path / "r.json", {"m": target_summary()})
    data = json.loads(path.read_text())
    del data["models"]["m"]["ttft_ms"]["p99"]
    path.write_text(json.dumps(data))
    with pytest.raises(
        ResultsError, match=r"modelyard\.bench/1: models\.m\.ttft_ms\.p99: field required"
    ):
        results.read(path)


def test_the_wrong_kind_of_result(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"schema": "modelyard.plan/1", "fleet": "f", "options": []}))
    with pytest.raises(
        ResultsError, match=r"a modelyard\.plan/1 file, where a bench result is needed"
    ):
        results.read_bench(path)
