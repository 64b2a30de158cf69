"""The status page (`/`): a summary and every target, failing first, refreshed from the JSON.

One self-contained HTML document: the style (`assets/status.css`) and the
script (`assets/status.js`) are inlined and the data of the first paint is
embedded as JSON, so the page loads nothing from anywhere (its
Content-Security-Policy forbids it; the script may only fetch the exporter's
own JSON). The script renders everything with `textContent`: vendor strings
(error bodies, target ids) never become markup. The embedded JSON has `<`,
`>` and `&` escaped, so no string can close its `<script>` element.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources

from exporter.web.status import Summary, TargetView


def _asset(name: str) -> str:
    return resources.files("exporter.web").joinpath("assets", name).read_text(encoding="utf-8")


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


STYLE = _asset("status.css")
SCRIPT = _asset("status.js")
# Only this style and this script run; fetches go to the page's own origin.
POLICY = (f"default-src 'none'; style-src {_hash(STYLE)}; script-src {_hash(SCRIPT)}; connect-src 'self'; "
          "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

BODY = """<header>
<h1>api-metrics-exporter <small id="version"></small></h1>
<nav><a href="metrics">/metrics</a><a href="api/v1/targets">/api/v1/targets</a>
<a href="api/v1/status">/api/v1/status</a><a href="healthz">/healthz</a><a href="readyz">/readyz</a></nav>
</header>
<main>
<section id="summary" aria-label="Summary">
<div class="card" id="card-targets"></div><div class="card" id="card-config"></div>
<div class="card" id="card-otlp"></div><div class="card" id="card-shard"></div>
</section>
<div id="toolbar">
<input type="search" id="filter" placeholder="Filter: source, target, reason, error…" aria-label="Filter targets"
 autocomplete="off" spellcheck="false">
<select id="show" aria-label="Show">
<option value="all">all</option><option value="problems">down or warnings</option><option value="down">down</option>
<option value="warning">with warnings</option><option value="pending">pending</option><option value="up">up</option>
</select>
<span id="shown" class="muted"></span><span id="refresh-state" aria-live="polite"></span>
</div>
<table>
<thead><tr><th class="health">Health</th><th class="source">Source</th><th class="target">Target</th>
<th class="last">Last poll</th><th class="duration num">Duration</th><th class="next">Next poll</th>
<th class="series num">Series</th><th>Error / warnings</th></tr></thead>
<tbody id="rows"></tbody>
</table>
<p id="empty" hidden>No target matches.</p>
<p id="more" hidden></p>
<noscript><p>This page renders with JavaScript. The same data:
<a href="api/v1/targets">/api/v1/targets</a>, <a href="api/v1/status">/api/v1/status</a>.</p></noscript>
</main>
"""


def embedded_json(document: object) -> str:
    """JSON that is safe inside a `<script>` element: no `</script>` or `<!--` can form."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def status_page(summary: Summary, targets: list[TargetView]) -> str:
    data = embedded_json({"summary": summary.json(), "targets": [target.json() for target in targets]})
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>api-metrics-exporter {html.escape(summary.version)}</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{STYLE}</style></head><body>\n{BODY}"
        f'<script type="application/json" id="initial">{data}</script>\n'
        f"<script>{SCRIPT}</script>\n</body></html>\n"
    )
