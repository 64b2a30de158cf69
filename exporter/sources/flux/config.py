"""The `type = "flux"` config: its model and the tables of seed 003 it is checked against.

Follows seed 003 (Flux Metrics API): the four metric types, "Aggregations by
Type" and the query intervals (1m, 5m, 1h, 1d). A config error here names the
key, like every config error (exit 2), before any request is sent.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from exporter.config.source import SourceConfigBase
from exporter.config.types import Duration, StrictModel
from exporter.sources.kit.naming import label_name, metric_name
from exporter.sources.kit.periods import DAY, HOUR, MINUTE, Grid

MetricType = Literal["gauge", "counter", "distribution", "set"]
# The doc's "Aggregations by Type".
AGGREGATIONS: dict[str, tuple[str, ...]] = {
    "gauge": ("last", "avg", "min", "max"),
    "counter": ("sum", "rate"),
    "distribution": ("avg", "sum", "min", "max", "p50", "p90", "p95", "p99", "count"),
    "set": ("count",),
}
DEFAULT_AGGREGATIONS: dict[str, tuple[str, ...]] = {
    "gauge": ("last",),
    "counter": ("sum",),
    "distribution": ("p50", "p90", "p95", "p99", "count", "sum", "min", "max", "avg"),
    "set": ("count",),
}
# `rate` is what Prometheus' rate() computes from the counter, so never asked.
EXPORTABLE = {a for aggs in AGGREGATIONS.values() for a in aggs} - {"rate"}
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
# unit → (family suffix, divisor)
UNITS = {"ms": ("seconds", 1000.0), "s": ("seconds", 1.0), "bytes": ("bytes", 1.0)}
GRIDS = {"1m": MINUTE, "5m": Grid("5m", seconds=300), "1h": HOUR, "1d": DAY}
RESERVED_LABELS = ("account", "quantile")


class FluxMetricConfig(StrictModel):
    """One `[[sources.metrics]]` entry (or just its name)."""

    name: str = Field(min_length=1, description="the metric's name on the server")
    type: MetricType | None = Field(default=None, description="skips the type lookup; the server's type otherwise")
    aggregations: list[str] | None = Field(
        default=None, min_length=1, description="aggregations asked; default per type (rate is refused: use "
                                                "rate() on the counter)")
    group_by: list[str] = Field(default_factory=list, description="tag keys that become labels")
    tags: dict[str, str] = Field(default_factory=dict, description="only points with these tag values")
    unit: Literal["ms", "s", "bytes"] | None = Field(
        default=None, description="ms (divided by 1000, _seconds), s or bytes; never guessed from names")

    @field_validator("aggregations")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if "rate" in value:
            raise ValueError("'rate' is not exported: use rate() on the counter flux_<name>_total")
        unknown = [a for a in value if a not in EXPORTABLE]
        if unknown:
            raise ValueError(f"unknown aggregation(s) {', '.join(unknown)}; valid: {', '.join(sorted(EXPORTABLE))}")
        return list(dict.fromkeys(value))

    @field_validator("group_by")
    @classmethod
    def _tag_keys(cls, value: list[str]) -> list[str]:
        keys = [key.removeprefix("tags.") for key in value]
        if any(not key.strip() for key in keys):
            raise ValueError("group_by keys must not be empty")
        labels: dict[str, str] = {}
        for key in dict.fromkeys(keys):
            label = tag_label(key)
            if label in labels:
                raise ValueError(f"group_by keys {labels[label]!r} and {key!r} both become label {label!r}")
            labels[label] = key
        return list(labels.values())

    @model_validator(mode="after")
    def _fits_type(self) -> FluxMetricConfig:
        if self.type is not None and self.aggregations is not None:
            invalid = [a for a in self.aggregations if a not in AGGREGATIONS[self.type]]
            if invalid:
                raise ValueError(f"{', '.join(invalid)} not valid for a {self.type} "
                                 f"(valid: {', '.join(a for a in AGGREGATIONS[self.type] if a != 'rate')})")
        if self.type == "set" and self.unit is not None:
            raise ValueError("a set's cardinality has no unit")
        return self


class RateLimitConfig(StrictModel):
    """`rate_limit`: the requests per window the key may send (the hosted service documents 60/min)."""

    queries: int = Field(default=60, ge=1, le=1_000_000, description="requests per window")
    per: Duration = Field(default=60.0, description="the window")


def _metric_table(item: Any) -> Any:
    """A metric may be given by its name alone."""
    return {"name": item} if isinstance(item, str) else item


MetricEntry = str | FluxMetricConfig
METRICS_EXAMPLE = ["users.online", {"name": "api.response_time", "unit": "ms", "group_by": ["endpoint"]}]


class FluxConfig(SourceConfigBase):
    """`type = "flux"`: one target, the account of the API key."""

    sample: ClassVar[dict[str, Any]] = {}

    type: Literal["flux"] = Field(description="Flux metrics of one account")
    api_key: SecretStr | None = Field(
        default=None, description="API key, sent as `Authorization: Bearer <key>` (never as a query parameter)")
    account: str | None = Field(default=None, min_length=1, max_length=128, examples=["prod"],
                                description="the `account` label and target id; default: the source name")
    bucket: Literal["1m", "5m", "1h", "1d"] = Field(default="1m", description="query interval")
    lookback: int = Field(default=5, ge=1, le=10_000, description="complete buckets re-read by every poll")
    metrics: list[Annotated[FluxMetricConfig, BeforeValidator(_metric_table, json_schema_input_type=MetricEntry)]] \
        | None = Field(default=None, min_length=1, examples=[METRICS_EXAMPLE],
                       description="metric names or tables; default: every metric, discovered each poll")
    rate_limit: RateLimitConfig = Field(default=RateLimitConfig(), description="the request budget per window, "
                                        "shared by every source with the same key and server")

    @model_validator(mode="after")
    def _distinct_names(self) -> FluxConfig:
        seen: dict[str, tuple[int, str]] = {}
        for index, metric in enumerate(self.metrics or []):
            exported = f"flux_{metric_name(metric.name)}"
            if exported in seen:
                first, other = seen[exported]
                if other == metric.name:
                    raise ValueError(f"metrics[{index}]: {metric.name!r} is listed twice (also metrics[{first}])")
                raise ValueError(f"metrics[{first}] {other!r} and metrics[{index}] {metric.name!r} would both be "
                                 f"exported as {exported}; list only one of them")
            seen[exported] = (index, metric.name)
        return self

    def target_ids(self) -> list[str]:
        return [self.account or self.name]


def tag_label(key: str) -> str:
    """The label of a tag key; a key that would overwrite one of our own labels gets a `tag_` prefix."""
    label = label_name(key)
    return f"tag_{label}" if label in RESERVED_LABELS else label
