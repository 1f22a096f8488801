"""Comparing what a client got directly from an engine with what it got through the gateway:
field by field, as the official `openai` client parsed it, ids and timestamps aside."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# values that differ between two identical requests to one engine: ids, clocks, timings, and
# how much of the prompt the engine found in its cache (it depends on the requests before)
VOLATILE = frozenset(
    {"id", "created", "created_at", "completed_at", "item_id", "timings", "cached_tokens"}
)
SET = "<set>"


def comparable(value: Any) -> Any:
    """A parsed answer (or list of stream chunks) as plain data; a volatile field keeps only
    whether it is set, so that a field the gateway drops still shows."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {
            k: (SET if v is not None else None) if k in VOLATILE else comparable(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def assert_same(direct: Any, gateway: Any) -> None:
    left, right = comparable(direct), comparable(gateway)
    assert left == right, _first_difference(left, right)


def _first_difference(left: Any, right: Any, where: str = "") -> str:
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right)):
            if key not in left or key not in right:
                return f"{where}.{key}: only {'direct' if key in left else 'gateway'} has it"
            if left[key] != right[key]:
                return _first_difference(left[key], right[key], f"{where}.{key}")
    if isinstance(left, list) and isinstance(right, list):
        if len(left) != len(right):
            return f"{where}: {len(left)} items directly, {len(right)} through the gateway"
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{where}[{index}]")
    return f"{where}: {left!r} directly, {right!r} through the gateway"
