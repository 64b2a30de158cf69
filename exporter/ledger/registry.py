"""One period ledger per target, restored from and saved to `[state] dir`.

Without a state dir the ledgers live in memory only, and a restart resets the
counters built on them (a documented counter reset: `_created` moves to the
new start, so `rate()`/`increase()` handle it like any exporter restart).
With it, each ledger is loaded when its target is first polled and saved
atomically after every successful poll, so a restart continues the counters.
A failing save is counted per source (`on_save_failure`) and logged when a
source's saves start failing and when they work again, not once per save;
temporary files an interrupted save left are removed at start.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from exporter.ledger.period import LedgerKey, PeriodLedger
from exporter.ledger.state import LedgerStateStore
from exporter.model import Family, Labels, Sample, TargetKey

log = logging.getLogger(__name__)


class Ledgers:
    """The ledgers of every target, by (source, target). The runner reads each
    target's corrections from here into its own series after a poll."""

    def __init__(self, directory: Path | None, clock: Callable[[], float],
                 on_save_failure: Callable[[str], None] | None = None) -> None:
        self._files = LedgerStateStore(directory) if directory is not None else None
        self._clock = clock
        self._ledgers: dict[TargetKey, PeriodLedger] = {}
        self._lock = threading.Lock()
        self._on_save_failure = on_save_failure
        # Per source, the targets whose last save failed: the source's
        # failing and recovery are logged when this becomes non-empty or empty.
        self._failing: dict[str, set[str]] = {}
        if self._files is not None:
            self._files.remove_temporaries()

    @property
    def persistent(self) -> bool:
        """Whether ledgers are saved to a state dir."""
        return self._files is not None

    def get(self, source: str, target: str) -> PeriodLedger:
        """The target's ledger: restored from the state dir on first use, else new."""
        key = TargetKey(source, target)
        with self._lock:
            ledger = self._ledgers.get(key)
        if ledger is not None:
            return ledger
        ledger = self._files.load(source, target) if self._files is not None else None
        if ledger is not None:
            log.info("restored counters of %s/%s (started %.0f)", source, target, ledger.created)
        else:
            ledger = PeriodLedger(created=self._clock())
        with self._lock:
            return self._ledgers.setdefault(key, ledger)

    def save(self, source: str, target: str) -> None:
        """Persist the target's ledger if it has one; failures are logged, not raised."""
        with self._lock:
            ledger = self._ledgers.get(TargetKey(source, target))
        if ledger is None or self._files is None:
            return
        try:
            self._files.save(source, target, ledger)
        except OSError as exc:
            if self._on_save_failure is not None:
                self._on_save_failure(source)
            with self._lock:
                failing = self._failing.setdefault(source, set())
                fresh = not failing
                failing.add(target)
            if fresh:
                log.error("cannot save counter state of %s/%s to %s: %s; further failures of source %s are "
                          "counted in apimetrics_state_save_failures_total, not logged", source, target,
                          self._files.path_for(source, target), exc, source, extra={"source": source})
            return
        with self._lock:
            was = self._failing.get(source, set())
            recovered = was == {target}
            was.discard(target)
        if recovered:
            log.info("counter state of source %s is saved again (%s)", source, self._files.directory,
                     extra={"source": source})

    def forget(self, source: str, target: str) -> None:
        with self._lock:
            self._ledgers.pop(TargetKey(source, target), None)
            self._failing.get(source, set()).discard(target)

    def peek(self, key: TargetKey) -> PeriodLedger | None:
        """The target's ledger if it has one (sources without ledgers have none)."""
        with self._lock:
            return self._ledgers.get(key)


def series_key(family: Family, labels: Labels) -> LedgerKey:
    """The ledger key of a series: one ledger per target so holds every
    counter family of that target."""
    return (family.name, *itertools.chain.from_iterable(labels))


def counter_samples(ledger: PeriodLedger, families: Mapping[str, Family], base: Labels) -> list[Sample]:
    """The ledger's counters as samples: `base` labels first, then the key's."""
    samples = []
    for key, total in sorted(ledger.totals().items()):
        family = families.get(key[0])
        if family is None:
            continue  # a key from an older config (e.g. grouping turned off)
        labels = base + tuple(zip(key[1::2], key[2::2], strict=True))
        samples.append(Sample(family, labels, total, created=ledger.created))
    return samples
