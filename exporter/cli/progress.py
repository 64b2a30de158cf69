"""Progress of a backfill: a bar per source on a terminal (rich), plain log lines otherwise.

Each source shows its targets done out of all, the points fetched, and an
ETA. For a source with a rate budget (Flux), the ETA is what the budget
implies: the requests its targets took so far, per target, times the targets
left, through `RateBudget.estimate`; without a budget, the time per target so
far times the targets left.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from exporter.sources import Target
from exporter.sources.base import AnySource

if TYPE_CHECKING:
    from rich.progress import Progress as Bars
    from rich.progress import TaskID

log = logging.getLogger("exporter.backfill")


def duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """`with Progress(plan) as p: … p.done(source, target, points)`."""

    def __init__(self, plan: Sequence[tuple[AnySource, Sequence[Target]]], tty: bool | None = None) -> None:
        self.plan = {source.name: (source, len(targets)) for source, targets in plan}
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.counts = {name: [0, 0] for name in self.plan}  # targets done, points
        self.bars: Bars | None = None
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Progress:
        if self.tty:  # rich loads only for a terminal
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bars

            self.bars = Bars(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("targets · {task.fields[points]:>9,} points · {task.fields[eta]}"),
                             TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            self.bars.start()
            for name, (_, total) in self.plan.items():
                self.tasks[name] = self.bars.add_task(name, total=total, points=0, eta="")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.bars is not None:
            self.bars.stop()

    def eta(self, source: AnySource) -> str:
        done, _ = self.counts[source.name]
        left = self.plan[source.name][1] - done
        if done == 0 or left <= 0:
            return ""
        budget = source.http.budget
        if budget is not None:
            per_target = source.http.attempts / done
            return f"ETA ≥ {duration(budget.estimate(round(per_target * left)))} (rate budget)"
        return f"ETA ~{duration((time.monotonic() - self.started) / done * left)}"

    def done(self, source: AnySource, target: Target, points: int) -> None:
        counts = self.counts[source.name]
        counts[0] += 1
        counts[1] += points
        eta = self.eta(source)
        if self.bars is not None:
            self.bars.update(self.tasks[source.name], advance=1, points=counts[1], eta=eta)
            return
        total = self.plan[source.name][1]
        log.info("backfill %s: %d point(s); %s %d/%d target(s), %d point(s)%s", target.key, points, source.name,
                 counts[0], total, counts[1], f"; {eta}" if eta else "")
