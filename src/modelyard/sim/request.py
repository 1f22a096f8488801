"""One request's progress through a simulated engine, and the decoding set kept as aggregates.

Decoders are not visited every step: during step s a decoder holds s + offset tokens of KV, so
the blocks of all decoders are sum(ceil((s + offset_i) / 16)), which 16 counters of offset mod
16 give exactly in O(1); their total context is count x s + sum(offsets).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

BLOCK_TOKENS = 16
WAITING, PREFILL, DECODE, DONE = range(4)
NAN = float("nan")
# ROUNDING_ROWS[b][m] = (-(m + b)) mod 16: blocks' rounding for offset b at step m (mod 16)
ROUNDING_ROWS = [
    tuple((-(m + b)) % BLOCK_TOKENS for m in range(BLOCK_TOKENS)) for b in range(BLOCK_TOKENS)
]


@dataclass(slots=True, eq=False)
class SimRequest:
    """One request and its progress through the engine. Times are simulation seconds."""

    rid: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    state: int = WAITING
    generated: int = 0
    target: int = 0
    computed: int = 0
    blocks: int = 0
    admitted_seq: int = 0
    join_step: int = 0
    joined_generated: int = 0
    finish_step: int = 0
    offset: int = 0
    epoch: int = 0
    first_scheduled: float = NAN
    first_token: float = NAN
    finished: float = NAN
    preemptions: int = 0
    reserved: int = 0  # reserve-full admission: KV blocks held for its whole length
    queued: float = 0.0  # when it reached the engine's waiting queue
    payload: Any = None


class Decoders:
    """The decoding sequences of one engine, with exact O(1) KV-block and context sums."""

    def __init__(self) -> None:
        self.count = 0
        self.sum_offset = 0
        # rounding[m]: sum over decoders of (-(step + offset)) mod 16 for any step = m mod 16,
        # so that sum(ceil((step + offset) / 16)) is exact in O(1).
        self.rounding = [0] * BLOCK_TOKENS
        self.by_rid: dict[int, SimRequest] = {}
        self._finishes: list[tuple[int, int, int, SimRequest]] = []

    def blocks(self, step: int) -> int:
        """Blocks all decoders hold during `step` (exact)."""
        total = self.count * step + self.sum_offset + self.rounding[step % BLOCK_TOKENS]
        return total // BLOCK_TOKENS

    def context(self, step: int) -> int:
        """Tokens of KV all decoders read during `step`."""
        return self.count * step + self.sum_offset

    def add(self, request: SimRequest) -> None:
        self.count += 1
        self.sum_offset += request.offset
        row = ROUNDING_ROWS[request.offset % BLOCK_TOKENS]
        self.rounding = [r + v for r, v in zip(self.rounding, row, strict=True)]
        self.by_rid[request.rid] = request
        entry = (request.finish_step, request.admitted_seq, request.epoch, request)
        heapq.heappush(self._finishes, entry)

    def remove(self, request: SimRequest) -> None:
        self.count -= 1
        self.sum_offset -= request.offset
        row = ROUNDING_ROWS[request.offset % BLOCK_TOKENS]
        self.rounding = [r - v for r, v in zip(self.rounding, row, strict=True)]
        del self.by_rid[request.rid]
        request.epoch += 1  # its finish entry is now stale

    def next_finish_step(self) -> int:
        heap = self._finishes
        while heap and heap[0][2] != heap[0][3].epoch:
            heapq.heappop(heap)
        return heap[0][0] if heap else 1 << 62

    def pop_finished(self, before_step: int) -> Iterator[SimRequest]:
        """Remove and yield, in order, the decoders whose last step is before `before_step`."""
        heap = self._finishes
        while heap and heap[0][0] < before_step:
            _, _, epoch, request = heapq.heappop(heap)
            if epoch != request.epoch:
                continue
            self.remove(request)
            yield request

    def steps_within(self, step: int, limit: int, cap: int) -> int:
        """How many of the `limit` decode steps from `step` fit in `cap` KV blocks (at least
        1: the first step is known to fit; blocks never shrink within a run of steps)."""
        if limit <= 1 or self.blocks(step + limit - 1) <= cap:
            return limit
        low, high = 1, limit - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self.blocks(step + middle - 1) <= cap:
                low = middle
            else:
                high = middle - 1
        return low

    def last(self) -> SimRequest | None:
        """The most recently added decoder (the first preempted)."""
        return next(reversed(self.by_rid.values()), None)

    def latest_finish_step(self, default: int) -> int:
        return max((r.finish_step for r in self.by_rid.values()), default=default)
