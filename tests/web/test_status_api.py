"""GET /api/v1/targets and /api/v1/status of a running app, over real sockets, against the simulator."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from exporter import poller
from exporter.simulator import SIMULATOR_TOKEN, Fault, Simulator
from exporter.simulator.whatsapp_flows import QUIET_FLOW
from tests.conftest import k6_config, write_config
from tests.otlp_receiver import OtlpReceiver
from tests.web.harness import LiveApp, wait_for

BUSY_FLOW = "1234567890123456"
FIELDS = {
    # The documented contract (docs/status-page.md)...
    "source", "type", "target", "endpoint", "interval_seconds", "health", "reason", "last_error",
    "last_poll_timestamp", "last_duration_seconds", "next_poll_timestamp", "series", "warnings",
    # ...and the two the page also shows.
    "last_success_timestamp", "polling",
}
SERVER = '[server]\nlisten = "127.0.0.1:0"\n'


def wa_config(sim: Simulator, flows: list[str], interval: str = "1h") -> str:
    return f"""
    [[sources]]
    type = "whatsapp_flows"
    name = "wa"
    interval = "{interval}"
    base_url = "{sim.base_url('whatsapp')}"
    access_token = "{SIMULATOR_TOKEN}"
    flow_ids = {json.dumps(flows)}
    http = {{ retries = 0 }}
    """


@pytest.fixture(autouse=True)
def prompt_first_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """First polls within 0.2 s of start instead of up to 10 s: the tests wait less."""
    monkeypatch.setattr(poller, "FIRST_POLL_MAX_DELAY", 0.2)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Callable[[str], LiveApp]]:
    made: list[LiveApp] = []

    def start(text: str) -> LiveApp:
        made.append(LiveApp(write_config(tmp_path, SERVER + text)))
        return made[-1]

    yield start
    for app in made:
        app.close()


def test_every_field_every_health_and_failing_first(simulator: Simulator, live: Callable[[str], LiveApp]) -> None:
    simulator.inject(Fault(path="103055", kind="status", status=500, times=10_000))
    simulator.inject(Fault(path=BUSY_FLOW, kind="latency", delay=8, times=1))  # its first poll hangs: pending
    app = live(k6_config(simulator, [103054, 103055]).replace('"60s"', '"1h"') +
               wa_config(simulator, [BUSY_FLOW, QUIET_FLOW]))

    def others_done() -> list[dict[str, Any]] | None:
        targets = app.targets()
        health = {t["target"]: (t["health"], t["polling"]) for t in targets}
        wanted = {"103054": ("up", False), "103055": ("down", False), QUIET_FLOW: ("up", False),
                  BUSY_FLOW: ("pending", True)}
        return targets if health == wanted else None

    targets = wait_for(others_done, "every target but the slow one polled, the slow one polling")
    # Failing first, then warnings, then pending, then up.
    assert [t["target"] for t in targets] == ["103055", QUIET_FLOW, BUSY_FLOW, "103054"]
    for target in targets:
        assert set(target) == FIELDS
    down, warned, pending, up = targets

    assert down["reason"] == "http_5xx" and "HTTP 500" in down["last_error"]
    assert down["last_poll_timestamp"] is not None and down["last_success_timestamp"] is None
    assert down["series"] == 0 and down["warnings"] == []

    assert warned["health"] == "up" and warned["reason"] is None and warned["last_error"] is None
    assert [w["kind"] for w in warned["warnings"]] == ["insufficient_data"]
    assert "fewer than 250" in warned["warnings"][0]["message"] and warned["warnings"][0]["count"] == 1

    assert pending["polling"] is True and pending["last_poll_timestamp"] is None
    assert pending["last_duration_seconds"] is None and pending["series"] == 0

    now = time.time()
    assert up["type"] == "k6_cloud" and up["source"] == "k6" and up["interval_seconds"] == 3600
    assert up["endpoint"] == simulator.base_url("k6") and warned["endpoint"] == simulator.base_url("whatsapp")
    assert up["series"] > 0 and up["last_duration_seconds"] >= 0 and up["polling"] is False
    # A poll's times are those of its end: the last success is the last poll.
    assert up["last_success_timestamp"] == up["last_poll_timestamp"] <= now
    assert up["next_poll_timestamp"] > now + 3000  # the next tick, an interval later

    summary = app.status()
    assert summary["targets"] == {"up": 2, "down": 1, "pending": 1, "warning": 1, "total": 4}
    assert summary["reload"]["successful"] is True and summary["reload"]["error"] is None
    assert summary["otlp"] is None and summary["shard"] == {"index": 0, "total": 1}
    assert abs(summary["now"] - time.time()) < 60

    slow = wait_for(lambda: app.by_target()[BUSY_FLOW]["health"] == "up" and app.by_target()[BUSY_FLOW],
                    "the slow first poll to end")
    assert slow["last_duration_seconds"] >= 8 and slow["polling"] is False


def test_last_success_is_never_later_than_last_poll(simulator: Simulator, live: Callable[[str], LiveApp]) -> None:
    app = live(k6_config(simulator, [103054]).replace('"60s"', '"1h"'))
    first = wait_for(lambda: app.by_target()["103054"]["health"] == "up" and app.by_target()["103054"], "a poll")
    simulator.inject(Fault(path="103054", kind="status", status=503, times=10_000))
    assert not app.poll("103054")
    failed = app.by_target()["103054"]
    assert failed["health"] == "down" and failed["reason"] == "http_5xx"
    assert failed["last_success_timestamp"] == first["last_poll_timestamp"] < failed["last_poll_timestamp"]
    assert failed["series"] == first["series"]  # still served until max_staleness
    simulator.clear_faults()
    assert app.poll("103054")
    again = app.by_target()["103054"]
    assert again["health"] == "up" and again["reason"] is None and again["last_error"] is None
    assert again["last_success_timestamp"] == again["last_poll_timestamp"] > failed["last_poll_timestamp"]


def test_the_runners_own_warnings(simulator: Simulator, live: Callable[[str], LiveApp]) -> None:
    # 103054's hostile URL labels are longer than 16 bytes; 5 series of ~45 fit the cap.
    app = live("[limits]\nmax_label_bytes = 16\n" +
               k6_config(simulator, [103054], extra="max_series = 5").replace('"60s"', '"1h"'))
    target = wait_for(lambda: app.by_target()["103054"]["last_poll_timestamp"] and app.by_target()["103054"],
                      "a poll")
    warnings = {w["kind"]: w for w in target["warnings"]}
    assert set(warnings) == {"labels_truncated", "series_dropped"}
    assert target["health"] == "up" and target["series"] == 5
    assert warnings["series_dropped"]["count"] > 0 and "max_series" in warnings["series_dropped"]["message"]
    assert warnings["labels_truncated"]["count"] > 0 and "16 bytes" in warnings["labels_truncated"]["message"]
    assert app.status()["targets"]["warning"] == 1


def test_ticks_skipped_while_a_poll_runs_are_a_warning(simulator: Simulator,
                                                      live: Callable[[str], LiveApp]) -> None:
    simulator.inject(Fault(path="103054", kind="latency", delay=3.5, times=1))
    app = live(k6_config(simulator, [103054], extra='timeout = "30s"').replace('"60s"', '"1s"'))
    target = wait_for(lambda: next((t for t in app.targets() if t["warnings"]), None), "the overrun warning")
    assert [w["kind"] for w in target["warnings"]] == ["overrun"]
    assert target["warnings"][0]["count"] >= 1 and "still running" in target["warnings"][0]["message"]
    assert target["health"] == "up" and target["last_duration_seconds"] >= 3.5


def test_reload_and_otlp_in_the_summary(simulator: Simulator, live: Callable[[str], LiveApp],
                                        tmp_path: Path) -> None:
    with OtlpReceiver("http/protobuf") as receiver:
        otlp = f'[otlp]\nenabled = true\nendpoint = "{receiver.endpoint}"\nbackoff = "1s"\n'
        text = otlp + k6_config(simulator, [103054]).replace('"60s"', '"1h"')
        app = live(text)
        sent = wait_for(lambda: (app.status()["otlp"] or {}).get("last_success_timestamp") and app.status()["otlp"],
                        "an OTLP export")
        assert sent["state"] == "ok" and sent["failing_reason"] is None and sent["dropped_points"] == 0
        assert sent["endpoint"] == f"{receiver.endpoint}/v1/metrics" and sent["protocol"] == "http/protobuf"
        assert sent["max_queue_points"] == 100_000

        config = tmp_path / "exporter.toml"
        config.write_text(SERVER + text.replace('interval = "1h"', 'intervall = "1h"'))
        error = app.call(app.app.reload())
        assert error is not None
        reload = app.status()["reload"]
        assert reload["successful"] is False and "intervall" in reload["error"]
        assert reload["last_success_timestamp"] < reload["timestamp"]
        # The collector starts refusing; a source added by a reload brings new points.
        receiver.fail(10_000, http_status=503)
        config.write_text(SERVER + text + k6_config(simulator, [103055], name="k6-two"))
        assert app.call(app.app.reload()) is None
        reload = app.status()["reload"]
        assert reload["successful"] is True and reload["error"] is None
        assert reload["last_success_timestamp"] == reload["timestamp"]
        failing = wait_for(lambda: app.status()["otlp"]["state"] == "failing" and app.status()["otlp"],
                           "the failing export")
        assert failing["failing_reason"] and failing["queued_points"] > 0


def test_status_paths_answer_under_basic_auth(simulator: Simulator, live: Callable[[str], LiveApp]) -> None:
    hashed = bcrypt.hashpw(b"pa55word", bcrypt.gensalt(rounds=4)).decode()
    app = live(f'[server.basic_auth.users]\nadmin = "{hashed}"\n' + k6_config(simulator, [103054]))
    good = {"Authorization": "Basic " + base64.b64encode(b"admin:pa55word").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}
    for path in ("/", "/api/v1/targets", "/api/v1/status"):
        assert app.http.get(path).status_code == 401
        assert app.http.get(path, headers=bad).status_code == 401
        answer = app.http.get(path, headers=good)
        assert answer.status_code == 200, path
    assert app.targets(headers=good)[0]["target"] == "103054"


def test_page_is_self_contained_and_escapes_its_data(simulator: Simulator, live: Callable[[str], LiveApp]) -> None:
    app = live(k6_config(simulator, [103054]))
    page = app.http.get("/")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "unsafe-inline" not in policy
    # Nothing from anywhere: no src/href to another origin, no external script or style.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
    # The embedded data cannot close its element: no '<' inside it.
    data = re.search(r'<script type="application/json" id="initial">(.*?)</script>', page.text, re.S)
    assert data is not None and "<" not in data.group(1)
    embedded = json.loads(data.group(1))
    assert [t["target"] for t in embedded["targets"]] == ["103054"]
    assert embedded["summary"]["targets"]["total"] == 1
    assert httpx.head(f"{app.url}/api/v1/targets").status_code == 200
