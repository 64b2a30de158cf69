"""The HTTP endpoints of the exporter: /metrics, /healthz, /readyz, the landing
page and POST /-/reload, with TLS and basic auth."""

from exporter.web.server import AppView, WebServer

__all__ = ["AppView", "WebServer"]
