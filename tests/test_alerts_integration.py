"""The shipped rules in a real Prometheus scraping a real exporter (tests/alerting_stack.py).

Healthy, no alert fires. Then the simulator refuses one target's credentials
(bird/welcome-flow: 401) and fails one source's data (every k6 threshold
tainted), and exactly the matching alerts reach `firing` in /api/v1/alerts,
with the labels and annotations that say what broke.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.alerting_stack import AUTH_TARGET, FOR, K6_RUN, AlertingStack, alert_key

pytestmark = pytest.mark.integration

RUNBOOKS = "https://github.com/api-metrics-exporter/api-metrics-exporter/blob/main/docs/alerts.md#"


def describe(alerts: list[dict[str, Any]]) -> list[str]:
    return sorted(" ".join(alert_key(a)) + f" [{a['state']}]" for a in alerts)


def test_the_rules_load_and_evaluate(alerting_stack: AlertingStack) -> None:
    groups = alerting_stack._api("/api/v1/rules")["groups"]
    assert {g["name"] for g in groups} == {
        "api-metrics-exporter.records", "api-metrics-exporter.exporter", "api-metrics-exporter.vendors"}
    alerting_stack.healthy()
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] != "err", f"{rule['name']}: {rule.get('lastError')}"
            if rule["type"] == "alerting":
                assert rule["duration"] == 5, rule["name"]  # FOR, as rendered for the test
    assert FOR == "5s"


def test_no_alert_fires_on_the_healthy_demo(alerting_stack: AlertingStack) -> None:
    fired = alerting_stack.healthy()
    assert fired == [], f"alerts fired while nothing was broken: {describe(fired)}"
    # The recording rules have data to work on: every target is polled.
    ratios = alerting_stack.query("source_target_reason:apimetrics_poll_errors:ratio_rate30m")
    assert ratios["status"] == "success" and ratios["data"]["result"]


def test_breaking_a_target_and_a_source_fires_exactly_their_alerts(alerting_stack: AlertingStack) -> None:
    firing = alerting_stack.broken()
    keys = {alert_key(alert) for alert in firing}
    assert keys == alerting_stack.expected_after_faults(), describe(firing)
    source, target = AUTH_TARGET
    by_name = {alert["labels"]["alertname"]: alert for alert in firing}
    for name, alert in by_name.items():
        notes = alert["annotations"]
        assert notes["runbook_url"] == RUNBOOKS + name.lower()
        assert notes["summary"] and notes["description"] and "{{" not in notes["summary"] + notes["description"]
        assert alert["labels"]["severity"] == "warning"
    down = by_name["ApiMetricsTargetDown"]
    assert down["annotations"]["summary"] == f"Target {source}/{target} is down (auth)"
    assert f"target {target} of source {source}" in down["annotations"]["description"]
    auth = by_name["ApiMetricsAuthFailing"]
    assert auth["annotations"]["summary"] == f"Target {source}/{target} is refused its credentials"
    stale = by_name["ApiMetricsTargetStale"]
    assert "longer than its max_staleness" in stale["annotations"]["description"]
    threshold = by_name["ApiMetricsK6ThresholdFailed"]
    assert threshold["labels"]["test_run_id"] == K6_RUN
    assert threshold["labels"]["metric"] == "http_req_duration"
    assert threshold["annotations"]["summary"] == (
        f"k6 test run {K6_RUN} failed threshold {threshold['labels']['threshold']}")
    # The other bird flow kept working.
    other = alerting_stack.query('apimetrics_target_up{source="bird",target="order-updates"}')
    assert [s["value"][1] for s in other["data"]["result"]] == ["1"]
