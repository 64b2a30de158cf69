"""Fake of Bird's flow-run metrics reporting endpoint (seed 000, API_NOTES.md).

    POST /workspaces/{workspaceId}/reporting/flowruns/{filterType}/{filterId}/metrics

Counts are integers drawn from a smooth daily curve per (flow, status) and are
additive across period groups (an hour is the sum of its minutes). Like the
real service the data lags: a period shows about 80% of its runs when it
closes and the rest arrives over the next ~15 minutes, so later polls revise
recent periods upwards (moving the clock back revises them down). The
`suspended` status appears only ten minutes after the simulator starts.

The body is validated like the OpenAPI schema (`additionalProperties: false`,
required fields, enums, RFC 3339 date-times) and refused with 422 and a
`ValidationError {code, message, details}` whose keys are JSON paths. Windows
longer than a cap per period group are refused with 422 too (unconfirmed in
the notes, but plausible). Empty periods are omitted.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from exporter.simulator.common import SIMULATOR_TOKEN, SimRequest, SimResponse, deterministic
from exporter.sources.kit.periods import GRIDS, rfc3339

if TYPE_CHECKING:
    from exporter.simulator.server import Simulator

# Runs per minute, on average, by status.
STATUS_RATES = {
    "completed_success": 30.0,
    "completed_error": 2.5,
    "failed": 0.8,
    "exited_success": 4.0,
    "running": 0.6,
    "cancelled": 0.15,
    "suspended": 0.4,
}
LATE_STATUSES = {"suspended": 600.0}  # status → seconds after start before it appears
LATE_SHARE, LATE_SECONDS = 0.2, 900.0
MAX_PERIODS = {"minute": 24 * 60, "hour": 31 * 24, "day": 366, "month": 120}
ALLOWED_KEYS = {"periodStart", "periodEnd", "periodGroup", "groupBy"}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
PATH = re.compile(r"/workspaces/(?P<ws>[^/]+)/reporting/flowruns/(?P<kind>[^/]+)/(?P<flow>[^/]+)/metrics")


class BirdFake:
    prefix = "bird"

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator
        # Tests may add columns or reorder them; the client must read by name.
        self.columns = ["status"]

    # --- data -----------------------------------------------------------------

    def cumulative(self, flow: str, status: str, ts: float) -> int:
        """Runs of (flow, status) from the epoch to `ts`: the integral of a
        positive daily curve, floored, so any period's count is C(end) - C(start)."""
        appear = self.sim.started_at + LATE_STATUSES.get(status, -math.inf)
        if ts <= appear:
            return 0
        scale = 0.5 + deterministic(self.sim.seed, "bird", flow)
        per_second = STATUS_RATES[status] * scale / 60
        omega = 2 * math.pi / 86400
        phase = deterministic(self.sim.seed, "bird", flow, status) * 2 * math.pi

        def integral(t: float) -> float:
            return per_second * (t + 0.5 / omega * (math.cos(phase) - math.cos(omega * t + phase)))

        start = max(appear, 0.0)
        return math.floor(integral(ts)) - math.floor(integral(start))

    def visible(self, flow: str, status: str, start: float, end: float, now: float) -> int:
        """What the API shows for a period at `now`: late runs still missing."""
        until = min(end, now)
        if until <= start:
            return 0
        true = self.cumulative(flow, status, until) - self.cumulative(flow, status, start)
        missing = math.floor(true * LATE_SHARE * math.exp(-(now - until) / LATE_SECONDS))
        return true - missing

    def rows(self, flow: str, group: str, start: float, end: float, grouped: bool) -> list[dict[str, Any]]:
        grid = GRIDS[group]
        now = self.sim.now()
        rows = []
        period = grid.floor(start)
        while period < min(end, now):
            period_end = grid.shift(period, 1)
            counts = {s: self.visible(flow, s, period, min(period_end, end), now) for s in STATUS_RATES}
            if grouped:
                for status, count in counts.items():
                    if count:
                        data = [status if c == "status" else "flows" for c in self.columns]
                        rows.append({"periodTime": rfc3339(period), "count": count, "data": data})
            elif sum(counts.values()):
                rows.append({"periodTime": rfc3339(period), "count": sum(counts.values()), "data": None})
            period = period_end
        return rows

    # --- endpoint ---------------------------------------------------------------

    def handle(self, request: SimRequest) -> SimResponse:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme not in ("AccessKey", "Bearer") or token != SIMULATOR_TOKEN:
            return SimResponse(401, {"code": "Unauthorized", "message": "Invalid or missing access key"})
        match = PATH.fullmatch(request.path)
        if match is None or request.method != "POST":
            return SimResponse(404, {"code": "NotFound", "message": "Not found"})
        if match["kind"] != "flow":
            return invalid({".filterType": [f'filter type "{match["kind"]}" is unsupported']})
        try:
            body = request.json()
        except ValueError:
            return invalid({".": ["body is not valid JSON"]})
        problems = validate(body)
        if problems:
            return invalid(problems)
        start, end = parse(body["periodStart"]), parse(body["periodEnd"])
        group = body["periodGroup"]
        if start >= end:
            return invalid({".periodEnd": ["must be after periodStart"]})
        grid = GRIDS[group]
        if (end - grid.floor(start)) > grid.shift(0, MAX_PERIODS[group]) - grid.shift(0, 0) + 1:
            return invalid({".periodStart": [f"window longer than {MAX_PERIODS[group]} {group} periods"]})
        grouped = bool(body.get("groupBy"))
        result: dict[str, Any] = {
            "periodGroup": group,
            "dataColumns": list(self.columns) if grouped else [],
            "results": self.rows(match["flow"], group, start, end, grouped),
        }
        return SimResponse(200, result)


def validate(body: Any) -> dict[str, list[str]]:
    """Problems with a FlowRunCreate body, keyed by JSON path like the real 422."""
    if not isinstance(body, dict):
        return {".": ["body must be an object"]}
    problems: dict[str, list[str]] = {}
    for key in sorted(set(body) - ALLOWED_KEYS):
        problems[f".{key}"] = [f'property "{key}" is unsupported']
    for key in ("periodStart", "periodEnd", "periodGroup"):
        if key not in body:
            problems[f".{key}"] = ["property is required"]
    for key in ("periodStart", "periodEnd"):
        value = body.get(key)
        if key in body and not (isinstance(value, str) and RFC3339.fullmatch(value)):
            problems[f".{key}"] = ["must be a date-time (RFC 3339)"]
    if "periodGroup" in body and body["periodGroup"] not in GRIDS:
        problems[".periodGroup"] = ["must be one of minute, hour, day, month"]
    group_by = body.get("groupBy")
    if group_by is not None and (not isinstance(group_by, list) or any(g != "status" for g in group_by)):
        problems[".groupBy"] = ['items must be one of "status"']
    return problems


def invalid(details: dict[str, list[str]]) -> SimResponse:
    return SimResponse(422, {
        "code": "InvalidPayload",
        "message": "One or more fields are invalid",
        "details": {k: (v[0] if len(v) == 1 and k == "." else v) for k, v in details.items()},
    })


def parse(value: str) -> float:
    from exporter.sources.kit.timeparse import parse_timestamp

    return parse_timestamp(value)
