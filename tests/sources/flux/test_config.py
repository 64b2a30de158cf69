"""The `type = "flux"` config (config.py): errors name the problem; reserved tag keys get a prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter.config import ConfigError
from exporter.simulator import Simulator
from exporter.simulator.flux import FakeMetric, FluxFake
from exporter.sources.flux.config import tag_label
from tests.conftest import samples_of, settings_from
from tests.sources.flux.support import flux_config


@pytest.mark.parametrize(("metrics", "message"), [
    ('[{ name = "a", aggregations = ["rate"] }]', "use rate() on the counter"),
    ('[{ name = "a", type = "gauge", aggregations = ["p95"] }]', "p95 not valid for a gauge"),
    ('[{ name = "a", aggregations = ["median"] }]', "unknown aggregation(s) median"),
    ('[{ name = "a", group_by = ["my.tag", "my_tag"] }]', "both become label 'my_tag'"),
    ('["a", "a"]', "'a' is listed twice"),
    ('[{ name = "a", type = "set", unit = "ms" }]', "no unit"),
])
def test_config_errors(simulator: Simulator, tmp_path: Path, metrics: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings_from(tmp_path, flux_config(simulator, f"metrics = {metrics}"))
    assert message in str(error.value)


def test_configured_names_that_collide_are_a_config_error(simulator: Simulator, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        settings_from(tmp_path, flux_config(simulator, 'metrics = ["api.response_time", "users.online", '
                                                       '"api-response_time"]'))
    message = str(error.value)
    assert "'api.response_time'" in message and "'api-response_time'" in message
    assert "flux_api_response_time" in message


def test_reserved_tag_keys_get_a_prefix(simulator: Simulator, flux: FluxFake, harness: Any) -> None:
    flux.add(FakeMetric("logins", "counter", {"account": ("x", "y")}))
    h = harness('metrics = [{ name = "logins", group_by = ["account"] }]')
    assert h.poll()
    assert {dict(k)["tag_account"] for k in samples_of(h.text(), "flux_logins_total")} == {"x", "y"}


@pytest.mark.parametrize(("key", "label"), [
    ("region", "region"), ("my.tag", "my_tag"), ("account", "tag_account"), ("quantile", "tag_quantile"),
])
def test_tag_labels(key: str, label: str) -> None:
    assert tag_label(key) == label
