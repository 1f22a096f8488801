from __future__ import annotations

import math

import pytest

from modelyard.bench.metrics import RequestRecord, Slo, summarise


def _record(
    scheduled: float,
    chunks: list[float],
    end: float,
    tokens: int | None = None,
    sent: float | None = None,
) -> RequestRecord:
    return RequestRecord(
        target="m",
        scheduled=scheduled,
        sent=scheduled if sent is None else sent,
        chunk_times=chunks,
        end=end,
        output_tokens=tokens,
    )


def test_definitions_on_hand_made_timestamps() -> None:
    # scheduled at 10.0, sent late at 10.1, first token 10.5, then 10.6, 10.8, end 10.9
    record = _record(10.0, [10.5, 10.6, 10.8], 10.9, tokens=3, sent=10.1)
    assert record.ttft == pytest.approx(0.5)  # from the scheduled time, not the send
    assert record.e2e == pytest.approx(0.9)
    assert record.tpot == pytest.approx((0.9 - 0.5) / 2)
    assert record.itls() == pytest.approx([0.1, 0.2])


def test_usage_wins_over_chunks_and_mismatch_is_counted() -> None:
    batched = _record(0.0, [0.1, 0.3], 0.4, tokens=5)  # 5 tokens in 2 chunks
    assert batched.tokens == 5
    assert batched.tpot == pytest.approx(0.3 / 4)
    summary = summarise([batched, _record(0.0, [0.1], 0.2, tokens=None)], 1.0, Slo())
    assert summary.usage_chunk_mismatch == 1
    assert summary.usage_missing == 1


def test_summary_percentiles_errors_goodput() -> None:
    records = [_record(float(i), [i + 0.1 * (i + 1)], i + 1.0, tokens=1) for i in range(10)]
    failed = RequestRecord(target="m", scheduled=20.0, sent=20.0, end=20.5, error="http_5xx")
    summary = summarise([*records, failed], 10.0, Slo(ttft_s=0.55))
    assert summary.requests == 11 and summary.completed == 10
    assert summary.errors["http_5xx"] == 1
    assert summary.ttft_ms.p50 == pytest.approx(550.0)
    assert summary.throughput_rps == pytest.approx(1.0)
    assert summary.goodput_rps == pytest.approx(0.5)  # TTFTs 100..500 ms meet 550 ms
    assert math.isnan(summary.tpot_ms.p50)  # one-token outputs have no TPOT
