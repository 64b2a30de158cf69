"""The OTLP sink's delivered-state files: round trip, a foreign or corrupt file moved aside, old files untouched."""

from __future__ import annotations

import json
from pathlib import Path

from exporter.ledger.state import LedgerStateStore
from exporter.model import TargetKey
from exporter.sinks.otlp.state import SentStateStore

KEY = TargetKey("k6", "103054")


def test_round_trip_beside_the_ledger_files(tmp_path: Path) -> None:
    store = SentStateStore(tmp_path)
    sent = {("k6_vus", (("test_run_id", "103054"), ("stat", "value"))): 1_780_000_000_000_000_000,
            ("k6_x", ()): 5}
    store.save(KEY, sent)
    assert store.load(KEY) == sent
    assert store.path_for(KEY).name.endswith(".otlp.json")
    # The ledger file of the same target has its own name: neither format changed.
    assert LedgerStateStore(tmp_path).path_for("k6", "103054").name == \
        store.path_for(KEY).name.replace(".otlp.json", ".ledger.json")
    assert store.load(TargetKey("k6", "other")) is None


def test_a_foreign_or_corrupt_file_is_moved_aside(tmp_path: Path) -> None:
    store = SentStateStore(tmp_path)
    for body in (b"{not json", json.dumps({"format": "api-metrics-exporter/otlp-sent", "version": 1,
                                            "source": "k6", "target": "other", "series": []}).encode(),
                 json.dumps({"format": "api-metrics-exporter/otlp-sent", "version": 1, "source": "k6",
                             "target": "103054", "series": [["x", [["a"]], 1]]}).encode()):
        store.path_for(KEY).write_bytes(body)
        assert store.load(KEY) is None
        assert not store.path_for(KEY).exists()
    assert len(list(tmp_path.glob("*.corrupt-*"))) == 3
