"""What the status page and its JSON show: the types the app fills in, their order and their JSON.

`GET /api/v1/targets` is a JSON list of `TargetView`, failing targets first;
`GET /api/v1/status` is the summary (`Summary`): target counts, the last
config (re)load, OTLP delivery, the shard. The page (`pages.py`) renders
both and fetches them again to refresh itself.

Every text here is shown as the app stored it: error texts were masked of
secrets where they were stored (`logs.REDACTOR`), and the page escapes them.
Times are Unix seconds of the app's clock; `now` in the summary lets a
browser with a wrong clock still say "12 s ago" right.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Health = Literal["up", "down", "pending"]
HEALTHS: tuple[Health, ...] = ("up", "down", "pending")


@dataclass(frozen=True, slots=True)
class Notice:
    """A warning of a target's last poll (see runner.TargetWarning)."""

    kind: str
    message: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class TargetView:
    """One target as the page shows it. Times: the end of a poll (its outcome
    known), so `last_success_timestamp <= last_poll_timestamp`."""

    source: str
    type: str
    target: str
    endpoint: str  # the source's base URL, or "simulator"
    interval_seconds: float
    health: Health  # pending: no poll has finished yet
    reason: str | None  # why the last poll failed (the poll-error reason), None when up
    last_error: str | None  # the failure's text, secrets masked
    last_poll_timestamp: float | None
    last_duration_seconds: float | None
    next_poll_timestamp: float | None
    series: int
    warnings: tuple[Notice, ...] = ()
    last_success_timestamp: float | None = None
    polling: bool = False  # a poll is running now

    def rank(self) -> int:
        """Failing first, then up with warnings, then pending, then up."""
        if self.health == "down":
            return 0
        if self.warnings:
            return 1
        return 2 if self.health == "pending" else 3

    def json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "type": self.type,
            "target": self.target,
            "endpoint": self.endpoint,
            "interval_seconds": self.interval_seconds,
            "health": self.health,
            "reason": self.reason,
            "last_error": self.last_error,
            "last_poll_timestamp": self.last_poll_timestamp,
            "last_success_timestamp": self.last_success_timestamp,
            "last_duration_seconds": self.last_duration_seconds,
            "next_poll_timestamp": self.next_poll_timestamp,
            "polling": self.polling,
            "series": self.series,
            "warnings": [{"kind": w.kind, "message": w.message, "count": w.count} for w in self.warnings],
        }


def ordered(targets: Iterable[TargetView]) -> list[TargetView]:
    return sorted(targets, key=lambda t: (t.rank(), t.source, t.target))


@dataclass(frozen=True, slots=True)
class ReloadView:
    """The last config load: at start or a reload (SIGHUP, POST /-/reload, file watch)."""

    successful: bool
    timestamp: float | None  # when it was tried
    error: str | None  # why it failed, secrets masked
    last_success_timestamp: float | None


@dataclass(frozen=True, slots=True)
class OtlpView:
    endpoint: str
    protocol: str
    queued_points: int
    max_queue_points: int
    failing: str | None  # the reason of the failing exports, None while they succeed
    last_success_timestamp: float | None
    dropped_points: int


@dataclass(frozen=True, slots=True)
class ProcessView:
    """What the app knows beyond its targets."""

    now: float
    started_timestamp: float
    reload: ReloadView
    otlp: OtlpView | None  # None when [otlp] is off
    shard_index: int
    shard_total: int


@dataclass(frozen=True, slots=True)
class Summary:
    version: str
    process: ProcessView
    counts: dict[str, int]  # up, down, pending, warning (up or down with warnings), total

    @classmethod
    def of(cls, version: str, process: ProcessView, targets: Iterable[TargetView]) -> Summary:
        tally: Counter[str] = Counter()
        for target in targets:
            tally[target.health] += 1
            tally["warning"] += bool(target.warnings)
            tally["total"] += 1
        return cls(version, process, {key: tally[key] for key in (*HEALTHS, "warning", "total")})

    def json(self) -> dict[str, Any]:
        process = self.process
        reload = process.reload
        otlp = process.otlp
        return {
            "version": self.version,
            "now": process.now,
            "started_timestamp": process.started_timestamp,
            "targets": self.counts,
            "reload": {
                "successful": reload.successful,
                "timestamp": reload.timestamp,
                "error": reload.error,
                "last_success_timestamp": reload.last_success_timestamp,
            },
            "otlp": None if otlp is None else {
                "endpoint": otlp.endpoint,
                "protocol": otlp.protocol,
                "state": "failing" if otlp.failing else "ok",
                "failing_reason": otlp.failing,
                "queued_points": otlp.queued_points,
                "max_queue_points": otlp.max_queue_points,
                "dropped_points": otlp.dropped_points,
                "last_success_timestamp": otlp.last_success_timestamp,
            },
            "shard": {"index": process.shard_index, "total": process.shard_total},
        }
