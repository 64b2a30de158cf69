"""Scheduler: first poll soon, jittered; one run per job at a time; overruns counted."""

from __future__ import annotations

import asyncio

from exporter.model import TargetKey
from exporter.poller import FIRST_POLL_MAX_DELAY, Poller, first_poll_delay


def test_first_poll_delay_is_at_most_ten_percent_capped() -> None:
    delays = [first_poll_delay(60) for _ in range(500)]
    assert all(0 <= d <= 6 for d in delays)
    assert max(delays) > 3  # spread, not all at zero
    assert all(0 <= first_poll_delay(3600) <= FIRST_POLL_MAX_DELAY for _ in range(500))


def test_runs_never_overlap_and_overruns_are_counted() -> None:
    overruns: list[str] = []
    running = 0
    most = 0
    runs = 0

    async def slow_poll() -> None:
        nonlocal running, most, runs
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.35)
        running -= 1
        runs += 1

    async def scenario() -> None:
        scheduler = Poller()
        key = TargetKey("k6", "1")
        scheduler.add(key, 0.1, slow_poll, on_overrun=lambda: overruns.append(str(key)))
        scheduler.start()
        await asyncio.sleep(1.3)
        await scheduler.shutdown()

    asyncio.run(scenario())
    assert most == 1
    assert runs >= 2
    assert overruns and set(overruns) == {"k6/1"}


def test_each_job_runs_at_its_own_phase() -> None:
    # Jobs due at different moments each run then, not when an earlier one's next run is due.
    started: dict[str, float] = {}

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        scheduler = Poller()
        begin = loop.time()
        for i, delay in enumerate((0.05, 0.3, 0.6, 0.9)):
            name = f"job-{i}"

            async def run(name: str = name) -> None:
                started.setdefault(name, loop.time() - begin)

            scheduler.add(TargetKey("s", name), 30.0, run, first_delay=delay)
        scheduler.start()
        await asyncio.sleep(2.0)
        await scheduler.shutdown()
        return begin

    asyncio.run(scenario())
    assert sorted(started) == ["job-0", "job-1", "job-2", "job-3"]
    # Each within a second of its own first delay (the next runs are 30 s away).
    assert all(started[f"job-{i}"] < delay + 1.0 for i, delay in enumerate((0.05, 0.3, 0.6, 0.9)))


def test_first_runs_of_many_jobs_spread_over_a_wider_window() -> None:
    assert all(0 <= first_poll_delay(60, 10_000) <= 60 for _ in range(200))
    assert max(first_poll_delay(60, 10_000) for _ in range(200)) > 30  # not within the first 6 s
    assert max(first_poll_delay(60, 100) for _ in range(200)) <= 6


def test_shutdown_cancels_runs_in_flight_and_waits_for_them() -> None:
    ended: list[str] = []

    async def scenario() -> None:
        scheduler = Poller()

        async def long_poll() -> None:
            try:
                await asyncio.sleep(30)
            finally:
                ended.append("cancelled")

        scheduler.add(TargetKey("s", "t"), 60.0, long_poll, first_delay=0)
        scheduler.start()
        await asyncio.sleep(0.1)
        await scheduler.shutdown()
        assert ended == ["cancelled"]  # ended before shutdown() returned

    asyncio.run(scenario())
