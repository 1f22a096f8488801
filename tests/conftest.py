from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard import results
from modelyard.catalog import Catalog
from modelyard.results import BenchDocument, Percentiles, TargetSummary

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


def target_summary(
    throughput_rps: float = 1.0,
    ttft_p99_ms: float = 100.0,
    errors: int = 0,
    requests: int = 100,
    tpot_p99_ms: float = 30.0,
) -> TargetSummary:
    """A bench summary with the values a test states and plausible others."""

    def pct(p99: float) -> Percentiles:
        return Percentiles(mean=p99 / 2, p50=p99 / 2, p90=p99, p95=p99, p99=p99)

    return TargetSummary(
        requests=requests,
        completed=requests - errors,
        errors={"http_5xx": errors} if errors else {},
        ttft_ms=pct(ttft_p99_ms),
        tpot_ms=pct(tpot_p99_ms),
        itl_ms=pct(tpot_p99_ms),
        e2e_ms=pct(2000.0),
        schedule_delay_ms=pct(0.1),
        throughput_rps=throughput_rps,
        output_tokens_per_s=throughput_rps * 64,
        goodput_rps=throughput_rps,
    )


def bench_file(
    path: Path, models: dict[str, TargetSummary], config: dict[str, object] | None = None
) -> Path:
    """Write a modelyard.bench/1 document with these targets."""
    overall = next(iter(models.values()), target_summary(requests=0))
    results.write(
        path, BenchDocument(config=config or {}, duration_s=10.0, models=models, all=overall)
    )
    return path
