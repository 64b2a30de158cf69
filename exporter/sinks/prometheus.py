"""Prometheus sink: the `/metrics` body, from pre-rendered blocks.

Vendor series are rendered at poll time (`exposition.render_blocks`) and kept
in the store; a scrape only collects references to them. The exporter's own
metrics (`apimetrics_*`, small and changing on every poll) are rendered per
scrape by prometheus_client from their registry. Format by `Accept`
negotiation (prometheus_client's `choose_encoder`): text 0.0.4 or OpenMetrics;
gzip when `Accept-Encoding` allows, as a concatenation of gzip members.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.sinks.exposition import EOF_LINE, EOF_MEMBER, gzip_member
from exporter.store import Store

OPENMETRICS = "application/openmetrics-text"


def render(
    store: Store,
    registry: CollectorRegistry,
    accept: str | None,
    accept_encoding: str | None,
    clock: Callable[[], float] = time.time,
) -> tuple[list[bytes], dict[str, str]]:
    """The body of one scrape as a list of byte strings, and its headers."""
    encoder, content_type = choose_encoder(accept or "")
    openmetrics = content_type.startswith(OPENMETRICS)
    compressed = bool(accept_encoding) and "gzip" in accept_encoding.lower()  # type: ignore[union-attr]
    # Expire first, so the expiry counters show in this very scrape.
    store.expire(clock())
    dynamic = encoder(registry)
    if openmetrics:
        dynamic = dynamic.removesuffix(EOF_LINE)
    headers = {"Content-Type": content_type}
    if compressed:
        headers["Content-Encoding"] = "gzip"
    if compressed and asks_like_a_scraper(accept):
        parts = [gzip_member(dynamic), *store.parts(openmetrics=openmetrics, compressed=True)]
        if openmetrics:
            parts.append(EOF_MEMBER)
        return parts, headers
    parts = [dynamic, *store.parts(openmetrics=openmetrics, compressed=False)]
    if openmetrics:
        parts.append(EOF_LINE)
    if compressed:
        # Browsers, curl and httpx stop after the first gzip member, so a
        # client that did not ask like a scraper gets one member, compressed
        # now (humans are rare; this is the slow path).
        parts = [gzip.compress(b"".join(parts), compresslevel=1, mtime=0)]
    return parts, headers


def asks_like_a_scraper(accept: str | None) -> bool:
    """Prometheus, Grafana Agent/Alloy, vmagent and the OTel Collector name the
    exposition formats with their version in `Accept`, and all are Go programs
    whose gzip reader reads every member of a multi-member stream (RFC 1952
    2.2). A browser's `text/html,...` or a tool's `*/*` does not."""
    text = (accept or "").lower()
    return "application/openmetrics-text" in text or "version=0.0.4" in text


def exposition(
    store: Store, registry: CollectorRegistry, accept: str = "text/plain", clock: Callable[[], float] = time.time
) -> bytes:
    """The whole uncompressed body: for `once`, tests and humans."""
    parts, _ = render(store, registry, accept, None, clock)
    return b"".join(parts)
