"""What the Graph API answers: the metric answer's shape and the error envelope, by `code` (seed 001, API_NOTES.md)."""

from __future__ import annotations

import logging
import re
from typing import Annotated, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from exporter.errors import EndpointRetired, PollError, UpstreamHTTPError, reason_for_status
from exporter.sources.kit.payloads import coded_error

INSUFFICIENT_DATA = "insufficient_data"
AUTH_CODES = frozenset({10, 102, 104, 190})
THROTTLE_CODES = frozenset({4, 17, 32, 613, 130429})
TRANSIENT_CODES = frozenset({1, 2})
_NOT_ENOUGH = re.compile(r"not enough data|fewer than 250|insufficient data", re.IGNORECASE)
_REMOVED = re.compile(r"unknown path components|nonexisting field \(metric\)", re.IGNORECASE)


class InsufficientData(PollError):
    """Graph refused a metric of a flow with fewer than 250 requests: a
    documented state of a new or quiet flow, logged at INFO when it appears."""

    log_level = logging.INFO

    def __init__(self, message: str) -> None:
        super().__init__(INSUFFICIENT_DATA, message)


# Answers hold a point per hour for up to 30 days per metric: they are read
# straight from the body into TypedDicts (payloads.read_body). Counts are
# strict numbers: a bool or a string where a count belongs means the server
# sent something else than the doc says, so it is refused rather than guessed.
# Latency ceilings may arrive as JSON numbers; keys are kept as strings.
@with_config(ConfigDict(coerce_numbers_to_str=True))
class _Entry(TypedDict):
    key: str
    value: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


class _Point(TypedDict):
    timestamp: str | float
    data: NotRequired[list[_Entry]]


class _Metric(TypedDict):
    name: str
    granularity: str
    data_points: list[_Point]


class _Answer(TypedDict):
    metric: _Metric


ANSWER = TypeAdapter(_Answer)


Points = dict[float, dict[str, float]]  # period start -> {data key: value}



def classify_error(status: int, body: bytes, where: str, api_version: str) -> PollError | None:
    """Graph's envelope `{"error": {message, type, code, error_subcode, fbtrace_id}}`, by `code`.

    190/102/104, 10 and 200-299 → auth; 4, 17, 32, 613, 80000-80099, 130429 →
    rate_limited, not retried within the poll (Graph throttling lasts until
    the app's usage decays, minutes; the next poll tries again); 1, 2 →
    http_5xx (temporary, retried);
    100 "not enough data" → insufficient_data (a partial problem); 12,
    "nonexisting field (metric)", "Unknown path components", or 404/410 →
    retired; 100 subcode 33 and 803 → not_found.
    """
    error = coded_error(body)
    if error is None:
        if status in (404, 410):
            return EndpointRetired(f"GET {where}: HTTP {status} (fbtrace_id: none): " + _retired_note(api_version))
        return None
    code, subcode = error["code"], error.get("error_subcode")
    message = str(error.get("message", ""))[:300]
    text = (f"GET {where}: HTTP {status}: Graph error {code}"
            f"{f'/{subcode}' if isinstance(subcode, int) else ''} {error.get('type', '')}: {message} "
            f"(fbtrace_id: {error.get('fbtrace_id') or 'none'})")
    if code in AUTH_CODES or 200 <= code <= 299:
        reason = "auth"
    elif code in THROTTLE_CODES or 80000 <= code <= 80099:
        return UpstreamHTTPError("rate_limited", text, status=status, body=body, retryable=False)
    elif code in TRANSIENT_CODES:
        reason = "http_5xx"
    elif code == 12 or (code in (100, 2500) and _REMOVED.search(message)) or (status in (404, 410) and code != 803):
        return EndpointRetired(f"{text}: {_retired_note(api_version)}")
    elif code == 100 and _NOT_ENOUGH.search(message):
        return InsufficientData(text)
    elif (code == 100 and subcode == 33) or code == 803:
        reason = "not_found"
    else:
        reason = reason_for_status(status)
    return UpstreamHTTPError(reason, text, status=status, body=body)


def _retired_note(api_version: str) -> str:
    return (f"the WhatsApp Flows Metrics API is not served at Graph API {api_version}: Meta deprecated this "
            "API (announced for 30 April 2026) and retires Graph versions about two years after their release; "
            "set api_version to a version that still serves it, or the API is gone")
