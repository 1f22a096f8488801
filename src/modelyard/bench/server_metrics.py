"""Engine-side view during a benchmark: each target's /metrics sampled through its engine
adapter (KV usage, queue, running, preemptions, server-side token counters)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiohttp

from modelyard.engines import adapter_for
from modelyard.engines.base import EngineMetrics
from modelyard.results import ServerView


@dataclass
class Samples:
    engine: str
    first: EngineMetrics | None = None
    last: EngineMetrics | None = None
    kv_usage: list[float] = field(default_factory=list)
    waiting: list[float] = field(default_factory=list)
    running: list[float] = field(default_factory=list)
    failures: int = 0

    def summary(self) -> ServerView:
        def delta(name: str) -> float | None:
            if self.first is None or self.last is None:
                return None
            a, b = getattr(self.first, name), getattr(self.last, name)
            return None if a is None or b is None else b - a

        return ServerView(
            engine=self.engine,
            samples=len(self.running),
            scrape_failures=self.failures,
            kv_usage_max=max(self.kv_usage, default=None),
            kv_usage_mean=sum(self.kv_usage) / len(self.kv_usage) if self.kv_usage else None,
            waiting_max=max(self.waiting, default=None),
            running_max=max(self.running, default=None),
            preemptions=delta("preemptions_total"),
            server_generation_tokens=delta("generation_tokens_total"),
            server_prompt_tokens=delta("prompt_tokens_total"),
        )


async def _scrape(session: aiohttp.ClientSession, url: str, engine: str) -> EngineMetrics:
    adapter = adapter_for(engine)
    assert adapter.metrics_path is not None
    async with session.get(url + adapter.metrics_path) as response:
        response.raise_for_status()
        return adapter.parse_metrics(await response.text())


async def sample(
    urls: dict[str, tuple[str, str]], stop: asyncio.Event, interval_s: float = 1.0
) -> dict[str, Samples]:
    """Scrape {target: (url, engine)} every `interval_s` until `stop` is set (and once after)."""
    samples = {
        name: Samples(engine)
        for name, (_, engine) in urls.items()
        if adapter_for(engine).metrics_path is not None
    }
    timeout = aiohttp.ClientTimeout(total=max(interval_s, 2.0))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            for name, record in samples.items():
                url, engine = urls[name]
                try:
                    metrics = await _scrape(session, url, engine)
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    record.failures += 1
                    continue
                record.first = record.first or metrics
                record.last = metrics
                for attribute, values in (
                    ("kv_usage", record.kv_usage),
                    ("waiting", record.waiting),
                    ("running", record.running),
                ):
                    value = getattr(metrics, attribute)
                    if value is not None:
                        values.append(value)
            if stop.is_set():
                return samples
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
