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

    vectors = [vector(layout) for layout in layouts]
    kept = []
    for i, mine in enumerate(vectors):
        beaten = any(
            j != i
            and all(a >= b - EPSILON for a, b in zip(other, mine, strict=True))
            and (other != mine or j < i)
            for j, other in enumerate(vectors)
        )
        if not beaten:
            kept.append(layouts[i])
    return kept


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
    layouts.sort(key=lambda g: -sum(g.rps(m) / max(need_rps[m], EPSILON) for m in models))
    return _branch_and_bound(layouts, models, need_rps, min_gpus)


def _branch_and_bound(
    layouts: list[GpuLayout], models: list[str], need: dict[str, float], least: dict[str, int]
) -> Packing | None:
    best: list[int] | None = None
    best_total = math.inf
    best_score = -math.inf
    counts = [0] * len(layouts)
    nodes = 0
    # the most a layout from index i on gives each model, for the lower bound
    tail_max = [[0.0] * len(models) for _ in range(len(layouts) + 1)]
    for i in range(len(layouts) - 1, -1, -1):
        tail_max[i] = [max(tail_max[i + 1][k], layouts[i].rps(m)) for k, m in enumerate(models)]

    def bound(i: int, rest: list[float], present: list[int]) -> float:
        gpus = max(present, default=0)
        for k, left in enumerate(rest):
            if left > EPSILON:
                if tail_max[i][k] <= 0:
                    return math.inf
                gpus = max(gpus, math.ceil(left / tail_max[i][k] - EPSILON))
        return gpus

    def score(rest: list[float]) -> float:
        """Among packings of as many GPUs, the one with the most headroom on its tightest
        model (offered / needed) wins."""
        ratios = [(need[m] - r) / need[m] for m, r in zip(models, rest, strict=True) if need[m] > 0]
        return min(ratios, default=0.0)

    def search(i: int, used: int, rest: list[float], present: list[int]) -> None:
        nonlocal best, best_total, best_score, nodes
        nodes += 1
        if all(r <= EPSILON for r in rest) and all(p <= 0 for p in present):
            mine = score(rest)
            if used < best_total or (used == best_total and mine > best_score + EPSILON):
                best, best_total, best_score = counts.copy(), used, mine
            return
        if i == len(layouts) or nodes > NODE_BUDGET:
            return
        if used + bound(i, rest, present) > best_total:
            return
        layout = layouts[i]
        gives = [layout.rps(m) for m in models]
        holds = [int(layout.holds(m)) for m in models]
        most = 0
        for k in range(len(models)):
            if gives[k] > 0 and rest[k] > EPSILON:
                most = max(most, math.ceil(rest[k] / gives[k] - EPSILON))
            if holds[k] and present[k] > 0:
                most = max(most, present[k])
        most = int(min(most, best_total - used)) if best is not None else most
        for count in range(most, -1, -1):
            counts[i] = count
            search(
                i + 1,
                used + count,
                [r - g * count for r, g in zip(rest, gives, strict=True)],
                [p - h * count for p, h in zip(present, holds, strict=True)],
            )
        counts[i] = 0

    search(0, 0, [need[m] for m in models], [least.get(m, 0) for m in models])
    if best is None:
        return None
    chosen = tuple((layouts[i], c) for i, c in enumerate(best) if c > 0)
    return Packing(chosen, exhausted=nodes <= NODE_BUDGET)
