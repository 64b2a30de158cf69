"""Walking a Pluto run's metrics through step windows until no answer is sampled (seed 002, API_NOTES.md).

The doc promises a sample of at most `limit` points; the open-source server
keeps every ceil(total/limit)-th row of each logName plus its last, so up to
`limit + 1` rows per logName. An answer of one logName over a step window is
*complete* when it holds at most `limit // 2` rows: a sampled answer always
holds more (a reservoir sample holds `limit` rows, and the stride sample of
T > limit rows holds at least ceil(T / ceil(T / limit)) > limit / 2).

- `forward`: follow `stepMin` = the highest step seen (inclusive) until an
  answer is complete, which reaches the newest step whatever the sampler.
- `densify`: a window whose answer may be sampled is split at its middle row
  into two windows that partition it (`[lo, s]` and `[s + 1, hi]`, newest side
  first) and each is fetched again, recursively, until every window is
  complete: every point of the window is fetched, not only a sample.

A `Walk` counts its requests against a budget (`max_requests_per_poll` for a
poll; none for a backfill). When it runs out the walk stops where it is (the
newest side is always walked first), points inside windows not yet fetched are
skipped and `truncated` is set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from exporter.sources.pluto.points import Point

# fetch(logName or None for all, stepMin, stepMax) → the answer's rows
Fetch = Callable[[str | None, int | None, int | None], Awaitable[list[Point]]]


class Walk:
    """The requests of one poll (or one backfill) of one run, against its budget."""

    def __init__(self, fetch: Fetch, complete_at: int, budget: int | None) -> None:
        self._fetch = fetch
        self.complete_at = complete_at
        self.left = budget
        self.truncated = False

    def spent(self) -> bool:
        """True (and the walk marked truncated) when no request is left."""
        if self.left is not None and self.left <= 0:
            self.truncated = True
            return True
        return False

    async def fetch(self, log_name: str | None, low: int | None, high: int | None) -> list[Point]:
        if self.left is not None:
            self.left -= 1
        return await self._fetch(log_name, low, high)

    async def forward(self, name: str, points: list[Point]) -> list[Point]:
        """Follow `stepMin` = highest step seen until an answer is complete."""
        seen = list(points)
        answer = points
        while len(answer) > self.complete_at and not self.spent():
            top = max(p.step for p in answer)
            answer = await self.fetch(name, top, None)
            seen.extend(answer)
            if not answer or max(p.step for p in answer) <= top:
                break  # nothing beyond `top`, or every row sits on one step
        return seen

    async def densify(
        self, name: str, low: int, high: int | None, rows: list[Point], floor: int
    ) -> list[Point]:
        """Every row of `name` in [low, high] (high None: open), given `rows`,
        the answer for exactly that window. Windows wholly below `floor` (the
        step already exported) are not fetched."""
        if len(rows) <= self.complete_at or self.spent():
            return rows
        ordered = sorted(rows, key=lambda p: (p.step, p.time))
        top = ordered[-1].step
        split = ordered[len(ordered) // 2 - 1].step if len(ordered) > 1 else top
        if split >= top:
            lower = [p.step for p in ordered if p.step < top]
            if not lower:
                return rows  # every row on one step: no window is smaller
            split = lower[-1]
        # Both windows hold fewer true rows than this one (the split row goes
        # left, the top row right), so the recursion ends. Newest side first:
        # a walk cut short by the budget still reaches the newest step.
        right = await self.fetch(name, split + 1, high)
        points = await self.densify(name, split + 1, high, right, floor)
        if split < floor:
            return points
        if self.spent():
            return points + [p for p in rows if p.step <= split]
        left = await self.fetch(name, low, split)
        return points + await self.densify(name, low, split, left, floor)


def by_name(points: list[Point]) -> dict[str, list[Point]]:
    grouped: dict[str, list[Point]] = {}
    for point in points:
        grouped.setdefault(point.log_name, []).append(point)
    return grouped
