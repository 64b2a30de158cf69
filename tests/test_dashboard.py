"""The Grafana dashboard shipped with the chart only uses documented metrics, and they return data.

Every PromQL expression in charts/api-metrics-exporter/dashboards/api-metrics-exporter.json
(panel targets, panels nested in collapsed rows, templating queries) is reduced to the
metric names it selects; each one must be a family listed in docs/metrics.md, whose
tables have the family name in backticks in the first column and its type in the
second (histograms by their base name, counters with their `_total` suffix), a series
recorded by the shipped rules (monitoring/api-metrics-exporter.rules.yml), or ALERTS.
Every expression is then evaluated by a real Prometheus scraping a real exporter with
OTLP on and the rules loaded (tests/alerting_stack.py): none may fail or come back empty.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "charts" / "api-metrics-exporter" / "dashboards" / "api-metrics-exporter.json"
METRICS_DOC = REPO / "docs" / "metrics.md"
RULES = REPO / "monitoring" / "api-metrics-exporter.rules.yml"
# Series Prometheus makes, not the exporter: the firing-alerts panel reads ALERTS.
PROMETHEUS_SERIES = frozenset({"ALERTS"})

# PromQL functions, aggregation operators and keywords: never metric names.
PROMQL_WORDS = frozenset(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes
    clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year
    days_in_month deg delta deriv exp floor histogram_avg histogram_count histogram_fraction
    histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters
    double_exponential_smoothing hour idelta increase info irate label_join label_replace
    last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month
    predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin
    sinh sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time
    sum_over_time tan tanh time timestamp vector year pi
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk
    limit_ratio
    and or unless by without on ignoring group_left group_right bool offset start end
    inf nan atan2
    """.split()
)
SUFFIXES = ("_bucket", "_count", "_sum", "_created")
SELECTOR = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def strip_promql(expr: str) -> str:
    """Remove everything from an expression that can hold identifiers but no metric name."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    expr = re.sub(r"\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*", "1", expr)  # Grafana variables
    expr = re.sub(r"\{[^{}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\[\]]*\]", " ", expr)  # ranges, subqueries
    expr = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", expr
    )  # label lists
    expr = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", expr)
    expr = re.sub(r"@\s*(start\(\)|end\(\)|[0-9.]+)", " ", expr)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (by name, not via {__name__=...})."""
    stripped = strip_promql(expr)
    names = set()
    for match in re.finditer(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*", stripped):
        word = match.group(0)
        rest = stripped[match.end():]
        if rest.lstrip().startswith("("):  # function call or aggregation
            continue
        if word.lower() in PROMQL_WORDS:  # keywords and Inf/NaN are case-insensitive
            continue
        names.add(word)
    return names


def grafana_query_exprs(query: str) -> list[str]:
    """PromQL inside a Prometheus template-variable query (label_values, query_result, ...)."""
    query = query.strip()
    m = re.fullmatch(r"label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)", query, re.S)
    if m:
        return [m.group(1)]
    if re.fullmatch(r"label_values\(\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)|label_names\(.*\)|metrics\(.*\)", query, re.S):
        return []
    m = re.fullmatch(r"query_result\((.*)\)", query, re.S)
    if m:
        return [m.group(1)]
    return [query]


def iter_panels(panels):
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panel_exprs(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append((panel.get("title", "?"), target["expr"]))
    return out


def template_exprs(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        for expr in grafana_query_exprs(query or ""):
            out.append((f"${var['name']}", expr))
    return out


def documented_families() -> dict[str, str]:
    """family name -> type, from docs/metrics.md tables. Missing doc: the test fails."""
    assert METRICS_DOC.is_file(), f"{METRICS_DOC} is missing: every dashboard metric must be documented there"
    families = {}
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*([^|]*)\|", line)
        if m:
            families[m.group(1)] = m.group(2).strip().strip("`").lower()
    assert families, f"no `family` | type | rows found in {METRICS_DOC}"
    return families


def recorded_series() -> set[str]:
    """Series the shipped recording rules write (docs/alerts.md documents them)."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def is_documented(name: str, families: dict[str, str]) -> bool:
    if name in families:
        return True
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if families.get(base) in ("histogram", "summary", "gaugehistogram"):
                return True
            if suffix == "_created" and families.get(base + "_total") == "counter":
                return True
    return False


# --- the extractor itself -------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('apimetrics_target_up{source=~"$source"}', {"apimetrics_target_up"}),
        (
            'histogram_quantile(0.95, sum by (le, source) (rate(apimetrics_poll_duration_seconds_bucket{source=~"$source"}[5m])))',
            {"apimetrics_poll_duration_seconds_bucket"},
        ),
        ('time() - apimetrics_last_success_timestamp_seconds{source=~"$source"}', {"apimetrics_last_success_timestamp_seconds"}),
        ("k6_cloud_threshold_failed == 1", {"k6_cloud_threshold_failed"}),
        ('sum without (instance) (rate(a_total[$__rate_interval])) / on (job) group_left (x) b offset 1h', {"a_total", "b"}),
        ('label_replace(up{job="x"}, "dst", "$1", "src", "(.*)") and bool c', {"up", "c"}),
        ("max_over_time(d[1h:5m]) > 1e3 or vector(0)", {"d"}),
        ("abs(e) == +Inf or e != NaN", {"e"}),
    ],
)
def test_metric_name_extraction(expr, expected):
    assert metric_names(expr) == expected


def test_template_query_extraction():
    assert grafana_query_exprs("label_values(apimetrics_target_up, source)") == ["apimetrics_target_up"]
    assert grafana_query_exprs("label_values(source)") == []
    assert grafana_query_exprs("query_result(topk(5, foo))") == ["topk(5, foo)"]


# --- the dashboard ----------------------------------------------------------------------


def test_dashboard_basics():
    dashboard = load_dashboard()
    assert dashboard["title"] == "API Metrics Exporter"
    assert dashboard["uid"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = variables["source"]
    assert source["type"] == "query"
    query = source["query"]["query"] if isinstance(source["query"], dict) else source["query"]
    assert query == "label_values(apimetrics_target_up, source)"
    assert source["datasource"]["uid"] == "${datasource}"


def test_rows():
    dashboard = load_dashboard()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Exporter health", "k6 Cloud", "OTLP push", "Bird flow runs", "WhatsApp Flows",
                    "Pluto training runs", "Flux"]


def test_every_panel_uses_the_datasource_variable():
    dashboard = load_dashboard()
    panels = [p for p in iter_panels(dashboard["panels"]) if p["type"] != "row"]
    assert panels
    ids = [p["id"] for p in iter_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel.get("datasource", {}).get("uid") == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", {}).get("uid", "${datasource}") == "${datasource}", panel["title"]


def test_source_filter_only_on_families_with_a_source_label():
    # apimetrics_* families carry `source`; vendor families (k6_*) do not, so a
    # `source` matcher on them would select nothing.
    for title, expr in panel_exprs(load_dashboard()):
        for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?", strip_promql_keep_matchers(expr)):
            name, matchers = m.group(1), m.group(2) or ""
            if name.startswith("apimetrics_otlp_"):
                assert "source" not in matchers, f"{title}: {name} is per process, it has no source label"
            elif name.startswith("apimetrics_"):
                assert 'source=~"$source"' in matchers, f"{title}: {name} not filtered by $source"
            elif name.startswith(("k6_", "bird_", "whatsapp_", "pluto_", "flux_")):
                assert "source" not in matchers, f"{title}: {name} has no source label"


def strip_promql_keep_matchers(expr: str) -> str:
    return re.sub(r"\[[^\[\]]*\]", " ", expr)


def test_every_dashboard_metric_is_documented():
    dashboard = load_dashboard()
    families = documented_families()
    exprs = panel_exprs(dashboard) + template_exprs(dashboard)
    assert len(exprs) >= 12
    used: dict[str, str] = {}
    for where, expr in exprs:
        for name in metric_names(expr):
            used.setdefault(name, where)
    assert "apimetrics_target_up" in used
    own = recorded_series() | PROMETHEUS_SERIES
    undocumented = sorted(f"{name} (in {where})" for name, where in used.items()
                          if name not in own and not is_documented(name, families))
    assert not undocumented, f"not documented in docs/metrics.md: {undocumented}"


# --- against real tools and real output -------------------------------------------------

GRAFANA_DURATIONS = re.compile(r"\$\{?__(rate_interval|interval|range)(_ms|_s)?\}?")


def to_promql(expr: str, rate_interval: str = "5m") -> str:
    """Replace Grafana's variables with values Prometheus accepts."""
    expr = GRAFANA_DURATIONS.sub(rate_interval, expr)
    return re.sub(r"\$\{[a-zA-Z_][a-zA-Z0-9_]*(:[a-z]+)?\}|\$[a-zA-Z_][a-zA-Z0-9_]*", ".*", expr)


@pytest.mark.integration
def test_queries_parse_with_promtool(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package 'prometheus' (make test does)"
    dashboard = load_dashboard()
    exprs = [expr for _, expr in panel_exprs(dashboard) + template_exprs(dashboard)]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": to_promql(expr)} for i, expr in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


OTLP_ON = '\n[otlp]\nenabled = true\nendpoint = "http://127.0.0.1:9"\nprotocol = "http/protobuf"\n'


@pytest.mark.integration
def test_queries_select_series_the_exporter_exposes(tmp_path):
    """`once` against the built-in simulator: every metric and legend label the panels use exists."""
    from prometheus_client.parser import text_string_to_metric_families

    # The shipped demo config (every source), plus OTLP on so its self-metrics exist.
    config = tmp_path / "exporter.toml"
    config.write_text((REPO / "exporter.toml").read_text() + OTLP_ON)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("APIMETRICS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", "exporter", "once", "--config", str(config), "--self-metrics"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    labels_by_sample: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(result.stdout):
        for sample in family.samples:
            labels_by_sample.setdefault(sample.name, set()).update(sample.labels)
    dashboard = load_dashboard()
    # Recorded series and ALERTS come from Prometheus: test_queries_return_data_from_prometheus.
    not_exported = recorded_series() | PROMETHEUS_SERIES
    for panel in iter_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            if names & not_exported:
                continue
            missing = sorted(n for n in names if n not in labels_by_sample)
            assert not missing, f"{panel['title']}: the exporter exposes no {missing}"
            available = set().union(*(labels_by_sample[n] for n in names))
            wanted = set(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", target.get("legendFormat", "")))
            for clause in re.findall(r"\bby\s*\(([^)]*)\)", target["expr"]):
                wanted |= {label.strip() for label in clause.split(",") if label.strip()}
            assert wanted <= available, f"{panel['title']}: labels {sorted(wanted - available)} do not exist"


# --- issue 16: rate intervals, OTLP off, firing alerts, every query against Prometheus ---


def test_ranges_are_grafanas_rate_interval():
    for title, expr in panel_exprs(load_dashboard()):
        ranges = re.findall(r"\[([^\[\]]*)\]", expr)
        assert all(r == "$__rate_interval" for r in ranges), f"{title}: fixed range in {expr}"


def row_panels(dashboard: dict, title: str) -> list[dict]:
    """The panels under the row called `title` (rows are flat: panels follow their row)."""
    panels, inside = [], False
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            inside = panel["title"] == title
            panels.extend(panel.get("panels", []) if inside else [])
        elif inside:
            panels.append(panel)
    return panels


def test_the_otlp_row_says_when_otlp_is_off():
    panels = row_panels(load_dashboard(), "OTLP push")
    [state] = [p for p in panels if p["type"] == "stat"]
    [target] = state["targets"]
    # Its query answers whether OTLP is on or off (0 exporters pushing), never "No data".
    assert target["expr"] == "count(apimetrics_otlp_queue_points) or vector(0)"
    mappings = state["fieldConfig"]["defaults"]["mappings"]
    assert {"type": "value", "options": {"0": {"text": "OTLP is off", "color": "text", "index": 0}}} in mappings
    others = [p for p in panels if p is not state]
    assert len(others) == 3
    for panel in others:
        assert all("apimetrics_otlp_" in t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["fieldConfig"]["defaults"]["noValue"] == "OTLP is off", panel["title"]


def test_a_panel_lists_this_exporters_firing_alerts():
    panels = row_panels(load_dashboard(), "Exporter health")
    [alerts] = [p for p in panels if any("ALERTS" in t["expr"] for t in p.get("targets", []))]
    assert alerts["type"] == "table"
    [target] = alerts["targets"]
    assert target["expr"] == 'ALERTS{alertname=~"ApiMetrics.+", alertstate="firing"}'
    assert target["instant"] is True and target["format"] == "table"
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    names = [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]
    assert names and all(re.fullmatch("ApiMetrics.+", name) for name in names)


@pytest.mark.integration
def test_queries_return_data_from_prometheus(alerting_stack):
    """Every expression, evaluated by Prometheus (exporter with OTLP on, rules loaded, and
    the faults of tests/test_alerts_integration.py so that alerts fire), parses and returns
    series; the labels each legend and `by` clause names are on them."""
    from tests.alerting_stack import RATE_INTERVAL

    alerting_stack.broken()
    alerting_stack.catch_up()
    dashboard = load_dashboard()
    legends = {}
    for panel in iter_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            legends[(panel["title"], target["expr"])] = target.get("legendFormat", "")
    exprs = panel_exprs(dashboard) + template_exprs(dashboard)
    assert len(exprs) >= 30
    empty, failed = [], []
    for where, expr in exprs:
        promql = to_promql(expr, RATE_INTERVAL)
        answer = alerting_stack.query(promql)
        # On a loaded machine one scrape can miss a family for a moment (a poll
        # still running, a bucket not closed yet): an empty answer is asked
        # again for a while before it counts.
        deadline = time.monotonic() + 30
        while answer.get("status") == "success" and not answer["data"]["result"] and time.monotonic() < deadline:
            time.sleep(1)
            answer = alerting_stack.query(promql)
        if answer.get("status") != "success":
            failed.append(f"{where}: {promql}: {answer.get('error')}")
            continue
        series = answer["data"]["result"]
        if not series:
            empty.append(f"{where}: {promql}")
            continue
        wanted = set(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", legends.get((where, expr), "")))
        for clause in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            wanted |= {label.strip() for label in clause.split(",") if label.strip()}
        if "histogram_quantile(" in expr:
            wanted.discard("le")  # consumed by the quantile
        labels = set().union(*(s["metric"] for s in series))
        assert wanted <= labels, f"{where}: {promql}: no label {sorted(wanted - labels)}"
    assert not failed, failed
    assert not empty, f"queries without data: {empty}"
