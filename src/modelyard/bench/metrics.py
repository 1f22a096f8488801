"""Per-request records and the metrics computed from them (definitions in docs/metrics.md).

TTFT: scheduled send time (open loop; actual send time in closed loop) to the first content
token. TPOT: (E2E - TTFT) / (output tokens - 1). ITL: every gap between successive content
chunks, pooled. E2E: scheduled send to last byte. Goodput: requests meeting every SLO, per
second. These follow `vllm bench serve`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from modelyard.results import Percentiles, Samples, TargetSummary

# protocol: an answer or stream event that is not the OpenAI protocol (not a JSON object)
ERROR_CLASSES = ("connect", "timeout", "http_4xx", "http_5xx", "oom", "mid_stream", "protocol")
PERCENTILES = (50, 90, 95, 99)
SAMPLE_LIMIT = 20_000


@dataclass
class RequestRecord:
    """One request's outcome. Times are time.monotonic() seconds."""

    target: str
    scheduled: float
    sent: float
    chunk_times: list[float] = field(default_factory=list)
    end: float | None = None
    output_tokens: int | None = None  # from the server's usage
    prompt_tokens: int | None = None
    error: str | None = None  # one of ERROR_CLASSES
    detail: str = ""
    due_times: list[float] | None = None  # sim serve --timing-debug: when each chunk was due
    written_times: list[float] | None = None  # ... and when the server wrote it

    @property
    def ok(self) -> bool:
        return self.error is None and self.end is not None

    @property
    def tokens(self) -> int:
        return self.output_tokens if self.output_tokens is not None else len(self.chunk_times)

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.scheduled if self.chunk_times else None

    @property
    def e2e(self) -> float | None:
        return self.end - self.scheduled if self.end is not None else None

    @property
    def tpot(self) -> float | None:
        ttft, e2e, tokens = self.ttft, self.e2e, self.tokens
        if ttft is None or e2e is None or tokens < 2:
            return None
        return (e2e - ttft) / (tokens - 1)

    def itls(self) -> list[float]:
        times = self.chunk_times
        return [b - a for a, b in itertools.pairwise(times)]


def percentiles_ms(values: list[float]) -> Percentiles:
    if not values:
        nan = math.nan
        return Percentiles(mean=nan, p50=nan, p90=nan, p95=nan, p99=nan)
    array = np.asarray(values) * 1000.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(array, PERCENTILES))
    return Percentiles(mean=float(array.mean()), p50=p50, p90=p90, p95=p95, p99=p99)


@dataclass(frozen=True)
class Slo:
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def met(self, record: RequestRecord) -> bool:
        if not record.ok:
            return False
        checks = ((self.ttft_s, record.ttft), (self.tpot_s, record.tpot), (self.e2e_s, record.e2e))
        return all(limit is None or value is None or value <= limit for limit, value in checks)


def summarise(records: list[RequestRecord], duration_s: float, slo: Slo) -> TargetSummary:
    """The metrics of one target (or all) over a measured window of `duration_s`."""
    ok = [r for r in records if r.ok]
    errors = dict.fromkeys(ERROR_CLASSES, 0)
    for r in records:
        if r.error is not None:
            errors[r.error] = errors.get(r.error, 0) + 1
    duration = max(duration_s, 1e-9)
    mismatched = sum(
        1 for r in ok if r.output_tokens is not None and r.output_tokens != len(r.chunk_times)
    )
    return TargetSummary(
        requests=len(records),
        completed=len(ok),
        errors=errors,
        ttft_ms=percentiles_ms([r.ttft for r in ok if r.ttft is not None]),
        tpot_ms=percentiles_ms([r.tpot for r in ok if r.tpot is not None]),
        itl_ms=percentiles_ms([g for r in ok for g in r.itls()]),
        e2e_ms=percentiles_ms([r.e2e for r in ok if r.e2e is not None]),
        schedule_delay_ms=percentiles_ms([r.sent - r.scheduled for r in records]),
        throughput_rps=len(ok) / duration,
        output_tokens_per_s=sum(r.tokens for r in ok) / duration,
        goodput_rps=sum(1 for r in ok if slo.met(r)) / duration,
        usage_missing=sum(1 for r in ok if r.output_tokens is None),
        usage_chunk_mismatch=mismatched,
        # per-request values for CDFs in the report (the first SAMPLE_LIMIT requests)
        samples=Samples(
            ttft_ms=[round(r.ttft * 1000, 3) for r in ok[:SAMPLE_LIMIT] if r.ttft is not None],
            e2e_ms=[round(r.e2e * 1000, 3) for r in ok[:SAMPLE_LIMIT] if r.e2e is not None],
            tpot_ms=[round(r.tpot * 1000, 3) for r in ok[:SAMPLE_LIMIT] if r.tpot is not None],
        ),
    )
