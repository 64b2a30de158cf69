"""Reading Pluto's answers: metric rows (`Point`), runs of the list, and error bodies (seed 002, API_NOTES.md).

Readings of the doc: `valueFlag` (`NaN`, `Inf`, `-Inf`, any case) wins over
`value`, which the server sends as 0 for non-finite points; a `null` value
without a flag is NaN, and numeric strings are read as numbers. `step` may be a
number or a numeric string. `time` is any ISO-8601 variant; without a zone it
is UTC.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

from exporter.errors import InvalidResponse, PollError, UpstreamHTTPError
from exporter.sources.kit.payloads import json_or_none
from exporter.sources.kit.timeparse import parse_timestamp


class Point(NamedTuple):
    """One row of `/api/runs/metrics`, parsed. A NamedTuple: a full read makes
    ~10k of them, at a third of a frozen dataclass's cost."""

    log_name: str
    log_group: str
    step: int
    time: float
    value: float


class RunItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    name: str = ""
    status: str = ""
    createdAt: str | None = None  # noqa: N815 - the API's names
    updatedAt: str | None = None  # noqa: N815
    statusUpdated: str | None = None  # noqa: N815

    def finished_at(self) -> float | None:
        for value in (self.statusUpdated, self.updatedAt, self.createdAt):
            if value:
                try:
                    return parse_timestamp(value)
                except ValueError:
                    continue
        return None


_FLAGS = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "infinity": math.inf,
          "-inf": -math.inf, "-infinity": -math.inf}


def parse_point(row: Any) -> Point:
    # The shape nearly every row has (a step as a JSON int or, as ClickHouse
    # quotes UInt64, a string of digits; a number value; no flag) is checked
    # inline; anything else takes the careful path below. A full read parses
    # ~10k rows per run (benchmarks/bench.py poll).
    if type(row) is dict and not row.get("valueFlag"):
        name, group, step = row.get("logName"), row.get("logGroup"), row.get("step")
        value, time = row.get("value"), row.get("time")
        if type(step) is str and step.isascii() and step.isdigit():
            step = int(step)
        if (type(name) is str and name and (group is None or type(group) is str) and type(step) is int and step >= 0
                and (type(value) is float or type(value) is int) and type(time) is str):
            try:
                return Point(name, group or "", step, parse_timestamp(time), float(value))
            except ValueError:
                pass  # reported by the careful path
    return _parse_point_checked(row)


def _parse_point_checked(row: Any) -> Point:
    if not isinstance(row, dict):
        raise InvalidResponse(f"metrics: expected objects in 'metrics', got {type(row).__name__}")
    name = row.get("logName")
    if not isinstance(name, str) or not name:
        raise InvalidResponse("metrics: a row has no logName")
    group = row.get("logGroup")
    if group is not None and not isinstance(group, str):
        raise InvalidResponse(f"metrics: {name}: logGroup is not a string")
    try:
        time = parse_timestamp(row["time"])
    except (KeyError, TypeError, ValueError):
        raise InvalidResponse(f"metrics: {name}: unreadable time {row.get('time')!r}") from None
    value = _value(name, row.get("value"), row.get("valueFlag"))
    return Point(name, group or "", _step(name, row.get("step")), time, value)


def _step(name: str, raw: Any) -> int:
    # ClickHouse quotes UInt64 in JSON: steps arrive as numbers or numeric strings.
    try:
        number = float(raw) if isinstance(raw, (int, float, str)) and not isinstance(raw, bool) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or not number.is_integer():
        raise InvalidResponse(f"metrics: {name}: step {raw!r} is not a non-negative integer")
    return int(number)


def _value(name: str, raw: Any, flag: Any) -> float:
    if isinstance(flag, str) and flag.strip():
        special = _FLAGS.get(flag.strip().lower())
        if special is not None:
            return special
    if raw is None:
        return math.nan
    if isinstance(raw, bool):
        raise InvalidResponse(f"metrics: {name}: value {raw!r} is not a number")
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise InvalidResponse(f"metrics: {name}: value {raw!r} is not a number") from None



def new_points(points: list[Point], exported: Point | None) -> list[Point]:
    """Distinct points ordered by (step, time), without those at or before the
    exported one: a point older in step or in time is not new."""
    unique = {(p.step, p.time): p for p in points}
    ordered = [unique[key] for key in sorted(unique)]
    if exported is None:
        return ordered
    return [
        p for p in ordered
        if p.step >= exported.step and p.time >= exported.time and (p.step, p.time) != (exported.step, exported.time)
    ]


def classify_error(status: int, body: bytes, path: str) -> PollError | None:
    """401 → auth (with the server's message); 400 with the zod envelope
    `{"success": false, "error": {"issues": [...]}}` → http_4xx naming the
    parameters it refused."""
    payload = json_or_none(body)
    if status == 401:
        detail = ""
        if isinstance(payload, dict):
            detail = ": ".join(str(payload[k]) for k in ("error", "message") if payload.get(k))
        return UpstreamHTTPError(
            "auth", f"GET {path}: HTTP 401 {detail or 'Unauthorized'} (check api_key)", status=status, body=body
        )
    if status == 400 and isinstance(payload, dict) and payload.get("success") is False:
        error = payload.get("error")
        return UpstreamHTTPError(
            "http_4xx", f"GET {path}: HTTP 400: request refused: {_describe(error)}", status=status, body=body
        )
    return None


def _describe(error: Any) -> str:
    if isinstance(error, dict):
        issues = error.get("issues")
        if isinstance(issues, list) and issues:
            parts = []
            for issue in issues[:5]:
                if isinstance(issue, dict):
                    where = ".".join(str(p) for p in issue.get("path") or [])
                    parts.append(f"{where}: {issue.get('message', '')}" if where else str(issue.get("message", "")))
            return "; ".join(parts)[:300]
        if error.get("message"):
            return str(error["message"])[:300]
    return str(error)[:300]

