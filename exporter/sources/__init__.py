"""Source registry: config `type` → source class."""

from __future__ import annotations

from typing import Any

from exporter.sources.base import Source, Target
from exporter.sources.bird import BirdFlowRunsSource
from exporter.sources.flux import FluxSource
from exporter.sources.k6_cloud import K6CloudSource
from exporter.sources.pluto import PlutoSource
from exporter.sources.whatsapp_flows import WhatsAppFlowsSource

REGISTRY: dict[str, type[Source[Any]]] = {
    cls.type: cls
    for cls in (K6CloudSource, BirdFlowRunsSource, PlutoSource, WhatsAppFlowsSource, FluxSource)
}

__all__ = ["REGISTRY", "Source", "Target"]
