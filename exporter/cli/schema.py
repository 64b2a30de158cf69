"""`config-schema`: print the JSON Schema of exporter.toml (shipped as exporter.schema.json)."""

from __future__ import annotations

import sys

from exporter.app.settings import Settings
from exporter.cli.common import EXIT_OK
from exporter.config.schema import schema_text


def config_schema() -> int:
    sys.stdout.write(schema_text(Settings))
    return EXIT_OK
