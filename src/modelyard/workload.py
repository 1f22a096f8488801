"""Synthetic workloads: arrival processes, token-length distributions and traffic mixes.

Pure and seeded: the same spec and seed always give the same requests. Used by the simulator
(`sim run`) and the load generator (`bench`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from modelyard.errors import ModelyardError

ArrivalKind = Literal["constant", "poisson", "gamma"]
LengthKind = Literal["fixed", "normal", "lognormal", "uniform"]


class WorkloadError(ModelyardError):
    """A workload specification that cannot generate requests."""


@dataclass(frozen=True)
class LengthDist:
    """Token counts: `mean` (and `std`) for fixed/normal/lognormal, `low`..`high` for uniform.

    Samples are rounded and clipped to [low, high] (low defaults to 1)."""

    kind: LengthKind = "fixed"
    mean: float = 128
    std: float = 0.0
    low: int = 1
    high: int | None = None

    def __post_init__(self) -> None:
        if self.mean < 1 and self.kind != "uniform":
            raise WorkloadError(f"token length mean must be >= 1, got {self.mean:g}")
        if self.std < 0:
            raise WorkloadError(f"token length std must be >= 0, got {self.std:g}")
        if self.low < 1:
            raise WorkloadError(f"token length low bound must be >= 1, got {self.low}")
        if self.high is not None and self.high < self.low:
            raise WorkloadError(f"token length bounds reversed: low {self.low} > high {self.high}")
        if self.kind == "uniform" and self.high is None:
            raise WorkloadError("uniform token lengths need a high bound")

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        if self.kind == "fixed":
            values = np.full(count, self.mean, dtype=float)
        elif self.kind == "normal":
            values = rng.normal(self.mean, self.std, count)
        elif self.kind == "lognormal":
            # parameterised by the distribution's own mean and std, not the log's
            variance = self.std**2
            sigma2 = np.log1p(variance / self.mean**2)
            mu = np.log(self.mean) - sigma2 / 2
            values = rng.lognormal(mu, np.sqrt(sigma2), count)
        else:
            assert self.high is not None
            values = rng.integers(self.low, self.high + 1, count).astype(float)
        high = self.high if self.high is not None else np.inf
        clipped: np.ndarray = np.clip(np.rint(values), self.low, high).astype(np.int64)
        return clipped


@dataclass(frozen=True)
class ArrivalProcess:
    """Request arrivals at `rate` per second: evenly spaced, Poisson, or gamma-distributed gaps
    with shape `burstiness` (1 = Poisson, < 1 burstier, > 1 smoother; as vllm bench serve)."""

    kind: ArrivalKind = "poisson"
    rate: float = 1.0
    burstiness: float = 1.0

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise WorkloadError(f"arrival rate must be > 0 requests/s, got {self.rate:g}")
        if not self.burstiness > 0:
            raise WorkloadError(f"burstiness must be > 0, got {self.burstiness:g}")

    def gaps(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Seconds between consecutive arrivals."""
        mean_gap = 1.0 / self.rate
        if self.kind == "constant":
            return np.full(count, mean_gap)
        if self.kind == "poisson":
            return rng.exponential(mean_gap, count)
        return rng.gamma(self.burstiness, mean_gap / self.burstiness, count)


@dataclass(frozen=True)
class Workload:
    """Requests to send: arrivals, lengths and the share of traffic each target gets."""

    arrivals: ArrivalProcess = field(default_factory=ArrivalProcess)
    input_tokens: LengthDist = field(default_factory=lambda: LengthDist(mean=512))
    output_tokens: LengthDist = field(default_factory=lambda: LengthDist(mean=128))
    mix: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.mix:
            raise WorkloadError("a workload needs at least one target in its mix")
        if any(weight < 0 for weight in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise WorkloadError(f"mix weights must be >= 0 and not all 0, got {self.mix}")


@dataclass(frozen=True)
class Requests:
    """Column arrays of generated requests (one row per request, in arrival order)."""

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    target_index: np.ndarray
    targets: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    def for_target(self, name: str) -> Requests:
        keep = self.target_index == self.targets.index(name)
        return Requests(
            self.arrival_s[keep],
            self.input_tokens[keep],
            self.output_tokens[keep],
            self.target_index[keep],
            self.targets,
        )


def generate(workload: Workload, count: int, seed: int, start_s: float = 0.0) -> Requests:
    """`count` requests; the first arrives at `start_s` plus one gap."""
    if count < 0:
        raise WorkloadError(f"request count must be >= 0, got {count}")
    rng = np.random.default_rng(seed)
    arrivals = start_s + np.cumsum(workload.arrivals.gaps(rng, count))
    inputs = workload.input_tokens.sample(rng, count)
    outputs = workload.output_tokens.sample(rng, count)
    targets = tuple(workload.mix)
    weights = np.array([workload.mix[t] for t in targets], dtype=float)
    chosen = rng.choice(len(targets), size=count, p=weights / weights.sum())
    return Requests(arrivals, inputs, outputs, chosen.astype(np.int64), targets)
