"""An engine with exact, injected latencies: `sim serve --fixed-ttft-ms T --fixed-itl-ms I`.

Every request gets its first token T after it arrives and each later token I after the one
before, whatever else is running: no batching, no queue, no KV limit. It exists to measure
clients (the load generator's own timing error is the difference between what it measures and
T or I) and to give tests a server whose every timing is known in advance. It speaks the same
listener interface as the batching engine, so the HTTP server and its faults are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelyard.sim.engine import DECODE, DONE, EngineListener, SimRequest
from modelyard.sim.loop import PRIORITY_STEP_DONE, Event


@dataclass
class _Stats:
    preemptions: int = 0


class FixedLatencyEngine:
    """Duck-types the parts of `Engine` that `sim serve` uses."""

    kv_blocks = 1
    in_flight = None  # no batched step whose tokens could be written early

    def __init__(self, name: str, ttft_s: float, itl_s: float, listener: EngineListener) -> None:
        if ttft_s < 0 or itl_s < 0:
            raise ValueError("fixed latencies must not be negative")
        self.name = name
        self.ttft_s = ttft_s
        self.itl_s = itl_s
        self.listener = listener
        self.waiting: list[SimRequest] = []  # never anything: nothing queues
        self.running = 0
        self.stats = _Stats()

    def used_blocks(self) -> int:
        return 0

    def tokens_in_flight(self) -> int:
        return 0

    def announce(self) -> None:
        return None

    def submit(self, time: float, request: SimRequest) -> list[Event]:
        request.state = DECODE
        request.first_scheduled = time
        self.running += 1
        # TTFT counts from the request's arrival (the server stamps it on receipt), not from
        # when the server got round to submitting it
        first = max(time, request.arrival + self.ttft_s)
        return [(first, PRIORITY_STEP_DONE, self._token, request)]

    def abort(self, request: SimRequest) -> None:
        if request.state != DONE:
            request.state = DONE
            self.running -= 1

    def _token(self, time: float, request: SimRequest) -> list[Event]:
        if request.state == DONE:  # aborted: its client went away
            return []
        request.generated += 1
        if request.generated == 1:
            request.first_token = time
            self.listener.on_first_token(request, time)
        else:
            self.listener.on_tokens((request,), time)
        if request.generated < request.output_tokens:
            return [(time + self.itl_s, PRIORITY_STEP_DONE, self._token, request)]
        request.state = DONE
        request.finished = time
        self.running -= 1
        self.listener.on_finished(request, time)
        return []
