"""Why a poll failed: every failure maps to one `reason` label value.

    PollError(reason)                      base: a poll of one target failed
     ├── UpstreamHTTPError                  the API answered with an error status
     ├── InvalidResponse   invalid_response the body is not what the doc promises
     └── EndpointRetired   retired          the vendor removed the endpoint (404/410)

Transport failures become `PollError("timeout")` or `PollError("connection")`.
Messages never contain credentials: they are built from URLs without query
secrets and from vendor error bodies, never from request headers.
"""

from __future__ import annotations

import logging
from typing import ClassVar

# Reasons every target's error counter is initialised with, so that rate() and
# absent() behave from the first scrape. Sources may add their own reasons.
BASE_REASONS = (
    "timeout",
    "connection",
    "http_4xx",
    "http_5xx",
    "auth",
    "rate_limited",
    "invalid_response",
    "not_found",
    "retired",
    "response_too_large",
    "internal",
)


class PollError(Exception):
    """A poll failed for `reason`; `message` is safe to log."""

    # The level a partial problem of this kind is logged at when it appears
    # (at DEBUG while it persists). A documented vendor state that is not an
    # outage (WhatsApp's "not enough data" for a quiet flow) is INFO, so a
    # healthy setup logs no WARNING.
    log_level: ClassVar[int] = logging.WARNING

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class UpstreamHTTPError(PollError):
    """The upstream answered with a non-success status."""

    def __init__(
        self, reason: str, message: str, *, status: int, body: bytes, retry_after: float | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(reason, message)
        self.status = status
        self.body = body
        self.retry_after = retry_after
        # False: trying again within this poll cannot help (the vendor's
        # throttling outlasts it); the next scheduled poll tries again.
        self.retryable = retryable


class InvalidResponse(PollError):
    def __init__(self, message: str) -> None:
        super().__init__("invalid_response", message)


class EndpointRetired(PollError):
    def __init__(self, message: str) -> None:
        super().__init__("retired", message)


def reason_for_status(status: int) -> str:
    """Default reason for an HTTP status; sources refine it from vendor bodies."""
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    if status == 404:
        return "not_found"
    if status == 410:
        return "retired"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_5xx"
