"""`check` as a user runs it: what it refuses (exit 2, naming the key or the
variable), where it looked for the file, each source's endpoint, and
credentials that could never be sent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, write_config

K6 = """
[[sources]]
type = "k6_cloud"
name = "k6-demo"
test_run_ids = [103054]
"""


def env_without_config(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("APIMETRICS_")}
    return {**env, **extra}


def check(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", "check", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60, env=env_without_config(PYTHONPATH=str(REPO), **env))


def test_check_refuses_a_base_url_that_is_no_http_url_and_a_config_without_sources(tmp_path: Path) -> None:
    config = write_config(tmp_path, K6.replace('name = "k6-demo"', 'name = "k6-demo"\nbase_url = "api.k6.io"\n'
                                                                   'token = "t"'))
    result = check("--config", str(config))
    assert result.returncode == 2 and result.stdout == ""
    assert ("sources[0].base_url: 'api.k6.io' is not an absolute http(s) URL: give the scheme and host, e.g. "
            "https://api.example.com; did you mean 'https://api.k6.io'?") in result.stderr
    for text in ("", "[server]\nlisten = '127.0.0.1:9999'\n"):
        empty = write_config(tmp_path, text, name="empty.toml")
        result = check("--config", str(empty))
        assert result.returncode == 2 and result.stdout == ""
        assert "sources: no sources: add at least one [[sources]] table" in result.stderr


def test_check_suggests_the_key_meant(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[simulator]\nenabled = true\n" + K6.replace("[[sources]]", "[[source]]"))
    result = check("--config", str(config))
    assert result.returncode == 2
    assert "  source: unknown key; did you mean 'sources'?" in result.stderr
    config = write_config(tmp_path, "[simulator]\nenabled = true\n" + K6 + 'intervall = "30s"\n')
    result = check("--config", str(config))
    assert result.returncode == 2
    assert "  sources[0].intervall: unknown key; did you mean 'interval'?" in result.stderr


def test_check_names_the_variable_behind_an_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[simulator]\nenabled = true\n" + K6)
    result = check("--config", str(config), APIMETRICS_SOURCES__0__INTERVL="30s",
                   APIMETRICS_SOURCES__K6_DEMO__TEST_RUN_IDS="[103054,")
    assert result.returncode == 2
    assert sorted(result.stderr.splitlines()[1:]) == [
        "  APIMETRICS_SOURCES__0__INTERVL (sources[0].intervl): unknown key; did you mean 'interval'?",
        "  APIMETRICS_SOURCES__K6_DEMO__TEST_RUN_IDS (sources[0].test_run_ids): Input should be a valid list; "
        "its value is not valid JSON: Expecting value: line 1 column 9",
    ]
    # The same variables, well formed, are taken.
    result = check("--config", str(config), APIMETRICS_SOURCES__0__INTERVAL="30s",
                   APIMETRICS_SOURCES__K6_DEMO__TEST_RUN_IDS="[103054, 103055]")
    assert result.returncode == 0, result.stderr
    assert "30s" in result.stdout and "103054, 103055" in result.stdout


def test_not_found_says_where_it_looked_and_how_to_point_elsewhere(tmp_path: Path) -> None:
    how = "point to one with --config PATH or APIMETRICS_CONFIG=PATH"
    result = check(cwd=tmp_path)
    assert result.returncode == 2
    assert (f"config file not found: looked at ./exporter.toml in {tmp_path} (--config not given, "
            f"$APIMETRICS_CONFIG not set); {how}") in result.stderr
    result = check(cwd=tmp_path, APIMETRICS_CONFIG="elsewhere.toml")
    assert f"looked at $APIMETRICS_CONFIG={tmp_path / 'elsewhere.toml'} (--config not given); {how}" in result.stderr
    result = check("--config", "nope.toml", cwd=tmp_path)
    assert f"looked at --config {tmp_path / 'nope.toml'}; {how}" in result.stderr
    # And ./exporter.toml is found when it is there.
    write_config(tmp_path, "[simulator]\nenabled = true\n" + K6)
    assert check(cwd=tmp_path).returncode == 0


def test_check_prints_the_endpoint_of_each_source(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[simulator]\nenabled = true\n" + K6
                          + K6.replace("k6-demo", "k6-prod").replace("test_run_ids", 'token = "real"\ntest_run_ids')
                          + K6.replace("k6-demo", "k6-own").replace(
                              "test_run_ids", 'base_url = "http://k6.internal:8080"\ntoken = "t"\ntest_run_ids'))
    result = check("--config", str(config))
    assert result.returncode == 0, result.stderr
    endpoints = {line.split()[0]: line.split()[3] for line in result.stdout.splitlines()[1:4]}
    assert endpoints == {"k6-demo": "simulator", "k6-prod": "https://api.k6.io", "k6-own": "http://k6.internal:8080"}
    assert ("note: [simulator] is enabled, but k6-prod, k6-own set(s) a credential or base_url: served by the "
            "vendor, never by the simulator") in result.stdout
    assert "real" not in result.stdout.replace("k6-prod", "")


def test_credentials_that_cannot_be_sent_are_refused_without_showing_them(tmp_path: Path) -> None:
    newline = tmp_path / "k6-token"
    newline.write_text("first-line-secret\nsecond-line-secret\n")
    config = write_config(tmp_path, "[simulator]\nenabled = true\n"
                          + K6.replace("test_run_ids", 'token = "tökén-secret-value"\ntest_run_ids')
                          + K6.replace("k6-demo", "k6-file").replace("test_run_ids", f'token_file = "{newline}"\n'
                                                                                        "test_run_ids")
                          + '[otlp]\nheaders = { authorization = "Bearer otlp-secret\\r\\nX-Evil: 1" }\n')
    for command in ("check", "run", "once"):
        result = subprocess.run([sys.executable, "-m", "exporter", command, "--config", str(config)],
                                capture_output=True, text=True, cwd=REPO, timeout=60, env=env_without_config())
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.splitlines()[1:] == [
            "  otlp.headers.authorization: the secret contains a line break (character 19): a secret is one line; "
            "its value is not shown",
            "  sources[0].token: the secret contains a non-ASCII character (character 2): a secret sent in a header "
            "must be printable ASCII; its value is not shown",
            f"  sources[1].token_file: the secret in {newline} contains a line break (character 18): a secret is "
            "one line; its value is not shown",
        ]
        output = result.stdout + result.stderr
        assert "secret-value" not in output and "line-secret" not in output and "otlp-secret" not in output
        assert "Traceback" not in output
