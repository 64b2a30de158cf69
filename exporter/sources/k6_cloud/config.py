"""The `type = "k6_cloud"` config and the shapes of k6 Cloud's answers (seed 004, API_NOTES.md).

Series answers are the bulk of a poll (thousands of points): they are read
straight from the body into TypedDicts (payloads.read_body). Lax float
validation takes numbers and numeric strings ("12.5", "NaN") alike, as the
API sends both; ids may be ints or strings and are kept as strings.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, NotRequired

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    SecretStr,
    TypeAdapter,
    field_validator,
    with_config,
)
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from exporter.config.source import SourceConfigBase

API = "/loadtests/v2"

# Series `method` values the API accepts per metric type (API_NOTES.md).
ALLOWED_STATS: dict[str, frozenset[str]] = {
    "trend": frozenset(
        {"avg", "min", "max", "mean", "median", "std", "0.75", "0.9", "0.95", "0.99", "0.999", "0.9999"}
    ),
    "counter": frozenset({"count", "rps"}),
    "rate": frozenset({"rate"}),
    "gauge": frozenset({"value"}),
}
DEFAULT_STATS: dict[str, list[str]] = {
    "trend": ["avg", "0.95", "0.99", "max"],
    "counter": ["count", "rps"],
    "rate": ["rate"],
    "gauge": ["value"],
}
# Labels the source sets itself; a k6 tag with one of these keys is exported as `tag_<key>`.
RESERVED_LABELS = frozenset({"test_run_id", "stat"})
UNIT_BY_CONTAINS = {"time": "seconds", "data": "bytes"}
SCALE_BY_CONTAINS = {"time": 0.001}


class K6CloudConfig(SourceConfigBase):
    """`type = "k6_cloud"`: one target per test run."""

    sample: ClassVar[dict[str, Any]] = {"test_run_ids": [103054, 103055]}

    type: Literal["k6_cloud"] = Field(description="k6 Cloud test runs (REST v2)")
    token: SecretStr | None = Field(default=None, description="API token, sent as `Authorization: Token <token>`")
    test_run_ids: list[PositiveInt] = Field(min_length=1, description="test runs to follow; each is one target")
    stats: dict[Literal["trend", "counter", "rate", "gauge"], list[str]] = Field(
        default_factory=lambda: dict(DEFAULT_STATS),  # type: ignore[arg-type]  # the keys are those literals
        description="series statistics asked per metric type; a type left out keeps its default. Allowed: trend "
                    "avg min max mean median std 0.75 0.9 0.95 0.99 0.999 0.9999, counter count rps, rate rate, "
                    "gauge value",
    )
    page_size: int = Field(default=100, ge=1, le=1000, description="page size when listing a run's metrics")
    series_batch_size: int = Field(default=20, ge=1, le=500, description="metric ids per series request")

    @field_validator("stats")
    @classmethod
    def _known_stats(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for metric_type, stats in value.items():
            unknown = sorted(set(stats) - ALLOWED_STATS[metric_type])
            if unknown:
                allowed = ", ".join(sorted(ALLOWED_STATS[metric_type]))
                raise ValueError(f"{metric_type}: unknown stat(s) {', '.join(unknown)}; allowed: {allowed}")
        return {**DEFAULT_STATS, **value}

    def target_ids(self) -> list[str]:
        return [str(run) for run in dict.fromkeys(self.test_run_ids)]


# --- upstream payloads ------------------------------------------------------

def _to_str(value: Any) -> Any:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


IdStr = Annotated[str, BeforeValidator(_to_str)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class K6Metric(_Payload):
    id: IdStr
    name: str
    type: str = ""
    contains: str | None = None
    tags: dict[str, Any] | None = None


# Series answers are the bulk of a poll (thousands of points): they are read
# straight from the body into TypedDicts (payloads.read_body). Lax float
# validation takes numbers and numeric strings ("12.5", "NaN") alike, as the
# API sends both; ids may be ints or strings and are kept as strings.
class K6Point(TypedDict):
    timestamp: str | float
    value: NotRequired[float | None]


@with_config(ConfigDict(coerce_numbers_to_str=True))
class K6Serie(TypedDict):
    metric_id: str
    method: NotRequired[str]
    values: NotRequired[list[K6Point] | None]


# "k6-serie" is no identifier: the functional TypedDict form.
K6SeriesAnswer = TypedDict("K6SeriesAnswer", {"k6-serie": list[K6Serie]})
SERIES_ANSWER = TypeAdapter(K6SeriesAnswer)


class K6Threshold(_Payload):
    id: IdStr
    name: str
    metric_id: IdStr | None = None
    stat: str = ""
    value: float | None = None
    calculated_value: float | None = None
    tainted: bool | None = False


class K6RunOverview(_Payload):
    checks_hits_successes: float | None = None
    checks_hits_total: float | None = None
    checks_successes: float | None = None
    checks_total: float | None = None
    http_req_duration_avg: float | None = None
    http_reqs_avg: float | None = None
    thresholds_successes: float | None = None
    thresholds_total: float | None = None
    urls_hits_successes: float | None = None
    urls_hits_total: float | None = None
    urls_successes: float | None = None
    urls_total: float | None = None
