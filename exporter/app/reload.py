"""What a config reload changes: the diff between the running config and the new one.

Sources whose config did not change keep their targets, snapshots, counters
and schedule; removed ones go; new or changed ones start (a changed source is
replaced whole, as a restart would). The sections that shape the process
itself (`[server]`, `[simulator]`, `[state]`, `[otlp]`, `[limits]`,
`[sharding]`) are only read at start: their changes are logged and wait for
a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.app.settings import Settings
from exporter.config.source import SourceConfigBase
from exporter.sources.base import AnySource

RESTART_SECTIONS = ("server", "simulator", "state", "otlp", "limits", "sharding")


@dataclass(frozen=True)
class ReloadPlan:
    settings: Settings  # what is in effect after the reload (restart-only sections as they were)
    waiting: tuple[str, ...]  # restart-only sections that changed
    stop: tuple[AnySource, ...]  # running sources removed or changed
    start: tuple[SourceConfigBase, ...]  # sources to start: new or changed


def plan_reload(running: Settings, new: Settings, sources: list[AnySource]) -> ReloadPlan:
    waiting = tuple(key for key in RESTART_SECTIONS if getattr(new, key) != getattr(running, key))
    wanted = {config.name: config for config in new.sources}
    stop = tuple(source for source in sources if wanted.get(source.name) != source.config)
    kept = {source.name for source in sources} - {source.name for source in stop}
    start = tuple(config for name, config in wanted.items() if name not in kept)
    settings = new.model_copy(update={key: getattr(running, key) for key in waiting})
    return ReloadPlan(settings, waiting, stop, start)
