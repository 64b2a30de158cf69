"""A k6 series' points: the newest, those since a cursor, those within a range; tags as labels.

The series of one run share a time grid: what is read of a grid's timestamps
is kept for one poll (`Grids`), so a series costs a tuple of its timestamps
and a lookup, not a parse per point.
"""

from __future__ import annotations

import asyncio
import json
import math
import operator
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple, TypeVar

from exporter.model import Labels
from exporter.sources.k6_cloud.config import RESERVED_LABELS, K6Point
from exporter.sources.kit.naming import label_name
from exporter.sources.kit.timeparse import parse_timestamp

T = TypeVar("T")


def tag_labels(tags: dict[str, Any]) -> Labels:
    """k6 tags as labels: keys sanitised, reserved ones prefixed `tag_`, and of
    two keys that sanitise alike the first in sorted order wins."""
    out: dict[str, str] = {}
    for key in sorted(tags):
        name = label_name(key)
        if name in RESERVED_LABELS:
            name = f"tag_{name}"
        if name in out:
            continue
        value = tags[key]
        out[name] = "" if value is None else value if isinstance(value, str) else json.dumps(value)
    return tuple(out.items())


def timestamp_or_none(value: str | float) -> float | None:
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


_TIMESTAMP = operator.itemgetter("timestamp")


def _newest(points: list[K6Point], grids: dict[tuple[Any, ...], int]) -> K6Point | None:
    """The point with the newest timestamp (the last of equals); unreadable
    timestamps count as oldest. The series of one run share a time grid, so
    the answer is kept per grid (`grids`, one poll's): a series costs a tuple
    of its timestamps and a lookup, not a parse per point."""
    if not points:
        return None
    stamps = tuple(map(_TIMESTAMP, points))
    index = grids.get(stamps)
    if index is None:
        moments = [timestamp_or_none(stamp) for stamp in stamps]
        order = [-math.inf if moment is None else moment for moment in moments]
        index = grids[stamps] = max(range(len(stamps) - 1, -1, -1), key=order.__getitem__)
    return points[index]


def points_between(
    points: list[K6Point], lines: dict[tuple[Any, ...], Line], after: float, until: float, scale: float
) -> list[tuple[float, float]]:
    """`(time, value × scale)` of the points with `after < time <= until` and
    a value, oldest first (of equal times the last). The times are read once
    per grid (`lines`, one poll's), as `_newest` does."""
    stamps = tuple(map(_TIMESTAMP, points))
    line = lines.get(stamps)
    if line is None:
        line = lines[stamps] = Line.of(stamps)
    return [(line.times[i], raw * scale)
            for i in range(bisect_right(line.times, after), bisect_right(line.times, until))
            if (raw := points[line.indexes[i]].get("value")) is not None]


class Line(NamedTuple):
    """A grid's readable times, oldest first, and the index of the point at each."""

    times: list[float]
    indexes: list[int]

    @classmethod
    def of(cls, stamps: tuple[Any, ...]) -> Line:
        latest: dict[float, int] = {}
        for index, stamp in enumerate(stamps):
            moment = timestamp_or_none(stamp)
            if moment is not None:
                latest[moment] = index
        times = sorted(latest)
        return cls(times, [latest[t] for t in times])


class Grids(NamedTuple):
    """One poll's per-grid caches: the newest point's index, and the timeline."""

    newest: dict[tuple[Any, ...], int]
    lines: dict[tuple[Any, ...], Line]


Span = tuple[float, float]  # a backfill's [since, until]


async def bounded_gather(calls: Iterable[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """The results of `calls`, at most `limit` in flight, to be gentle upstream.

    Each coroutine is made only when its turn comes: one made up front and
    never awaited (the poll's deadline cancelled the gather first) printed
    `RuntimeWarning: coroutine ... was never awaited`."""
    semaphore = asyncio.Semaphore(limit)

    async def run(call: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await call()

    return await all_or_cancel(*(run(call) for call in calls))


async def all_or_cancel(*coroutines: Awaitable[T]) -> list[T]:
    """gather(), but the first failure cancels the others: a failed poll
    leaves no request of its own running behind it."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
