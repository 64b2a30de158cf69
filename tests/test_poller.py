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
