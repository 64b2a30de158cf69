"""The status page's data, read from the running parts: the runner's target
statuses, the poller's next runs, each source's endpoint, OTLP delivery.

Called from the HTTP thread while the event loop polls: it only copies
(`list(...)` of a dict or list is atomic under the GIL) and reads fields,
never waits for the loop, so the page answers while every poll is busy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from exporter.logs import REDACTOR
from exporter.model import TargetKey
from exporter.poller import Job
from exporter.runner import TargetStatus
from exporter.selfmetrics import OTLP_DROP_REASONS
from exporter.sources import Target
from exporter.sources.base import AnySource
from exporter.web.status import Health, Notice, OtlpView, TargetView, ordered

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from exporter.sinks.otlp.sink import OtlpSink

SIMULATOR = "simulator"


def endpoint_of(base_url: str | None) -> str:
    """A base URL fit to show: no user info, query or fragment (where a
    credential could hide), and masked like any other text."""
    if base_url is None:
        return SIMULATOR
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return REDACTOR.redact(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


def health_of(status: TargetStatus) -> Health:
    if not status.polled:
        return "pending"
    return "up" if status.reason is None else "down"


def target_view(source: AnySource, status: TargetStatus, endpoint: str, next_poll: float | None) -> TargetView:
    health = health_of(status)
    return TargetView(
        source=status.source,
        type=source.type,
        target=status.target,
        endpoint=endpoint,
        interval_seconds=status.interval,
        health=health,
        reason=status.reason if health == "down" else None,
        last_error=status.message or None if health == "down" else None,
        last_poll_timestamp=status.last_poll,
        last_duration_seconds=status.last_duration,
        next_poll_timestamp=next_poll,
        series=status.series,
        warnings=tuple(Notice(w.kind, w.message, w.count) for w in status.warnings),
        last_success_timestamp=status.last_success,
        polling=status.running,
    )


def target_views(
    pairs: Iterable[tuple[AnySource, Target]],
    statuses: Mapping[TargetKey, TargetStatus],
    endpoints: Mapping[str, str],
    next_runs: Mapping[Job, float],
) -> list[TargetView]:
    """Every target this replica polls, failing first."""
    views = []
    for source, target in list(pairs):
        status = statuses.get(target.key)
        if status is not None:  # removed meanwhile
            views.append(target_view(source, status, endpoints.get(source.name, ""), next_runs.get(target.key)))
    return ordered(views)


def otlp_view(sink: OtlpSink, registry: CollectorRegistry) -> OtlpView:
    state = sink.status()
    dropped = sum(registry.get_sample_value("apimetrics_otlp_dropped_points_total", {"reason": reason}) or 0.0
                  for reason in OTLP_DROP_REASONS)
    return OtlpView(REDACTOR.redact(state.endpoint), state.protocol, state.queued_points, state.max_queue_points,
                    state.failing, state.last_success, int(dropped))
