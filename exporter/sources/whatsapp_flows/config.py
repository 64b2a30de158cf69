"""The `type = "whatsapp_flows"` config, its metric names, and the window every poll asks for (seed 001)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator

from exporter.config.source import SourceConfigBase
from exporter.config.types import Duration

log = logging.getLogger("exporter.sources.whatsapp_flows")  # one logger name for the package

# The newest Graph API version released before the vendor's deprecation date of
# this Metrics API (30 April 2026): v25.0, released 18 February 2026, available
# until 29 July 2028 per the vendor's version table. v26.0 (July 2026) came
# after that date; were the API removed as a versioned change, v26.0 would not
# serve it while v25.0 still would.
DEFAULT_API_VERSION = "v25.0"

REQUEST_COUNT = "ENDPOINT_REQUEST_COUNT"
REQUEST_ERROR = "ENDPOINT_REQUEST_ERROR"
ERROR_RATE = "ENDPOINT_REQUEST_ERROR_RATE"
LATENCY = "ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL"
AVAILABILITY = "ENDPOINT_AVAILABILITY"
METRICS = (REQUEST_COUNT, REQUEST_ERROR, ERROR_RATE, LATENCY, AVAILABILITY)
MetricName = Literal[
    "ENDPOINT_REQUEST_COUNT",
    "ENDPOINT_REQUEST_ERROR",
    "ENDPOINT_REQUEST_ERROR_RATE",
    "ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL",
    "ENDPOINT_AVAILABILITY",
]

DAY_SECONDS = 86400.0
DEFAULT_LOOKBACK = {"HOUR": 2 * DAY_SECONDS, "DAY": 7 * DAY_SECONDS}
# The oldest `since` the API accepts, counted back from the current date.
MAX_LOOKBACK = {"HOUR": 30 * DAY_SECONDS, "DAY": 90 * DAY_SECONDS}

def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class WhatsAppFlowsConfig(SourceConfigBase):
    """`type = "whatsapp_flows"`: one target per flow."""

    sample: ClassVar[dict[str, Any]] = {"flow_ids": ["1234567890123456", "2345678901234567"]}

    type: Literal["whatsapp_flows"] = Field(description="WhatsApp Flows endpoint metrics (Graph API)")
    access_token: SecretStr | None = Field(
        default=None, description="system-user (or app) access token, sent as `Authorization: Bearer <token>`")
    api_version: str = Field(default=DEFAULT_API_VERSION, pattern=r"^v\d+\.\d+$",
                             description="Graph API version, e.g. v25.0")
    flow_ids: list[Annotated[str, Field(pattern=r"^\d+$")]] = Field(
        min_length=1, description="flows to follow (numeric Graph ids); each is one target")
    granularity: Annotated[Literal["HOUR", "DAY", "LIFETIME"], BeforeValidator(_upper)] = Field(
        default="HOUR", description="HOUR, DAY (Pacific days) or LIFETIME (running totals)")
    lookback: Duration | None = Field(
        default=None, examples=["2d"], description="how far back every poll re-reads, for late data; default: 2d "
                                                   "(HOUR), 7d (DAY); at most 30d (HOUR) or 90d (DAY)")
    metrics: list[MetricName] = Field(
        default_factory=lambda: list(METRICS), min_length=1,  # type: ignore[arg-type]
        description="metrics asked, one request each per flow and poll; default: all five")

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    def target_ids(self) -> list[str]:
        return list(dict.fromkeys(self.flow_ids))


@dataclass(frozen=True, slots=True)
class Window:
    """What one poll asks for: `since` (None: the server's oldest), `until`,
    and the ledger's window start (None without a ledger)."""

    since: date | None
    until: date
    start: float | None


def window(now: float, granularity: str, lookback: float | None) -> Window:
    today = datetime.fromtimestamp(now, UTC).date()
    until = today + timedelta(days=1)
    if granularity == "LIFETIME" or lookback is None:
        return Window(None, until, None)
    since = datetime.fromtimestamp(now - lookback, UTC).date()
    return Window(since, until, datetime.combine(since, time(), UTC).timestamp())


def effective_lookback(config: WhatsAppFlowsConfig) -> float | None:
    """The configured lookback, defaulted and clamped to what the API allows."""
    if config.granularity == "LIFETIME":
        if config.lookback is not None:
            log.info("%s: lookback is ignored with granularity LIFETIME", config.name)
        return None
    lookback = config.lookback if config.lookback is not None else DEFAULT_LOOKBACK[config.granularity]
    limit = MAX_LOOKBACK[config.granularity]
    if lookback > limit:
        log.warning("%s: lookback %.0f days is beyond the oldest date the API allows for %s; using %.0f days",
                    config.name, lookback / DAY_SECONDS, config.granularity, limit / DAY_SECONDS)
        return limit
    return lookback
