"""Bird flow-run metrics (seed 000; statuses and the 422 shape from API_NOTES.md).

For each flow (one target) a poll calls

    POST /workspaces/{workspaceId}/reporting/flowruns/flow/{flowId}/metrics
    {"periodStart": "...", "periodEnd": "...", "periodGroup": "hour", "groupBy": ["status"]}

over a window of `lookback` complete periods plus the open one, and feeds the
per-period counts to the period ledger, which makes true counters of them:

    bird_flow_runs_total{workspace_id="ws",flow_id="f1",status="completed_success"} 1234
    bird_flow_runs_last_period{workspace_id="ws",flow_id="f1",status="completed_success",period_group="hour"} 57

Readings of the doc:
- `data` is read by the position of `"status"` in `dataColumns`, never by a
  fixed index. Without grouping `data` is null or absent; with grouping a row
  whose `data` lacks the status is labelled `status="unknown"` rather than
  dropped, so no run goes uncounted.
- `count` is not a required field: a row without it counts 0 (the period had
  no runs of that group); a negative or non-numeric count is invalid_response.
- Empty periods may be omitted by the server; an omitted period is 0 for the
  last-period gauge and leaves the counter unchanged.
- `periodTime` is the period's start; any RFC 3339 offset is accepted.
- `periodEnd` is sent as "now": the open period counts as it grows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal, NotRequired

from pydantic import Field, SecretStr, TypeAdapter, field_validator
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from exporter.config.source import SourceConfigBase
from exporter.errors import InvalidResponse, PollError, UpstreamHTTPError
from exporter.ledger.history import counter_history, history_samples
from exporter.ledger.registry import counter_samples, series_key
from exporter.model import Family, Kind, Labels, Sample
from exporter.sources.base import Source, Target
from exporter.sources.kit.payloads import json_or_none, read_body
from exporter.sources.kit.periods import GRIDS, rfc3339
from exporter.sources.kit.timeparse import parse_timestamp

FLOW_RUNS = Family("bird_flow_runs", Kind.COUNTER, "Bird flow runs, from per-period counts (period ledger).")
LAST_PERIOD = Family(
    "bird_flow_runs_last_period", Kind.GAUGE, "Bird flow runs in the most recent complete period."
)
UNKNOWN_STATUS = "unknown"
# Periods one request may span: a backfill splits its range into requests of
# at most this many, and halves that on a 422 (API_NOTES.md: a cap per
# periodGroup, unconfirmed, answered with 422).
MAX_PERIODS = 2000


class BirdFlowRunsConfig(SourceConfigBase):
    """`type = "bird_flow_runs"`: one target per flow."""

    sample: ClassVar[dict[str, Any]] = {"workspace_id": "demo-workspace", "flow_ids": ["welcome-flow", "order-updates"]}

    type: Literal["bird_flow_runs"] = Field(description="Bird flow-run counts")
    access_key: SecretStr | None = Field(default=None,
                                         description="access key, sent as `Authorization: AccessKey <key>`")
    workspace_id: str = Field(min_length=1, description="the workspace the flows belong to")
    flow_ids: list[str] = Field(min_length=1, description="flows to follow; each is one target")
    period_group: Literal["minute", "hour", "day", "month"] = Field(
        default="hour", description="period of the counts asked (calendar months, UTC)")
    lookback: int = Field(default=3, ge=1, le=100_000, description="complete periods re-read by every poll")
    group_by_status: bool = Field(default=True, description="one series per flow-run status; false: one per flow")

    @field_validator("flow_ids")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not flow.strip() for flow in value):
            raise ValueError("flow ids must not be empty")
        return value

    def target_ids(self) -> list[str]:
        return list(dict.fromkeys(self.flow_ids))


# A FlowRunResult holds a row per (period, group): read straight from the body
# into TypedDicts (payloads.read_body), the cheap path for bulky answers.
class _Row(TypedDict):
    periodTime: str  # noqa: N815 - vendor field name
    count: NotRequired[Annotated[int, Field(ge=0)] | None]
    data: NotRequired[list[str | None] | None]


class _Result(TypedDict):
    periodGroup: NotRequired[str | None]  # noqa: N815
    dataColumns: list[str]  # noqa: N815
    results: NotRequired[list[_Row] | None]


RESULT = TypeAdapter(_Result)


class BirdFlowRunsSource(Source[BirdFlowRunsConfig]):
    config_model: ClassVar[type[SourceConfigBase]] = BirdFlowRunsConfig
    type: ClassVar[str] = "bird_flow_runs"
    default_base_url: ClassVar[str] = "https://api.bird.com"
    simulator_prefix: ClassVar[str] = "bird"
    auth_scheme: ClassVar[str] = "AccessKey"
    extra_reasons: ClassVar[tuple[str, ...]] = ("validation",)

    async def poll(self, target: Target) -> list[Sample]:
        grid = GRIDS[self.config.period_group]
        now = self.context.clock()
        start, current = grid.window(now, self.config.lookback)
        counts = await self._fetch(target, start, now)
        ledger = self.context.ledgers.get(self.name, target.id)
        ledger.observe(start, {series_key(FLOW_RUNS, labels): periods for labels, periods in counts.items()})
        base = self._base(target)
        totals = counter_samples(ledger, {FLOW_RUNS.name: FLOW_RUNS}, base)
        # Every group the counter knows gets a last-period value, 0 when the
        # server omitted the period (it omits empty ones).
        last = grid.shift(current, -1)
        last_period = [
            Sample(LAST_PERIOD, total.labels + (("period_group", self.config.period_group),),
                   counts.get(total.labels[len(base):], {}).get(last, 0.0), timestamp=last)
            for total in totals
        ]
        return totals + last_period

    async def history(self, target: Target, since: float, until: float) -> AsyncIterator[list[Sample]]:
        """A backfill of one flow: the complete periods of [since, until],
        asked at most MAX_PERIODS at a time; counters from 0 at `since`, and
        each period's count as the last-period gauge at the period's start."""
        grid = GRIDS[self.config.period_group]
        start = grid.floor(since)
        start = start if start >= since else grid.shift(start, 1)
        counts: dict[Labels, dict[float, float]] = {}
        size = MAX_PERIODS
        while start < until:
            end = min(grid.shift(start, size), until)
            try:
                chunk = await self._fetch(target, start, end)
            except UpstreamHTTPError as exc:
                if exc.reason != "validation" or size == 1:
                    raise
                size //= 2  # a server whose cap is lower (422): ask for half as many periods
                continue
            for labels, periods in chunk.items():
                counts.setdefault(labels, {}).update(periods)
            start = end
        history = counter_history({series_key(FLOW_RUNS, labels): periods for labels, periods in counts.items()},
                                  lambda period: grid.shift(period, 1), since, until)
        base = self._base(target)
        samples = history_samples(history, {FLOW_RUNS.name: FLOW_RUNS}, base, since)
        for labels, periods in sorted(counts.items()):
            line = [(period, count) for period, count in sorted(periods.items()) if grid.shift(period, 1) <= until]
            if line:
                samples.append(Sample(LAST_PERIOD, base + labels + (("period_group", self.config.period_group),),
                                      line[-1][1], timestamp=line[-1][0], history=tuple(line[:-1])))
        yield samples

    def _base(self, target: Target) -> Labels:
        return (("workspace_id", self.config.workspace_id), ("flow_id", target.id))

    async def _fetch(self, target: Target, start: float, end: float) -> dict[Labels, dict[float, float]]:
        body = {
            "periodStart": rfc3339(start),
            "periodEnd": rfc3339(end),
            "periodGroup": self.config.period_group,
            "groupBy": ["status"] if self.config.group_by_status else None,
        }
        path = f"/workspaces/{self.config.workspace_id}/reporting/flowruns/flow/{target.id}/metrics"
        return self._counts(await self.http.post(path, body, classify=classify_error))

    def _counts(self, body: bytes) -> dict[Labels, dict[float, float]]:
        """`{group labels: {period start: count}}` from a FlowRunResult."""
        result = read_body(RESULT, body, "flow run metrics")
        column = self._status_column(result["dataColumns"])
        counts: dict[Labels, dict[float, float]] = {}
        groups: dict[str | None, Labels] = {}
        for row in result.get("results") or []:
            try:
                period = parse_timestamp(row["periodTime"])
            except ValueError as exc:
                raise InvalidResponse(f"flow run metrics: {exc}") from None
            group: Labels = ()
            if column is not None:
                data = row.get("data")
                status = data[column] if data is not None and column < len(data) else None
                group = groups.get(status) or groups.setdefault(status, (("status", status or UNKNOWN_STATUS),))
            periods = counts.setdefault(group, {})
            periods[period] = periods.get(period, 0.0) + (row.get("count") or 0)
        return counts

    def _status_column(self, columns: list[str]) -> int | None:
        if not self.config.group_by_status:
            return None
        if "status" not in columns:
            raise InvalidResponse(f"flow run metrics: grouped by status but dataColumns is {columns!r}")
        return columns.index("status")


def classify_error(status: int, body: bytes, path: str) -> PollError | None:
    """422 carries a ValidationError `{code, message, details}`: reason `validation`."""
    if status != 422:
        return None
    error = json_or_none(body)
    if not isinstance(error, dict):
        return UpstreamHTTPError("validation", f"POST {path}: HTTP 422 without a ValidationError body",
                                 status=status, body=body)
    details = error.get("details") or {}
    described = "; ".join(
        f"{field}: {', '.join(problems) if isinstance(problems, list) else problems}"
        for field, problems in (details.items() if isinstance(details, dict) else [])
    )
    message = f"POST {path}: HTTP 422 {error.get('code', '')}: {error.get('message', '')}"
    return UpstreamHTTPError("validation", message + (f" ({described})" if described else ""), status=status, body=body)
