"""`once` as a test tool, in a real process against the simulator: what is
selected is what is polled, self-metrics only when asked, a summary per
target on stderr, exit 1 on a failed target and 2 on a selection that names
nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter.simulator import Fault, Simulator
from tests.conftest import REPO, k6_config, write_config
from tests.sources.test_bird import bird_config
from tests.test_cli_config import env_without_config


def once(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", "once", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120, env=env_without_config())


def series(stdout: str) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    found: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in text_string_to_metric_families(stdout):
        for sample in family.samples:
            found.setdefault(family.name, set()).add(tuple(sorted(sample.labels.items())))
    return found


def summary_rows(stderr: str) -> dict[str, list[str]]:
    """SOURCE/TARGET → [STATUS, REASON, SERIES, DURATION] from the summary table."""
    lines = stderr.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("SOURCE "))
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("once: "):
            break
        source, target, status, *rest = line.split()
        rows[f"{source}/{target}"] = [status, " ".join(rest[:-2]), *rest[-2:]]
    return rows


def test_source_and_target_select_what_is_polled(simulator: Simulator, tmp_path: Path) -> None:
    config = write_config(tmp_path, k6_config(simulator, [103054, 103055]) + bird_config(simulator))
    simulator.clear_requests()
    result = once(config, "--source", "k6", "--target", "103055")
    assert result.returncode == 0, result.stderr
    found = series(result.stdout)
    assert not [name for name in found if name.startswith("apimetrics_")]  # no self-metrics unless asked
    assert not [name for name in found if name.startswith("bird_")]
    run_ids = {dict(labels).get("test_run_id") for name, all_labels in found.items() if name.startswith("k6_")
               for labels in all_labels}
    assert run_ids == {"103055"}
    # Only the selected target was asked for.
    paths = {r.path + "?" + "&".join(f"{k}={v[0]}" for k, v in r.query.items()) for r in simulator.requests}
    assert paths and all("103054" not in path and not path.startswith("/bird") for path in paths)
    rows = summary_rows(result.stderr)
    assert list(rows) == ["k6/103055"]
    status, reason, count, duration = rows["k6/103055"]
    assert (status, reason) == ("up", "-")
    assert int(count) == sum(len(labels) for name, labels in found.items())  # every vendor series counted
    assert duration.endswith("s") and float(duration[:-1]) > 0
    assert result.stderr.rstrip().endswith("once: 1 target(s): 1 up, 0 down")


def test_repeated_selection_and_self_metrics(simulator: Simulator, tmp_path: Path) -> None:
    config = write_config(tmp_path, k6_config(simulator, [103054, 103055]) + bird_config(simulator))
    result = once(config, "--target", "k6/103054", "--target", "flow-a", "--self-metrics")
    assert result.returncode == 0, result.stderr
    up = {dict(labels)["target"] for labels in series(result.stdout)["apimetrics_target_up"]}
    assert up == {"103054", "flow-a"}
    assert set(summary_rows(result.stderr)) == {"k6/103054", "bird/flow-a"}


def test_a_failed_target_exits_1_and_says_why(simulator: Simulator, tmp_path: Path) -> None:
    simulator.inject(Fault(path="test_run_id=103055", kind="status", status=500, times=100))
    config = write_config(tmp_path, k6_config(simulator, [103054, 103055]))
    result = once(config)
    assert result.returncode == 1
    rows = summary_rows(result.stderr)
    assert rows["k6/103054"][:2] == ["up", "-"]
    assert rows["k6/103055"][:3] == ["down", "http_5xx", "0"]
    assert result.stderr.rstrip().endswith("once: 2 target(s): 1 up, 1 down")
    # With JSON logs the summary is JSON too, one object per target.
    result = once(config, "--log-format", "json")
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    summary = {entry["target"]: entry for entry in entries if entry.get("summary") == "target"}
    assert summary["103055"]["status"] == "down" and summary["103055"]["reason"] == "http_5xx"
    assert summary["103054"]["status"] == "up" and summary["103054"]["series"] > 0
    # Selecting only the healthy one succeeds.
    assert once(config, "--target", "103054").returncode == 0


def test_a_selection_that_names_nothing_exits_2(simulator: Simulator, tmp_path: Path) -> None:
    config = write_config(tmp_path, k6_config(simulator, [103054]))
    result = once(config, "--source", "k7")
    assert result.returncode == 2 and result.stdout == ""
    assert "once: no source named k7; the config has: k6" in result.stderr
    result = once(config, "--target", "999")
    assert result.returncode == 2 and result.stdout == ""
    assert "once: no target 999; the selected sources have: k6/103054" in result.stderr
