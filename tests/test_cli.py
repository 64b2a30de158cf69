"""The command line as a user runs it: real processes, exit codes, output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.app.settings import load_settings
from exporter.simulator import Fault, Simulator
from tests.conftest import REPO, k6_config, write_config


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60, env=env)


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"api-metrics-exporter {__version__}"


def test_check_ok_prints_targets() -> None:
    result = cli("check", "--config", str(REPO / "exporter.toml"))
    assert result.returncode == 0, result.stderr
    settings = load_settings(REPO / "exporter.toml", environ={})
    for source in settings.sources:
        assert source.name in result.stdout and ", ".join(source.target_ids()) in result.stdout
    targets = sum(len(s.target_ids()) for s in settings.sources)
    assert f"config OK: {len(settings.sources)} source(s), {targets} target(s)" in result.stdout
    assert "k6-demo" in result.stdout and "simulator" in result.stdout


def test_check_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, """
        [[sources]]
        type = "k6_cloud"
        name = "x"
        interval = "soon"
        token = "t"
        test_run_ids = [1]
    """)
    result = cli("check", "--config", str(config))
    assert result.returncode == 2
    assert "sources[0].interval: invalid duration 'soon'" in result.stderr
    assert result.stdout == ""


def test_once_prints_exposition_and_exits_0(simulator: Simulator, tmp_path: Path) -> None:
    config = write_config(tmp_path, k6_config(simulator, [103054]))
    result = cli("once", "--config", str(config), "--self-metrics")
    assert result.returncode == 0, result.stderr
    names = {m.name for m in text_string_to_metric_families(result.stdout)}
    assert {"k6_http_req_duration_seconds", "k6_cloud_threshold_failed", "apimetrics_target_up"} <= names


def test_once_exits_1_when_a_target_fails(simulator: Simulator, tmp_path: Path) -> None:
    simulator.inject(Fault(path="test_run_id=103055", kind="status", status=500, times=100))
    config = write_config(tmp_path, k6_config(simulator, [103054, 103055]))
    result = cli("once", "--config", str(config), "--self-metrics")
    assert result.returncode == 1
    assert 'apimetrics_target_up{source="k6",target="103054"} 1.0' in result.stdout
    assert 'apimetrics_target_up{source="k6",target="103055"} 0.0' in result.stdout
    assert "poll of k6/103055 failed (http_5xx)" in result.stderr


def test_token_never_logged(simulator: Simulator, tmp_path: Path) -> None:
    secret = "leaky-secret-value-123"
    config = write_config(tmp_path, k6_config(simulator, [103054]).replace("simulator-token", secret))
    result = cli("once", "--config", str(config), "--log-level", "debug")
    assert result.returncode == 1  # the simulator rejects the wrong token
    assert secret not in result.stdout + result.stderr
    assert "(auth)" in result.stderr


def test_json_logs_one_object_per_line(simulator: Simulator, tmp_path: Path) -> None:
    import json

    simulator.inject(Fault(path="test_run_id=103054", kind="status", status=500, times=100))
    config = write_config(tmp_path, k6_config(simulator, [103054]))
    result = cli("once", "--config", str(config), "--log-format", "json")
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    failure = next(e for e in entries if e["message"].startswith("poll of k6/103054 failed"))
    assert failure["level"] == "warning" and failure["reason"] == "http_5xx" and failure["target"] == "103054"


def test_options_before_or_after_the_command(tmp_path: Path) -> None:
    bad = write_config(tmp_path, "[servr]\n")
    assert cli("--config", str(bad), "check").returncode == 2
    assert cli("check", "--config", str(bad)).returncode == 2
    assert cli("--config", str(REPO / "exporter.toml"), "check").returncode == 0
