"""What a simulation's numbers mean for the user: the rate each model was offered, and warnings
when the answer is bad — a queue that grows without bound, a missed SLO, an exhausted KV cache,
rejected requests. Pure: reads a SimResult, returns lines."""

from __future__ import annotations

from modelyard.sim.result import ModelResult, SimResult

KEEPS_UP = 0.9  # served / offered below this, open loop: the engines fall behind
MIN_QUEUE_WAIT_S = 1.0  # and requests wait this long for an engine (p99)
KV_EXHAUSTED = 0.99  # KV use at or above this share of the cache


def offered_rps(result: SimResult) -> dict[str, float]:
    """Requests/s offered to each model (open loop only: closed loops and offline runs offer
    what the engines take)."""
    rate = result.load.get("rate")
    if (
        result.load.get("kind") != "open"
        or not isinstance(rate, int | float)
        or not result.requests
    ):
        return {}
    return {m.name: float(rate) * m.requests / result.requests for m in result.models}


def _queue(result: SimResult, model: ModelResult, offered: float) -> str | None:
    """Open loop: the engines served less than was offered, and requests queued for more than
    a second. A stable run ends about one service time after its last arrival, so its
    completions over (duration - service time) match the offered rate; a backlog drains at
    the engines' own pace and shows up as the gap."""
    service_s = max(0.0, (model.e2e_ms.get("p50", 0.0) - model.queue_ms.get("p50", 0.0)) / 1000)
    window_s = result.duration_s - service_s
    wait_s = model.queue_ms.get("p99", 0.0) / 1000
    if window_s <= 0 or offered <= 0 or wait_s < MIN_QUEUE_WAIT_S:
        return None
    served = model.completed / window_s
    if served >= KEEPS_UP * offered:
        return None
    return (
        f"{model.name}: the queue grows without bound — offered {offered:.2f} req/s, served "
        f"{served:.2f} req/s, queue wait p99 {wait_s:,.1f} s: the engines cannot keep up (add "
        "replicas or GPUs, or lower the rate); the latencies above are the backlog's"
    )


def _slo(result: SimResult, model: ModelResult) -> str | None:
    missed = []
    for metric, key in (("TTFT", "ttft"), ("TPOT", "tpot"), ("E2E", "e2e")):
        limit_s = result.slo.get(f"{key}_p99_s")
        p99_ms = getattr(model, f"{key}_ms").get("p99")
        if limit_s is not None and p99_ms is not None and p99_ms > limit_s * 1000:
            missed.append(f"{metric} p99 {p99_ms:,.1f} ms > {limit_s * 1000:,.0f} ms")
    return f"{model.name} misses the SLO: {', '.join(missed)}" if missed else None


def _kv(model: ModelResult) -> str | None:
    if model.kv_usage_max < KV_EXHAUSTED and not model.preemptions:
        return None
    return (
        f"{model.name}: KV cache exhausted (max use {model.kv_usage_max:.0%}, "
        f"{model.preemptions:,} preemptions): requests waited for memory or were recomputed"
    )


def warnings(result: SimResult) -> list[str]:
    """Every warning the result deserves, model by model."""
    offered = offered_rps(result)
    lines: list[str] = []
    for model in result.models:
        if not model.requests:
            continue
        found = [
            _queue(result, model, offered[model.name]) if model.name in offered else None,
            _slo(result, model),
            _kv(model),
            f"{model.name}: {model.rejected:,} requests rejected (longer than the engine takes)"
            if model.rejected
            else None,
        ]
        lines += [line for line in found if line]
    return lines
