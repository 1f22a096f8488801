from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

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


@pytest.fixture(autouse=True)
def _no_processes_in_fast_runs(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make test-fast` runs in-process tests only: there, a test that starts a process and is
    not marked `process` (or `slow`) fails, naming the mark it needs."""
    if os.environ.get("MODELYARD_TEST_NO_PROCESSES") != "1":
        return
    if request.node.get_closest_marker("process") or request.node.get_closest_marker("slow"):
        return

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(
            f"{request.node.nodeid} starts a process: mark it @pytest.mark.process "
            "(make test runs it; make test-fast is in-process only)"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)
    monkeypatch.setattr(os, "posix_spawnp", refuse)


@dataclass(frozen=True)
class CliResult:
    """What `modelyard ARGS` printed and its exit code, run in this process."""

    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., CliResult]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run the `modelyard` command in-process (its entry point, error translation included),
    as a user would from a shell, without starting an interpreter per call."""
    from modelyard.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()  # what came before is not this command's
        monkeypatch.setattr(sys, "argv", ["modelyard", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run
