"""The HTML landing page (`/`): every target's last poll, status and error."""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime

from exporter import __version__
from exporter.runner import TargetStatus


def landing_page(statuses: list[TargetStatus]) -> str:
    rows = []
    for s in sorted(statuses, key=lambda s: (s.source, s.target)):
        state = "pending" if not s.tried else ("up" if s.up else f"down: {s.reason}")
        rows.append(
            "<tr>"
            f"<td>{html.escape(s.source)}</td><td>{html.escape(s.target)}</td>"
            f"<td>{_when(s.last_attempt)}</td><td>{_when(s.last_success)}</td>"
            f"<td class='{'up' if s.up else 'down'}'>{html.escape(state)}</td>"
            f"<td>{s.series}</td><td>{html.escape(s.message)}</td>"
            "</tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>api-metrics-exporter</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}"
        ".up{color:#1a7f37}.down{color:#cf222e}</style></head><body>"
        f"<h1>api-metrics-exporter {html.escape(__version__)}</h1>"
        "<p><a href='/metrics'>/metrics</a> · <a href='/healthz'>/healthz</a> · <a href='/readyz'>/readyz</a></p>"
        "<table><tr><th>source</th><th>target</th><th>last poll</th><th>last success</th>"
        "<th>status</th><th>series</th><th>last error</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )


def _when(moment: float | None) -> str:
    if moment is None:
        return "never"
    ago = max(0.0, time.time() - moment)
    stamp = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{stamp} ({ago:.0f}s ago)"
