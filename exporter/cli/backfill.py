"""`backfill`: load the vendors' history into Prometheus (an OpenMetrics file for promtool) or over OTLP.

    api-metrics-exporter backfill --since 7d [--until T] [--source NAME]... (--output FILE | --otlp)

Every target of the chosen sources (all by default) is fetched one at a time
through its source's `history()`, the same requests, retries, rate budget and
ledger rules as a poll, and handed as `Change.HISTORY` snapshots to one sink:
the OpenMetrics file (`sinks/openmetrics`, renamed into place only when
complete) or the configured `[otlp]` sink (its batching, retries and queue; a
backfill waits for room in the queue instead of dropping). A vendor error on
one target is reported and the others go on.

Exit codes: 0 everything fetched (and delivered); 1 a target failed (the file
holds the others) or OTLP points were dropped; 2 invalid configuration,
arguments or a range past a vendor's limit; 130 interrupted (SIGINT): no file.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from exporter.app.settings import Settings
from exporter.app.targets import Targets
from exporter.cli.common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from exporter.cli.progress import Progress
from exporter.cli.run import simulator_for
from exporter.config.types import parse_duration
from exporter.errors import PollError
from exporter.ledger.registry import Ledgers
from exporter.limits import truncate_labels
from exporter.model import Change, Sample, Snapshot
from exporter.runner import Runner, deduplicate
from exporter.selfmetrics import ProcessMetrics
from exporter.sources import Target
from exporter.sources.base import AnySource
from exporter.sources.kit.timeparse import parse_timestamp

log = logging.getLogger("exporter.backfill")

EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", required=True, help="a duration back from now (7d, 36h) or an RFC 3339 time")
    parser.add_argument("--until", default=None, help="an RFC 3339 time or a duration back from now (default: now)")
    parser.add_argument("--source", action="append", default=None, metavar="NAME",
                        help="a source name of the config (repeatable; default: every source)")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--output", type=Path, metavar="FILE", help="write OpenMetrics text for promtool")
    out.add_argument("--otlp", action="store_true", help="push through the configured [otlp] sink")


def moment(text: str, now: float, what: str) -> float:
    """`7d` (back from now) or an RFC 3339 time; ValueError naming the option."""
    try:
        return now - parse_duration(text)
    except (ValueError, TypeError):
        pass
    try:
        return parse_timestamp(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is neither a duration (7d, 36h) nor an RFC 3339 time") from None


def time_range(since: str, until: str | None, now: float) -> tuple[float, float]:
    start = moment(since, now, "--since")
    end = now if until is None else moment(until, now, "--until")
    if end > now:
        raise ValueError("--until is in the future")
    if start >= end:
        raise ValueError("--since must be before --until")
    return start, end


class Output(Protocol):
    def publish(self, snapshot: Snapshot) -> None: ...


@dataclass
class Outcome:
    failed: list[str] = field(default_factory=list)
    points: int = 0


async def backfill(settings: Settings, args: argparse.Namespace) -> int:
    now = time.time()
    try:
        since, until = time_range(args.since, args.until, now)
    except ValueError as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.otlp and not settings.otlp.enabled:
        print("backfill: --otlp needs [otlp] enabled = true in the config", file=sys.stderr)
        return EXIT_CONFIG
    with simulator_for(settings) as simulator_url:
        return await Backfill(settings, since, until, simulator_url).run(args)


class Backfill:
    def __init__(self, settings: Settings, since: float, until: float, simulator_url: str | None) -> None:
        self.settings, self.since, self.until = settings, since, until
        self.metrics = ProcessMetrics(CollectorRegistry(auto_describe=False))
        ledgers = Ledgers(None, time.time)
        self.targets = Targets(Runner([], ledgers), ledgers, self.metrics, time.time, simulator_url=simulator_url)
        self.versions = itertools.count(1)

    async def run(self, args: argparse.Namespace) -> int:
        try:
            sources = self._sources(args.source)
            for source in sources:
                source.check_range(self.since, self.until)
        except ValueError as exc:
            print(f"backfill: {exc}", file=sys.stderr)
            await self.targets.close()
            return EXIT_CONFIG
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            if args.otlp:
                return await self._to_otlp(sources)
            return await self._to_file(sources, args.output)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            await self.targets.close()

    def _sources(self, names: list[str] | None) -> list[AnySource]:
        configured = {config.name: config for config in self.settings.sources}
        unknown = [name for name in names or [] if name not in configured]
        if unknown:
            raise ValueError(f"--source {', '.join(unknown)}: no such source (the config has "
                             f"{', '.join(configured) or 'none'})")
        chosen = [configured[name] for name in dict.fromkeys(names or configured)]
        return [self.targets.add_source(config, self.settings.uses_simulator(config)) for config in chosen]

    async def _to_file(self, sources: list[AnySource], path: Path) -> int:
        from exporter.sinks.openmetrics import OpenMetricsFile

        output = OpenMetricsFile(path)
        try:
            outcome = await self._fetch_all(sources, output, room=None)
        except asyncio.CancelledError:
            output.abort()
            print("backfill interrupted: no file written", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BaseException:
            output.abort()
            raise
        output.close()
        log.info("wrote %d point(s) to %s", outcome.points, path)
        return self._verdict(outcome)

    async def _to_otlp(self, sources: list[AnySource]) -> int:
        from exporter.sinks.otlp.sink import OtlpSink, instance_id

        sink = OtlpSink(self.settings.otlp, self.metrics, instance_id(self.settings.server.listen))
        sink.start()
        try:
            outcome = await self._fetch_all(sources, sink, room=sink.room)
            while sink.room() < sink.queue.max_points:  # everything handed over: wait for delivery
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            await sink.stop()
            print("backfill interrupted: the points pushed so far stay with the collector", file=sys.stderr)
            return EXIT_INTERRUPTED
        await sink.stop()
        dropped = sum(s.value for m in self.metrics.registry.collect() for s in m.samples
                      if s.name == "apimetrics_otlp_dropped_points_total")
        if dropped:
            outcome.failed.append(f"{dropped:.0f} OTLP point(s) dropped")
        log.info("pushed %d point(s) over OTLP", outcome.points)
        return self._verdict(outcome)

    def _verdict(self, outcome: Outcome) -> int:
        if outcome.failed:
            print(f"backfill incomplete: {'; '.join(outcome.failed)}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK

    async def _fetch_all(self, sources: list[AnySource], output: Output, room: Any) -> Outcome:
        outcome = Outcome()
        plan: list[tuple[AnySource, list[Target]]] = []
        for source in sources:
            if not await self.targets.discover(source):
                outcome.failed.append(f"{source.name}: target discovery failed")
            plan.append((source, [t for s, t in self.targets.pairs if s is source]))
        with Progress(plan) as progress:
            for source, targets in plan:
                for target in targets:
                    try:
                        points = await self._fetch_one(source, target, output, room)
                    except PollError as exc:
                        log.error("backfill of %s failed (%s): %s", target.key, exc.reason, exc.message)
                        outcome.failed.append(f"{target.key}: {exc.reason}")
                        points = 0
                    except Exception as exc:  # a bug in one source must not lose the others' history
                        log.exception("backfill of %s crashed", target.key)
                        outcome.failed.append(f"{target.key}: {type(exc).__name__}")
                        points = 0
                    outcome.points += points
                    progress.done(source, target, points)
        return outcome

    async def _fetch_one(self, source: AnySource, target: Target, output: Output, room: Any) -> int:
        points = 0
        limits = self.settings.limits
        async for samples in source.history(target, self.since, self.until):
            kept = deduplicate(truncate_labels(samples, limits.max_label_bytes)[0], str(target.key))
            for piece in pieces(kept, None if room is None else max(1, self.settings.otlp.max_queue_points // 2)):
                size = sum(1 + len(sample.history) for sample in piece)
                while room is not None and room() < size:
                    await asyncio.sleep(0.05)  # the collector is behind: wait, never drop
                output.publish(Snapshot(target.key, Change.HISTORY, next(self.versions), (), tuple(piece),
                                        self.until))
                points += size
        return points


def pieces(samples: tuple[Sample, ...], limit: int | None) -> Iterator[list[Sample]]:
    """The samples in lists of at most `limit` points; a sample whose history
    alone is longer is cut into consecutive stretches of it."""
    if limit is None:
        yield list(samples)
        return
    piece: list[Sample] = []
    size = 0
    for sample in samples:
        for part in _cut(sample, limit):
            count = 1 + len(part.history)
            if piece and size + count > limit:
                yield piece
                piece, size = [], 0
            piece.append(part)
            size += count
    if piece:
        yield piece


def _cut(sample: Sample, limit: int) -> Iterator[Sample]:
    history = sample.history
    while len(history) >= limit:
        (when, value), earlier = history[limit - 1], history[:limit - 1]
        yield replace(sample, value=value, timestamp=when, history=earlier)
        history = history[limit:]
    yield replace(sample, history=history)
