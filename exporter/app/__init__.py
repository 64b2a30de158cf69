"""The wiring: the root settings, the sources and targets of a replica, reloads, and the `App` that runs them."""

from exporter.app.application import App
from exporter.app.heap import keep_settled, settle_heap

__all__ = ["App", "keep_settled", "settle_heap"]
