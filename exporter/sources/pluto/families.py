"""The families a Pluto run exports, and the per-point history push sinks receive (Sample.history)."""

from __future__ import annotations

from dataclasses import replace

from exporter.model import Family, Kind, Labels, Sample

VALUE = Family("pluto_run_metric_value", Kind.GAUGE,
               "Value of a Pluto run metric at the highest step seen (NaN/±Inf as logged).")
STEP = Family("pluto_run_metric_step", Kind.GAUGE, "Highest step seen of a Pluto run metric.")
TIMESTAMP = Family(
    "pluto_run_metric_timestamp_seconds", Kind.GAUGE,
    "Time of the point at the highest step seen of a Pluto run metric.", "seconds",
)
NONFINITE = Family(
    "pluto_run_metric_nonfinite_points", Kind.COUNTER,
    "New points of a Pluto run metric whose value was NaN, +Inf or -Inf (valueFlag), "
    "since the exporter followed the run.",
)
# Alerting needs the status: a RUNNING run whose newest step is old has stalled.
RUN_INFO = Family(
    "pluto_run_info", Kind.GAUGE, "Always 1: a discovered Pluto run's name and status at the last discovery.",
)
BUDGET_EXHAUSTED = Family(
    "pluto_run_request_budget_exhausted", Kind.COUNTER,
    "Polls of a Pluto run that stopped at max_requests_per_poll before every new point was fetched.",
)



def with_history(samples: list[Sample], history: tuple[Sample, ...]) -> list[Sample]:
    """Attach to each `pluto_run_metric_value` sample the earlier new points of
    its series, so push sinks receive the whole curve (Sample.history)."""
    earlier: dict[Labels, list[tuple[float, float]]] = {}
    for point in history:
        if point.timestamp is not None:
            earlier.setdefault(point.labels, []).append((point.timestamp, float(point.value)))  # type: ignore[arg-type]
    out = []
    for sample in samples:
        points = earlier.get(sample.labels) if sample.family is VALUE else None
        if points and len(points) > 1:
            sample = replace(sample, history=tuple(points[:-1]))
        out.append(sample)
    return out
