"""`once`: poll every target once and print the exposition; exit 1 if any failed."""

from __future__ import annotations

import sys

from exporter.app import App
from exporter.app.settings import Settings
from exporter.cli.common import EXIT_FAILED, EXIT_OK
from exporter.cli.run import simulator_for


async def once(settings: Settings) -> int:
    with simulator_for(settings) as simulator_url:
        return await _once(App(settings, simulator_url=simulator_url))


async def _once(app: App) -> int:
    app.build()
    try:
        ok = await app.poll_all()
    finally:
        await app.stop()
    sys.stdout.write(app.exposition().decode())
    sys.stdout.flush()
    return EXIT_OK if ok else EXIT_FAILED
