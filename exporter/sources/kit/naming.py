"""Prometheus-safe names from vendor strings."""

from __future__ import annotations

import re

_INVALID_METRIC = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(raw: str) -> str:
    """`api.response_time` → `api_response_time`; a leading digit gets `_`."""
    name = _INVALID_METRIC.sub("_", raw.strip())
    name = re.sub(r"_+", "_", name) if "__" in name else name
    if not name or name[0].isdigit():
        name = f"_{name}"
    return name


def label_name(raw: str) -> str:
    """Label names may not contain `:` and may not start with `__` (reserved)."""
    name = _INVALID_LABEL.sub("_", raw.strip())
    if not name or name[0].isdigit():
        name = f"_{name}"
    if name.startswith("__"):
        name = "x" + name
    return name


def with_unit(name: str, unit: str) -> str:
    """Append the unit suffix once (`foo` + seconds → `foo_seconds`)."""
    if not unit or name.endswith(f"_{unit}"):
        return name
    return f"{name}_{unit}"
