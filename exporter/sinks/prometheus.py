"""Prometheus sink: a prometheus_client custom collector over the store.

`collect()` only reads snapshots the polls already built; it never calls an
upstream API. Content negotiation (text 0.0.4 / OpenMetrics) and gzip are
done by `render()` with prometheus_client's own encoders.
"""

from __future__ import annotations

import gzip
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.model import Family, HistogramValue, Kind, Sample, SummaryValue
from exporter.store import Store

log = logging.getLogger(__name__)


# Whether the scrape being rendered on this thread is OpenMetrics. `_created`
# samples belong there (Prometheus reads them as created timestamps); in the
# text format prometheus_client would turn them into extra `*_created` gauge
# series, doubling the series of every counter for no use.
_scrape = threading.local()


class StoreCollector(Collector):
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        with_created = getattr(_scrape, "openmetrics", True)
        metrics: dict[str, tuple[Family, Metric]] = {}
        for snapshot in self._store.current(self._clock()):
            for sample in snapshot.samples:
                entry = metrics.get(sample.family.name)
                if entry is None:
                    entry = (sample.family, _new_metric(sample.family))
                    metrics[sample.family.name] = entry
                elif entry[0].kind is not sample.family.kind:
                    # Two targets disagree on a family's type; the first one
                    # wins so the exposition stays valid.
                    continue
                add_sample(entry[1], sample if with_created or sample.created is None else _uncreated(sample))
        for _, metric in metrics.values():
            yield metric


def _uncreated(sample: Sample) -> Sample:
    return Sample(sample.family, sample.labels, sample.value, sample.timestamp, None)


def _new_metric(family: Family) -> Metric:
    return Metric(family.name, family.help, family.kind.value, family.unit)


def add_sample(metric: Metric, sample: Sample) -> None:
    """Append one neutral sample to a prometheus_client Metric.

    Vendor timestamps are not written into the exposition: Prometheus rejects
    samples older than its head block, and a finished k6 run's last point may
    be days old. They reach OTLP instead.
    """
    name = sample.family.name
    labels = dict(sample.labels)
    value = sample.value
    kind = sample.family.kind
    if kind is Kind.COUNTER:
        metric.add_sample(f"{name}_total", labels, float(value))  # type: ignore[arg-type]
        if sample.created is not None:
            metric.add_sample(f"{name}_created", labels, sample.created)
    elif kind is Kind.HISTOGRAM:
        assert isinstance(value, HistogramValue)
        for bound, count in value.buckets:
            metric.add_sample(f"{name}_bucket", {**labels, "le": _format_bound(bound)}, count)
        metric.add_sample(f"{name}_count", labels, value.count)
        if value.sum is not None:
            metric.add_sample(f"{name}_sum", labels, value.sum)
        if sample.created is not None:
            metric.add_sample(f"{name}_created", labels, sample.created)
    elif kind is Kind.SUMMARY:
        assert isinstance(value, SummaryValue)
        for quantile, number in value.quantiles:
            metric.add_sample(name, {**labels, "quantile": _format_bound(quantile)}, number)
        if value.count is not None:
            metric.add_sample(f"{name}_count", labels, value.count)
        if value.sum is not None:
            metric.add_sample(f"{name}_sum", labels, value.sum)
        if sample.created is not None:
            metric.add_sample(f"{name}_created", labels, sample.created)
    else:
        metric.add_sample(name, labels, float(value))  # type: ignore[arg-type]


def _format_bound(bound: float) -> str:
    if math.isinf(bound):
        return "+Inf" if bound > 0 else "-Inf"
    return repr(float(bound))


def render(registry: CollectorRegistry, accept: str | None, accept_encoding: str | None) -> tuple[bytes, dict[str, str]]:
    """The exposition for one scrape: body and response headers."""
    encoder, content_type = choose_encoder(accept or "")
    _scrape.openmetrics = content_type.startswith("application/openmetrics-text")
    try:
        body = encoder(registry)
    finally:
        del _scrape.openmetrics
    headers = {"Content-Type": content_type}
    if accept_encoding and "gzip" in accept_encoding.lower():
        body = gzip.compress(body, compresslevel=3)
        headers["Content-Encoding"] = "gzip"
    return body, headers
