"""The schedule: APScheduler jobs, one per target, never overlapping.

- The first poll comes soon after start: a random delay of at most 10% of the
  interval, capped at 10 s, so many targets do not all fire at once yet nobody
  waits long for data.
- `max_instances=1`: an overrun (a job still running when the next run is
  due) is skipped, never stacked, and reported to the job's own `on_overrun`.
- `coalesce=True`: misfires after a stall collapse into one run.

Jobs are kept by typed keys (`Job`): a target's poll, a source's discovery,
or a chore of the process (expiry, config watch). APScheduler wants string
ids, so each job gets an opaque one and the poller maps it back; an id is
never parsed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter.model import TargetKey

FIRST_POLL_MAX_DELAY = 10.0


@dataclass(frozen=True, slots=True)
class Discovery:
    """The job that lists a source's targets upstream."""

    source: str


@dataclass(frozen=True, slots=True)
class Chore:
    """A job of the process itself (expiry, config watch)."""

    name: str


Job = TargetKey | Discovery | Chore


def first_poll_delay(interval: float) -> float:
    return random.uniform(0, min(0.1 * interval, FIRST_POLL_MAX_DELAY))


@dataclass(slots=True)
class _Entry:
    id: str
    on_overrun: Callable[[], None] | None


class Poller:
    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)
        self._jobs: dict[Job, _Entry] = {}
        self._by_id: dict[str, Job] = {}
        self._ids = itertools.count()

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def add(
        self,
        job: Job,
        interval: float,
        run: Callable[[], Awaitable[object]],
        *,
        first_delay: float | None = None,
        on_overrun: Callable[[], None] | None = None,
    ) -> None:
        """Run `run` every `interval` seconds, the first time after `first_delay`
        (default: a small random delay). Replaces a job with the same key."""
        self.remove(job)
        entry = _Entry(f"job-{next(self._ids)}", on_overrun)
        self._jobs[job] = entry
        self._by_id[entry.id] = job
        delay = first_poll_delay(interval) if first_delay is None else first_delay
        self._scheduler.add_job(
            run,
            IntervalTrigger(seconds=interval, timezone=UTC),
            id=entry.id,
            name=str(job),
            next_run_time=datetime.now(UTC) + timedelta(seconds=delay),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval)),
        )

    def remove(self, job: Job) -> None:
        entry = self._jobs.pop(job, None)
        if entry is None:
            return
        del self._by_id[entry.id]
        if self._scheduler.get_job(entry.id) is not None:
            self._scheduler.remove_job(entry.id)

    def next_runs(self) -> dict[Job, float]:
        """When each job runs next (Unix time). Safe from any thread (the
        status page asks from the HTTP thread): APScheduler reads its job
        store under a lock, and the id → key map is only read here."""
        found: dict[Job, float] = {}
        for scheduled in self._scheduler.get_jobs():
            job = self._by_id.get(scheduled.id)
            when = getattr(scheduled, "next_run_time", None)  # None while paused
            if job is not None and when is not None:
                found[job] = when.timestamp()
        return found

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _skipped(self, event: JobSubmissionEvent) -> None:
        job = self._by_id.get(event.job_id)
        entry = self._jobs.get(job) if job is not None else None
        if entry is not None and entry.on_overrun is not None:
            entry.on_overrun()
