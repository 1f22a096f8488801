"""Human-friendly quantities in config files: durations like `50ms`, `30s`, `5m`, `1h`."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

# a month of GPU time: 8,760 hours a year / 12 (what clouds bill a month of on-demand at)
HOURS_PER_MONTH = 730

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds from `50ms`, `30s`, `5m`, `1h` or a bare non-negative number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} (use e.g. 50ms, 30s, 5m, 1h)")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]
    raise ValueError(f"invalid duration {value!r} (use e.g. 50ms, 30s, 5m, 1h)")


def format_duration(seconds: float) -> str:
    """The shortest of `120ms`, `30s`, `5m`, `1h` that states `seconds` exactly enough."""
    if seconds < 1:
        return f"{seconds * 1000:.12g}ms"
    if seconds < 60 or seconds % 60:
        return f"{seconds:.12g}s"
    if seconds < 3600 or seconds % 3600:
        return f"{seconds / 60:.12g}m"
    return f"{seconds / 3600:.12g}h"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _DURATION.pattern},
                {"type": "number", "minimum": 0},
            ],
            "description": "duration: 50ms, 30s, 5m, 1h, or seconds",
        }
    ),
]
