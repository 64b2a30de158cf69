"""Poll one target: call its source, record the outcome, hand a snapshot to every sink.

A failing poll never escapes: every exception maps to a `reason` on
`apimetrics_poll_errors_total`, the previous vendor series stay (until
`max_staleness`), and other targets go on. A failure is logged once when it
starts or changes reason, at DEBUG while it repeats, and the recovery once at
INFO, so a target down for a day does not flood the logs. Its message is
stored with every secret masked (`logs.REDACTOR`): the status page and its
JSON show it as stored.

A target's times are those of a poll's end, when its outcome is known:
`last_poll` (any outcome) and `last_success` are taken from the same clock
at the same moment, so the last success is never later than the last poll.
What went partly wrong in a poll that still succeeded (data refused for a
metric, label values cut, series dropped, ticks skipped while it ran) is
kept as the target's `warnings`, those of its last poll.

Every change of a target (a successful poll, a failure, an overrun, an
expiry, its removal) becomes one `Snapshot` handed to every sink. The runner
imports no sink: it knows them only as `Sink.publish`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from exporter.config.limits import LimitsConfig
from exporter.errors import PollError
from exporter.ledger.registry import Ledgers
from exporter.limits import SeriesCap, truncate_labels
from exporter.logs import REDACTOR
from exporter.model import Change, Family, Sample, Sink, Snapshot, TargetKey
from exporter.selfmetrics import TargetStats, target_samples
from exporter.sources.base import AnySource, Target
from exporter.sources.kit.inflight import deadline_after

log = logging.getLogger(__name__)

# From this many samples on, a snapshot is handed to the sinks from a worker
# thread: converting it (rendering, OTLP points) takes milliseconds, which
# would stall the polls of every other target on the event loop.
PUBLISH_IN_THREAD = 2000


@dataclass(frozen=True, slots=True)
class TargetWarning:
    """Something that went partly wrong in a poll that still succeeded.

    `kind` is the reason a source reported (`insufficient_data`, a Flux
    metric's `timeout` when the request budget ran out before the deadline…)
    or one of the runner's own: `labels_truncated`, `series_dropped`,
    `overrun`. `count`: how many times (or values, series, ticks) in the poll."""

    kind: str
    message: str
    count: int = 1


@dataclass
class TargetStatus:
    """What the status page, /readyz and the target's own series show of one target."""

    source: str
    target: str
    interval: float
    # End of the last finished poll (any outcome) and its duration.
    last_poll: float | None = None
    last_duration: float | None = None
    # End of the last successful poll: never later than last_poll.
    last_success: float | None = None
    reason: str | None = None
    message: str = ""  # the failure's text, secrets masked
    polls: int = 0
    failures: int = 0
    warnings: tuple[TargetWarning, ...] = ()  # of the last finished poll
    stats: TargetStats = field(default_factory=TargetStats, repr=False)
    running: bool = field(default=False, repr=False)
    # The vendor series of the last successful poll are served until this time
    # (last success + max_staleness); None while none are.
    live_until: float | None = field(default=None, repr=False)
    # The warnings of the poll in progress, by kind; they become `warnings` when it ends.
    noticed: dict[str, TargetWarning] = field(default_factory=dict, repr=False)
    key: TargetKey = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.key = TargetKey(self.source, self.target)

    @property
    def polled(self) -> bool:
        """A poll has finished: the target's health is known (and /readyz counts it)."""
        return self.last_poll is not None

    @property
    def up(self) -> bool:
        return self.polled and self.reason is None

    def notice(self, kind: str, message: str, count: int = 1) -> bool:
        """Add a warning to the poll in progress (or, between polls, to the
        last one's); True when its kind is new since the previous poll."""
        fresh = kind not in self.noticed and all(w.kind != kind for w in self.warnings)
        message = REDACTOR.redact(message)
        if self.running:
            known = self.noticed.get(kind)
            self.noticed[kind] = TargetWarning(kind, message, count + (known.count if known else 0))
        else:
            others = tuple(w for w in self.warnings if w.kind != kind)
            self.warnings = (*others, TargetWarning(kind, message, count))
        return fresh

    @property
    def series(self) -> int:
        return self.stats.series


class Runner:
    def __init__(
        self,
        sinks: Sequence[Sink],
        ledgers: Ledgers,
        clock: Callable[[], float] = time.time,
        limits: LimitsConfig | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.ledgers = ledgers
        self.limits = limits or LimitsConfig()
        self.series_cap = SeriesCap(self.limits.max_series)
        self.clock = clock
        self.status: dict[TargetKey, TargetStatus] = {}
        self._versions = itertools.count(1)
        # (live_until, source, target) of every successful poll: expire()
        # pops the due ones instead of looking at every target every second.
        # An entry whose target polled again since is stale and skipped.
        # (Plain strings, not a TargetKey: such tuples are not walked by the
        # cyclic garbage collector.)
        self._expiry: list[tuple[float, str, str]] = []
        # Targets whose first poll has not ended (/readyz), and the statuses in
        # (source, target) order for the status page, rebuilt only when targets change.
        self._unpolled = 0
        self._ordered: list[TargetStatus] | None = None

    # --- targets coming and going -----------------------------------------------------------

    def add(self, source: AnySource, target: Target) -> None:
        status = TargetStatus(source.name, target.id, source.interval, stats=TargetStats.starting(source.extra_reasons))
        previous = self.status.get(status.key)
        if previous is not None and not previous.polled:
            self._unpolled -= 1
        self.status[status.key] = status
        self._unpolled += 1
        self._ordered = None
        self._publish_now(status, Change.STATUS)

    def remove(self, key: TargetKey) -> None:
        status = self.status.pop(key, None)
        self.series_cap.forget(key)
        if status is not None:
            self._unpolled -= 0 if status.polled else 1
            self._ordered = None
            self._deliver(Snapshot(key, Change.REMOVED, next(self._versions)))

    @property
    def ready(self) -> bool:
        """Every target's first poll has ended."""
        return self._unpolled == 0

    def ordered(self) -> list[TargetStatus]:
        """Every target's status in (source, target) order (a copy: the
        caller may change it); safe from another thread."""
        ordered = self._ordered
        if ordered is None:
            ordered = sorted(list(self.status.values()), key=lambda s: (s.source, s.target))
            self._ordered = ordered
        return list(ordered)

    # --- what happens to a target between polls ---------------------------------------------

    def overrun(self, key: TargetKey) -> None:
        status = self.status.get(key)
        if status is None:
            return
        status.stats.overruns += 1
        skipped = status.noticed.get("overrun")
        count = (skipped.count if skipped is not None else 0) + 1
        status.notice("overrun", f"{count} scheduled poll(s) skipped: the poll was still running after "
                                 f"its {status.interval:g}s interval", 1)
        self._publish_now(status, Change.STATUS)
        log.warning("poll of %s skipped: the previous poll is still running", key,
                    extra={"source": key.source, "target": key.target})

    def expire(self, now: float | None = None) -> None:
        """Drop the vendor series of targets with no successful poll within
        their max_staleness: stale data is never served as fresh forever."""
        now = self.clock() if now is None else now
        while self._expiry and self._expiry[0][0] < now:
            until, source, target = heapq.heappop(self._expiry)
            status = self.status.get(TargetKey(source, target))
            if status is None or status.live_until != until:
                continue  # removed, or polled successfully since
            status.live_until = None
            status.stats.expired += 1
            status.stats.series = 0
            self._publish_now(status, Change.EXPIRED)
            log.warning("dropped the snapshot of %s: no successful poll for %.0fs (max_staleness)", status.key,
                        now - (status.last_success or now), extra={"source": status.source, "target": status.target})

    def report(self, source: str, target: str, error: PollError) -> None:
        """A partial problem: part of a target's data could not be read (one
        Flux metric, one WhatsApp metric refused for lack of data) while the
        rest was. Counted under its reason; the target stays up."""
        status = self.status.get(TargetKey(source, target))
        if status is None:
            return  # the target was removed meanwhile
        status.stats.count_error(error.reason)
        if not status.running:  # during a poll, the poll's end publishes
            self._publish_now(status, Change.STATUS)
        fresh = status.notice(error.reason, error.message)
        what = "partial failure" if error.log_level >= logging.WARNING else "partial data"
        log.log(error.log_level if fresh else logging.DEBUG, "poll of %s/%s: %s (%s): %s",
                source, target, what, error.reason, error.message,
                extra={"source": source, "target": target, "reason": error.reason})

    # --- a poll -------------------------------------------------------------------------------

    async def poll(self, source: AnySource, target: Target) -> bool:
        """One poll of one target; True on success. Never raises (but on cancel)."""
        status = self.status[target.key]
        status.running = True
        status.noticed = {}
        started = time.monotonic()
        kept: tuple[Sample, ...] | None = None
        try:
            with deadline_after(source.poll_timeout):
                async with asyncio.timeout(source.poll_timeout):
                    samples = await source.poll(target)
            kept = self._bounded(status, source, samples)
        except PollError as exc:
            self._failed(status, exc.reason, exc.message)
        except TimeoutError:
            self._failed(status, "timeout", f"poll did not finish within {source.poll_timeout:g}s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a source must not stop the others
            self._crashed(status, exc)
        finally:
            status.running = False
            status.polls += 1
            status.last_duration = time.monotonic() - started
            status.stats.observe_duration(status.last_duration)
        ended = self.clock()
        if kept is None:
            self._ended(status, ended)
            self._publish_now(status, Change.STATUS)
            return False
        return await self._succeeded(status, source, kept, ended)

    def _ended(self, status: TargetStatus, ended: float) -> None:
        """The poll's end, once its outcome is set: the page sees both together."""
        if status.last_poll is None and self.status.get(status.key) is status:
            self._unpolled -= 1
        status.last_poll = ended
        status.warnings = tuple(status.noticed.values())

    def _bounded(self, status: TargetStatus, source: AnySource, samples: list[Sample]) -> tuple[Sample, ...]:
        """Samples within the label-length and series caps; what was cut is
        counted and logged once per poll."""
        key = status.key
        extra = {"source": key.source, "target": key.target}
        samples, cut = truncate_labels(samples, self.limits.max_label_bytes)
        if cut:
            status.stats.labels_truncated += cut
            status.notice("labels_truncated", f"{cut} label value(s) longer than {self.limits.max_label_bytes} "
                                              "bytes were truncated", cut)
            log.warning("%s: %d label value(s) longer than %d bytes were truncated", key, cut,
                        self.limits.max_label_bytes, extra=extra)
        kept, dropped = self.series_cap.admit(key, deduplicate(samples, str(key)), source.config.max_series)
        if dropped:
            status.stats.series_dropped += dropped
            status.notice("series_dropped", f"{dropped} new series dropped: max_series reached (target "
                                            f"{source.config.max_series}, all targets {self.limits.max_series})",
                          dropped)
            log.warning("%s: %d new series dropped: max_series reached (target %d, all targets %d)", key,
                        dropped, source.config.max_series, self.limits.max_series, extra=extra)
        return kept

    async def _succeeded(self, status: TargetStatus, source: AnySource, samples: tuple[Sample, ...],
                         now: float) -> bool:
        limit = source.staleness_limit
        stats = replace(status.stats, up=True, last_success=now, series=len(samples))
        snapshot = self._snapshot(status.key, stats, Change.POLLED, samples, now, limit)
        try:
            if len(samples) >= PUBLISH_IN_THREAD:
                await asyncio.to_thread(self._deliver, snapshot, True)
            else:
                self._deliver(snapshot, True)
        except Exception as exc:  # no sink could show it (e.g. text that cannot be written): keep the previous
            self._crashed(status, exc)
            self._ended(status, now)
            self._publish_now(status, Change.STATUS)
            return False
        if status.reason is not None and status.polled:
            log.info("target %s recovered after %d failed poll(s)", status.key, status.failures,
                     extra={"source": status.source, "target": status.target})
        status.stats = stats
        status.reason, status.message, status.failures = None, "", 0
        status.last_success, status.live_until = now, now + limit
        heapq.heappush(self._expiry, (status.live_until, status.source, status.target))
        self._ended(status, now)
        # Saved only after a successful poll: a failed one changed nothing worth
        # keeping. In a thread: a write and two fsyncs each would hold up every
        # other target's poll on the event loop (10,000 targets: ~170 saves a second).
        if self.ledgers.persistent:
            await asyncio.to_thread(self.ledgers.save, status.source, status.target)
        return True

    def _failed(self, status: TargetStatus, reason: str, message: str, logged: bool = False) -> None:
        changed = reason != status.reason
        # Masked once, here: what a vendor echoes (an Authorization header in a
        # 401 body) must not reach the status page, its JSON or the log.
        message = REDACTOR.redact(message)
        status.reason, status.message = reason, message
        status.failures += 1
        status.stats.count_error(reason)
        status.stats.up = False
        if not logged:
            level = logging.WARNING if changed else logging.DEBUG
            log.log(level, "poll of %s failed (%s): %s", status.key, reason, message,
                    extra={"source": status.source, "target": status.target, "reason": reason})

    def _crashed(self, status: TargetStatus, exc: Exception) -> None:
        log.error("poll of %s crashed", status.key, exc_info=exc,
                  extra={"source": status.source, "target": status.target})
        self._failed(status, "internal", f"{type(exc).__name__}: {exc}", logged=True)

    # --- snapshots -------------------------------------------------------------------------------

    def _snapshot(self, key: TargetKey, stats: TargetStats, change: Change, samples: tuple[Sample, ...] = (),
                  taken_at: float = 0.0, max_staleness: float = 0.0) -> Snapshot:
        ledger = self.ledgers.peek(key)
        corrections = (ledger.corrections_total, ledger.created) if ledger is not None else None
        own = tuple(target_samples(key, stats, corrections))
        return Snapshot(key, change, next(self._versions), own, samples, taken_at, max_staleness)

    def _publish_now(self, status: TargetStatus, change: Change) -> None:
        """A snapshot of the target's own series (small: never worth a thread)."""
        if self.status.get(status.key) is not status:
            return  # removed meanwhile
        try:
            self._deliver(self._snapshot(status.key, status.stats, change, taken_at=self.clock()))
        except Exception:
            log.exception("a sink failed to take the status of %s", status.key)

    def _deliver(self, snapshot: Snapshot, strict: bool = False) -> None:
        """Hand the snapshot to every sink. With `strict`, the first sink that
        fails makes the poll fail (it could not show the data); otherwise a
        sink's failure is logged and the others still get it."""
        for sink in self.sinks:
            try:
                sink.publish(snapshot)
            except Exception:
                if strict:
                    raise
                log.exception("sink %s failed to take the snapshot of %s", type(sink).__name__, snapshot.key)


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
