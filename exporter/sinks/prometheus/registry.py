"""The process-wide self-metrics (a prometheus_client registry) rendered like every other family.

prometheus_client's own text encoder writes each counter's and histogram's
`_created` as an extra gauge family in the text format (`x_created`), which
`docs/metrics.md` promises only in OpenMetrics. So the registry's families
are read as neutral samples and rendered by `blocks`, per scrape (they are a
few dozen series): `_created` then appears in OpenMetrics only, as it does
for every vendor and per-target family.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from exporter.model import Family, HistogramValue, Kind, Labels, Sample
from exporter.sinks.prometheus.blocks import header_openmetrics, header_text, sample_lines

_KINDS = {"gauge": Kind.GAUGE, "counter": Kind.COUNTER, "histogram": Kind.HISTOGRAM}


def registry_text(registry: CollectorRegistry, openmetrics: bool) -> bytes:
    """The registry's families as exposition text (without `# EOF`)."""
    out = []
    for metric in registry.collect():
        family = Family(metric.name, _KINDS[metric.type], metric.documentation, metric.unit)
        samples = metric_samples(family, metric)
        if not samples:
            continue
        out.append(header_openmetrics(family) if openmetrics else header_text(family))
        out.append(sample_lines(samples, openmetrics).encode())
    return b"".join(out)


def metric_samples(family: Family, metric: Metric) -> list[Sample]:
    """One neutral sample per series of a prometheus_client metric, in its order."""
    series: dict[Labels, dict[str, float]] = {}
    buckets: dict[Labels, list[tuple[float, float]]] = {}
    for sample in metric.samples:
        names = dict(sample.labels)
        le = names.pop("le", None)
        key = tuple(names.items())
        values = series.setdefault(key, {})
        suffix = sample.name[len(metric.name):]
        if suffix == "_bucket":
            buckets.setdefault(key, []).append((float(le or "nan"), sample.value))
        else:
            values[suffix] = sample.value
    out = []
    for labels, values in series.items():
        created = values.get("_created")
        if family.kind is Kind.HISTOGRAM:
            out.append(Sample(family, labels, HistogramValue(tuple(buckets.get(labels, ())), values.get("_sum")),
                              created=created))
        else:
            out.append(Sample(family, labels, values["_total" if family.kind is Kind.COUNTER else ""],
                              created=created))
    return out
