"""The wiring: the root settings, the sources and targets of a replica, reloads, and the `App` that runs them."""

from exporter.app.application import App, freeze_startup_heap

__all__ = ["App", "freeze_startup_heap"]
