"""`check`: validate the config and list each source's endpoint and targets.

The endpoint is `simulator` or the URL the requests go to: a source with a
credential or a `base_url` is served by its vendor even when the simulator
is enabled, and the table says so before any request is sent.
"""

from __future__ import annotations

from exporter.app.settings import Settings


def targets_table(settings: Settings) -> str:
    rows = [("SOURCE", "TYPE", "INTERVAL", "ENDPOINT", "TARGETS")]
    for source in settings.sources:
        targets = ", ".join(source.target_ids()) or "(discovered)"
        rows.append((source.name, source.type, f"{source.interval:g}s", settings.endpoint(source), targets))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    vendor = [source.name for source in settings.sources if not settings.uses_simulator(source)]
    if settings.simulator.enabled and vendor:
        lines.append(f"note: [simulator] is enabled, but {', '.join(vendor)} set(s) a credential or base_url: "
                     "served by the vendor, never by the simulator")
    total = sum(len(s.target_ids()) for s in settings.sources)
    lines.append(f"config OK: {len(settings.sources)} source(s), {total} target(s)")
    return "\n".join(lines)
