"""Prometheus sink: snapshots in, the `/metrics` body out.

Series are rendered when a snapshot arrives (`blocks.render_blocks`), once
per poll, and kept in the `Store`; a scrape only collects references to
them. A target's own series (`apimetrics_target_up`…) are blocks too, under
their own key. Only the few process-wide self-metrics live on a
prometheus_client registry, rendered per scrape (`registry.registry_text`).

Format by `Accept` negotiation: text 0.0.4, or OpenMetrics 1.0 when asked
for (and not refused with `q=0`); gzip when `Accept-Encoding` allows it, as a
concatenation of gzip members for scrapers, one member for other clients.
"""

from __future__ import annotations

import gzip
import logging
import threading

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.model import Change, Snapshot, TargetKey
from exporter.sinks.prometheus.blocks import EOF_LINE, EOF_MEMBER, gzip_member, render_blocks
from exporter.sinks.prometheus.registry import registry_text
from exporter.sinks.prometheus.store import BlockKey, Store

log = logging.getLogger(__name__)

OPENMETRICS = "application/openmetrics-text"
VENDOR, OWN = 0, 1
# Largest body compressed per request for clients that are not scrapers.
COMPRESS_FOR_HUMANS = 4 * 1024 * 1024


class PrometheusSink:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.store = Store()
        # The process-wide self-metrics, rendered per scrape.
        self.registry = registry
        self._lock = threading.Lock()
        # The newest snapshot version taken per target (kept after a removal,
        # so that an older snapshot still in a worker thread cannot bring the
        # target back).
        self._versions: dict[TargetKey, int] = {}

    def publish(self, snapshot: Snapshot) -> None:
        """Render and swap in a target's blocks. Raises (changing nothing)
        when its vendor series cannot be rendered."""
        if snapshot.change is Change.HISTORY:
            return  # a backfill's past points: /metrics shows the present only
        key = snapshot.key
        vendor = (render_blocks(snapshot.samples, self.store.current(_block_key(key, VENDOR)))
                  if snapshot.change is Change.POLLED else None)
        own = render_blocks(snapshot.own, self.store.current(_block_key(key, OWN)))
        with self._lock:
            if snapshot.version <= self._versions.get(key, 0):
                return  # a newer snapshot of this target is already in
            self._versions[key] = snapshot.version
            if snapshot.change is Change.REMOVED:
                self.store.drop(_block_key(key, VENDOR))
                self.store.drop(_block_key(key, OWN))
                return
            if vendor is not None:
                for family in self.store.put(_block_key(key, VENDOR), vendor):
                    log.warning("%s: family %s has another type in another target; its series are dropped",
                                key, family.name)
            elif snapshot.change is Change.EXPIRED:
                self.store.drop(_block_key(key, VENDOR))
            self.store.put(_block_key(key, OWN), own)

    def body(self, accept: str | None, accept_encoding: str | None) -> tuple[list[bytes], dict[str, str]]:
        """The body of one scrape as a list of byte strings, and its headers."""
        # prometheus_client's negotiation (versions, escaping), but a format
        # refused with q=0 is not offered to it.
        _, content_type = choose_encoder(acceptable(accept))
        openmetrics = content_type.startswith(OPENMETRICS)
        compressed = accepts_gzip(accept_encoding)
        dynamic = registry_text(self.registry, openmetrics)
        headers = {"Content-Type": content_type}
        if compressed and asks_like_a_scraper(accept):
            headers["Content-Encoding"] = "gzip"
            parts = [gzip_member(dynamic), *self.store.parts(openmetrics=openmetrics, compressed=True)]
            if openmetrics:
                parts.append(EOF_MEMBER)
            return parts, headers
        parts = [dynamic, *self.store.parts(openmetrics=openmetrics, compressed=False)]
        if openmetrics:
            parts.append(EOF_LINE)
        if compressed and sum(map(len, parts)) <= COMPRESS_FOR_HUMANS:
            # Browsers, curl and httpx stop after the first gzip member, so a
            # client that did not ask like a scraper gets one member, compressed
            # now. Only for small bodies: compressing a big one on every request
            # would let any client burn a core; identity is always acceptable
            # (RFC 9110 12.5.3), so a big body goes out as it is.
            headers["Content-Encoding"] = "gzip"
            parts = [gzip.compress(b"".join(parts), compresslevel=1, mtime=0)]
        return parts, headers

    def text(self, accept: str = "text/plain") -> bytes:
        """The whole uncompressed body: for `once`, tests and humans."""
        parts, _ = self.body(accept, None)
        return b"".join(parts)


def _block_key(key: TargetKey, part: int) -> BlockKey:
    return (key.source, key.target, part)


def quality(item: str) -> float:
    """The `q` of one element of an Accept or Accept-Encoding header (RFC 9110
    12.4.2: 1 when absent; `q=0` means "not acceptable")."""
    for param in item.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def acceptable(accept: str | None) -> str:
    """The Accept header without the media ranges refused with `q=0`."""
    return ",".join(item for item in (accept or "").split(",") if quality(item) > 0)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """gzip when named (or `*`) with a non-zero quality; `gzip;q=0` refuses it."""
    named: dict[str, float] = {}
    for item in (accept_encoding or "").split(","):
        coding = item.split(";")[0].strip().lower()
        if coding:
            named[coding] = quality(item)
    return named.get("gzip", named.get("*", 0.0)) > 0


def asks_like_a_scraper(accept: str | None) -> bool:
    """Prometheus, Grafana Agent/Alloy, vmagent and the OTel Collector name the
    exposition formats with their version in `Accept`, and all are Go programs
    whose gzip reader reads every member of a multi-member stream (RFC 1952
    2.2). A browser's `text/html,...` or a tool's `*/*` does not."""
    text = (accept or "").lower()
    return "application/openmetrics-text" in text or "version=0.0.4" in text
