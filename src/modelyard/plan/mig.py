"""MIG packing: the fewest GPUs of one type whose slices serve every model within the SLO.

A GPU is either split into MIG slices (any combination whose compute slices add up to at most 7
and memory slices to at most 8, several slices of one model included: `catalog.mig`) or left
whole for one model. Each slice is an engine of its own, so a GPU layout serves each model the
sum of its slices' capacities. The search: every layout that has no room for one more slice,
less those another layout beats for every model; then a branch-and-bound over how many GPUs
get each layout, minimising GPUs subject to, per model, capacity >= demand and at least its
availability minimum of GPUs holding a slice of it (replicas on one GPU fail together); among
packings of as many GPUs, the most headroom on the tightest model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from modelyard.catalog.mig import COMPUTE_SLICES, MEMORY_SLICES

NODE_BUDGET = 200_000  # branch-and-bound nodes before the best layout so far is kept
EPSILON = 1e-9


@dataclass(frozen=True)
class SliceOption:
    """One model on one MIG profile (or, with profile None, on the whole GPU)."""

    model: str
    profile: str | None
    compute: int  # of 7 (7 for a whole GPU)
    memory: int  # of 8
    rps: float  # within the SLO


@dataclass(frozen=True)
class GpuLayout:
    """What one GPU holds: MIG slices, or one whole-GPU engine."""

    slices: tuple[SliceOption, ...]

    def rps(self, model: str) -> float:
        return sum(s.rps for s in self.slices if s.model == model)

    def holds(self, model: str) -> bool:
        return any(s.model == model for s in self.slices)

    @property
    def whole(self) -> bool:
        return len(self.slices) == 1 and self.slices[0].profile is None


@dataclass(frozen=True)
class Packing:
    layouts: tuple[tuple[GpuLayout, int], ...]  # each layout and how many GPUs get it
    exhausted: bool  # False: the node budget ran out; the answer is the best found

    @property
    def gpus(self) -> int:
        return sum(count for _, count in self.layouts)


def _layouts(slices: list[SliceOption]) -> Iterator[tuple[SliceOption, ...]]:
    """Every multiset of slices within one GPU's 7 compute / 8 memory slices, maximal only."""
    ordered = sorted(slices, key=lambda s: (s.model, s.compute, s.memory, s.profile or ""))

    def grow(
        start: int, chosen: list[SliceOption], compute: int, memory: int
    ) -> Iterator[tuple[SliceOption, ...]]:
        room = [
            s
            for s in ordered
            if compute + s.compute <= COMPUTE_SLICES and memory + s.memory <= MEMORY_SLICES
        ]
        if not room:
            yield tuple(chosen)
            return
        for index in range(start, len(ordered)):
            item = ordered[index]
            if compute + item.compute <= COMPUTE_SLICES and memory + item.memory <= MEMORY_SLICES:
                chosen.append(item)
                yield from grow(index, chosen, compute + item.compute, memory + item.memory)
                chosen.pop()

    yield from grow(0, [], 0, 0)


def _pareto(layouts: list[GpuLayout], models: list[str]) -> list[GpuLayout]:
    """Drop layouts another layout matches or beats for every model (rps and presence)."""

    def vector(layout: GpuLayout) -> tuple[float, ...]:
        return (*(layout.rps(m) for m in models), *(float(layout.holds(m)) for m in models))

    def beats(j: int, other: tuple[float, ...], i: int, mine: tuple[float, ...]) -> bool:
        """A strict order even within EPSILON: better somewhere, or equal everywhere and
        first. (Two layouts within EPSILON of each other must not both beat the other, or both
        go and everything they beat with them.)"""
        pairs = list(zip(other, mine, strict=True))
        if any(a < b - EPSILON for a, b in pairs):
            return False
        return any(a > b + EPSILON for a, b in pairs) or j < i

    vectors = [vector(layout) for layout in layouts]
    return [
        layouts[i]
        for i, mine in enumerate(vectors)
        if not any(j != i and beats(j, other, i, mine) for j, other in enumerate(vectors))
    ]


def pack(
    options: list[SliceOption], need_rps: dict[str, float], min_gpus: dict[str, int]
) -> Packing | None:
    """The fewest GPUs serving `need_rps` per model with at least `min_gpus` GPUs holding
    each; None when some model needing service has no slice or whole-GPU option."""
    models = [m for m in need_rps if need_rps[m] > EPSILON or min_gpus.get(m, 0) > 0]
    for model in models:
        if not any(o.model == model and o.rps > 0 for o in options):
            return None
    usable = [o for o in options if o.model in models and o.rps > 0]
    split = [o for o in usable if o.profile is not None]
    layouts = [GpuLayout(s) for s in _layouts(split) if s]
    layouts += [GpuLayout((o,)) for o in usable if o.profile is None]
    layouts = _pareto(layouts, models)
    layouts.sort(key=lambda g: -_value(g, models, need_rps))
    return _Search(layouts, models, need_rps, min_gpus).run()


def _value(layout: GpuLayout, models: list[str], need: dict[str, float]) -> float:
    """What a GPU of this layout contributes, each model's part capped at its need."""
    return sum(min(layout.rps(m), need[m]) / need[m] for m in models if need[m] > EPSILON)


class _Search:
    """Branch and bound over how many GPUs get each layout (layouts in order of value)."""

    def __init__(
        self,
        layouts: list[GpuLayout],
        models: list[str],
        need: dict[str, float],
        least: dict[str, int],
    ) -> None:
        self.layouts = layouts
        self.models = models
        self.need = [need[m] for m in models]
        self.least = [least.get(m, 0) for m in models]
        self.gives = [[g.rps(m) for m in models] for g in layouts]
        self.holds = [[int(g.holds(m)) for m in models] for g in layouts]
        self.counts = [0] * len(layouts)
        self.best: list[int] | None = None
        self.best_total = math.inf
        self.best_score = -math.inf
        self.nodes = 0
        self.ties = False  # second pass: as few GPUs, more headroom on the tightest model

    def run(self) -> Packing | None:
        self._greedy()
        self._search(0, 0, list(self.need), list(self.least))
        proven = self.nodes <= NODE_BUDGET
        if self.best is not None and proven:
            self.ties = True
            self._search(0, 0, list(self.need), list(self.least))
        if self.best is None:
            return None
        chosen = tuple((self.layouts[i], c) for i, c in enumerate(self.best) if c > 0)
        return Packing(chosen, exhausted=proven)

    def _greedy(self) -> None:
        """A first answer to prune with: add the GPU that helps most until all is served."""
        rest, present = list(self.need), list(self.least)
        counts = [0] * len(self.layouts)
        while any(r > EPSILON for r in rest) or any(p > 0 for p in present):
            gains = [
                sum(
                    min(g, r) / n
                    for g, r, n in zip(gives, rest, self.need, strict=True)
                    if r > EPSILON
                )
                + sum(1 for h, p in zip(holds, present, strict=True) if h and p > 0)
                for gives, holds in zip(self.gives, self.holds, strict=True)
            ]
            pick = max(range(len(gains)), key=lambda i: gains[i])
            if gains[pick] <= 0:
                return
            counts[pick] += 1
            rest = [r - g for r, g in zip(rest, self.gives[pick], strict=True)]
            present = [p - h for p, h in zip(present, self.holds[pick], strict=True)]
        self._offer(counts, sum(counts), rest)

    def _offer(self, counts: list[int], used: int, rest: list[float]) -> None:
        ratios = [(n - r) / n for n, r in zip(self.need, rest, strict=True) if n > EPSILON]
        mine = min(ratios, default=0.0)
        if used < self.best_total or (used == self.best_total and mine > self.best_score + EPSILON):
            self.best, self.best_total, self.best_score = counts.copy(), used, mine

    def _bound(self, i: int, rest: list[float], present: list[int]) -> float:
        """GPUs still needed at least: per model, and for all models at once (any GPU serves
        at most the best tail layout's share of what is left, capped at what is left)."""
        gpus = float(max(present, default=0))
        left = [k for k, r in enumerate(rest) if r > EPSILON]
        if not left:
            return gpus
        best_share = 0.0
        most = [0.0] * len(rest)
        for gives in self.gives[i:]:
            best_share = max(best_share, sum(min(gives[k] / rest[k], 1.0) for k in left))
            for k in left:
                most[k] = max(most[k], gives[k])
        if best_share <= 0 or any(most[k] <= 0 for k in left):
            return math.inf
        gpus = max(gpus, math.ceil(len(left) / best_share - EPSILON))
        return max(gpus, *(math.ceil(rest[k] / most[k] - EPSILON) for k in left))

    def _search(self, i: int, used: int, rest: list[float], present: list[int]) -> None:
        self.nodes += 1
        if all(r <= EPSILON for r in rest) and all(p <= 0 for p in present):
            self._offer(self.counts, used, rest)
            return
        if i == len(self.layouts) or self.nodes > 2 * NODE_BUDGET:
            return
        if not self.ties and self.nodes > NODE_BUDGET:
            return
        bound = used + self._bound(i, rest, present)
        if bound > self.best_total or (not self.ties and bound >= self.best_total):
            return
        gives, holds = self.gives[i], self.holds[i]
        most = 0
        for k in range(len(self.models)):
            if gives[k] > 0 and rest[k] > EPSILON:
                most = max(most, math.ceil(rest[k] / gives[k] - EPSILON))
            if holds[k] and present[k] > 0:
                most = max(most, present[k])
        limit = self.best_total - used - (0 if self.ties else 1)
        most = int(min(most, limit))
        for count in range(most, -1, -1):
            self.counts[i] = count
            self._search(
                i + 1,
                used + count,
                [r - g * count for r, g in zip(rest, gives, strict=True)],
                [p - h * count for p, h in zip(present, holds, strict=True)],
            )
        self.counts[i] = 0
