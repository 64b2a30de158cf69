"""The Prometheus sink: blocks rendered at poll time (`blocks`), kept per
family (`store`), joined into the `/metrics` body at scrape time (`sink`)."""

from exporter.sinks.prometheus.sink import PrometheusSink

__all__ = ["PrometheusSink"]
