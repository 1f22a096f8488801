"""What a simulated engine asks of the device it runs on: how much slower its steps are while
other engines there are busy (`factor`), telling the device when it starts or stops being busy,
and until when the factor cannot change (`horizon`). `sim/gpu.py`'s SharedDevice answers for a
shared GPU; an engine alone on its device has NoContention."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from modelyard.sim.engine import Engine


class Contention(Protocol):
    """What an engine asks of the device it shares."""

    def factor(self, engine: Engine, prefill: bool = False) -> float:
        """How many times as long as alone the engine's next step takes (`prefill`: a step
        that prefills)."""
        ...

    def set_busy(self, engine: Engine, busy: bool, now: float) -> None: ...

    def horizon(self, engine: Engine) -> float:
        """The earliest time another engine on the device may start or stop being busy (the
        factor stays exact until then)."""
        ...


class NoContention:
    def factor(self, engine: Engine, prefill: bool = False) -> float:
        return 1.0

    def set_busy(self, engine: Engine, busy: bool, now: float) -> None:
        return None

    def horizon(self, engine: Engine) -> float:
        return math.inf
