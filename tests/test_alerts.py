"""The shipped rules (monitoring/): up to date with the chart, linted and unit-tested by promtool, documented.

monitoring/api-metrics-exporter.rules.yml is generated from the master copy
charts/api-metrics-exporter/rules/rules.yaml through the chart's PrometheusRule
template (monitoring/generate.py); these tests keep the two from drifting, run
`promtool check rules` and `promtool test rules`, and check that every alert
has firing and silent unit tests, its annotations and a section of
docs/alerts.md. tests/test_alerts_integration.py runs them in a real Prometheus.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.test_dashboard import documented_families, is_documented, metric_names
from tests.test_integration_prometheus import require

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "monitoring"
RULES = MONITORING / "api-metrics-exporter.rules.yml"
UNIT_TESTS = MONITORING / "api-metrics-exporter.rules.test.yml"
MASTER = REPO / "charts" / "api-metrics-exporter" / "rules" / "rules.yaml"
ALERTS_DOC = REPO / "docs" / "alerts.md"
RUNBOOK_BASE = "https://github.com/api-metrics-exporter/api-metrics-exporter/blob/main/docs/alerts.md"
# Renamed by issue 15 (apimetrics_ledger_corrections_total): the rules, the
# dashboard and docs/alerts.md use only the new name.
OLD_NAMES = ("apimetrics_counter_corrections",)


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("monitoring_generate", MONITORING / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


# --- one source of truth ------------------------------------------------------------------


def test_rules_file_is_the_chart_rendering_with_default_values() -> None:
    gen = generator()
    assert gen.main(["--check"]) == 0, "monitoring/ or values.schema.json is stale: run `make rules`"
    assert load(RULES)["groups"] == gen.rendered_groups()
    # Same groups and rules, in the master's order.
    master = load(MASTER)
    assert [g["name"] for g in load(RULES)["groups"]] == [g["name"] for g in master["groups"]]
    assert [r.get("alert") or r.get("record") for r in rules()] == [
        r.get("alert") or r.get("record") for g in master["groups"] for r in g["rules"]]


# --- promtool ------------------------------------------------------------------------------


@pytest.mark.integration
def test_promtool_check_rules_prints_nothing_but_success() -> None:
    promtool = require("promtool")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [f"Checking {RULES}", f"SUCCESS: {len(rules())} rules found"]


@pytest.mark.integration
def test_promtool_unit_tests_pass() -> None:
    promtool = require("promtool")
    result = subprocess.run([promtool, "test", "rules", UNIT_TESTS.name], cwd=MONITORING,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_firing_and_silent_unit_tests() -> None:
    suite = load(UNIT_TESTS)
    assert suite["rule_files"] == [RULES.name]
    firing: dict[str, list[dict[str, Any]]] = {}
    silent: set[str] = set()
    exprs: set[str] = set()
    for case in suite["tests"]:
        for check in case.get("alert_rule_test", []):
            if check["exp_alerts"]:
                firing.setdefault(check["alertname"], []).extend(check["exp_alerts"])
            else:
                silent.add(check["alertname"])
        exprs |= {check["expr"] for check in case.get("promql_expr_test", [])}
    names = [rule["alert"] for rule in alerts()]
    assert sorted(firing) == sorted(names), "alerts without a firing test"
    assert sorted(silent) == sorted(names), "alerts without a silent (exp_alerts: []) test"
    for name, expected in firing.items():
        for alert in expected:
            assert "severity" in alert["exp_labels"], name
            assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}, name
    assert recorded() <= exprs, "recording rules without a promql_expr_test"


# --- annotations and runbooks --------------------------------------------------------------


def doc_sections() -> dict[str, str]:
    """`### Name` heading -> its text, from docs/alerts.md."""
    text = ALERTS_DOC.read_text(encoding="utf-8")
    parts = re.split(r"^### (\S+)\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_alert_has_annotations_and_a_runbook_section() -> None:
    sections = doc_sections()
    for rule in alerts():
        name = rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        # The summary or the description names what broke, through the alert's labels.
        assert "$labels." in notes["summary"] + notes["description"] or name == "ApiMetricsExporterAbsent", name
        assert notes["runbook_url"] == f"{RUNBOOK_BASE}#{name.lower()}"
        # GitHub's anchor of the heading `### ApiMetricsX` is `#apimetricsx`.
        assert name in sections, f"docs/alerts.md has no section for {name}"
        assert len(sections[name].split()) > 30, f"docs/alerts.md says too little about {name}"
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
    assert sorted(sections) == sorted(rule["alert"] for rule in alerts()), "sections without an alert"


def test_vendor_alerts_cite_their_seed_doc() -> None:
    sections = doc_sections()
    [vendors] = [g for g in load(RULES)["groups"] if g["name"] == "api-metrics-exporter.vendors"]
    for rule in vendors["rules"]:
        assert re.search(r"\*Seed 00[0-4]\b", sections[rule["alert"]]), rule["alert"]


def test_the_alerts_table_gives_each_alerts_defaults() -> None:
    text = ALERTS_DOC.read_text(encoding="utf-8")
    rows = {m.group(1): (m.group(2), m.group(3), m.group(4).strip())
            for m in re.finditer(r"^\| \[(\w+)\]\(#\w+\) \| (\w+) \| (\w+) \| ([^|]*)\|", text, re.M)}
    master = {r["alert"]: r for g in load(MASTER)["groups"] for r in g["rules"] if "alert" in r}
    assert sorted(rows) == sorted(master)
    for name, rule in master.items():
        params = " ".join(f"`{k}` = `{yaml.safe_dump(v).removesuffix(chr(10)).removesuffix('...').strip()}`"
                          for k, v in (rule.get("params") or {}).items())
        assert rows[name] == (rule["labels"]["severity"], rule["for"], params.replace("`''`", '`""`')), name


# --- metric names ----------------------------------------------------------------------------


def test_rules_use_documented_metrics_only() -> None:
    families = documented_families()
    own = recorded()
    for rule in rules():
        for name in metric_names(rule["expr"]):
            assert name in own or name == "up" or is_documented(name, families), (
                f"{rule.get('alert') or rule.get('record')}: {name} is not in docs/metrics.md")


def test_the_renamed_ledger_metric_appears_under_its_new_name_only() -> None:
    paths = [RULES, MASTER, UNIT_TESTS, ALERTS_DOC,
             REPO / "charts" / "api-metrics-exporter" / "dashboards" / "api-metrics-exporter.json"]
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for old in OLD_NAMES:
            assert old not in text, f"{path.name} uses {old}"
    assert "apimetrics_ledger_corrections_total" in ALERTS_DOC.read_text(encoding="utf-8")
