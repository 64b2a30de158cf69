"""`once`: poll the selected targets once, print their series, summarise on stderr.

A test tool, like `telegraf --test --input-filter`: `--source NAME` and
`--target ID` (or `SOURCE/ID`), both repeatable, pick what is polled (sources
first, then, after discovery, their targets); stdout gets the vendor series
only, the `apimetrics_*` self-metrics too with `--self-metrics`; stderr ends
with one line per target (status, reason, series, duration). Exit 1 when a
selected target (or a selected source's discovery) failed, 2 when a selection
names nothing.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import replace

from prometheus_client import CollectorRegistry

from exporter.app import App
from exporter.app.settings import Settings
from exporter.cli.common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from exporter.cli.run import simulator_for
from exporter.model import Snapshot
from exporter.runner import TargetStatus
from exporter.sinks.prometheus import PrometheusSink
from exporter.sources import Target
from exporter.sources.base import AnySource


class VendorSeries:
    """A Prometheus sink that is handed only the vendor series of each snapshot."""

    def __init__(self) -> None:
        self.sink = PrometheusSink(CollectorRegistry(auto_describe=False))

    def publish(self, snapshot: Snapshot) -> None:
        self.sink.publish(replace(snapshot, own=()))

    def text(self) -> bytes:
        return self.sink.text()


async def once(settings: Settings, sources: Sequence[str] = (), targets: Sequence[str] = (),
               self_metrics: bool = False, json_lines: bool = False) -> int:
    names = [source.name for source in settings.sources]
    unknown = [name for name in sources if name not in names]
    if unknown:
        print(f"once: no source named {', '.join(unknown)}; the config has: {', '.join(names)}", file=sys.stderr)
        return EXIT_CONFIG
    if sources:
        settings = settings.model_copy(update={"sources": [s for s in settings.sources if s.name in sources]})
    with simulator_for(settings) as simulator_url:
        return await _once(App(settings, simulator_url=simulator_url), targets, self_metrics, json_lines)


def _selected(source: AnySource, target: Target, wanted: Sequence[str]) -> bool:
    return not wanted or target.id in wanted or str(target.key) in wanted


async def _once(app: App, wanted: Sequence[str], self_metrics: bool, json_lines: bool) -> int:
    vendor = VendorSeries()
    app.build()
    app.runner.sinks.append(vendor)
    try:
        discovery = {source.name: await app.discover(source) for source in app.sources}
        chosen = [(s, t) for s, t in app.targets if _selected(s, t, wanted)]
        missing = [w for w in wanted if not any(_selected(s, t, [w]) for s, t in chosen)]
        if missing and all(discovery.values()):
            known = ", ".join(str(t.key) for _, t in app.targets) or "none"
            print(f"once: no target {', '.join(missing)}; the selected sources have: {known}", file=sys.stderr)
            return EXIT_CONFIG
        for _, target in app.targets:
            if not any(t is target for _, t in chosen):
                app.runner.remove(target.key)  # nor its own series in the output
        results = await asyncio.gather(*(app.runner.poll(s, t) for s, t in chosen))
    finally:
        await app.stop()
    sys.stdout.write((app.exposition() if self_metrics else vendor.text()).decode())
    sys.stdout.flush()
    statuses = [app.runner.status[t.key] for _, t in chosen]
    failed_discovery = [name for name, ok in discovery.items() if not ok]
    sys.stderr.write((summary_json if json_lines else summary)(statuses, failed_discovery))
    return EXIT_OK if all(results) and not failed_discovery else EXIT_FAILED


def _reason(status: TargetStatus) -> str:
    if status.up and status.warnings:
        return "partial: " + ", ".join(sorted(warning.kind for warning in status.warnings))
    return status.reason or ""


def summary(statuses: Sequence[TargetStatus], failed_discovery: Sequence[str] = ()) -> str:
    """A table of the polled targets, then a count."""
    rows = [("SOURCE", "TARGET", "STATUS", "REASON", "SERIES", "DURATION")]
    for status in statuses:
        rows.append((status.source, status.target, "up" if status.up else "down", _reason(status) or "-",
                     str(status.series), f"{status.stats.duration_sum:.3f}s"))
    for name in failed_discovery:
        rows.append((name, "(discovery)", "down", "discovery failed (see the log)", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    up = sum(status.up for status in statuses)
    lines.append(f"once: {len(statuses)} target(s): {up} up, {len(statuses) - up} down"
                 + (f"; discovery failed for {', '.join(failed_discovery)}" if failed_discovery else ""))
    return "\n".join(lines) + "\n"


def summary_json(statuses: Sequence[TargetStatus], failed_discovery: Sequence[str] = ()) -> str:
    """The summary with `--log-format json`: one object per target, like the log lines around it."""
    lines = [json.dumps({"summary": "target", "source": s.source, "target": s.target,
                         "status": "up" if s.up else "down", "reason": _reason(s) or None, "series": s.series,
                         "duration_seconds": round(s.stats.duration_sum, 6)}) for s in statuses]
    lines += [json.dumps({"summary": "discovery", "source": name, "status": "down"}) for name in failed_discovery]
    return "\n".join(lines) + "\n" if lines else ""
