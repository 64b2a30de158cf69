"""The OpenMetrics file sink: a backfill's points, each with its timestamp, for promtool's block builder."""

from __future__ import annotations

from exporter.sinks.openmetrics.file import OpenMetricsFile

__all__ = ["OpenMetricsFile"]
