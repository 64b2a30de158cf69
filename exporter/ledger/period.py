"""Period ledger: turns overlapping per-period counts into monotonic counters.

Several vendor APIs (Bird flow runs, WhatsApp Flows, Flux) do not expose a
running total. They answer "how many X happened in each minute/hour/day bucket
between <start> and <end>", for a window the caller picks. Prometheus users
want a counter they can ``rate()``; this module bridges the two.

Why not simply add up every response? Each poll re-fetches a window that
overlaps the previous one, because vendors revise recent buckets late (events
arrive after the bucket closed, the still-open bucket keeps growing). Summing
windows would count every bucket once per poll that saw it.

Why not export the latest bucket (or the window sum) as a gauge? The open bucket
restarts at zero on every boundary, a window sum drops whenever an old bucket
slides out, and a scrape that falls between two polls samples an arbitrary
point. Neither can be ``rate()``-d or ``increase()``-d over long ranges, and
both lose late revisions of buckets that were already scraped.

So the ledger remembers, per series and per bucket ("period"), the newest value
the vendor reported. While a period is inside the polled window its value may
be replaced; once a poll's window starts after it, it can no longer be revised
and its value is folded into a per-series ``settled`` sum. The raw total is
``settled + sum(open periods)``. Because a vendor may also revise a bucket
*down*, the exported value is ``max(previously exported, raw total)``, so the
counter never goes backwards; such corrections are counted and logged.

State survives restarts through :class:`exporter.ledger.state.LedgerStateStore`, so a daemon restart
does not reset every counter (and ``created`` stays the OpenMetrics
``_created`` timestamp of the original start).

Thread safety: a :class:`PeriodLedger` guards its state with a lock, so a
scrape thread may call :meth:`PeriodLedger.totals` while a poll job calls
:meth:`PeriodLedger.observe`.
"""

from __future__ import annotations

import decimal
import logging
import math
import numbers
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import isfinite
from typing import Any

__all__ = ["LedgerKey", "LedgerStateError", "PeriodLedger"]

log = logging.getLogger("exporter.ledger")

# A ledger series is keyed by its family name followed by its labels,
# flattened: ("bird_flow_runs", "status", "completed_success"). This is the
# shape the state file stores (a list of strings), so it stays flat here.
LedgerKey = tuple[str, ...]


class LedgerStateError(ValueError):
    """Persisted ledger state is malformed or inconsistent."""


def _is_real(value: object) -> bool:
    if type(value) is int:  # what JSON decodes to: skip the ABC check
        return True
    # bool is an int subclass; a True/False count almost always means a parser
    # picked the wrong field, so treat it as garbage rather than as 1/0.
    # Decimal is not registered as numbers.Real but is what json's
    # parse_float=Decimal produces, so accept it too.
    return isinstance(value, (numbers.Real, decimal.Decimal)) and not isinstance(value, bool)


def _as_finite(value: object) -> float | None:
    """``value`` as a finite float, or None if it is not a finite real number."""
    if type(value) is float:  # nearly always: skip the general path below
        return value if math.isfinite(value) else None
    if not _is_real(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        # Huge ints overflow; Decimal('sNaN') refuses conversion.
        return None
    return number if math.isfinite(number) else None


def _fsum(settled: float, periods: Mapping[float, float]) -> float:
    # fsum is correctly rounded and independent of summation order, so a
    # reloaded ledger (different dict order) computes bit-identical totals.
    return math.fsum([settled, *periods.values()])


@dataclass
class _Series:
    settled: float = 0.0
    # period start -> newest accepted value, only for periods at or after the
    # watermark (older ones have been folded into `settled`).
    periods: dict[float, float] = field(default_factory=dict)
    exported: float = 0.0

    def raw(self) -> float:
        return _fsum(self.settled, self.periods)


@dataclass
class _Tally:
    """What one observe() call skipped or corrected, for its counters and log lines."""

    rejected: int = 0
    first_rejected: tuple[LedgerKey, Any, Any] | None = None
    stale: int = 0
    corrections: int = 0


@dataclass
class PeriodLedger:
    """Monotonic counters from overlapping per-period vendor counts.

    ``created`` is the ledger's start time (epoch seconds); use it as the
    OpenMetrics ``_created`` value of every series of this ledger.
    ``watermark`` is the greatest ``window_start`` ever observed (None before
    the first poll).
    """

    created: float
    watermark: float | None = None
    corrections_total: int = 0
    rejected_values_total: int = 0
    stale_values_total: int = 0
    _series: dict[LedgerKey, _Series] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        created = _as_finite(self.created)
        if created is None:
            raise ValueError(f"created must be a finite number, got {self.created!r}")
        self.created = created
        if self.watermark is not None:
            watermark = _as_finite(self.watermark)
            if watermark is None:
                raise ValueError(f"watermark must be finite or None, got {self.watermark!r}")
            self.watermark = watermark

    # -- polling ---------------------------------------------------------

    def observe(
        self, window_start: float, values: Mapping[LedgerKey, Mapping[float, float]]
    ) -> int:
        """Apply one poll: settle periods before window_start, record latest values.

        ``window_start`` should be aligned to the period grid: a period that
        starts before it is treated as settled, so a partial leading bucket
        the vendor returns for an unaligned window is ignored rather than
        allowed to revise the full bucket downwards.

        Periods missing from ``values`` keep their previous value. Values for
        periods older than the watermark are ignored (counted in
        ``stale_values_total``). Negative, non-finite or non-numeric values,
        and non-finite period starts, are skipped and counted in
        ``rejected_values_total``.

        Raises ValueError for a non-finite ``window_start`` and TypeError for
        a series key that is not a tuple of str; both are caller bugs, and
        nothing is changed when they are raised.

        Returns the number of corrections (series whose raw total went down)
        made by this call.
        """
        start = _as_finite(window_start)
        if start is None:
            raise ValueError(f"window_start must be a finite number, got {window_start!r}")
        # Validate every key before touching state so a bad call is all-or-nothing.
        for key in values:
            _check_key(key)

        with self._lock:
            return self._observe_locked(start, values)

    def _observe_locked(
        self, window_start: float, values: Mapping[LedgerKey, Mapping[float, float]]
    ) -> int:
        watermark = self._advance_watermark(window_start)
        self._settle(watermark)
        tally = _Tally()
        for key, periods in values.items():
            self._apply(key, periods, watermark, tally)
        self.corrections_total += tally.corrections
        self.stale_values_total += tally.stale
        if tally.rejected:
            self.rejected_values_total += tally.rejected
            assert tally.first_rejected is not None
            log.warning(
                "skipped %d invalid value(s) (negative, non-finite or non-numeric); "
                "first: series %s, period %r, value %r",
                tally.rejected,
                *tally.first_rejected,
            )
        if tally.stale:
            log.debug("ignored %d value(s) for periods before the watermark %s", tally.stale, watermark)
        return tally.corrections

    def _advance_watermark(self, window_start: float) -> float:
        previous_watermark = self.watermark
        if previous_watermark is not None and window_start < previous_watermark:
            # Clock skew or a misconfigured window: the periods between the
            # two starts were already settled, so re-reading them would count
            # them twice. Keep the old watermark.
            log.info(
                "window start %s is %.0f s before the watermark %s; "
                "periods older than the watermark are ignored",
                window_start,
                previous_watermark - window_start,
                previous_watermark,
            )
            watermark = previous_watermark
        else:
            watermark = window_start
        self.watermark = watermark
        return watermark

    def _apply(self, key: LedgerKey, periods: Mapping[float, float], watermark: float, tally: _Tally) -> None:
        """Record one series' values; count a correction when its total went down."""
        series = self._series.get(key)
        changes: list[float] = []
        for period, value in periods.items():
            if type(period) is float and type(value) is float and isfinite(period) and isfinite(value):
                # The common case, checked inline: this loop runs once per
                # period value of every poll (benchmarks/bench.py poll).
                start: float | None = period
                new: float | None = value
            else:
                start, new = _as_finite(period), _as_finite(value)
            if start is None or new is None or new < 0:
                tally.rejected += 1
                if tally.first_rejected is None:
                    tally.first_rejected = (key, period, value)
                continue
            if start < watermark:
                tally.stale += 1
                continue
            if series is None:
                series = self._series[key] = _Series()
            old = series.periods.get(start, 0.0)
            # Periods absent from this response are deliberately left
            # alone: vendors omit empty buckets, so absence is not a
            # revision to zero. Only an explicit value replaces one.
            series.periods[start] = new
            if new != old:
                changes.append(new - old)
        if series is None:
            return
        raw = series.raw()
        # Judge "went down" from the per-period deltas rather than by
        # comparing float totals, which can wobble by an ulp when a
        # period moves from `periods` into `settled`.
        if changes and math.fsum(changes) < 0 and raw < series.exported:
            tally.corrections += 1
            log.warning(
                "vendor revised series %s downwards: raw total %s is below the "
                "exported %s; holding back %s until it grows back",
                key,
                raw,
                series.exported,
                series.exported - raw,
            )
        if raw > series.exported:
            series.exported = raw

    def _settle(self, watermark: float) -> None:
        for series in self._series.values():
            leaving = [start for start in series.periods if start < watermark]
            if not leaving:
                continue
            series.settled = math.fsum(
                [series.settled, *(series.periods.pop(start) for start in leaving)]
            )
            # Re-associating the sum can round up by an ulp; keep the
            # invariant exported >= raw that from_dict checks.
            raw = series.raw()
            if raw > series.exported:
                series.exported = raw

    # -- reading ---------------------------------------------------------

    def totals(self) -> dict[LedgerKey, float]:
        """Exported (monotonic) counter value per series."""
        with self._lock:
            return {key: series.exported for key, series in self._series.items()}

    def total(self, key: LedgerKey) -> float:
        """Exported counter value of one series; 0.0 for an unknown series."""
        with self._lock:
            series = self._series.get(key)
            return series.exported if series is not None else 0.0

    def raw_total(self, key: LedgerKey) -> float:
        """``settled + sum(open periods)``, which may be below :meth:`total`."""
        with self._lock:
            series = self._series.get(key)
            return series.raw() if series is not None else 0.0

    # -- persistence -----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable snapshot; the inverse of :meth:`from_dict`."""
        with self._lock:
            return {
                "created": self.created,
                "watermark": self.watermark,
                "corrections_total": self.corrections_total,
                "rejected_values_total": self.rejected_values_total,
                "stale_values_total": self.stale_values_total,
                "series": [
                    {
                        "key": list(key),
                        "settled": series.settled,
                        "exported": series.exported,
                        # A list of pairs, not an object: JSON object keys are
                        # strings and period starts are floats.
                        "periods": [[start, value] for start, value in sorted(series.periods.items())],
                    }
                    for key, series in self._series.items()
                ],
            }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PeriodLedger:
        """Rebuild a ledger from :meth:`to_dict` output.

        Raises LedgerStateError, naming the offending field, on anything
        malformed or internally inconsistent.
        """
        if not isinstance(data, Mapping):
            raise LedgerStateError(f"ledger state must be an object, got {type(data).__name__}")
        expected = {
            "created",
            "watermark",
            "corrections_total",
            "rejected_values_total",
            "stale_values_total",
            "series",
        }
        missing = expected - data.keys()
        if missing:
            raise LedgerStateError(f"ledger state is missing {sorted(missing)}")
        unknown = set(data.keys()) - expected
        if unknown:
            raise LedgerStateError(f"ledger state has unknown fields {sorted(unknown, key=str)}")

        created = _finite(data["created"], "created")
        watermark = None if data["watermark"] is None else _finite(data["watermark"], "watermark")
        ledger = cls(
            created=created,
            watermark=watermark,
            corrections_total=_count(data["corrections_total"], "corrections_total"),
            rejected_values_total=_count(data["rejected_values_total"], "rejected_values_total"),
            stale_values_total=_count(data["stale_values_total"], "stale_values_total"),
        )

        series_list = data["series"]
        if not isinstance(series_list, list):
            raise LedgerStateError("'series' must be a list")
        for index, item in enumerate(series_list):
            key, series = _series_from_dict(item, f"series[{index}]", watermark)
            if key in ledger._series:
                raise LedgerStateError(f"series[{index}].key {list(key)!r} is duplicated")
            ledger._series[key] = series
        return ledger


def _series_from_dict(item: Any, where: str, watermark: float | None) -> tuple[LedgerKey, _Series]:
    """One entry of a state file's `series`, checked field by field."""
    if not isinstance(item, Mapping):
        raise LedgerStateError(f"{where} must be an object")
    if set(item.keys()) != {"key", "settled", "exported", "periods"}:
        raise LedgerStateError(
            f"{where} must have exactly key, settled, exported, periods; "
            f"got {sorted(map(str, item.keys()))}"
        )
    raw_key = item["key"]
    if not isinstance(raw_key, list) or not all(isinstance(p, str) for p in raw_key):
        raise LedgerStateError(f"{where}.key must be a list of strings")
    series = _Series(
        settled=_non_negative(item["settled"], f"{where}.settled"),
        exported=_non_negative(item["exported"], f"{where}.exported"),
    )
    periods = item["periods"]
    if not isinstance(periods, list):
        raise LedgerStateError(f"{where}.periods must be a list")
    for p_index, pair in enumerate(periods):
        p_where = f"{where}.periods[{p_index}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise LedgerStateError(f"{p_where} must be a [start, value] pair")
        start = _finite(pair[0], f"{p_where} start")
        value = _non_negative(pair[1], f"{p_where} value")
        if watermark is None or start < watermark:
            raise LedgerStateError(
                f"{p_where} start {start} is before the watermark {watermark}; "
                "it should have been settled"
            )
        if start in series.periods:
            raise LedgerStateError(f"{p_where} start {start} is duplicated")
        series.periods[start] = value
    if series.exported < series.raw():
        raise LedgerStateError(f"{where}.exported {series.exported} is below its raw total {series.raw()}")
    return tuple(raw_key), series


def _check_key(key: object) -> None:
    if not isinstance(key, tuple) or not all(isinstance(part, str) for part in key):
        raise TypeError(f"series key must be a tuple of str, got {key!r}")


def _finite(value: object, name: str) -> float:
    number = _as_finite(value)
    if number is None:
        raise LedgerStateError(f"{name} must be a finite number, got {value!r}")
    return number


def _non_negative(value: object, name: str) -> float:
    number = _finite(value, name)
    if number < 0:
        raise LedgerStateError(f"{name} must not be negative, got {value!r}")
    return number


def _count(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LedgerStateError(f"{name} must be a non-negative integer, got {value!r}")
    return value
