"""Sinks: where snapshots go. A sink knows its output format, never a vendor.

    runner ──Snapshot──► Sink.publish ──► prometheus/ (the /metrics body)
                                     └──► otlp/       (pushes to a collector)

A new sink is one class with one method, `publish(snapshot)` (the protocol
`exporter.model.Sink`), added to the runner's sinks in `exporter/app/application.py`.
"""
