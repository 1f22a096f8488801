"""A vLLM-like continuous-batching engine as a discrete-event simulation.

Each step: decoding sequences take one token each; sequences still prefilling take chunks;
then waiting requests are admitted first-come-first-served while the step's token budget
(`max_num_batched_tokens`), `max_num_seqs` and the KV-cache block budget allow. When a
decoding sequence needs a KV block and none is free, the most recently admitted running
request is preempted and recomputed later (vLLM's recompute preemption).

Speed: decoding sequences are kept as aggregates, not visited every step. During step s a
decoder holds s + offset tokens of KV, so the blocks of all decoders are
sum(ceil((s + offset_i) / 16)), which 16 counters of offset mod 16 give exactly. Between
events (an arrival that could be admitted, a completion, a KV limit) a run of pure decode
steps is one event.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelyard.sim.loop import PRIORITY_STEP_DONE, Event
from modelyard.sim.perf import StepBatch, StepModel

BLOCK_TOKENS = 16
WAITING, PREFILL, DECODE, DONE = range(4)
NAN = float("nan")
# _ROUNDING_ROWS[b][m] = (-(m + b)) mod 16: blocks' rounding for offset b at step m (mod 16)
_ROUNDING_ROWS = [
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
    payload: Any = None


class EngineListener(Protocol):
    def on_first_token(self, request: SimRequest, time: float) -> None: ...

    def on_tokens(self, requests: Iterable[SimRequest], time: float) -> None: ...

    def on_finished(self, request: SimRequest, time: float) -> None: ...


class Contention(Protocol):
    """What an engine asks of the device it shares."""

    def factor(self, engine: Engine) -> float: ...

    def set_busy(self, engine: Engine, busy: bool) -> None: ...

    def horizon(self, engine: Engine) -> float:
        """The earliest time another engine on the device may start or stop being busy (the
        factor stays exact until then)."""
        ...


class NoContention:
    def factor(self, engine: Engine) -> float:
        return 1.0

    def set_busy(self, engine: Engine, busy: bool) -> None:
        return None

    def horizon(self, engine: Engine) -> float:
        return math.inf


@dataclass
class EngineStats:
    steps: int = 0
    preemptions: int = 0
    busy_s: float = 0.0
    kv_block_seconds: float = 0.0
    queue_seconds: float = 0.0
    kv_blocks_max: int = 0
    queue_max: int = 0
    observed_s: float = 0.0
    timeline: list[tuple[float, float, int]] = field(default_factory=list)


@dataclass(slots=True)
class _Span:
    start_step: int
    steps: int
    chunks: list[tuple[SimRequest, int]]
    end: float = math.inf
    announced: bool = False


class Engine:
    """One simulated engine instance (one model replica)."""

    def __init__(
        self,
        name: str,
        step_model: StepModel,
        kv_blocks: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        listener: EngineListener,
        contention: Contention | None = None,
        per_token: bool = False,
        max_span_steps: int = 1 << 20,
        timeline_every_s: float = 0.0,
    ) -> None:
        if kv_blocks < 1:
            raise ValueError("an engine needs at least one KV block")
        self.name = name
        self.model = step_model
        self.kv_blocks = kv_blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.listener = listener
        self.contention: Contention = contention or NoContention()
        self.per_token = per_token
        self.max_span_steps = 1 if per_token else max_span_steps
        self.horizon: Callable[[], float] = lambda: math.inf
        # Shared devices: a lower bound on when this engine, while busy, can become idle (its
        # in-flight span's end plus its longest running request's remaining steps at the
        # shortest possible step), so others' spans can run until then with an exact factor.
        self.track_busy_until = False
        self._busy_until = math.inf
        self._min_step_s = 0.9 * step_model.decode_span_time(1, 1.0, 1)
        self.stats = EngineStats()
        self._timeline_every = timeline_every_s
        self._next_sample = 0.0
        self.waiting: deque[SimRequest] = deque()
        self.prefilling: dict[int, SimRequest] = {}
        self.decoding: dict[int, SimRequest] = {}
        self.busy = False
        self.in_flight: _Span | None = None  # the span now running, ending at its `end`
        self.step_index = 0
        self._admissions = 0
        self._n_dec = 0
        self._sum_offset = 0
        # _rounding[m]: sum over decoders of (-(step + offset)) mod 16 for any step = m mod 16,
        # so that sum(ceil((step + offset) / 16)) is exact in O(1).
        self._rounding = [0] * BLOCK_TOKENS
        self._finish_heap: list[tuple[int, int, int, SimRequest]] = []
        self._prefill_blocks = 0
        self._window = (
            step_model.model.sliding_window.size if step_model.model.sliding_window else 0
        )

    # -- KV accounting -----------------------------------------------------------------
    def decode_blocks(self, step: int) -> int:
        """Blocks all decoding sequences hold during `step` (exact)."""
        total = self._n_dec * step + self._sum_offset + self._rounding[step % BLOCK_TOKENS]
        return total // BLOCK_TOKENS

    def used_blocks(self) -> int:
        return self.decode_blocks(self.step_index) + self._prefill_blocks

    @property
    def running(self) -> int:
        return self._n_dec + len(self.prefilling)

    def _add_decoder(self, request: SimRequest) -> None:
        self._n_dec += 1
        self._sum_offset += request.offset
        row = _ROUNDING_ROWS[request.offset % BLOCK_TOKENS]
        self._rounding = [r + v for r, v in zip(self._rounding, row, strict=True)]
        self.decoding[request.rid] = request
        heapq.heappush(
            self._finish_heap, (request.finish_step, request.admitted_seq, request.epoch, request)
        )

    def _remove_decoder(self, request: SimRequest) -> None:
        self._n_dec -= 1
        self._sum_offset -= request.offset
        row = _ROUNDING_ROWS[request.offset % BLOCK_TOKENS]
        self._rounding = [r - v for r, v in zip(self._rounding, row, strict=True)]
        del self.decoding[request.rid]
        request.epoch += 1  # its finish-heap entry is now stale

    def _next_finish_step(self) -> int:
        heap = self._finish_heap
        while heap and heap[0][2] != heap[0][3].epoch:
            heapq.heappop(heap)
        return heap[0][0] if heap else 1 << 62

    # -- requests in -------------------------------------------------------------------
    def submit(self, time: float, request: SimRequest) -> list[Event]:
        """A request arrives; start a step if the engine was idle."""
        request.target = request.prompt_tokens
        self.waiting.append(request)
        if self.busy:
            return []
        return self._start_step(time)

    def abort(self, request: SimRequest) -> None:
        """Drop a request wherever it is (its client went away), freeing its KV blocks."""
        if request.state == WAITING:
            try:
                self.waiting.remove(request)
            except ValueError:
                return
        elif request.state == PREFILL:
            del self.prefilling[request.rid]
            self._prefill_blocks -= request.blocks
            request.blocks = 0
        elif request.state == DECODE:
            self._remove_decoder(request)
        request.state = DONE

    def _preempt_one(self) -> bool:
        last_decoder = next(reversed(self.decoding.values()), None)
        last_prefill = next(reversed(self.prefilling.values()), None)
        if last_decoder is None and last_prefill is None:
            return False
        if last_prefill is None or (
            last_decoder is not None and last_decoder.admitted_seq > last_prefill.admitted_seq
        ):
            victim = last_decoder
            assert victim is not None
            victim.generated = victim.joined_generated + (self.step_index - victim.join_step)
            self._remove_decoder(victim)
        else:
            victim = last_prefill
            del self.prefilling[victim.rid]
            self._prefill_blocks -= victim.blocks
            victim.blocks = 0
        victim.state = WAITING
        victim.target = victim.prompt_tokens + victim.generated
        victim.computed = 0
        victim.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(victim)
        return True

    # -- stepping ----------------------------------------------------------------------
    def _start_step(self, now: float) -> list[Event]:
        step = self.step_index
        while self.running and self.decode_blocks(step) + self._prefill_blocks > self.kv_blocks:
            if not self._preempt_one():
                break
        used = self.decode_blocks(step) + self._prefill_blocks
        budget = self.max_num_batched_tokens - self._n_dec
        chunks: list[tuple[SimRequest, int]] = []
        for request in self.prefilling.values():
            if budget <= 0:
                break
            chunk = min(request.target - request.computed, budget)
            more = -(-(request.computed + chunk) // BLOCK_TOKENS) - request.blocks
            if used + more > self.kv_blocks:
                continue
            used += more
            request.blocks += more
            self._prefill_blocks += more
            chunks.append((request, chunk))
            budget -= chunk
        while self.waiting and budget > 0 and self.running < self.max_num_seqs:
            request = self.waiting[0]
            chunk = min(request.target, budget)
            blocks = -(-chunk // BLOCK_TOKENS)
            if used + blocks > self.kv_blocks:
                break
            self.waiting.popleft()
            used += blocks
            request.state = PREFILL
            request.computed = 0
            request.blocks = blocks
            self._admissions += 1
            request.admitted_seq = self._admissions
            if request.first_scheduled != request.first_scheduled:  # NaN: first admission
                request.first_scheduled = now
            self._prefill_blocks += blocks
            self.prefilling[request.rid] = request
            chunks.append((request, chunk))
            budget -= chunk
        if not self._n_dec and not chunks:
            self._set_busy(False)
            self.in_flight = None
            return []
        self._set_busy(True)
        factor = self.contention.factor(self)
        if not chunks and self.max_span_steps > 1:
            duration, steps = self._decode_span(now, step, factor)
        else:
            duration, steps = self._step_duration(step, chunks) * factor, 1
        self._record(now, duration, used)
        self.stats.steps += steps
        if self.track_busy_until and self.max_span_steps > 1:
            after = step + steps
            last = max((r.finish_step for r in self.decoding.values()), default=after - 1)
            self._busy_until = now + duration + max(last - after + 1, 0) * self._min_step_s
        span = _Span(step, steps, chunks, now + duration)
        self.in_flight = span
        return [(span.end, PRIORITY_STEP_DONE, self._on_step_done, span)]

    def change_after(self) -> float:
        """No change of this engine's busy state before this time: idle until its next
        arrival, busy at least until `_busy_until`."""
        return self._busy_until if self.busy else self.horizon()

    def _set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            self.contention.set_busy(self, busy)

    def _decode_context(self, step: int) -> int:
        return self._n_dec * step + self._sum_offset

    def _step_duration(self, step: int, chunks: list[tuple[SimRequest, int]]) -> float:
        n = self._n_dec
        context = float(self._decode_context(step))
        window = self._window
        window_context = min(context, float(window * n)) if window else context
        full_pairs, window_pairs = context, window_context
        kv_full, kv_window = context, window_context
        sampled = n
        tokens = n
        for request, chunk in chunks:
            done = request.computed
            tokens += chunk
            pairs = chunk * done + chunk * (chunk + 1) / 2.0
            full_pairs += pairs
            kv_full += done + chunk
            if window:
                window_pairs += chunk * min(done + (chunk + 1) / 2.0, window)
                kv_window += min(done + chunk, window)
            else:
                window_pairs += pairs
                kv_window += done + chunk
            if done + chunk >= request.target:
                sampled += 1
        return self.model.step_time(
            StepBatch(
                tokens=tokens,
                sequences=n + len(chunks),
                sampled=sampled,
                full_pairs=full_pairs,
                window_pairs=window_pairs,
                kv_full_tokens=kv_full,
                kv_window_tokens=kv_window,
            )
        )

    def _decode_span(self, now: float, step: int, factor: float) -> tuple[float, int]:
        """Chain pure decode steps until a completion, a possible admission or the KV limit.

        Returns the span's total seconds and its number of steps (at least 1)."""
        limit = min(self._next_finish_step() - step + 1, self.max_span_steps)
        # the KV cache must hold every step of the span (blocks never shrink within it)
        cap = self.kv_blocks - self._prefill_blocks
        if limit > 1 and self.decode_blocks(step + limit - 1) > cap:
            low, high = 1, limit - 1  # decode_blocks(step) fits; find the last step that does
            while low < high:
                middle = (low + high + 1) // 2
                if self.decode_blocks(step + middle - 1) <= cap:
                    low = middle
                else:
                    high = middle - 1
            limit = low
        n = self._n_dec
        context0 = float(self._decode_context(step))
        span_time = self.model.decode_span_time
        total = span_time(n, context0, limit) * factor
        admissible = self.running < self.max_num_seqs and not self.waiting
        # the span ends with the first step that ends at or after the next possible change:
        # an arrival this engine could admit, or another engine on the device going busy/idle
        until = self.contention.horizon(self)
        if admissible:
            until = min(until, self.horizon())
        left = until - now
        if limit == 1 or total < left:
            return total, limit
        # The first step that ends at or after the next arrival ends the span. Step times vary
        # little within a span, so start from the proportional guess and walk to the answer.
        steps = max(1, min(limit, math.ceil(left / (total / limit))))
        elapsed = span_time(n, context0, steps) * factor
        while steps > 1 and elapsed - left >= 0:
            shorter = span_time(n, context0, steps - 1) * factor
            if shorter < left:
                break
            steps, elapsed = steps - 1, shorter
        while elapsed < left and steps < limit:
            steps += 1
            elapsed = span_time(n, context0, steps) * factor
        return elapsed, steps

    def tokens_in_flight(self) -> int:
        """How many tokens the running span produces when it ends (0 when idle)."""
        span = self.in_flight
        if span is None or span.announced:
            return 0
        finishing = sum(
            1
            for request, chunk in span.chunks
            if request.state == PREFILL and request.computed + chunk >= request.target
        )
        return finishing + (len(self.decoding) if self.per_token else 0)

    def announce(self) -> None:
        """Hand the running span's tokens to the listener now, stamped with the span's end.

        The step's outcome is fixed when it starts, so a real-time server may start writing a
        large step's tokens a little before it ends (sim serve centres the burst on the due
        time); the engine's own state still changes only when the step is done."""
        if self.in_flight is not None and not self.in_flight.announced:
            self._announce(self.in_flight)

    def _announce(self, span: _Span) -> None:
        span.announced = True
        time = span.end
        listener = self.listener
        if self.per_token and self.decoding:
            listener.on_tokens(list(self.decoding.values()), time)
        for request, chunk in span.chunks:
            if request.state != PREFILL or request.computed + chunk < request.target:
                continue
            if request.first_token != request.first_token:  # NaN: its first token
                listener.on_first_token(request, time)
            elif self.per_token:
                listener.on_tokens((request,), time)

    def _on_step_done(self, time: float, span: _Span) -> list[Event]:
        if not span.announced:
            self._announce(span)
        next_step = span.start_step + span.steps
        for request, chunk in span.chunks:
            if request.state != PREFILL:  # aborted while its chunk was in flight
                continue
            request.computed += chunk
            if request.computed < request.target:
                continue
            del self.prefilling[request.rid]
            self._prefill_blocks -= request.blocks
            request.blocks = 0
            request.generated += 1
            if request.first_token != request.first_token:
                request.first_token = time
            if request.generated >= request.output_tokens:
                self._finish(request, time)
                continue
            request.state = DECODE
            request.join_step = next_step
            request.joined_generated = request.generated
            request.offset = request.target + 1 - next_step
            request.finish_step = next_step + (request.output_tokens - request.generated) - 1
            self._add_decoder(request)
        heap = self._finish_heap
        while heap and heap[0][0] < next_step:
            _, _, epoch, request = heapq.heappop(heap)
            if epoch != request.epoch:
                continue
            self._remove_decoder(request)
            request.generated = request.output_tokens
            self._finish(request, time)
        self.step_index = next_step
        return self._start_step(time)

    def _finish(self, request: SimRequest, time: float) -> None:
        request.state = DONE
        request.finished = time
        self.listener.on_finished(request, time)

    def _record(self, now: float, duration: float, used_blocks: int) -> None:
        stats = self.stats
        stats.busy_s += duration
        stats.kv_block_seconds += used_blocks * duration
        queue = len(self.waiting)
        stats.queue_seconds += queue * duration
        stats.kv_blocks_max = max(stats.kv_blocks_max, used_blocks)
        stats.queue_max = max(stats.queue_max, queue)
        if self._timeline_every and now >= self._next_sample:
            stats.timeline.append((now, used_blocks / self.kv_blocks, queue))
            self._next_sample = now + self._timeline_every
