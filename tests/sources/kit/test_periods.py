"""Period grids: floors, shifts and windows, months included."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from exporter.sources.kit.periods import DAY, GRIDS, HOUR, MINUTE, MONTH, rfc3339


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_fixed_grids() -> None:
    moment = ts(2026, 3, 15, 10, 42, 17)
    assert MINUTE.floor(moment) == ts(2026, 3, 15, 10, 42)
    assert HOUR.floor(moment) == ts(2026, 3, 15, 10)
    assert DAY.floor(moment) == ts(2026, 3, 15)
    assert HOUR.window(moment, 3) == (ts(2026, 3, 15, 7), ts(2026, 3, 15, 10))


def test_months_are_calendar_months() -> None:
    assert MONTH.floor(ts(2026, 3, 31, 23, 59)) == ts(2026, 3, 1)
    assert MONTH.shift(ts(2026, 1, 1), -1) == ts(2025, 12, 1)
    assert MONTH.shift(ts(2026, 11, 1), 3) == ts(2027, 2, 1)
    assert MONTH.window(ts(2026, 2, 10), 3) == (ts(2025, 11, 1), ts(2026, 2, 1))


@given(st.floats(min_value=0, max_value=4e9), st.sampled_from(sorted(GRIDS)), st.integers(-50, 50))
def test_floor_and_shift_stay_on_the_grid(moment: float, name: str, n: int) -> None:
    grid = GRIDS[name]
    start = grid.floor(moment)
    assert start <= moment < grid.shift(start, 1)
    assert grid.floor(grid.shift(start, n)) == grid.shift(start, n)
    assert grid.shift(grid.shift(start, n), -n) == start


def test_rfc3339() -> None:
    assert rfc3339(ts(2026, 1, 2, 3, 4, 5) + 0.9) == "2026-01-02T03:04:05Z"
