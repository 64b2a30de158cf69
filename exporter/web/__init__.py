"""The HTTP endpoints of the exporter: /metrics, /healthz, /readyz, the status
page and its JSON (/api/v1/targets, /api/v1/status) and POST /-/reload, with
TLS, basic auth and bounds on what clients hold."""

from exporter.web.gate import ServerLimits
from exporter.web.server import AppView, WebServer

__all__ = ["AppView", "ServerLimits", "WebServer"]
