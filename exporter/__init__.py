"""api-metrics-exporter: vendor metrics APIs → Prometheus /metrics and OTLP."""

__version__ = "0.1.0"
