"""Waiting before trying again: `Retry-After` and backoff with full jitter.

Shared by the vendor HTTP client (sources/kit/http.py) and the OTLP sink's
transport, which both honour a server's `Retry-After`.
"""

from __future__ import annotations

import email.utils
import random
import time


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry `attempt` (0-based): uniform in
    [0, min(cap, base * 2**attempt)], AWS's "full jitter", so that many
    clients failing together do not retry together."""
    return random.uniform(0, min(cap, base * (2**attempt)))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)
