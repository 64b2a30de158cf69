"""Sinks: where snapshots go. A sink knows its output format, never a vendor.

    runner ──Snapshot──► Sink.publish ──► prometheus/ (the /metrics body)
                                     └──► otlp/       (pushes to a collector)

A new sink is one class with one method, `publish(snapshot)`. It is called
on the event loop for most snapshots, and from a worker thread for big ones
(so converting thousands of samples never stalls other polls), so it must be
thread-safe, and it must not block on I/O: a sink that sends somewhere queues
and sends from a task or thread of its own.
"""

from __future__ import annotations

from typing import Protocol

from exporter.model import Snapshot


class Sink(Protocol):
    def publish(self, snapshot: Snapshot) -> None: ...
