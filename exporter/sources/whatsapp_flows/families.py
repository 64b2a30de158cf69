"""The families a flow exports, and latency keys as histogram buckets."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from exporter.model import Family, Kind
from exporter.sources.whatsapp_flows.config import AVAILABILITY, LATENCY, REQUEST_COUNT, REQUEST_ERROR

REQUESTS = Family("whatsapp_flow_endpoint_requests", Kind.COUNTER,
                  "Requests WhatsApp sent to the flow's endpoint (ENDPOINT_REQUEST_COUNT).")
ERRORS = Family("whatsapp_flow_endpoint_request_errors", Kind.COUNTER,
                "Failed requests to the flow's endpoint by error type (ENDPOINT_REQUEST_ERROR).")
ERROR_RATIO = Family("whatsapp_flow_endpoint_request_error_ratio", Kind.GAUGE,
                     "Errors / requests of the newest period (ENDPOINT_REQUEST_ERROR_RATE).", "ratio")
DURATION = Family("whatsapp_flow_endpoint_request_duration_seconds", Kind.HISTOGRAM,
                  "Latency of requests to the flow's endpoint, rounded up to whole seconds "
                  "(ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL); no _sum: the vendor gives none.", "seconds")
CHECKS = Family("whatsapp_flow_endpoint_availability_checks", Kind.COUNTER,
                "Availability checks of the flow's endpoint by result (ENDPOINT_AVAILABILITY).")
INSUFFICIENT = Family("whatsapp_flow_metrics_insufficient_data", Kind.GAUGE,
                      "1 when the API refused the metric for lack of data (fewer than 250 requests), else 0.")

# Metric → (family, label of the data key); None: a single value under key "value".
COUNTED: dict[str, tuple[Family, str | None]] = {
    REQUEST_COUNT: (REQUESTS, None),
    REQUEST_ERROR: (ERRORS, "error_type"),
    AVAILABILITY: (CHECKS, "result"),
    LATENCY: (DURATION, "latency"),  # a ledger key only: latency keys become `le` buckets
}

BOUNDS = tuple(float(n) for n in range(1, 11))
KNOWN_LATENCY_KEYS = frozenset({*(str(n) for n in range(1, 11)), "10+"})
_CEILING = re.compile(r"\d+(?:\.\d+)?")
_BEYOND = re.compile(r"\d+(?:\.\d+)?\+")

def latency_ceiling(key: str) -> float | None:
    """Upper bound in seconds of a latency key; None when only `+Inf` holds it."""
    text = key.strip()
    return float(text) if _CEILING.fullmatch(text) else None


def latency_buckets(counts: Mapping[str, float]) -> tuple[tuple[float, float], ...]:
    """Cumulative `(le, count)` buckets 1..10 and +Inf from per-key counts.

    A key `"N"` counts in every bucket whose bound is >= N; `"10+"` and keys
    that are not a number count in `+Inf` only. Missing keys are zero.
    """
    per_bound: list[list[float]] = [[] for _ in BOUNDS]
    for key, count in counts.items():
        ceiling = latency_ceiling(key)
        if ceiling is None:
            continue
        for index, bound in enumerate(BOUNDS):
            if ceiling <= bound:
                per_bound[index].append(count)
    buckets = tuple((bound, math.fsum(values)) for bound, values in zip(BOUNDS, per_bound, strict=True))
    return (*buckets, (math.inf, math.fsum(counts.values())))
