"""APScheduler jobs: one per (source, target), jittered, never overlapping.

- The first poll comes soon after start: a random delay of at most 10% of the
  interval, capped at 10 s, so many targets do not all fire at once yet nobody
  waits long for data.
- `max_instances=1`: an overrun (a poll still running when the next is due) is
  counted and skipped, never stacked.
- `coalesce=True`: misfires after a stall collapse into one run.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

FIRST_POLL_MAX_DELAY = 10.0


def first_poll_delay(interval: float) -> float:
    return random.uniform(0, min(0.1 * interval, FIRST_POLL_MAX_DELAY))


class Scheduler:
    def __init__(self, on_overrun: Callable[[str], None]) -> None:
        self._scheduler = AsyncIOScheduler(timezone=timezone.utc)
        self._on_overrun = on_overrun
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def add(
        self, job_id: str, interval: float, poll: Callable[[], Awaitable[object]], first_delay: float | None = None
    ) -> None:
        delay = first_poll_delay(interval) if first_delay is None else first_delay
        now = datetime.now(timezone.utc)
        self._scheduler.add_job(
            poll,
            IntervalTrigger(seconds=interval, timezone=timezone.utc),
            id=job_id,
            name=job_id,
            next_run_time=now + timedelta(seconds=delay),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval)),
            replace_existing=True,
        )

    def remove(self, job_id: str) -> None:
        if self._scheduler.get_job(job_id) is not None:
            self._scheduler.remove_job(job_id)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _skipped(self, event: JobSubmissionEvent) -> None:
        self._on_overrun(event.job_id)
