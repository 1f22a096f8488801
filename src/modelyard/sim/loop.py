"""The discrete-event loop: a heap of (time, priority, sequence) keyed events.

Handlers take (time, payload) and return new events; the loop owns no policy of its own.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from typing import Any

Handler = Callable[[float, Any], Iterable["Event"]]
Event = tuple[float, int, Handler, Any]  # (time, priority, handler, payload)

# Lower runs first at equal times: finish steps before admitting arrivals, as vLLM's
# scheduler sees completed requests before it looks at the waiting queue.
PRIORITY_STEP_DONE = 0
PRIORITY_ARRIVAL = 1


class EventLoop:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Handler, Any]] = []
        self._sequence = itertools.count()
        self.now = 0.0

    def schedule(self, events: Iterable[Event]) -> None:
        for time, priority, handler, payload in events:
            heapq.heappush(self._heap, (time, priority, next(self._sequence), handler, payload))

    def next_time(self) -> float:
        return self._heap[0][0] if self._heap else float("inf")

    def run(self, until: float = float("inf")) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            time, _, _, handler, payload = heapq.heappop(heap)
            self.now = time
            new = handler(time, payload)
            if new:
                self.schedule(new)
