"""Config loading: file, environment, secret files and every error with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.app.settings import load_settings
from exporter.config import ConfigError
from exporter.config.types import parse_duration
from exporter.sources import REGISTRY
from tests.conftest import REPO, write_config

VALID = """
[server]
listen = "127.0.0.1:9999"

[simulator]
enabled = true

[[sources]]
type = "k6_cloud"
name = "k6-demo"
interval = "30s"
test_run_ids = [103054, 103055]
"""


def errors_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(tmp_path, text), environ=environ or {})
    return caught.value.lines()


def test_valid_file(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, VALID), environ={})
    assert settings.server.listen == "127.0.0.1:9999"
    assert settings.simulator.enabled is True
    (source,) = settings.sources
    assert (source.type, source.name, source.interval) == ("k6_cloud", "k6-demo", 30.0)
    assert source.target_ids() == ["103054", "103055"]
    assert source.staleness_limit == 90.0  # 3 × interval by default
    assert source.stats["trend"] == ["avg", "0.95", "0.99", "max"]


def test_shipped_config_is_valid_without_credentials() -> None:
    settings = load_settings(REPO / "exporter.toml", environ={})
    assert settings.simulator.enabled
    assert all(settings.uses_simulator(s) for s in settings.sources)


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path, VALID, name="other.toml")
    settings = load_settings(None, environ={"APIMETRICS_CONFIG": str(path)})
    assert settings.sources[0].name == "k6-demo"


def test_env_overrides_nested_and_list_entries(tmp_path: Path) -> None:
    settings = load_settings(
        write_config(tmp_path, VALID),
        environ={
            "APIMETRICS_SERVER__LISTEN": "0.0.0.0:9000",
            "APIMETRICS_SOURCES__0__INTERVAL": "5m",
            "APIMETRICS_SOURCES__K6_DEMO__TEST_RUN_IDS": "[1, 2, 3]",
            "UNRELATED": "x",
        },
    )
    assert settings.server.listen == "0.0.0.0:9000"
    assert settings.sources[0].interval == 300.0
    assert settings.sources[0].target_ids() == ["1", "2", "3"]


def test_env_override_of_unknown_source_is_an_error(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID, {"APIMETRICS_SOURCES__NOPE__TOKEN": "x"}) == [
        "APIMETRICS_SOURCES__NOPE__TOKEN: no source with index or name 'nope'"
    ]


def test_env_override_of_unknown_key_is_an_error(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID, {"APIMETRICS_SERVER__LISTN": "x"}) == [
        "server.listn: Extra inputs are not permitted"
    ]


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "k6-token"
    secret.write_text("s3cr3t-token\n")
    text = VALID.replace("[simulator]\nenabled = true", "[simulator]\nenabled = false").replace(
        'interval = "30s"', f'interval = "30s"\ntoken_file = "{secret}"'
    )
    settings = load_settings(write_config(tmp_path, text), environ={})
    token = settings.sources[0].token
    assert token is not None and token.get_secret_value() == "s3cr3t-token"
    assert "s3cr3t" not in repr(settings)


def test_secret_file_missing(tmp_path: Path) -> None:
    text = VALID.replace('interval = "30s"', 'interval = "30s"\ntoken_file = "/nonexistent/k6"')
    assert errors_of(tmp_path, text) == [
        "sources[0].token_file: cannot read /nonexistent/k6: No such file or directory"
    ]


def test_secret_and_secret_file_together(tmp_path: Path) -> None:
    secret = tmp_path / "t"
    secret.write_text("abc")
    text = VALID.replace('interval = "30s"', f'interval = "30s"\ntoken = "x"\ntoken_file = "{secret}"')
    assert errors_of(tmp_path, text) == ["sources[0].token_file: give either token or token_file, not both"]


def test_unknown_key(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID.replace('interval = "30s"', 'interval = "30s"\ntest_run_idz = [1]')) == [
        "sources[0].test_run_idz: Extra inputs are not permitted"
    ]


def test_unknown_top_level_section(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID + "\n[servr]\nlisten = 1\n") == ["servr: Extra inputs are not permitted"]


def test_bad_duration(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID.replace('"30s"', '"30 parsecs"')) == [
        "sources[0].interval: invalid duration '30 parsecs': use a number of seconds or units ms, s, m, h, d "
        "(e.g. 30s, 5m, 1h)"
    ]


def test_duplicate_source_name(tmp_path: Path) -> None:
    text = VALID + VALID[VALID.index("[[sources]]"):]
    assert errors_of(tmp_path, text) == ["sources[1].name: duplicate source name 'k6-demo' (also sources[0])"]


def test_unknown_source_type(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID.replace('"k6_cloud"', '"k7_cloud"')) == [
        "sources[0].type: unknown source type 'k7_cloud'; one of: " + ", ".join(REGISTRY)
    ]


def test_missing_source_type(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID.replace('type = "k6_cloud"\n', "")) == [
        "sources[0].type: required; one of: " + ", ".join(REGISTRY)
    ]


def test_token_required_without_simulator(tmp_path: Path) -> None:
    text = VALID.replace("enabled = true", "enabled = false")
    assert errors_of(tmp_path, text) == [
        "sources[0].token: required (or token_file) unless the built-in simulator serves this source"
    ]


def test_every_problem_is_reported(tmp_path: Path) -> None:
    text = VALID.replace('"30s"', '"0s"').replace('listen = "127.0.0.1:9999"', 'listen = "nowhere"')
    assert errors_of(tmp_path, text) == [
        "server.listen: invalid listen address 'nowhere': expected host:port, e.g. 0.0.0.0:9687",
        "sources[0].interval: duration must be positive, got '0s'",
    ]


def test_unknown_stat_for_type(tmp_path: Path) -> None:
    text = VALID.replace('interval = "30s"', 'interval = "30s"\nstats = { counter = ["p99"] }')
    assert errors_of(tmp_path, text) == ["sources[0].stats: counter: unknown stat(s) p99; allowed: count, rps"]


def test_invalid_toml(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, "[server\n")
    assert len(lines) == 1 and "is not valid TOML" in lines[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "absent.toml", environ={})
    assert caught.value.lines() == [f"config file {tmp_path / 'absent.toml'} not found"]


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(30, 30.0), ("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0), ("500ms", 0.5), ("2d", 172800.0)],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "s", "5 m", "5x", "0s", -1, True, "nan"])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)
