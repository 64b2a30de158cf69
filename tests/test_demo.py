"""The shipped demo as a new user runs it, and what it serves against the documentation.

One exporter process runs the shipped `exporter.toml` unchanged (what
`make run` starts), with `APIMETRICS_*` variables adding what production
turns on: OTLP pushed to a test receiver, a state dir and `[limits]`. The
intervals are shortened to 10 s so that every target is polled twice within
seconds instead of minutes. Then:

- the log holds no WARNING or worse (the WhatsApp flow refused for
  insufficient data is explained once, at INFO);
- `promtool check metrics` says nothing about the text exposition, and the
  OpenMetrics one parses with prometheus_client's strict parser, as a scraper
  receives it (multi-member gzip) and uncompressed, with the same families;
- the families served and the families documented in docs/metrics.md are the
  same, by name and type, in both directions, and so are the poll-error reasons;
- the demo data looks like a product: no test fixture in any label.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from exporter.app.settings import load_settings
from tests import metrics_doc
from tests.conftest import OPENMETRICS, REPO, ExporterProcess, free_port, samples_of, scrape_openmetrics
from tests.otlp_receiver import OtlpReceiver
from tests.test_integration_prometheus import require

SHIPPED = REPO / "exporter.toml"
INTERVAL = "10s"

# Documented families the demo cannot serve, and why. The test fails if one
# of them is served after all or leaves the documentation.
NOT_IN_THE_DEMO = {
    "apimetrics_http_retries_total": "only after an upstream request was retried",
    "apimetrics_discovery_errors_total": "only for a source that discovers its targets (Pluto `discover_runs`)",
    "apimetrics_discovered_targets": "only for a source that discovers its targets (Pluto `discover_runs`)",
    "pluto_run_info": "only for runs found by Pluto `discover_runs` (the status comes from the run list)",
}


@dataclass
class Demo:
    process: ExporterProcess
    text: str  # /metrics once every target was polled twice
    log: str  # the log until then
    targets: set[tuple[str, str]]


def demo_environment(port: int, receiver: OtlpReceiver, state: Path) -> dict[str, str]:
    env = {
        "APIMETRICS_SERVER__LISTEN": f"127.0.0.1:{port}",
        "APIMETRICS_OTLP__ENABLED": "true",
        "APIMETRICS_OTLP__PROTOCOL": receiver.protocol,
        "APIMETRICS_OTLP__ENDPOINT": receiver.endpoint,
        "APIMETRICS_STATE__DIR": str(state),
        "APIMETRICS_LIMITS__MAX_SERIES": "20000",
        "APIMETRICS_LIMITS__MAX_LABEL_BYTES": "512",
    }
    for source in load_settings(SHIPPED, environ={}).sources:
        name = re.sub(r"[-.]", "_", source.name).upper()  # as variable names spell it
        env[f"APIMETRICS_SOURCES__{name}__INTERVAL"] = INTERVAL
    return env


def poll_counts(text: str) -> dict[tuple[str, str], float]:
    return {(dict(labels)["source"], dict(labels)["target"]): value
            for labels, value in samples_of(text, "apimetrics_poll_duration_seconds_count").items()}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver("grpc").start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("demo")
    port = free_port()
    process = ExporterProcess(SHIPPED, port, env=demo_environment(port, receiver, tmp / "state"),
                              log=tmp / "exporter.log")
    try:
        process.wait_ready()
        settings = load_settings(SHIPPED, environ={})
        targets = {(s.name, t) for s in settings.sources for t in s.target_ids()}
        deadline = time.monotonic() + 90
        while True:
            text = httpx.get(f"{process.url}/metrics", headers={"Accept-Encoding": "identity"}).text
            counts = poll_counts(text)
            if set(counts) == targets and min(counts.values()) >= 2:
                break
            assert time.monotonic() < deadline, f"not every target was polled twice: {counts}"
            time.sleep(0.5)
        yield Demo(process, text, process.output(), targets)
    finally:
        process.stop()


def test_a_clean_first_run_logs_no_warning(demo: Demo) -> None:
    lines = demo.log.splitlines()
    assert lines, "the exporter logged nothing"
    loud = [line for line in lines if re.search(r" (WARNING|ERROR|CRITICAL) |Traceback", line)]
    assert not loud, "\n".join(loud)
    # The quiet WhatsApp flow is a documented state: one INFO line that says so.
    (explained,) = [line for line in lines if "insufficient_data" in line]
    assert " INFO " in explained and "fewer than 250" in explained and "Not an outage" in explained
    assert "3456789012345678" in explained


def test_every_source_is_served_and_up(demo: Demo) -> None:
    up = samples_of(demo.text, "apimetrics_target_up")
    assert {(dict(k)["source"], dict(k)["target"]) for k in up} == demo.targets
    assert set(up.values()) == {1.0}


def served_types(text: str) -> dict[str, str]:
    """{family: type} from the `# TYPE` lines, names as exposed (counters with `_total`)."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def test_served_families_are_the_documented_ones(demo: Demo) -> None:
    served = served_types(demo.text)
    rows = metrics_doc.documented_families()
    named = {row.name: row for row in rows if not row.is_pattern}
    assert len(served) >= 60 and len(named) >= 60

    undocumented = sorted(name for name in served if name not in named)
    assert not undocumented, f"served but not named in docs/metrics.md: {undocumented}"
    wrong_type = sorted((name, kind, named[name].kind) for name, kind in served.items() if named[name].kind != kind)
    assert not wrong_type, f"(family, served type, documented type): {wrong_type}"

    unserved = sorted(set(named) - set(served) - set(NOT_IN_THE_DEMO))
    assert not unserved, f"documented but not served by the demo: {unserved}"
    assert set(NOT_IN_THE_DEMO) <= set(named) and not set(NOT_IN_THE_DEMO) & set(served)
    # Every pattern row (`k6_<name>_seconds`) is one the demo has a family of.
    for row in (row for row in rows if row.is_pattern):
        assert any(row.matches(name) and kind == row.kind for name, kind in served.items()), row


def test_poll_error_reasons_are_the_documented_ones(demo: Demo) -> None:
    reasons = {dict(labels)["reason"] for labels in samples_of(demo.text, "apimetrics_poll_errors_total")}
    assert {"insufficient_data", "validation"} <= reasons  # WhatsApp's and Bird's own
    assert reasons == metrics_doc.documented_reasons()


@pytest.mark.integration
def test_promtool_is_silent(demo: Demo) -> None:
    promtool = require("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=demo.text, capture_output=True, text=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    assert "_created" not in demo.text  # OpenMetrics only


def test_openmetrics_parses_strictly_with_the_same_families(demo: Demo) -> None:
    url = demo.process.url
    plain = httpx.get(f"{url}/metrics", headers={"Accept": OPENMETRICS, "Accept-Encoding": "identity"}).text
    for body in (plain, scrape_openmetrics(url)):
        assert body.endswith("# EOF\n")
        families = {f.name: f for f in openmetrics_families(body)}
        # The text format's families, counters without `_total` in OpenMetrics.
        expected = {f.name: f.type for f in text_string_to_metric_families(demo.text)}
        assert {name: f.type for name, f in families.items()} == expected
        counters = [f for f in families.values() if f.type == "counter" and f.samples]
        assert counters and all(any(s.name.endswith("_created") for s in f.samples) for f in counters)


def test_otlp_receives_every_vendor(demo: Demo, receiver: OtlpReceiver) -> None:
    deadline = time.monotonic() + 30
    prefixes = {"k6_", "bird_", "pluto_", "whatsapp_", "flux_"}
    while {p for p in prefixes if any(point.metric.startswith(p) for point in receiver.points())} != prefixes:
        assert time.monotonic() < deadline, "the OTLP receiver did not get every vendor"
        time.sleep(0.5)
    exported = samples_of(httpx.get(f"{demo.process.url}/metrics").text, "apimetrics_otlp_exported_points_total")
    assert exported[(("result", "success"),)] > 0


def test_the_demo_data_looks_like_a_product(demo: Demo) -> None:
    """No test fixture (quotes, backslashes, newlines, colliding or sanitised
    tag keys) in any label of the shipped demo: those are for the tests."""
    odd = set()
    for family in text_string_to_metric_families(demo.text):
        for sample in family.samples:
            for name, value in sample.labels.items():
                if name.startswith("tag_") or re.search(r'["\\\n]|[^\x20-\x7e]', value):
                    odd.add((sample.name, name, value))
    assert not odd, sorted(odd)
    failed = samples_of(demo.text, "k6_http_req_failed")
    assert failed and all(0 <= v < 0.1 for v in failed.values())
