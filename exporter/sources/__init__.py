"""Source registry: config `type` → source class."""

from __future__ import annotations

from exporter.sources.base import Source, Target
from exporter.sources.bird import BirdFlowRunsSource
from exporter.sources.k6_cloud import K6CloudSource

REGISTRY: dict[str, type[Source]] = {
    cls.type: cls
    for cls in (K6CloudSource, BirdFlowRunsSource)
}

__all__ = ["REGISTRY", "Source", "Target"]
