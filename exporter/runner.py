"""Poll one target: call its source, record the outcome, swap its snapshot.

A failing poll never escapes: every exception maps to a `reason` on
`apimetrics_poll_errors_total`, the previous snapshot stays (until it expires),
and other targets go on. A failure is logged once when it starts or changes
reason, at DEBUG while it repeats, and the recovery once at INFO, so a target
down for a day does not flood the logs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.errors import PollError
from exporter.ledgers import Ledgers
from exporter.limits import LimitsConfig, SeriesBudget, truncate_labels
from exporter.model import Family, Sample
from exporter.selfmetrics import SelfMetrics
from exporter.sources.base import Source, Target
from exporter.sinks.exposition import Block, render_blocks
from exporter.store import Snapshot, Store, Stored

log = logging.getLogger(__name__)

# Store key prefix of a target's own series (`apimetrics_target_up`…), kept
# apart from its vendor series: they change on failures too.
SELF = "\x00"


@dataclass
class TargetStatus:
    """What the landing page and /readyz show about one target."""

    source: str
    target: str
    interval: float
    last_attempt: float | None = None
    last_success: float | None = None
    reason: str | None = None
    message: str = ""
    series: int = 0
    polls: int = 0
    failures: int = 0
    running: bool = field(default=False, repr=False)
    # Reasons of partial problems (reported by the source, poll still succeeded)
    # in the previous and the current poll: a reason is logged when it appears.
    partial_before: set[str] = field(default_factory=set, repr=False)
    partial_now: set[str] = field(default_factory=set, repr=False)

    @property
    def tried(self) -> bool:
        return self.last_attempt is not None

    @property
    def up(self) -> bool:
        return self.tried and self.reason is None


class Runner:
    def __init__(
        self,
        store: Store,
        metrics: SelfMetrics,
        ledgers: Ledgers,
        clock: Callable[[], float] = time.time,
        limits: LimitsConfig | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.ledgers = ledgers
        self.limits = limits or LimitsConfig()
        self.budget = SeriesBudget(self.limits.max_series)
        self.clock = clock
        self.status: dict[tuple[str, str], TargetStatus] = {}
        # Called with every new snapshot, after it is stored (the OTLP sink
        # listens here). A listener must not block: it runs on the event loop.
        self.listeners: list[Callable[[Snapshot], None]] = []

    def add(self, source: Source, target: Target) -> None:
        self.status[(source.name, target.id)] = TargetStatus(source.name, target.id, source.config.interval)
        self.metrics.add_target(source.name, target.id, source.extra_reasons)
        self.publish_self(source.name, target.id)

    def remove(self, source: str, target: str) -> None:
        self.status.pop((source, target), None)
        self.budget.forget((source, target))
        self.store.drop(source, target)
        self.store.drop(SELF + source, target)
        self.metrics.remove_target(source, target)

    def publish_self(self, source: str, target: str) -> None:
        """Render the target's own series into the store after they changed,
        so that a scrape never renders them (see selfmetrics.py)."""
        if (source, target) not in self.status:
            return  # removed meanwhile
        blocks = render_blocks(self.metrics.target_samples(source, target))
        self.store.put(Stored(SELF + source, target, tuple(blocks), 0.0, math.inf))

    def overrun(self, source: str, target: str) -> None:
        self.metrics.poll_overruns.labels(source, target).inc()
        self.publish_self(source, target)
        log.warning("poll of %s/%s skipped: the previous poll is still running", source, target,
                    extra={"source": source, "target": target})

    async def poll(self, source: Source, target: Target) -> bool:
        """One poll of one target; True on success. Never raises (but on cancel)."""
        status = self.status[(source.name, target.id)]
        status.running = True
        status.partial_before, status.partial_now = status.partial_now, set()
        started = time.monotonic()
        status.last_attempt = self.clock()
        try:
            async with asyncio.timeout(source.config.poll_timeout):
                samples = await source.poll(target)
            unique = self._bounded(source, target, samples)
            blocks = await render_off_loop(unique)
        except PollError as exc:
            self._failed(status, exc.reason, exc.message)
        except TimeoutError:
            self._failed(status, "timeout", f"poll did not finish within {source.config.poll_timeout:g}s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a source (or in rendering) must not stop the others
            log.exception("poll of %s/%s crashed", source.name, target.id,
                          extra={"source": source.name, "target": target.id})
            self._failed(status, "internal", f"{type(exc).__name__}: {exc}", logged=True)
        else:
            self._succeeded(status, source, unique, blocks)
            return True
        finally:
            status.running = False
            status.polls += 1
            self.metrics.poll_duration.labels(source.name, target.id).observe(time.monotonic() - started)
            self.publish_self(source.name, target.id)
        return False

    def _bounded(self, source: Source, target: Target, samples: list[Sample]) -> tuple[Sample, ...]:
        """Samples within the label-length and series caps; what was cut is
        counted and logged once per poll."""
        where = f"{source.name}/{target.id}"
        samples, cut = truncate_labels(samples, self.limits.max_label_bytes)
        if cut:
            self.metrics.labels_truncated.labels(source.name, target.id).inc(cut)
            log.warning("%s: %d label value(s) longer than %d bytes were truncated", where, cut,
                        self.limits.max_label_bytes, extra={"source": source.name, "target": target.id})
        kept, dropped = self.budget.admit((source.name, target.id), deduplicate(samples, where),
                                          source.config.max_series)
        if dropped:
            self.metrics.series_dropped.labels(source.name, target.id).inc(dropped)
            log.warning("%s: %d new series dropped: max_series reached (target %d, all targets %d)", where,
                        dropped, source.config.max_series, self.limits.max_series,
                        extra={"source": source.name, "target": target.id})
        return kept

    def report(self, source: str, target: str, error: PollError) -> None:
        """A partial problem: part of a target's data could not be read (one
        Flux metric, one WhatsApp metric refused for lack of data) while the
        rest was. Counted under its reason; the target stays up."""
        status = self.status.get((source, target))
        if status is None:
            return  # the target was removed meanwhile
        self.metrics.count_error(source, target, error.reason)
        if not status.running:  # during a poll, the poll's end publishes
            self.publish_self(source, target)
        fresh = error.reason not in status.partial_before and error.reason not in status.partial_now
        status.partial_now.add(error.reason)
        log.log(logging.WARNING if fresh else logging.DEBUG, "poll of %s/%s: partial failure (%s): %s",
                source, target, error.reason, error.message,
                extra={"source": source, "target": target, "reason": error.reason})

    def _succeeded(
        self, status: TargetStatus, source: Source, unique: tuple[Sample, ...], blocks: list[Block]
    ) -> None:
        now = self.clock()
        limit = source.config.staleness_limit
        for family in self.store.put(Stored(status.source, status.target, tuple(blocks), now, limit)):
            log.warning("%s/%s: family %s has another type in another target; its series are dropped",
                        status.source, status.target, family.name)
        snapshot = Snapshot(status.source, status.target, unique, now, limit)
        for listener in self.listeners:
            try:
                listener(snapshot)
            except Exception:  # a sink's bug must not fail the poll
                log.exception("snapshot listener failed for %s/%s", status.source, status.target)
        # Saved only after a successful poll: a failed one changed nothing worth keeping.
        self.ledgers.save(status.source, status.target)
        if status.reason is not None and status.tried:
            log.info("target %s/%s recovered after %d failed poll(s)", status.source, status.target,
                     status.failures, extra={"source": status.source, "target": status.target})
        status.reason, status.message, status.failures = None, "", 0
        status.last_success = now
        status.series = len(unique)
        self.metrics.target_up.labels(status.source, status.target).set(1)
        self.metrics.last_success.labels(status.source, status.target).set(now)
        self.metrics.target_series.labels(status.source, status.target).set(len(unique))

    def _failed(self, status: TargetStatus, reason: str, message: str, logged: bool = False) -> None:
        changed = reason != status.reason
        status.reason, status.message = reason, message
        status.failures += 1
        self.metrics.count_error(status.source, status.target, reason)
        self.metrics.target_up.labels(status.source, status.target).set(0)
        if not logged:
            level = logging.WARNING if changed else logging.DEBUG
            log.log(level, "poll of %s/%s failed (%s): %s", status.source, status.target, reason, message,
                    extra={"source": status.source, "target": status.target, "reason": reason})


# Below this many samples rendering takes well under a millisecond: a thread
# hop would cost more than it saves.
RENDER_IN_THREAD = 2000


async def render_off_loop(samples: tuple[Sample, ...]) -> list[Block]:
    """Render a snapshot's blocks; big ones in a thread, so that one large
    target never stalls the polling of the others."""
    if len(samples) < RENDER_IN_THREAD:
        return render_blocks(samples)
    return await asyncio.to_thread(render_blocks, samples)


def deduplicate(samples: list[Sample], where: str) -> tuple[Sample, ...]:
    """Drop repeated series and family-type clashes (first wins), which would
    make the exposition invalid; say so once per poll."""
    kinds: dict[str, Family] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    kept: list[Sample] = []
    dropped = 0
    for sample in samples:
        family = kinds.setdefault(sample.family.name, sample.family)
        key = (sample.family.name, sample.labels)
        if family.kind is not sample.family.kind or key in seen:
            dropped += 1
            continue
        seen.add(key)
        kept.append(sample)
    if dropped:
        log.warning("%s: dropped %d duplicate or conflicting series", where, dropped)
    return tuple(kept)
