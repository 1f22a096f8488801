"""A vLLM-like continuous-batching engine as a discrete-event simulation.

Each step (scheduler "chunked", vLLM V1): decoding sequences take one token each; sequences
still prefilling take chunks; then waiting requests are admitted first-come-first-served while
the step's token budget (`max_num_batched_tokens`), `max_num_seqs` and the KV-cache block
budget allow. Scheduler "prefill-first" (vLLM V0, SGLang's default): a step that can run
prefills runs only prefills (up to the whole budget) and the decoders wait for it; otherwise
it decodes. When a decoding sequence needs a KV block and none is free, the most recently
admitted running request is preempted and recomputed later (vLLM's recompute preemption).

Speed: decoding sequences are kept as aggregates, not visited every step (`request.Decoders`).
Between events (an arrival that could be admitted, a completion, a KV limit) a run of pure
decode steps is one event.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from modelyard.sim.contention import Contention, NoContention
from modelyard.sim.loop import PRIORITY_STEP_DONE, Event
from modelyard.sim.perf import StepModel, steps_until
from modelyard.sim.request import (
    BLOCK_TOKENS,
    DECODE,
    DONE,
    NAN,
    PREFILL,
    WAITING,
    Decoders,
    SimRequest,
)

__all__ = ["BLOCK_TOKENS", "DECODE", "DONE", "NAN", "PREFILL", "WAITING", "Engine", "SimRequest"]


class EngineListener(Protocol):
    def on_first_token(self, request: SimRequest, time: float) -> None: ...

    def on_tokens(self, requests: Iterable[SimRequest], time: float) -> None: ...

    def on_finished(self, request: SimRequest, time: float) -> None: ...


@dataclass
class EngineStats:
    steps: int = 0
    preemptions: int = 0
    busy_s: float = 0.0
    kv_block_seconds: float = 0.0
    queue_seconds: float = 0.0
    kv_blocks_max: int = 0
    queue_max: int = 0
    batch_max: int = 0  # the most sequences in one step
    observed_s: float = 0.0
    timeline: list[tuple[float, float, int]] = field(default_factory=list)


@dataclass(slots=True)
class _Span:
    start_step: int
    steps: int
    chunks: list[tuple[SimRequest, int]]
    end: float = math.inf
    announced: bool = False
    start: float = 0.0
    factor: float = 1.0
    used: int = 0
    queue: int = 0
    until: float = math.inf  # the next change the span was cut for: later ones need no cut
    cancelled: bool = False  # cut short by `interrupt`: its end event is stale


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
        prefill_first: bool = False,
        reserve_full: bool = False,
        async_scheduling: bool = False,
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
        self.prefill_first = prefill_first
        # TensorRT-LLM's GUARANTEED_NO_EVICT: admit only when the KV cache can hold every
        # running request at its full length, so nothing is ever preempted
        self.reserve_full = reserve_full
        # vLLM's asynchronous scheduling: step N+1 is scheduled as step N is launched, so a
        # request that arrives while the engine is busy joins the step after next
        self.async_scheduling = async_scheduling
        self._last_step_start = -math.inf  # when the step just ended started
        self._reserved_blocks = 0
        self.max_span_steps = 1 if per_token else max_span_steps
        self.horizon: Callable[[], float] = lambda: math.inf
        # Set by a load driver: `post` schedules events outside a handler's return (a span cut
        # short by `interrupt`); `refill` tops up `waiting` from a lazily fed queue.
        self.post: Callable[[list[Event]], None] | None = None
        self.refill: Callable[[Engine, float], None] | None = None
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
        self.decoders = Decoders()
        self.busy = False
        self.in_flight: _Span | None = None  # the span now running, ending at its `end`
        self.step_index = 0
        self._admissions = 0
        self._prefill_blocks = 0

    # -- KV accounting -----------------------------------------------------------------
    @property
    def decoding(self) -> dict[int, SimRequest]:
        return self.decoders.by_rid

    def decode_blocks(self, step: int) -> int:
        """Blocks all decoding sequences hold during `step` (exact)."""
        return self.decoders.blocks(step)

    def used_blocks(self) -> int:
        return self.decoders.blocks(self.step_index) + self._prefill_blocks

    @property
    def running(self) -> int:
        return self.decoders.count + len(self.prefilling)

    # -- requests in -------------------------------------------------------------------
    def submit(self, time: float, request: SimRequest) -> list[Event]:
        """A request arrives; start a step if the engine was idle."""
        request.target = request.prompt_tokens
        request.queued = time
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
            self.decoders.remove(request)
        self._release(request)
        request.state = DONE

    def _preempt_one(self) -> bool:
        last_decoder = self.decoders.last()
        last_prefill = next(reversed(self.prefilling.values()), None)
        if last_decoder is None and last_prefill is None:
            return False
        if last_prefill is None or (
            last_decoder is not None and last_decoder.admitted_seq > last_prefill.admitted_seq
        ):
            victim = last_decoder
            assert victim is not None
            victim.generated = victim.joined_generated + (self.step_index - victim.join_step)
            self.decoders.remove(victim)
        else:
            victim = last_prefill
            del self.prefilling[victim.rid]
            self._prefill_blocks -= victim.blocks
            victim.blocks = 0
        self._release(victim)
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
        if self.refill is not None and len(self.waiting) < self.max_num_seqs:
            self.refill(self, now)
        while self.running and self.decode_blocks(step) + self._prefill_blocks > self.kv_blocks:
            if not self._preempt_one():
                break
        used = self.decode_blocks(step) + self._prefill_blocks
        # prefill-first steps give the whole budget to prefills; chunked ones share it
        budget = self.max_num_batched_tokens - (0 if self.prefill_first else self.decoders.count)
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
        # asynchronous scheduling, while busy: only what was queued when the step now ending
        # started (the scheduler chose this step's batch then); an idle engine takes anything
        cutoff = self._last_step_start if self.async_scheduling and self.busy else math.inf
        late = False
        while self.waiting and budget > 0 and self.running < self.max_num_seqs:
            request = self.waiting[0]
            if request.queued > cutoff:
                if self.decoders.count or chunks:
                    late = True  # it joins the next step: this one is a single step
                    break
                cutoff = math.inf  # nothing else to run: the scheduler takes it now
            chunk = min(request.target, budget)
            blocks = -(-chunk // BLOCK_TOKENS)
            if used + blocks > self.kv_blocks:
                break
            if self.reserve_full:
                whole = -(-(request.prompt_tokens + request.output_tokens) // BLOCK_TOKENS)
                if self._reserved_blocks + whole > self.kv_blocks:
                    break
                request.reserved = whole
                self._reserved_blocks += whole
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
        if not self.decoders.count and not chunks:
            self._set_busy(False, now)
            self.in_flight = None
            return []
        self._set_busy(True, now)
        factor = self.contention.factor(self, prefill=bool(chunks))
        until = math.inf
        if not chunks and self.max_span_steps > 1 and not late:
            duration, steps, until = self._decode_span(now, step, factor)
        elif chunks and self.prefill_first:
            # decoders sit this step out: the decode step index does not advance
            duration, steps = self._mixed_step(step, chunks, decoders=False) * factor, 0
        else:
            duration, steps = self._mixed_step(step, chunks) * factor, 1
        self._record(now, duration, used)
        stats = self.stats
        stats.steps += max(steps, 1)
        stats.batch_max = max(stats.batch_max, self.decoders.count + len(chunks))
        if self.track_busy_until and self.max_span_steps > 1:
            after = step + steps
            last = self.decoders.latest_finish_step(after - 1)
            self._busy_until = now + duration + max(last - after + 1, 0) * self._min_step_s
        span = _Span(
            step,
            steps,
            chunks,
            now + duration,
            start=now,
            factor=factor,
            used=used,
            queue=len(self.waiting),
            until=until,
        )
        self.in_flight = span
        return [(span.end, PRIORITY_STEP_DONE, self._on_step_done, span)]

    def change_after(self) -> float:
        """No change of this engine's busy state before this time: idle until its next
        arrival, busy at least until `_busy_until`."""
        return self._busy_until if self.busy else self.horizon()

    def _set_busy(self, busy: bool, now: float) -> None:
        if busy != self.busy:
            self.busy = busy
            self.contention.set_busy(self, busy, now)

    def interrupt(self, now: float) -> None:
        """Something this engine could not foresee happened at `now` (a request it could admit
        arrived; another engine on its device started or stopped): end the decode span in
        flight with its first step that ends at or after `now`, as per-step simulation would
        see the change at the next step. Needs `post` to schedule the new end."""
        span = self.in_flight
        if span is None or span.steps <= 1 or span.chunks or span.end <= now or not self.post:
            return
        if now >= span.until:
            return  # the span already ends with the first step that ends at or after it
        n = self.decoders.count
        context0 = float(self.decoders.context(span.start_step))
        elapsed, steps = steps_until(
            self.model, n, context0, span.steps, now - span.start, span.factor
        )
        if steps >= span.steps:
            return
        removed = span.end - span.start - elapsed
        stats = self.stats
        stats.busy_s -= removed
        stats.kv_block_seconds -= span.used * removed
        stats.queue_seconds -= span.queue * removed
        stats.steps -= span.steps - steps
        span.cancelled = True
        cut = _Span(
            span.start_step,
            steps,
            [],
            span.start + elapsed,
            start=span.start,
            factor=span.factor,
            used=span.used,
            queue=span.queue,
        )
        self.in_flight = cut
        self.post([(cut.end, PRIORITY_STEP_DONE, self._on_step_done, cut)])

    def _mixed_step(
        self, step: int, chunks: list[tuple[SimRequest, int]], decoders: bool = True
    ) -> float:
        """Seconds of a step of the decoders (if `decoders`) plus these prefill chunks."""
        return self.model.mixed_step_time(
            self.decoders.count if decoders else 0,
            float(self.decoders.context(step)) if decoders else 0.0,
            [(r.computed, chunk, r.computed + chunk >= r.target) for r, chunk in chunks],
        )

    def _decode_span(self, now: float, step: int, factor: float) -> tuple[float, int, float]:
        """Chain pure decode steps until a completion, a possible admission or the KV limit.

        Returns the span's total seconds, its number of steps (at least 1) and the next
        foreseen change it was cut for."""
        limit = min(self.decoders.next_finish_step() - step + 1, self.max_span_steps)
        # the KV cache must hold every step of the span (blocks never shrink within it)
        limit = self.decoders.steps_within(step, limit, self.kv_blocks - self._prefill_blocks)
        n = self.decoders.count
        context0 = float(self.decoders.context(step))
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
            return total, limit, until
        return (*steps_until(self.model, n, context0, limit, left, factor, total), until)

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
        return finishing + (len(self.decoding) if self.per_token and span.steps else 0)

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
        if self.per_token and self.decoding and span.steps:
            listener.on_tokens(list(self.decoding.values()), time)
        for request, chunk in span.chunks:
            if request.state != PREFILL or request.computed + chunk < request.target:
                continue
            if request.first_token != request.first_token:  # NaN: its first token
                listener.on_first_token(request, time)
            elif self.per_token:
                listener.on_tokens((request,), time)

    def _on_step_done(self, time: float, span: _Span) -> list[Event]:
        if span.cancelled:
            return []
        if not span.announced:
            self._announce(span)
        next_step = span.start_step + span.steps
        self._last_step_start = self._last_start_of(span)
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
            self.decoders.add(request)
        for request in self.decoders.pop_finished(next_step):
            request.generated = request.output_tokens
            self._finish(request, time)
        self.step_index = next_step
        return self._start_step(time)

    def _last_start_of(self, span: _Span) -> float:
        """When the span's last step started: its start for one step, else its end less one
        decode step at the last step's context (a longer span is decode steps only)."""
        if span.steps <= 1 or not self.async_scheduling:
            return span.start
        last = span.start_step + span.steps - 1
        context = float(self.decoders.context(last))
        one = self.model.decode_span_time(self.decoders.count, context, 1) * span.factor
        return span.end - one

    def _release(self, request: SimRequest) -> None:
        self._reserved_blocks -= request.reserved
        request.reserved = 0

    def _finish(self, request: SimRequest, time: float) -> None:
        self._release(request)
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
