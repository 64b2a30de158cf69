"""The OTLP sink: every new vendor point, at its own time, pushed to a collector.

- `config`: the `[otlp]` section;
- `points`: samples → OTLP points, and the name mapping (pure);
- `wire`: points → the protobuf request (a fast encoder, checked against the SDK's);
- `transport`: the SDK exporters that send it, and the OTEL_* environment;
- `sink`: the bounded queue and the task that drains it.
"""
