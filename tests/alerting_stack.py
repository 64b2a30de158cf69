"""Real processes for the alerting and dashboard tests: simulator, exporter, OTLP receiver, Prometheus.

The exporter runs as a child process polling the simulator (all five sources,
data that should raise no alert), pushing OTLP to a test receiver; a real
Prometheus (Debian package) scrapes it every second and evaluates the shipped
rules every second. The rules are the chart's PrometheusRule rendered with
every alert's `for` set to FOR (monitoring/generate.py, `rendered_groups`), the
same path the plain rules file takes, so only the durations differ from
monitoring/api-metrics-exporter.rules.yml.

The phases run once per session, in order, whichever test asks first:
`healthy()` watches the alerts while nothing is broken, `broken()` then breaks
one target's credentials and one source's data through the simulator's fault
injection and waits for the matching alerts. Waits poll with generous
deadlines and never assert durations.
"""

from __future__ import annotations

import importlib.util
import subprocess
import time
from datetime import datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import httpx
import yaml

from exporter.simulator import SIMULATOR_TOKEN, Fault, Simulator
from tests.conftest import ExporterProcess, free_port
from tests.otlp_receiver import OtlpReceiver
from tests.test_integration_prometheus import require

REPO = Path(__file__).resolve().parents[1]
FOR = "5s"  # every alert's `for` in the test rules (defaults are minutes)
# How long the healthy phase watches for alerts: the slowest `for` plus
# several evaluations, so a wrongly firing alert has time to fire.
HEALTHY_WATCH = 15.0
DEADLINE = 120.0  # for anything to happen; generous, never asserted as a duration
# Grafana's $__rate_interval for the dashboard queries: at least 4 scrapes.
RATE_INTERVAL = "20s"

AUTH_TARGET = ("bird", "welcome-flow")
K6_RUN = "103055"  # finished; its one threshold passes until the fault
TARGETS = 11  # k6 1, bird 2, pluto 5 discovered runs, whatsapp 2, flux 1


def config(sim: Simulator, port: int, otlp: str) -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"

[otlp]
enabled = true
endpoint = "{otlp}"
protocol = "http/protobuf"

[[sources]]
type = "k6_cloud"
name = "k6"
interval = "4s"
base_url = "{sim.base_url('k6')}"
token = "{SIMULATOR_TOKEN}"
test_run_ids = [{K6_RUN}]

[[sources]]
type = "bird_flow_runs"
name = "bird"
interval = "4s"
base_url = "{sim.base_url('bird')}"
access_key = "{SIMULATOR_TOKEN}"
workspace_id = "demo-workspace"
flow_ids = ["welcome-flow", "order-updates"]
http = {{ retries = 0 }}

[[sources]]
type = "pluto"
name = "pluto"
interval = "8s"
base_url = "{sim.base_url('pluto')}"
api_key = "{SIMULATOR_TOKEN}"
project = "research"
discover_runs = true
log_names = ["train/loss"]

[[sources]]
type = "whatsapp_flows"
name = "whatsapp"
interval = "8s"
base_url = "{sim.base_url('whatsapp')}"
access_token = "{SIMULATOR_TOKEN}"
flow_ids = ["1234567890123456", "2345678901234567"]

[[sources]]
type = "flux"
name = "flux"
interval = "15s"
base_url = "{sim.base_url('flux')}"
api_key = "{SIMULATOR_TOKEN}"
rate_limit = {{ queries = 6000, per = "60s" }}
"""


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("monitoring_generate", REPO / "monitoring" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rules_for_tests() -> dict[str, Any]:
    """The shipped groups with every alert's `for` = FOR, rendered by the chart template."""
    gen = generator()
    names = [rule["alert"] for group in gen.master()["groups"] for rule in group["rules"] if "alert" in rule]
    return {"groups": gen.rendered_groups({"alerts": {name: {"for": FOR} for name in names}})}


def alert_key(alert: dict[str, Any]) -> tuple[str, ...]:
    """An alert's name and the labels that say what broke."""
    labels = alert["labels"]
    keys = ("source", "target", "reason", "test_run_id", "flow_id", "run_id", "log_name", "account", "instance")
    return (labels["alertname"], *(f"{k}={labels[k]}" for k in keys if k in labels and k != "instance"))


class AlertingStack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.prometheus_binary = require("prometheus")
        self.sim = Simulator("127.0.0.1:0", seed=7, freeze_time=time.time())
        self.otlp = OtlpReceiver("http/protobuf")
        self.exporter: ExporterProcess | None = None
        self.prometheus: subprocess.Popen[str] | None = None
        self.url = ""
        self.client = httpx.Client(timeout=10)
        self._healthy: list[dict[str, Any]] | None = None
        self._broken: list[dict[str, Any]] | None = None
        self.closed = False

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> AlertingStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _start(self) -> None:
        self.sim.start()
        self.otlp.start()
        port = free_port()
        path = self.root / "exporter.toml"
        path.write_text(config(self.sim, port, self.otlp.endpoint))
        self.exporter = ExporterProcess(path, port)
        self.exporter.wait_ready(timeout=DEADLINE)
        rules = self.root / "rules.yml"
        rules.write_text(yaml.safe_dump(rules_for_tests(), sort_keys=False))
        prometheus_port = free_port()
        prometheus_config = self.root / "prometheus.yml"
        prometheus_config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "api-metrics-exporter",
                                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
        }))
        self.prometheus = subprocess.Popen(
            [self.prometheus_binary, f"--config.file={prometheus_config}",
             f"--storage.tsdb.path={self.root / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}",
             "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.url = f"http://127.0.0.1:{prometheus_port}"
        self.wait_for(lambda: self._api("/api/v1/status/buildinfo") is not None, "Prometheus to start")

    def close(self) -> None:
        """Stop everything; safe to call twice (conftest stops the stack early)."""
        if self.closed:
            return
        self.closed = True
        if self.prometheus is not None and self.prometheus.poll() is None:
            self.prometheus.terminate()
            try:
                self.prometheus.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.prometheus.kill()
        if self.prometheus is not None and self.prometheus.stderr is not None:
            self.prometheus.stderr.close()
        if self.exporter is not None:
            self.exporter.stop()
        self.otlp.stop()
        self.sim.stop()
        self.client.close()

    # --- Prometheus' API ------------------------------------------------------------------

    def _api(self, path: str, **params: str) -> Any:
        """The `data` of a successful answer, or None (not up yet, or an error)."""
        try:
            body = self.client.get(f"{self.url}{path}", params=params).json()
        except (httpx.HTTPError, ValueError):
            return None
        return body.get("data") if body.get("status") == "success" else None

    def catch_up(self) -> None:
        """Move the frozen simulator to now and wait for the exporter to poll it
        again: the exporter's windows follow the wall clock, and minutes after
        the stack froze the simulator, Flux's latest complete bucket (past the
        simulator's data) would be empty."""
        self.sim.clock.frozen = time.time()
        self.wait_for(lambda: bool(self.query("flux_api_response_time").get("data", {}).get("result")),
                      "Flux's quantiles after the simulator caught up")

    def query(self, promql: str) -> dict[str, Any]:
        """The raw answer of an instant query (errors included)."""
        answer: dict[str, Any] = self.client.get(f"{self.url}/api/v1/query", params={"query": promql}).json()
        return answer

    def alerts(self) -> list[dict[str, Any]]:
        data = self._api("/api/v1/alerts")
        return [] if data is None else list(data["alerts"])

    def firing(self) -> list[dict[str, Any]]:
        return [alert for alert in self.alerts() if alert["state"] == "firing"]

    def wait_for(self, condition: Any, what: str, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.prometheus is not None and self.prometheus.poll() is not None:
                log = self.prometheus.stderr.read() if self.prometheus.stderr else ""
                raise AssertionError(f"Prometheus exited: {log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}")
            time.sleep(0.5)

    def _evaluated_since(self, since: float) -> bool:
        """Whether every rule group was evaluated after `since` (Unix time)."""
        data = self._api("/api/v1/rules")
        if not data:
            return False
        return all(datetime.fromisoformat(g["lastEvaluation"].replace("Z", "+00:00")).timestamp() > since
                   for g in data["groups"])

    def _targets_up(self) -> bool:
        data = self._api("/api/v1/query", query="count(apimetrics_target_up == 1)")
        return bool(data and data["result"] and float(data["result"][0]["value"][1]) == TARGETS)

    # --- the phases -------------------------------------------------------------------------

    def healthy(self) -> list[dict[str, Any]]:
        """Every alert that fired while nothing was broken (watched for HEALTHY_WATCH
        seconds once Prometheus sees every target up)."""
        if self._healthy is None:
            self.wait_for(self._targets_up, f"all {TARGETS} targets up in Prometheus")
            # Prometheus starts scraping a few seconds after it starts evaluating
            # rules, so ApiMetricsExporterAbsent (rightly) fires at start-up and
            # resolves at the first evaluation after the first scrape: wait for it.
            scraped = time.time()
            self.wait_for(lambda: self._evaluated_since(scraped), "the rules evaluated after the first scrapes")
            seen: dict[tuple[str, ...], dict[str, Any]] = {}
            end = time.monotonic() + HEALTHY_WATCH
            while time.monotonic() < end:
                for alert in self.firing():
                    seen.setdefault(alert_key(alert), alert)
                time.sleep(0.5)
            self._healthy = list(seen.values())
        return self._healthy

    def expected_after_faults(self) -> set[tuple[str, ...]]:
        source, target = AUTH_TARGET
        return {
            ("ApiMetricsTargetDown", f"source={source}", f"target={target}", "reason=auth"),
            ("ApiMetricsAuthFailing", f"source={source}", f"target={target}", "reason=auth"),
            ("ApiMetricsTargetStale", f"source={source}", f"target={target}"),
            ("ApiMetricsK6ThresholdFailed", f"test_run_id={K6_RUN}"),
        }

    def broken(self) -> list[dict[str, Any]]:
        """The firing alerts once the faults' alerts all fire (and a few evaluations later)."""
        if self._broken is None:
            self.healthy()
            source, target = AUTH_TARGET
            assert source == "bird"
            # One target's credentials refused for good, one source's data broken (a threshold fails).
            self.sim.inject(Fault(path=f"/bird/workspaces/[^/]+/reporting/flowruns/flow/{target}/metrics",
                                  kind="status", status=401, times=1_000_000))
            self.sim.inject(Fault(path="/k6/loadtests/v2/thresholds", kind="set", key="tainted", value=True,
                                  times=1_000_000))
            expected = self.expected_after_faults()
            self.wait_for(lambda: expected <= {alert_key(a) for a in self.firing()},
                          f"alerts {sorted(expected)} to fire")
            time.sleep(3)  # a few more evaluations: anything else would fire too
            self._broken = self.firing()
        return self._broken
