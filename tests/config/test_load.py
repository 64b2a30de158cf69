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
    # A credential from the environment takes the source away from the simulator.
    settings = load_settings(REPO / "exporter.toml", environ={"APIMETRICS_SOURCES__K6_DEMO__TOKEN": "real"})
    assert [s.name for s in settings.sources if not settings.uses_simulator(s)] == ["k6-demo"]


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


def test_env_override_of_unknown_key_names_the_variable(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID, {"APIMETRICS_SERVER__LISTN": "x"}) == [
        "APIMETRICS_SERVER__LISTN (server.listn): unknown key; did you mean 'listen'?"
    ]
    assert errors_of(tmp_path, VALID, {"APIMETRICS_SOURCES__0__INTERVL": "30s"}) == [
        "APIMETRICS_SOURCES__0__INTERVL (sources[0].intervl): unknown key; did you mean 'interval'?"
    ]
    # A variable that creates an unknown table is named too.
    assert errors_of(tmp_path, VALID, {"APIMETRICS_SERVR__LISTEN": "x"}) == [
        "APIMETRICS_SERVR__LISTEN (servr): unknown key; did you mean 'server'?"
    ]


def test_env_override_with_bad_value_names_the_variable_not_the_value(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, VALID, {"APIMETRICS_SOURCES__K6_DEMO__INTERVAL": "soon-ish"})
    assert lines == ["APIMETRICS_SOURCES__K6_DEMO__INTERVAL (sources[0].interval): invalid duration 'soon-ish': "
                     "use a number of seconds or units ms, s, m, h, d (e.g. 30s, 5m, 1h)"]


def test_env_override_with_bad_json_gives_the_json_error(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID, {"APIMETRICS_SOURCES__K6_DEMO__TEST_RUN_IDS": "[103054,"}) == [
        "APIMETRICS_SOURCES__K6_DEMO__TEST_RUN_IDS (sources[0].test_run_ids): Input should be a valid list; "
        "its value is not valid JSON: Expecting value: line 1 column 9"
    ]


def test_env_value_that_only_looks_like_json_is_a_string(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, VALID), environ={"APIMETRICS_SERVER__LISTEN": "[::1]:9000"})
    assert settings.server.listen == "[::1]:9000"


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


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID.replace('interval = "30s"', 'intervall = "30s"\ntest_run_idz = [1]')) == [
        "sources[0].intervall: unknown key; did you mean 'interval'?",
        "sources[0].test_run_idz: unknown key; did you mean 'test_run_ids'?",
    ]


def test_unknown_key_suggestions_follow_the_table(tmp_path: Path) -> None:
    text = VALID + 'tokn_file = "/x"\nhttp = { retrys = 2 }\n'
    assert errors_of(tmp_path, text) == [
        "sources[0].http.retrys: unknown key; did you mean 'retries'?",
        "sources[0].tokn_file: unknown key; did you mean 'token_file'?",
    ]
    # Nothing close: the keys that are valid there.
    assert errors_of(tmp_path, VALID + "\n[limits]\nzzz = 1\n") == [
        "limits.zzz: unknown key; valid here: max_series, max_label_bytes, max_in_flight_per_host, "
        "max_response_bytes_in_flight"
    ]


def test_unknown_top_level_section(tmp_path: Path) -> None:
    assert errors_of(tmp_path, VALID + "\n[servr]\nlisten = 1\n") == ["servr: unknown key; did you mean 'server'?"]
    # `[[source]]` instead of `[[sources]]`.
    assert errors_of(tmp_path, VALID.replace("[[sources]]", "[[source]]")) == [
        "source: unknown key; did you mean 'sources'?"
    ]


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
        "sources[0].token: required (or token_file): the source is served by https://api.k6.io. The built-in "
        "simulator ([simulator] enabled = true) serves only sources that set neither a credential nor base_url"
    ]


def test_a_source_with_a_credential_or_base_url_is_never_served_by_the_simulator(tmp_path: Path) -> None:
    text = VALID + VALID[VALID.index("[[sources]]"):].replace("k6-demo", "k6-prod").replace(
        'interval = "30s"', 'token = "real-token"') + VALID[VALID.index("[[sources]]"):].replace(
        "k6-demo", "k6-own").replace('interval = "30s"', 'base_url = "http://k6.internal:8080"\ntoken = "t"')
    settings = load_settings(write_config(tmp_path, text), environ={})
    assert [settings.endpoint(s) for s in settings.sources] == ["simulator", "https://api.k6.io",
                                                              "http://k6.internal:8080"]
    # A base_url alone is not enough: its vendor needs the credential.
    lines = errors_of(tmp_path, VALID.replace('interval = "30s"', 'base_url = "https://api.k6.io"'))
    assert lines[0].startswith("sources[0].token: required (or token_file): the source is served by https://api.k6.io")


@pytest.mark.parametrize("url", ["api.k6.io", "ftp://api.k6.io", "https://", "http://[::1", "https://a b"])
def test_base_url_must_be_an_absolute_http_url(tmp_path: Path, url: str) -> None:
    (line,) = errors_of(tmp_path, VALID.replace('interval = "30s"', f'base_url = "{url}"\ntoken = "t"'))
    assert line.startswith(f"sources[0].base_url: '{url}' is not ")
    if url == "api.k6.io":
        assert line.endswith("did you mean 'https://api.k6.io'?")


@pytest.mark.parametrize("text", ["", "[server]\nlisten = '127.0.0.1:1'\n", "sources = []\n"])
def test_a_config_without_sources_is_refused(tmp_path: Path, text: str) -> None:
    assert errors_of(tmp_path, text) == [
        "sources: no sources: add at least one [[sources]] table (`api-metrics-exporter sample-config TYPE` "
        "prints one)"
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


HOW = ("point to one with --config PATH or APIMETRICS_CONFIG=PATH (`api-metrics-exporter sample-config TYPE` "
       "prints an example)")


def test_missing_file_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def lines(path: Path | None, environ: dict[str, str]) -> list[str]:
        with pytest.raises(ConfigError) as caught:
            load_settings(path, environ=environ)
        return caught.value.lines()

    assert lines(tmp_path / "absent.toml", {}) == [
        f"config file not found: looked at --config {tmp_path / 'absent.toml'}; {HOW}"]
    assert lines(None, {"APIMETRICS_CONFIG": str(tmp_path / "env.toml")}) == [
        f"config file not found: looked at $APIMETRICS_CONFIG={tmp_path / 'env.toml'} (--config not given); {HOW}"]
    monkeypatch.chdir(tmp_path)
    assert lines(None, {}) == [
        f"config file not found: looked at ./exporter.toml in {tmp_path} (--config not given, $APIMETRICS_CONFIG "
        f"not set); {HOW}"]


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
