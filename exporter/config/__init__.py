"""Config building blocks: value types (`types`), the keys every source has
(`source`), the `[server]`, `[limits]` and `[sharding]` sections, and how a
file plus the environment are read (`load`). The root model that composes
them with each source's and sink's own section is `exporter.app.settings`."""

from exporter.config.load import ConfigError

__all__ = ["ConfigError"]
