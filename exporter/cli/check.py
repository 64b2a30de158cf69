"""`check`: validate the config and list each source's endpoint and targets."""

from __future__ import annotations

from exporter.app.settings import Settings


def targets_table(settings: Settings) -> str:
    rows = [("SOURCE", "TYPE", "INTERVAL", "ENDPOINT", "TARGETS")]
    for source in settings.sources:
        endpoint = "simulator" if settings.uses_simulator(source) else (source.base_url or "vendor default")
        rows.append((source.name, source.type, f"{source.interval:g}s", endpoint, ", ".join(source.target_ids())))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    total = sum(len(s.target_ids()) for s in settings.sources)
    lines.append(f"config OK: {len(settings.sources)} source(s), {total} target(s)")
    return "\n".join(lines)
