"""The Flux source's log lines: one logger for the package, and a memory of what was said once.

Follows no seed doc: it only keeps the source's logging as it was when the
source was one module. Problems that repeat every poll (a collision, a metric
whose type is unknown, a server that ignores `group_by`) are logged the first
time only; their counters (`apimetrics_poll_errors_total`) keep counting.
"""

from __future__ import annotations

import logging

# The name the source logged under as one module: text lines and the JSON
# `logger` field show it, and logging configs may select it.
log = logging.getLogger("exporter.sources.flux")


class Notes:
    """Log lines of one source, tagged with its name; `once` says each key's line a single time."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._said: set[object] = set()

    def say(self, level: int, message: str, *args: object) -> None:
        log.log(level, message, *args, extra={"source": self.source})

    def once(self, key: object, level: int, message: str, *args: object) -> None:
        if key in self._said:
            return
        self._said.add(key)
        self.say(level, message, *args)
