"""`sample-config TYPE`: print a commented example config for one source type."""

from __future__ import annotations

import sys

from exporter.cli.common import EXIT_OK
from exporter.config.sample import sample_config as render
from exporter.sources import REGISTRY


def sample_config(source_type: str) -> int:
    cls = REGISTRY[source_type]
    sys.stdout.write(render(cls.config_model, source_type, cls.default_base_url))
    return EXIT_OK
