"""The schedule: one job per target (or discovery, or chore), never overlapping, on the event loop.

- **Spread.** Each job runs every `interval` seconds at a phase of its own:
  its first run comes after a random delay, and later runs keep that phase
  (the per-target jitter). The window of first delays grows with the number
  of jobs: 10% of the interval, at most 10 s, for a few hundred targets, so
  nobody waits long for data; up to the whole interval for thousands, so
  that 10,000 targets start at most `FIRST_RUNS_PER_SECOND` a second instead
  of in one burst, and every later minute is as even.
- **Never overlapping.** A job due while its previous run is still going is
  skipped and reported once to its `on_overrun`, never stacked. A run that
  ends within `OVERRUN_GRACE` of the due time (a poll stopped by a deadline
  equal to its interval ends just when the next is due) is not an overrun:
  the next run starts when it ends.
- **Coalesced.** After a stall (a suspended VM) missed runs collapse into one.
- **Quiet shutdown.** `shutdown()` cancels the runs in flight and waits for
  them; a cancelled run logs nothing.

Jobs are kept by typed keys (`Job`): a target's poll, a source's discovery,
or a chore of the process (expiry, config watch).

Why not APScheduler (used before): at 10,000 jobs its cost per run was fine
(~0.1 ms), but it logged a traceback per job cancelled at shutdown, logged
every overrun itself (so each was logged twice), could not wait for the
runs it cancelled, and had no notion of a run ending at the due time. Here
one timer on the event loop and a heap of due times do the same work in
O(log n) per run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from exporter.model import TargetKey

log = logging.getLogger(__name__)

FIRST_POLL_MAX_DELAY = 10.0
# Above this many jobs per interval, first runs are spread wider than 10 s.
FIRST_RUNS_PER_SECOND = 200.0
# A run still going this long after its next due time is an overrun.
OVERRUN_GRACE = 0.5


@dataclass(frozen=True, slots=True)
class Discovery:
    """The job that lists a source's targets upstream."""

    source: str


@dataclass(frozen=True, slots=True)
class Chore:
    """A job of the process itself (expiry, config watch)."""

    name: str


Job = TargetKey | Discovery | Chore


def first_poll_delay(interval: float, jobs: int = 1) -> float:
    """A random first delay: within 10% of the interval (at most 10 s), or
    wider when `jobs` jobs could not all start in that window at
    `FIRST_RUNS_PER_SECOND`; never beyond the interval."""
    window = max(min(0.1 * interval, FIRST_POLL_MAX_DELAY), jobs / FIRST_RUNS_PER_SECOND)
    return random.uniform(0, min(window, interval))


@dataclass(eq=False, slots=True)
class _Entry:
    job: Job
    interval: float
    run: Callable[[], Awaitable[object]]
    on_overrun: Callable[[], None] | None
    first_delay: float | None
    due: float = 0.0  # loop time of the next run
    task: asyncio.Task[None] | None = None
    # The due time of a run that came due while the previous one was still going.
    waiting: float | None = None
    removed: bool = False


class Poller:
    def __init__(self) -> None:
        self._jobs: dict[Job, _Entry] = {}
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_interval: dict[float, int] = {}
        # Called with each run's lag (start - due, seconds): for benchmarks.
        self.observe_lag: Callable[[float], None] | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    def __len__(self) -> int:
        return len(self._jobs)

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
        (default: a random delay, see `first_poll_delay`). Replaces a job with the same key."""
        self.remove(job)
        entry = _Entry(job, interval, run, on_overrun, first_delay)
        self._jobs[job] = entry
        self._per_interval[interval] = self._per_interval.get(interval, 0) + 1
        if self._loop is not None:
            self._plan_first(entry)

    def remove(self, job: Job) -> asyncio.Task[None] | None:
        """Stop scheduling the job. Returns its run in flight, if any, for the
        caller to cancel or wait for (it is not cancelled here)."""
        entry = self._jobs.pop(job, None)
        if entry is None:
            return None
        entry.removed = True  # its heap item is skipped when it comes up
        self._per_interval[entry.interval] -= 1
        return entry.task

    def next_runs(self) -> dict[Job, float]:
        """When each job runs next (Unix time), for the status page. Safe
        from any thread: it reads a copy of the job table (one C-level copy
        under the GIL) and each entry's due time, a float."""
        loop = self._loop
        if loop is None:
            return {}
        offset = time.time() - loop.time()
        return {job: entry.due + offset for job, entry in list(self._jobs.items()) if not entry.removed}

    def start(self) -> None:
        """Plan every job's first run and start the timer (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        for entry in self._jobs.values():
            self._plan_first(entry)

    async def shutdown(self) -> None:
        """Stop the timer, cancel the runs in flight and wait for them to end."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None
        self._heap.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- the timer ------------------------------------------------------------------------------

    def _plan_first(self, entry: _Entry) -> None:
        assert self._loop is not None
        if entry.first_delay is None:
            delay = first_poll_delay(entry.interval, self._per_interval[entry.interval])
        else:
            delay = entry.first_delay
        self._push(entry, self._loop.time() + delay)

    def _push(self, entry: _Entry, due: float, arm: bool = True) -> None:
        entry.due = due
        heapq.heappush(self._heap, (due, next(self._seq), entry))
        if arm and due < self._timer_at:
            self._arm(due)

    def _arm(self, at: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        """Start every job that is due, plan its next run, re-arm the timer."""
        assert self._loop is not None
        self._timer, self._timer_at = None, float("inf")
        now = self._loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, entry = heapq.heappop(heap)
            if entry.removed or entry.due != due:
                continue
            # Coalesce: the next run is the first slot after now on the job's phase.
            behind = int((now - due) // entry.interval) + 1
            self._push(entry, due + behind * entry.interval, arm=False)
            if entry.task is None:
                self._start(entry, now - due)
            elif entry.waiting is None:
                entry.waiting = due
                self._loop.call_later(min(OVERRUN_GRACE, entry.interval / 4), self._overran, entry)
        if heap:
            self._arm(heap[0][0])

    def _start(self, entry: _Entry, lag: float) -> None:
        assert self._loop is not None
        if self.observe_lag is not None:
            self.observe_lag(lag)
        task = self._loop.create_task(self._guard(entry), name=str(entry.job))
        entry.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._ended(entry, done))

    async def _guard(self, entry: _Entry) -> None:
        try:
            await entry.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a job's bug must not stop the schedule
            log.exception("job %s failed", entry.job)

    def _ended(self, entry: _Entry, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        entry.task = None
        due, entry.waiting = entry.waiting, None
        if due is not None and not entry.removed and self._loop is not None:
            # Ended within the grace after the next run was due: that run
            # starts now, late but not skipped.
            self._start(entry, self._loop.time() - due)

    def _overran(self, entry: _Entry) -> None:
        if entry.waiting is None:
            return  # the previous run ended within the grace
        entry.waiting = None
        if not entry.removed and self._loop is not None and entry.on_overrun is not None:
            entry.on_overrun()
