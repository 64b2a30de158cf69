"""A series' points in vendor time: what a poll has not seen yet, what a backfill's range holds.

Every source that keeps the vendor's time hands its sinks earlier points of a
series in `Sample.history` (oldest first, each older than the sample's own
point). These helpers pick them the same way for every vendor: from points
ordered by time, those after a cursor (the newest time the previous poll saw)
or within a backfill's `[since, until]`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from typing import TypeVar

V = TypeVar("V")


def ordered(points: Iterable[tuple[float, V]]) -> list[tuple[float, V]]:
    """Points by time, oldest first; of several at one time, the last given."""
    latest: dict[float, V] = {}
    for when, value in points:
        latest[when] = value
    return sorted(latest.items(), key=lambda point: point[0])


def between(line: Sequence[tuple[float, V]], after: float, before: float) -> tuple[tuple[float, V], ...]:
    """The points of an ordered `line` with `after < time < before`."""
    times = [when for when, _ in line]
    return tuple(line[bisect_right(times, after):bisect_left(times, before)])


def within(line: Sequence[tuple[float, V]], since: float, until: float) -> list[tuple[float, V]]:
    """The points of an ordered `line` with `since <= time <= until`."""
    times = [when for when, _ in line]
    return list(line[bisect_left(times, since):bisect_right(times, until)])
