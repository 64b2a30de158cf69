"""What the OTLP sink has delivered, per target, under `[state] dir`: so a restart re-sends nothing.

One JSON file per (source, target) beside the ledger's (`*.otlp.json`, same
naming, written atomically the same way, `exporter.ledger.state`):

    {"format": "api-metrics-exporter/otlp-sent", "version": 1, "source": "k6", "target": "103054",
     "series": [["k6_vus", [["test_run_id", "103054"], ["stat", "value"]], 1780000000000000000], ...]}

`series` holds, per series, the vendor time (ns) of the newest point the
collector accepted. A file that is not ours, or is malformed, is moved aside
(`.corrupt-<time>`) and the target starts as if it had none: its first poll
then sends only the newest point of each series.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from exporter.ledger.state import quarantine, state_path, write_atomically
from exporter.model import SeriesKey, TargetKey

log = logging.getLogger(__name__)

SENT_FILE_FORMAT = "api-metrics-exporter/otlp-sent"
SENT_FILE_VERSION = 1
SUFFIX = ".otlp.json"

Sent = dict[SeriesKey, int]


class SentStateError(ValueError):
    """A state file that is not a valid OTLP sent-state file of this target."""


class SentStateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, key: TargetKey) -> Path:
        return state_path(self.directory, key.source, key.target, SUFFIX)

    def save(self, key: TargetKey, sent: Sent) -> None:
        """Atomically replace the target's file; raises OSError on failure."""
        document = {
            "format": SENT_FILE_FORMAT, "version": SENT_FILE_VERSION, "source": key.source, "target": key.target,
            "series": [[name, [list(pair) for pair in labels], ns] for (name, labels), ns in sent.items()],
        }
        payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        write_atomically(self.directory, self.path_for(key), payload)

    def load(self, key: TargetKey) -> Sent | None:
        """The target's delivered times, or None when it has no usable file."""
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read OTLP state file %s (%s); %s starts afresh", path, exc, key)
            return None
        try:
            return decode(data, key)
        except SentStateError as exc:
            quarantine(path, str(exc), "OTLP state file")
            return None


def decode(data: bytes, key: TargetKey) -> Sent:
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SentStateError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != SENT_FILE_FORMAT:
        raise SentStateError(f"format is not {SENT_FILE_FORMAT!r}")
    if document.get("version") != SENT_FILE_VERSION:
        raise SentStateError(f"version is {document.get('version')!r}, expected {SENT_FILE_VERSION}")
    if (document.get("source"), document.get("target")) != (key.source, key.target):
        raise SentStateError(f"file belongs to {document.get('source')!r}/{document.get('target')!r}, not {key}")
    series = document.get("series")
    if not isinstance(series, list):
        raise SentStateError("'series' must be a list")
    return dict(_entry(item, index) for index, item in enumerate(series))


def _entry(item: Any, index: int) -> tuple[SeriesKey, int]:
    where = f"series[{index}]"
    if not isinstance(item, list) or len(item) != 3:
        raise SentStateError(f"{where} must be [name, labels, time]")
    name, labels, ns = item
    pairs_ok = isinstance(labels, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in labels)
    if not isinstance(name, str) or not pairs_ok:
        raise SentStateError(f"{where}: name must be a string and labels a list of [name, value] strings")
    if not isinstance(ns, int) or isinstance(ns, bool):
        raise SentStateError(f"{where}: time must be an integer (ns)")
    return (name, tuple((k, v) for k, v in labels)), ns
