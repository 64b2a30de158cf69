"""What every command shares: exit codes and the logger."""

from __future__ import annotations

import logging

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
