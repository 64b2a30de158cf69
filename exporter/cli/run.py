"""`run`: the daemon, until SIGTERM/SIGINT; SIGHUP reloads the config."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from exporter.app.settings import Settings
from exporter.cli.common import EXIT_OK, log

if TYPE_CHECKING:
    from exporter.app import App


@contextmanager
def simulator_for(settings: Settings) -> Iterator[str | None]:
    """The built-in simulator when `[simulator] enabled`: its URL, else None."""
    if not settings.simulator.enabled:
        yield None
        return
    from exporter.simulator import Simulator

    sim = settings.simulator
    with Simulator(sim.listen, seed=sim.seed, freeze_time=sim.freeze_time,
                   hostile_fixtures=sim.hostile_fixtures) as simulator:
        log.info("simulator serving the vendor APIs on %s", simulator.url)
        yield simulator.url


async def run(settings: Settings, config_path: str | None = None) -> int:
    from exporter.app import App

    with simulator_for(settings) as simulator_url:
        return await _run(App(settings, config_path=config_path, simulator_url=simulator_url))


async def _run(app: App) -> int:
    from exporter.app import keep_settled, settle_heap

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[str | None]] = set()

    def reload() -> None:
        task = loop.create_task(app.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await app.start()
    settle_heap()  # and again when the first polls have ended, hourly, and the young objects every second (app/heap.py)
    settling = loop.create_task(keep_settled(app))
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        settling.cancel()
        await app.stop()
    return EXIT_OK
