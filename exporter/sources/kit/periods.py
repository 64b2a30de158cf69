"""Calendar periods in UTC: the grids vendors bucket their counts on.

Bird buckets flow runs by minute, hour, day or month; WhatsApp by hour or
day; Flux by 1m/5m/1h/1d. A poll re-reads a window of whole periods that ends
with the still-open current one, so the period ledger can settle the periods
that leave it. Months are calendar months, not 30 days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Grid:
    """A period grid: fixed `seconds`, or calendar months when `months` is set."""

    name: str
    seconds: int = 0
    months: int = 0

    def floor(self, ts: float) -> float:
        """Start of the period that contains `ts`."""
        if self.months:
            moment = datetime.fromtimestamp(ts, UTC)
            index = (moment.year * 12 + moment.month - 1) // self.months * self.months
            return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC).timestamp()
        return ts - ts % self.seconds

    def shift(self, start: float, periods: int) -> float:
        """The period start `periods` periods after (or before) `start`."""
        if self.months:
            moment = datetime.fromtimestamp(start, UTC)
            index = moment.year * 12 + moment.month - 1 + periods * self.months
            return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC).timestamp()
        return start + periods * self.seconds

    def window(self, now: float, lookback: int) -> tuple[float, float]:
        """`(start, current)`: the start of the `lookback` complete periods before
        the current one, and the start of the current (open) period."""
        current = self.floor(now)
        return self.shift(current, -lookback), current


MINUTE = Grid("minute", seconds=60)
HOUR = Grid("hour", seconds=3600)
DAY = Grid("day", seconds=86400)
MONTH = Grid("month", months=1)

GRIDS = {grid.name: grid for grid in (MINUTE, HOUR, DAY, MONTH)}


def rfc3339(ts: float) -> str:
    """`2024-01-15T10:00:00Z`: UTC, whole seconds (sub-second precision is noise here)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
