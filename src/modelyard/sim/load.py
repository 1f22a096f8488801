"""Load on simulated engines, through the request path.

Three shapes, as `bench` and `vllm bench serve` drive a server:

- open loop: requests arrive at times set by an arrival process (Poisson, gamma, constant);
- closed loop: N users, each sending its next request when its previous one finishes
  (`bench --concurrency N`, `vllm bench serve --max-concurrency N --request-rate inf`);
- offline: every request arrives at t = 0 (maximum throughput).

Every request then takes the request path of its engine's calibration before the engine sees
it: a fixed `request_latency_ms` (HTTP, tokenization, scheduling; it counts in TTFT, as every
request pays it whatever the load) and `frontend_ms_per_request` of API-server CPU in the
engine's single front-end process — nothing at low load, a queue in a burst — served one request
at a time (`frontend_queue: fifo`) or all at once, each an equal share (`processor-sharing`:
`SharedFrontEnd`, vLLM's asyncio API server). TTFT and E2E count from the arrival, so the path
and any queue in it are never hidden.

The engines learn of requests lazily: a feed hands the next request to the path only when the
path can take it, and tops up an engine's waiting queue only as far as one step can admit, so
an offline run of a million requests never holds a million requests at once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modelyard.sim.engine import Engine, SimRequest
from modelyard.sim.loop import PRIORITY_ARRIVAL, Event, EventLoop
from modelyard.sim.perf import Calibration
from modelyard.workload import ArrivalKind, Requests


@dataclass(frozen=True)
class OpenLoad:
    rate: float  # requests/s
    arrival: ArrivalKind = "poisson"
    burstiness: float = 1.0

    def describe(self) -> dict[str, float | str]:
        return {"kind": "open", "rate": self.rate, "arrival": self.arrival}


@dataclass(frozen=True)
class ClosedLoad:
    concurrency: int  # users, each with one request in flight

    def describe(self) -> dict[str, float | str]:
        return {"kind": "closed", "concurrency": self.concurrency}


@dataclass(frozen=True)
class OfflineLoad:
    def describe(self) -> dict[str, float | str]:
        return {"kind": "offline"}


Load = OpenLoad | ClosedLoad | OfflineLoad


@dataclass(frozen=True)
class RequestPath:
    """What a request pays between the client and the engine (seconds)."""

    latency_s: float = 0.0
    frontend_s: float = 0.0
    shared_frontend: bool = False  # processor sharing, not one request at a time

    @classmethod
    def of(cls, calibration: Calibration) -> RequestPath:
        return cls(
            calibration.request_latency_ms / 1000.0,
            calibration.frontend_ms_per_request / 1000.0,
            calibration.frontend_queue == "processor-sharing",
        )


class SharedFrontEnd:
    """One engine's API-server process as a processor-sharing server: every request inside
    gets an equal share of its CPU and needs `work_s` of it, so a burst is ingested together —
    no request reaches the engine early, all of them late — as an event loop that interleaves
    every request's parsing, templating and tokenization does. Equal work means requests leave
    in the order they entered; the state is the server's virtual time (CPU seconds each
    request inside has had) and the virtual finish times of the groups that entered together."""

    __slots__ = ("_clock", "_finish", "_virtual", "count", "jobs", "work")

    def __init__(self, work_s: float) -> None:
        self.work = work_s
        self.count = 0
        self.jobs: deque[tuple[float, int]] = deque()  # (arrival, request index), entry order
        self._finish: deque[list[float]] = deque()  # [virtual finish, requests], entry order
        self._clock = 0.0
        self._virtual = 0.0

    def _advance(self, time: float) -> None:
        if time > self._clock:
            if self.count:
                self._virtual += (time - self._clock) / self.count
            self._clock = time

    def enter(self, time: float, arrival: float, index: int) -> None:
        self._advance(time)
        finish = self._virtual + self.work
        if self._finish and self._finish[-1][0] == finish:
            self._finish[-1][1] += 1
        else:
            self._finish.append([finish, 1.0])
        self.count += 1
        self.jobs.append((arrival, index))

    def next_done(self) -> float:
        """When the oldest request inside is through, if no other enters first."""
        if not self.count:
            return math.inf
        return self._clock + max(self._finish[0][0] - self._virtual, 0.0) * self.count

    def leave(self, time: float) -> tuple[float, int]:
        """The oldest request, through at `time` (= next_done())."""
        self._advance(time)
        group = self._finish[0]
        group[1] -= 1
        if group[1] <= 0:
            self._finish.popleft()
        self.count -= 1
        return self.jobs.popleft()


class Feed:
    """The requests of one fleet model on their way to its engines (replicas)."""

    def __init__(
        self,
        loop: EventLoop,
        requests: Requests,
        engines: list[Engine],
        path: RequestPath,
        model_id: int,
        max_len: int,
        on_rejected: Callable[[float], None] | None = None,
    ) -> None:
        self.loop = loop
        self.engines = engines
        self.path = path
        self.model_id = model_id
        self.max_len = max_len
        self.rejected = 0
        self._inputs: list[int] = requests.input_tokens.tolist()
        self._outputs: list[int] = requests.output_tokens.tolist()
        self.on_rejected = on_rejected
        self._free_at = [0.0] * len(engines)  # when each front end is next free
        self._offered: deque[tuple[float, int]] = deque()
        self._arrivals: list[float] = []  # open loop and offline: known in advance
        self._indices: list[int] = []
        self._cursor = 0
        self._process_at = math.inf  # when the next process event fires (inf: none pending)
        self._token = 0  # the current process event; older ones are stale
        self._latency = path.latency_s
        self._frontend = path.frontend_s
        self._shared: list[SharedFrontEnd] | None = None
        if path.shared_frontend and path.frontend_s:
            self._shared = [SharedFrontEnd(path.frontend_s) for _ in engines]
            self._frontend = 0.0  # the FIFO path's cost: the shared front ends take it instead
        self._engine_due = math.inf  # shared front ends: when a request next reaches an engine
        for engine in engines:
            engine.horizon = self._horizon
            engine.post = loop.schedule

    # -- sources ---------------------------------------------------------------------
    def preload(self, arrivals: list[float], indices: list[int]) -> None:
        """Requests whose arrival times are known in advance (open loop, offline)."""
        self._arrivals, self._indices, self._cursor = arrivals, indices, 0
        self._schedule_process(-math.inf)

    def offer(self, time: float, index: int) -> None:
        """A request that arrives now (closed loop)."""
        self._offered.append((time, index))
        if self._process_at > time:
            self._process(time, self._token)

    def _head(self) -> tuple[float, int] | None:
        if self._cursor < len(self._arrivals):
            return self._arrivals[self._cursor], self._indices[self._cursor]
        return self._offered[0] if self._offered else None

    # -- the request path ------------------------------------------------------------
    def _due(self, arrival: float, position: int) -> float:
        """When a request that arrived at `arrival` reaches engine `position`: after the fixed
        latency and its turn at that engine's front end."""
        ready = arrival + self._latency
        return max(ready, self._free_at[position]) + self._frontend if self._frontend else ready

    def _schedule_process(self, now: float) -> None:
        """One event per request: when the head of the queue reaches its engine."""
        if self._shared is not None:
            self._process_shared(now, self._token)
            return
        head = self._head()
        if head is None:
            self._token += 1
            self._process_at = math.inf
            return
        position = self._route()
        self._arm(max(self._due(head[0], position), now), position)

    def _arm(self, at: float, position: int) -> None:
        self._token += 1
        self._process_at = at
        engine = self.engines[position]
        if engine.busy:
            engine.interrupt(at)  # a span it runs must see the arrival
        self.loop.schedule([(at, PRIORITY_ARRIVAL, self._process, self._token)])

    def _process(self, now: float, token: int, only: Engine | None = None) -> list[Event]:
        """Hand every request due by `now` to its engine (`only`: to that engine, which is
        topping up its waiting queue), then wait for the next one."""
        if token != self._token:
            return []  # superseded by a later process event
        if self._shared is not None:
            return self._process_shared(now, token)
        engines, arrivals, indices = self.engines, self._arrivals, self._indices
        preloaded, offered = len(arrivals), self._offered
        latency, frontend, free_at = self._latency, self._frontend, self._free_at
        fixed = engines.index(only) if only is not None else 0 if len(engines) == 1 else -1
        schedule = self.loop.schedule
        while True:
            cursor = self._cursor
            if cursor < preloaded:
                arrival, index = arrivals[cursor], indices[cursor]
            elif offered:
                arrival, index = offered[0]
            else:
                self._token += 1
                self._process_at = math.inf
                return []
            position = fixed if fixed >= 0 else self._route()
            due = arrival + latency  # the request path: fixed latency, then the front end
            if frontend:
                free = free_at[position]
                due = (due if due > free else free) + frontend
            if due > now:
                self._arm(due, position)
                return []
            engine = engines[position]
            if not frontend and len(engine.waiting) >= engine.max_num_seqs:
                self._token += 1  # a step cannot admit more; `_refill` resumes before its next
                self._process_at = math.inf
                for each in engines:  # the engines ask for more before their next step
                    each.refill = self._refill
                return []
            if cursor < preloaded:
                self._cursor = cursor + 1
            else:
                offered.popleft()
            if frontend:
                free_at[position] = due
            request = self._request(arrival, index, now)
            if request is None:
                continue
            if only is not None:
                request.target = request.prompt_tokens
                engine.waiting.append(request)
                continue
            schedule(self._submit(engine, now, request))

    def _process_shared(self, now: float, token: int) -> list[Event]:
        """The request path with processor-sharing front ends: requests enter a front end
        after the fixed latency (routed to the replica with the fewest requests in its front
        end and engine) and reach the engine when the front end is through with them; one
        event per request, when it reaches its engine."""
        if token != self._token:
            return []
        fronts = self._shared
        assert fronts is not None
        engines, arrivals, indices, offered = (
            self.engines,
            self._arrivals,
            self._indices,
            self._offered,
        )
        latency, schedule = self._latency, self.loop.schedule
        while True:
            cursor = self._cursor
            if cursor < len(arrivals):
                arrival, index = arrivals[cursor], indices[cursor]
                entry = arrival + latency
            elif offered:
                arrival, index = offered[0]
                entry = arrival + latency
            else:
                entry = math.inf
            position, done = 0, fronts[0].next_done()
            for i in range(1, len(fronts)):
                at = fronts[i].next_done()
                if at < done:
                    position, done = i, at
            self._engine_due = done
            if entry == math.inf and done == math.inf:
                self._token += 1  # nothing inside, nothing to come: wait for an offer
                self._process_at = math.inf
                return []
            if entry <= done:
                # entered now even when it is due later: every request that could enter before
                # the next one is through is known (preloaded, or offered in time order), so
                # the front end's next completion is exact and the only event (an offer that
                # comes later re-runs this, and can only delay it)
                if cursor < len(arrivals):
                    self._cursor = cursor + 1
                else:
                    offered.popleft()
                target = 0
                if len(fronts) > 1:
                    target = min(
                        range(len(fronts)),
                        key=lambda i: (
                            fronts[i].count + engines[i].running + len(engines[i].waiting)
                        ),
                    )
                fronts[target].enter(entry, arrival, index)
                continue
            if done > now:
                self._arm(done, position)
                return []
            arrival, index = fronts[position].leave(done)
            request = self._request(arrival, index, done)
            if request is not None:
                schedule(self._submit(engines[position], now, request))

    def _request(self, arrival: float, index: int, now: float) -> SimRequest | None:
        """Request `index` as it reaches an engine, or None: longer than the model's context
        (vLLM answers 400)."""
        prompt, output = self._inputs[index], self._outputs[index]
        if prompt + output > self.max_len:
            self.rejected += 1
            if self.on_rejected is not None:
                self.on_rejected(now)
            return None
        return SimRequest(
            rid=index,
            arrival=arrival,
            prompt_tokens=prompt,
            output_tokens=output,
            payload=self.model_id,
        )

    @staticmethod
    def _submit(engine: Engine, now: float, request: SimRequest) -> list[Event]:
        if engine.busy and engine.running < engine.max_num_seqs and not engine.waiting:
            engine.interrupt(now)  # it can admit this request at its next step
        return engine.submit(now, request)

    def _route(self) -> int:
        """The engine the head goes to: the least loaded of those whose front end frees
        first (the least loaded, without a front-end cost)."""
        engines = self.engines
        if len(engines) == 1:
            return 0
        choices: Sequence[int] = range(len(engines))
        if self._frontend:
            first = min(self._free_at)
            choices = [i for i in choices if self._free_at[i] <= first]
        return min(choices, key=lambda i: engines[i].running + len(engines[i].waiting))

    def _refill(self, engine: Engine, now: float) -> None:
        for each in self.engines:
            each.refill = None
        self._process(now, self._token, only=engine)

    def _horizon(self) -> float:
        # the next request reaches an engine at the pending process event (when requests are
        # ready but stalled, nothing can be admitted anyway); with shared front ends, when the
        # first of them is next through (a request that enters one only delays that)
        if self._shared is not None:
            return self._engine_due
        return self._process_at


class ClosedLoopUsers:
    """N users over one global request sequence: each takes the next request when its last
    one finishes (or is refused). The next request leaves just after the step that finished
    the last one, as a client's reply does."""

    def __init__(
        self, loop: EventLoop, requests: Requests, feeds: dict[str, Feed], concurrency: int
    ) -> None:
        self._loop = loop
        self._targets = requests.target_index
        self._names = requests.targets
        self._feeds = feeds
        self._count = len(requests)
        self._next = 0
        self.concurrency = concurrency

    def start(self) -> None:
        for _ in range(min(self.concurrency, self._count)):
            self._send(0.0, None)

    def later(self, time: float) -> None:
        """One user is free at `time`: it sends its next request then."""
        self._loop.schedule([(time, PRIORITY_ARRIVAL, self._send, None)])

    def _send(self, time: float, _: object) -> list[Event]:
        while self._next < self._count:
            index = self._next
            self._next += 1
            feed = self._feeds.get(self._names[int(self._targets[index])])
            if feed is not None:
                feed.offer(time, index)
                break
        return []
