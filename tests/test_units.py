from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.units import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("50ms", 0.05),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 2 s", 2.0),
        (10, 10.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5 min", "ms", "-1s", "1d", True, None, [1]])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_negative_number_rejected() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(-3)


@given(st.integers(min_value=1, max_value=10_000_000))
def test_format_round_trips(milliseconds: int) -> None:
    seconds = milliseconds / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
