"""Flux source against the simulator over real sockets.

Expected values are computed here from the simulator's own answers: every
query the exporter sent is replayed (with a separate key, so the replays do
not spend the exporter's budget), and the families are derived from those raw
answers by the rules of the docs, independently of the source's code.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.config import ConfigError
from exporter.simulator import SIMULATOR_TOKEN, Fault, Simulator
from exporter.simulator.flux import FakeMetric, FluxFake
from exporter.sources.kit.timeparse import parse_timestamp
from tests.conftest import SimHarness, samples_of, settings_from

REPLAY_KEY = "replay-key"
EXPORTER_AUTH = f"Bearer {SIMULATOR_TOKEN}"
Labels = tuple[tuple[str, str], ...]


def fake(sim: Simulator) -> FluxFake:
    flux = sim.vendors["flux"]
    assert isinstance(flux, FluxFake)
    return flux


@pytest.fixture
def flux(simulator: Simulator) -> FluxFake:
    fake(simulator).api_keys.add(REPLAY_KEY)
    return fake(simulator)


def flux_config(sim: Simulator, extra: str = "", name: str = "flux", key: str = SIMULATOR_TOKEN,
                http: str = "retries = 2, backoff = 0.01, max_backoff = 0.05") -> str:
    return f"""
    [[sources]]
    type = "flux"
    name = "{name}"
    account = "acme"
    base_url = "{sim.base_url('flux')}"
    api_key = "{key}"
    http = {{ {http} }}
    {extra}
    """


Harness = SimHarness


@pytest.fixture
def harness(simulator: Simulator, flux: FluxFake, tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[Harness] = []

    def make(extra: str = "", **kwargs: str) -> Harness:
        made.append(Harness(simulator, tmp_path, flux_config(simulator, extra, **kwargs)))
        return made[-1]

    yield make
    for h in made:
        h.close()


def exporter_requests(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.headers.get("authorization") == EXPORTER_AUTH]


def queries(sim: Simulator, metric: str | None = None) -> list[Any]:
    return [r for r in exporter_requests(sim) if r.path.endswith("/query")
            and (metric is None or r.path == f"/flux/api/v1/metrics/{metric}/query")]


@pytest.fixture(scope="module", autouse=True)
def client() -> Any:
    """One connection pool for the test's own requests (a new client per call costs ~50 ms)."""
    global CLIENT
    with httpx.Client() as CLIENT:
        yield CLIENT


CLIENT: httpx.Client


def replay(sim: Simulator, request: Any) -> Any:
    params = [(k, v) for k, values in request.query.items() for v in values]
    response = CLIENT.get(f"{sim.url}{request.path}", params=params, headers={"Authorization": f"Bearer {REPLAY_KEY}"})
    response.raise_for_status()
    return response.json()


def points_of(sim: Simulator, request: Any, group_keys: list[str] | None = None) -> dict[Labels, list[dict[str, Any]]]:
    """{group labels: points} of one replayed query, points as `{"t": start, agg: value}`."""
    body = replay(sim, request)
    aggregations = request.query["aggregation"][0].split(",")
    if isinstance(body["data"], list):  # open source
        agg = aggregations[0]
        return {(): [{"t": parse_timestamp(p["time"]), agg: p["value"], "_count": p["count"]} for p in body["data"]]}
    def convert(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for p in points:
            values = {aggregations[0]: p["value"]} if len(aggregations) == 1 else {a: p[a] for a in aggregations if a in p}
            out.append({"t": parse_timestamp(p["timestamp"]), **values})
        return out
    if "groups" in body["data"]:
        keys = group_keys or []
        return {tuple(zip(keys, name.split(",") if len(keys) > 1 else [name], strict=True)): convert(points)
                for name, points in body["data"]["groups"].items()}
    return {(): convert(body["data"]["series"])}


def key(**labels: str) -> Labels:
    return tuple(sorted({"account": "acme", **labels}.items()))


def floor(ts: float, seconds: int = 60) -> float:
    return ts - ts % seconds


# --- families and values -------------------------------------------------------------------------


def expected_documented(sim: Simulator, now: float, window: float, latest: dict[Any, float] | None = None,
                        ) -> dict[str, dict[Labels, float]]:
    """Families of the six default metrics from replays of the exporter's queries."""
    latest = {} if latest is None else latest
    current = floor(now)
    out: dict[str, dict[Labels, float]] = {}

    def put(family: str, labels: Labels, value: float) -> None:
        out.setdefault(family, {})[labels] = value

    for request in queries(sim):
        metric = request.path.split("/")[-2]
        aggs = request.query["aggregation"][0].split(",")
        points = points_of(sim, request)[()]
        complete = [p for p in points if p["t"] < current]
        last = next((p for p in points if p["t"] == current - 60), None)
        n = "flux_" + metric.replace(".", "_")
        if metric in ("users.online", "queue.depth"):
            if complete:
                put(n, key(), max(complete, key=lambda p: p["t"])["last"])
        elif metric == "daily_active_users":
            put(f"{n}_cardinality", key(), last["count"] if last else 0.0)
        elif metric == "api.requests":
            for p in points:
                if p["t"] >= window:
                    latest[(metric, p["t"])] = p["sum"]
        elif len(aggs) > 1:  # distributions (the probe asked only p50)
            for agg, q in (("p50", "0.5"), ("p90", "0.9"), ("p95", "0.95"), ("p99", "0.99")):
                if last:
                    out.setdefault(n, {})[key(quantile=q)] = last[agg]
            for agg in ("min", "max", "avg"):
                if last:
                    put(f"{n}_{agg}", key(), last[agg])
            for p in points:
                if p["t"] >= window:
                    latest[(f"{n}_count", p["t"])] = p["count"]
                    latest[(f"{n}_sum", p["t"])] = p["sum"]
    totals: dict[str, float] = {}
    for (what, _), value in latest.items():
        totals[what] = totals.get(what, 0.0) + value
    put("flux_api_requests_total", key(), totals["api.requests"])
    for name in ("flux_api_response_time", "flux_payload_size"):
        put(f"{name}_count", key(), totals[f"{name}_count"])
        put(f"{name}_sum", key(), totals[f"{name}_sum"])
    return out


FAMILIES = ["flux_users_online", "flux_queue_depth", "flux_daily_active_users_cardinality",
            "flux_api_requests_total", "flux_api_response_time", "flux_api_response_time_count",
            "flux_api_response_time_sum", "flux_api_response_time_min", "flux_api_response_time_max",
            "flux_api_response_time_avg", "flux_payload_size", "flux_payload_size_count"]


def test_each_type_discovered_with_its_default_aggregations(simulator: Simulator, harness: Any) -> None:
    h = harness()
    now = simulator.now()
    window = floor(now) - 5 * 60
    assert h.poll()
    text = h.text()
    latest: dict[Any, float] = {}
    expected = expected_documented(simulator, now, window, latest)
    for family in FAMILIES:
        assert samples_of(text, family) == pytest.approx(expected[family]), family
    for family in ("flux_payload_size_sum", "flux_api_response_time_sum"):
        assert samples_of(text, family) == pytest.approx(expected[family])
    assert samples_of(text, "flux_api_info") == {key(dialect="documented"): 1.0}
    types = {m.name: m.type for m in text_families(text)}
    assert types["flux_api_response_time"] == "summary" and types["flux_api_requests"] == "counter"
    # One request per metric (the probe is the single-aggregation gauge), plus the list.
    assert samples_of(text, "flux_queries_planned") == {key(): 7.0}
    assert samples_of(text, "flux_queries_completed") == {key(): 7.0}

    # Three minutes later the window reaches back to the previous poll's start:
    # every bucket counts once, with its newest value.
    simulator.clear_requests()
    simulator.clock.frozen = now + 180
    assert h.poll()
    expected = expected_documented(simulator, now + 180, window, latest)
    text = h.text()
    for family in ("flux_api_requests_total", "flux_api_response_time_count", "flux_payload_size_sum"):
        assert samples_of(text, family) == pytest.approx(expected[family]), family
    (request, *_) = queries(simulator, "api.requests")
    assert parse_timestamp(request.query["from"][0]) == window  # lookback from the previous poll's start


def text_families(text: str) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return list(text_string_to_metric_families(text))


def test_requests_carry_the_key_in_the_header_only(simulator: Simulator, harness: Any) -> None:
    assert harness().poll()
    for request in exporter_requests(simulator):
        assert "api_key" not in request.query and "x-api-key" not in request.headers
        assert request.method == "GET"
    query = queries(simulator, "api.requests")[0]
    assert set(query.query) == {"from", "to", "interval", "aggregation"}
    assert query.query["interval"] == ["1m"] and query.query["aggregation"] == ["sum"]


def test_configured_metrics_group_by_filters_and_units(simulator: Simulator, harness: Any) -> None:
    h = harness("""
    [[sources.metrics]]
    name = "users.online"
    aggregations = ["last", "min", "max", "avg"]
    group_by = ["region"]
    [[sources.metrics]]
    name = "api.response_time"
    unit = "ms"
    aggregations = ["p50", "p99", "count", "sum", "max"]
    group_by = ["tags.endpoint"]
    tags = { method = "GET" }
    [[sources.metrics]]
    name = "api.requests"
    group_by = ["endpoint", "status"]
    """)
    now = simulator.now()
    assert h.poll()
    text = h.text()
    current = floor(now)

    (latency,) = queries(simulator, "api.response_time")  # one request for five aggregations
    assert latency.query["aggregation"] == ["p50,p99,count,sum,max"]
    assert latency.query["group_by"] == ["tags.endpoint"] and latency.query["tags[method]"] == ["GET"]
    quantiles, counts, maxima = {}, {}, {}
    for labels, points in points_of(simulator, latency, ["endpoint"]).items():
        last = next(p for p in points if p["t"] == current - 60)
        for agg, q in (("p50", "0.5"), ("p99", "0.99")):
            quantiles[key(**dict(labels), quantile=q)] = last[agg] / 1000
        maxima[key(**dict(labels))] = last["max"] / 1000
        counts[key(**dict(labels))] = sum(p["count"] for p in points)
    assert {dict(k)["endpoint"] for k in counts} == {"/users", "/orders"}
    assert samples_of(text, "flux_api_response_time_seconds") == pytest.approx(quantiles)
    assert samples_of(text, "flux_api_response_time_seconds_count") == pytest.approx(counts)
    assert samples_of(text, "flux_api_response_time_max_seconds") == pytest.approx(maxima)
    # The filter matters: GET alone counts fewer than both methods.
    unfiltered = CLIENT.get(f"{simulator.base_url('flux')}/api/v1/metrics/api.response_time/query",
                           params={**{k: v[0] for k, v in latency.query.items() if k != "tags[method]"},
                                   "aggregation": "count"},
                           headers={"Authorization": f"Bearer {REPLAY_KEY}"}).json()["data"]["groups"]
    assert sum(p["value"] for p in unfiltered["/users"]) > counts[key(endpoint="/users")]

    (online,) = queries(simulator, "users.online")
    for labels, points in points_of(simulator, online, ["region"]).items():
        newest = max((p for p in points if p["t"] < current), key=lambda p: p["t"])
        assert samples_of(text, "flux_users_online")[key(**dict(labels))] == newest["last"]
        for agg in ("min", "max", "avg"):
            assert samples_of(text, f"flux_users_online_{agg}")[key(**dict(labels))] == newest[agg]

    (requests,) = queries(simulator, "api.requests")
    assert requests.query["group_by"] == ["tags.endpoint,tags.status"]
    totals = {key(**dict(labels)): sum(p["sum"] for p in points)
              for labels, points in points_of(simulator, requests, ["endpoint", "status"]).items()}
    assert len(totals) == 4
    assert samples_of(text, "flux_api_requests_total") == pytest.approx(totals)


@pytest.mark.parametrize(("bucket", "seconds", "lookback"), [("5m", 300, 3), ("1h", 3600, 2), ("1d", 86400, 1)])
def test_every_interval(simulator: Simulator, harness: Any, bucket: str, seconds: int, lookback: int) -> None:
    h = harness(f'bucket = "{bucket}"\nlookback = {lookback}\nmetrics = ["users.online", "api.requests"]')
    now = simulator.now()
    assert h.poll()
    text = h.text()
    (counter,) = queries(simulator, "api.requests")
    assert counter.query["interval"] == [bucket]
    assert parse_timestamp(counter.query["from"][0]) == floor(now, seconds) - lookback * seconds
    points = points_of(simulator, counter)[()]
    assert samples_of(text, "flux_api_requests_total") == {key(): sum(p["sum"] for p in points)}
    (gauge,) = queries(simulator, "users.online")
    newest = max((p for p in points_of(simulator, gauge)[()] if p["t"] < floor(now, seconds)), key=lambda p: p["t"])
    assert samples_of(text, "flux_users_online") == {key(): newest["last"]}


# --- dialects ------------------------------------------------------------------------------------


def test_opensource_dialect_detected_from_discovery(simulator: Simulator, flux: FluxFake, harness: Any,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    flux.dialect = "opensource"
    caplog.set_level(logging.INFO)
    h = harness()
    now = simulator.now()
    window = floor(now) - 5 * 60
    assert h.poll()
    assert h.poll()
    text = h.text()
    assert samples_of(text, "flux_api_info") == {key(dialect="opensource"): 1.0}
    assert len([r for r in caplog.records if "speaks the opensource dialect" in r.getMessage()]) == 1
    for request in queries(simulator):
        assert set(request.query) == {"since", "bucket", "aggregation"}  # never from/to/interval
        assert "," not in request.query["aggregation"][0] and request.query["bucket"] == ["1 minute"]
    latency = queries(simulator, "api.response_time")
    # Eight aggregations a poll, `count` riding on every point.
    assert sorted(r.query["aggregation"][0] for r in latency[:8]) == sorted(
        ["p50", "p90", "p95", "p99", "sum", "min", "max", "avg"])
    current = floor(now)
    merged: dict[str, dict[float, float]] = {}
    for request in latency[8:]:
        for p in points_of(simulator, request)[()]:
            merged.setdefault(request.query["aggregation"][0], {})[p["t"]] = p[request.query["aggregation"][0]]
            merged.setdefault("count", {})[p["t"]] = p["_count"]
    assert samples_of(text, "flux_api_response_time")[key(quantile="0.95")] == merged["p95"][current - 60]
    assert samples_of(text, "flux_api_response_time_min") == {key(): merged["min"][current - 60]}
    # The first bucket the server returns may be cut by `since`: only buckets from the window count.
    assert samples_of(text, "flux_api_response_time_count") == {
        key(): sum(v for t, v in merged["count"].items() if t >= window)}
    (counter, _) = queries(simulator, "api.requests")
    assert samples_of(text, "flux_api_requests_total") == {
        key(): sum(p["sum"] for p in points_of(simulator, counter)[()] if p["t"] >= window)}


def test_probe_falls_back_to_the_opensource_form(simulator: Simulator, flux: FluxFake, harness: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    flux.dialect = "opensource"
    h = harness("""
    [[sources.metrics]]
    name = "api.requests"
    type = "counter"
    group_by = ["endpoint"]
    [[sources.metrics]]
    name = "users.online"
    type = "gauge"
    """)
    assert h.poll()
    first, second, *rest = queries(simulator)
    assert "from" in first.query and "interval" in first.query  # the documented probe…
    assert first.path == second.path and second.query["since"] == ["7m"]  # …asked again the open-source way
    assert all("since" in r.query and "group_by" not in r.query for r in rest)
    text = h.text()
    assert samples_of(text, "flux_api_info") == {key(dialect="opensource"): 1.0}
    assert set(samples_of(text, "flux_api_requests_total")) == {key()}  # group_by ignored by the server
    assert "ignores group_by" in caplog.text
    assert samples_of(text, "flux_queries_planned") == samples_of(text, "flux_queries_completed") == {key(): 3.0}


# --- names ----------------------------------------------------------------------------------------


def test_configured_names_that_collide_are_a_config_error(simulator: Simulator, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        settings_from(tmp_path, flux_config(simulator, 'metrics = ["api.response_time", "users.online", '
                                                       '"api-response_time"]'))
    message = str(error.value)
    assert "'api.response_time'" in message and "'api-response_time'" in message
    assert "flux_api_response_time" in message


def test_discovered_collisions_are_skipped_with_one_error(simulator: Simulator, flux: FluxFake, harness: Any,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    flux.add(FakeMetric("api-response_time", "distribution", {}, "", "", 50.0))
    flux.add(FakeMetric("jobs", "counter"))
    flux.add(FakeMetric("jobs.total", "gauge"))  # flux_jobs_total, the counter's exposed name
    flux.add(FakeMetric("queries.planned", "gauge"))  # one of the exporter's own names
    h = harness()
    assert h.poll()
    assert h.poll()
    text = h.text()
    for family in ("flux_api_response_time", "flux_api_response_time_count", "flux_jobs_total",
                   "flux_queries_planned"):
        assert all(dict(k).get("account") == "acme" for k in samples_of(text, family))
    assert samples_of(text, "flux_api_response_time") == {}
    assert samples_of(text, "flux_jobs_total") == {}
    assert samples_of(text, "flux_queries_planned") == {key(): 6.0}  # list + 5 queries
    assert samples_of(text, "flux_users_online")  # the others are fine
    asked = {r.path.split("/")[-2] for r in queries(simulator)}
    assert not asked & {"api.response_time", "api-response_time", "jobs", "jobs.total", "queries.planned"}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len([r for r in errors if "'api-response_time', 'api.response_time'" in r.getMessage()]) == 1
    assert len([r for r in errors if "'jobs', 'jobs.total'" in r.getMessage()]) == 1
    assert len([r for r in errors if "'queries.planned'" in r.getMessage()]) == 1


# --- budget ---------------------------------------------------------------------------------------


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_budget_holds_with_200_metrics(simulator: Simulator, flux: FluxFake, harness: Any,
                                       caplog: pytest.LogCaptureFixture) -> None:
    limit, window = 50, 1.0
    flux.rate_limit = (limit, window)
    names = flux.add_bulk(200)
    h = harness(f'interval = "2s"\nrate_limit = {{ queries = {limit}, per = "{window}s" }}')
    caplog.set_level(logging.WARNING)
    assert h.poll()
    sent = exporter_requests(simulator)
    assert len(sent) == 207  # the list, 206 queries
    assert max_in_window([r.received_at for r in sent], window) <= limit
    assert sent[-1].received_at - sent[0].received_at >= 4 * window  # five windows' worth
    text = h.text()
    assert samples_of(text, "apimetrics_http_retries_total") == {}  # no 429 was ever answered
    assert len(samples_of(text, "flux_bulk_metric_0199")) == 1 and len(names) == 200
    assert samples_of(text, "flux_queries_planned") == samples_of(text, "flux_queries_completed") == {key(): 207.0}
    # Said at discovery, and the deadline follows the plan (interval + 2 × 4 windows).
    warning = next(r.getMessage() for r in caplog.records if "requests a cycle" in r.getMessage())
    assert "207 requests" in warning and "at least 4s" in warning
    config = h.app.sources[0]  # the source derives both from its plan
    assert config.poll_timeout == pytest.approx(2 + 2 * 4.0)
    assert config.staleness_limit == pytest.approx(3 * (2 + 4.0))


def test_a_plan_longer_than_the_interval_is_announced_at_start(simulator: Simulator, harness: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    h = harness('interval = "30s"\nrate_limit = { queries = 2, per = "60s" }\n'
                'metrics = [{ name = "users.online", type = "gauge" }, { name = "api.requests", type = "counter" },'
                ' { name = "queue.depth", type = "gauge", aggregations = ["last", "max"] }]')
    # Worst case before the dialect is known: 1 + 1 + 2 requests, a second window of 60 s.
    (warning,) = [r.getMessage() for r in caplog.records if "requests a cycle" in r.getMessage()]
    assert "need up to 4 requests" in warning and "at least 1m" in warning and "interval to 1m" in warning
    config = h.app.sources[0]  # the source derives both from its plan
    assert config.poll_timeout == 30 + 2 * 60 and config.staleness_limit == 3 * (30 + 60)


def test_sources_with_one_key_share_the_budget(simulator: Simulator, flux: FluxFake, tmp_path: Path) -> None:
    limit, window = 10, 0.5
    flux.rate_limit = (limit, window)
    flux.add_bulk(20)
    budget = f'rate_limit = {{ queries = {limit}, per = "{window}s" }}'
    text = flux_config(simulator, budget, name="flux-a") + flux_config(simulator, budget, name="flux-b").replace(
        'account = "acme"', 'account = "acme-b"')
    h = Harness(simulator, tmp_path, text)
    try:
        assert h.poll()
        sent = exporter_requests(simulator)
        assert len(sent) == 2 * 27
        assert max_in_window([r.received_at for r in sent], window) <= limit
        assert samples_of(h.text(), "apimetrics_http_retries_total") == {}
    finally:
        h.close()


def test_429_is_honoured_for_every_holder_of_the_key(simulator: Simulator, flux: FluxFake, harness: Any) -> None:
    simulator.inject(Fault(path="users.online/query", kind="rate_limit", retry_after=1, times=1))
    h = harness('metrics = ["users.online", "queue.depth", "api.requests"]')
    assert h.poll()
    sent = exporter_requests(simulator)
    limited = next(i for i, r in enumerate(sent) if "users.online" in r.path)
    assert sent[limited + 1].received_at - sent[limited].received_at >= 1.0  # nobody sent before Retry-After
    text = h.text()
    assert samples_of(text, "apimetrics_http_retries_total") == {(("reason", "rate_limited"), ("source", "flux")): 1}
    assert samples_of(text, "flux_users_online") and samples_of(text, "flux_queue_depth")


def test_429_given_up_counts_rate_limited_for_that_metric_only(simulator: Simulator, harness: Any) -> None:
    simulator.inject(Fault(path="users.online/query", kind="rate_limit", retry_after=2, times=5))
    h = harness('metrics = ["users.online", "queue.depth", "api.requests"]',
                http="retries = 2, backoff = 0.01, max_retry_after = 0.5")
    assert h.poll()
    text = h.text()
    errors = samples_of(text, "apimetrics_poll_errors_total")
    assert errors[(("reason", "rate_limited"), ("source", "flux"), ("target", "acme"))] == 1
    assert samples_of(text, "flux_users_online") == {}
    assert samples_of(text, "flux_queue_depth") and samples_of(text, "flux_api_requests_total")
    sent = exporter_requests(simulator)
    limited = next(i for i, r in enumerate(sent) if "users.online" in r.path)
    assert sent[limited + 1].received_at - sent[limited].received_at >= 2.0


def test_the_real_limiter_is_survived_when_the_config_is_too_generous(simulator: Simulator, flux: FluxFake,
                                                                      harness: Any) -> None:
    flux.rate_limit = (4, 1.0)
    h = harness('rate_limit = { queries = 100, per = "1s" }', http="retries = 5, backoff = 0.01")
    assert h.poll()
    text = h.text()
    assert samples_of(text, "apimetrics_http_retries_total")[(("reason", "rate_limited"), ("source", "flux"))] >= 1
    assert samples_of(text, "flux_queries_completed") == {key(): 7.0}
    assert samples_of(text, "flux_users_online") and samples_of(text, "flux_api_response_time_count")


def test_a_poll_stops_before_its_deadline_and_keeps_what_it_has(simulator: Simulator, flux: FluxFake,
                                                                harness: Any) -> None:
    flux.add_bulk(60)
    h = harness('timeout = "2s"\nrate_limit = { queries = 10, per = "1s" }')
    assert h.poll()
    text = h.text()
    planned = samples_of(text, "flux_queries_planned")[key()]
    completed = samples_of(text, "flux_queries_completed")[key()]
    assert planned == 67 and 10 <= completed < 40
    errors = samples_of(text, "apimetrics_poll_errors_total")
    assert errors[(("reason", "timeout"), ("source", "flux"), ("target", "acme"))] == 1
    assert h.app.sources[0].poll_timeout == 2.0  # an explicit timeout is kept
    first = bulk_exported(text)
    assert first

    # The next poll starts where this one stopped; what it does not reach keeps its value.
    asked_before = len(queries(simulator))
    assert h.poll()
    second = bulk_exported(h.text())
    assert first < second
    resumed = queries(simulator)[asked_before].path.split("/")[-2]
    assert f"flux_{resumed.replace('.', '_')}" not in first


def bulk_exported(text: str) -> set[str]:
    return {line.split("{")[0] for line in text.splitlines() if line.startswith("flux_bulk_metric_")}


# --- errors ---------------------------------------------------------------------------------------


def test_one_metric_failing_does_not_fail_the_others(simulator: Simulator, harness: Any) -> None:
    h = harness("""
    metrics = ["users.online", "no.such.metric",
               { name = "api.response_time", type = "gauge" },
               { name = "ghost", type = "counter" }]
    """)
    assert h.poll()
    assert h.poll()
    text = h.text()
    errors = samples_of(text, "apimetrics_poll_errors_total")
    target = (("source", "flux"), ("target", "acme"))
    assert errors[(("reason", "not_found"),) + target] == 4  # no.such.metric's lookup and ghost's query, twice
    assert errors[(("reason", "http_4xx"),) + target] == 2  # `last` is not an aggregation of a distribution
    assert samples_of(text, "apimetrics_target_up") == {target: 1.0}
    assert samples_of(text, "flux_users_online")
    lookups = [r for r in exporter_requests(simulator) if r.path == "/flux/api/v1/metrics/no.such.metric"]
    assert len(lookups) == 2


def test_a_bad_key_fails_the_poll_as_auth(simulator: Simulator, tmp_path: Path) -> None:
    h = Harness(simulator, tmp_path, flux_config(simulator, key="sk_wrong"))
    try:
        assert not h.poll()
        status = h.app.statuses()[0]
        assert status.reason == "auth" and "Invalid API key" in status.message
        assert "sk_wrong" not in status.message
    finally:
        h.close()


def test_all_metrics_failing_fails_the_poll(simulator: Simulator, harness: Any) -> None:
    h = harness('metrics = [{ name = "ghost", type = "gauge" }, { name = "ghoul", type = "gauge" }]')
    assert not h.poll()
    errors = samples_of(h.text(), "apimetrics_poll_errors_total")
    assert errors[(("reason", "not_found"), ("source", "flux"), ("target", "acme"))] == 2


# --- config ---------------------------------------------------------------------------------------


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


def test_a_summary_count_and_a_counter_named_count_stay_apart(simulator: Simulator, flux: FluxFake,
                                                               harness: Any) -> None:
    flux.add(FakeMetric("api.response_time.count", "counter"))
    h = harness('metrics = ["api.response_time", "api.response_time.count"]')
    assert h.poll()
    text = h.text()
    (counter,) = queries(simulator, "api.response_time.count")
    (summary,) = [r for r in queries(simulator, "api.response_time") if "," in r.query["aggregation"][0]]
    assert samples_of(text, "flux_api_response_time_count_total") == {
        key(): sum(p["sum"] for p in points_of(simulator, counter)[()])}
    assert samples_of(text, "flux_api_response_time_count") == {
        key(): sum(p["count"] for p in points_of(simulator, summary)[()])}


def test_reserved_tag_keys_get_a_prefix(simulator: Simulator, flux: FluxFake, harness: Any) -> None:
    flux.add(FakeMetric("logins", "counter", {"account": ("x", "y")}))
    h = harness('metrics = [{ name = "logins", group_by = ["account"] }]')
    assert h.poll()
    assert {dict(k)["tag_account"] for k in samples_of(h.text(), "flux_logins_total")} == {"x", "y"}


# --- the simulator itself -------------------------------------------------------------------------


def sim_get(sim: Simulator, path: str, params: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> httpx.Response:
    return CLIENT.get(f"{sim.base_url('flux')}{path}", params=params,
                     headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"} if headers is None else headers)


@pytest.mark.parametrize(("metric", "valid"), [
    ("users.online", ["last", "avg", "min", "max"]),
    ("api.requests", ["sum", "rate"]),
    ("api.response_time", ["avg", "sum", "min", "max", "p50", "p90", "p95", "p99", "count"]),
    ("daily_active_users", ["count"]),
])
def test_simulator_aggregations_by_type(simulator: Simulator, metric: str, valid: list[str]) -> None:
    every = ["last", "avg", "sum", "min", "max", "p50", "p90", "p95", "p99", "count", "rate"]
    for aggregation in every:
        response = sim_get(simulator, f"/api/v1/metrics/{metric}/query",
                           {"aggregation": aggregation, "interval": "5m"})
        assert response.status_code == (200 if aggregation in valid else 400), aggregation
        if response.status_code == 400:
            assert "Invalid aggregation" in response.json()["error"]
    body = sim_get(simulator, f"/api/v1/metrics/{metric}/query",
                   {"aggregation": ",".join(valid), "interval": "1h"}).json()["data"]
    fields = {"timestamp", *valid} if len(valid) > 1 else {"timestamp", "value"}
    assert body["interval"] == "1h" and body["series"] and all(set(p) == fields for p in body["series"])


def test_simulator_errors(simulator: Simulator) -> None:
    assert sim_get(simulator, "/api/v1/metrics", headers={}).json() == {"error": "Missing API key"}
    response = sim_get(simulator, "/api/v1/metrics", headers={"X-API-Key": "nope"})
    assert response.status_code == 401 and response.json() == {"error": "Invalid API key"}
    assert sim_get(simulator, "/api/v1/metrics", headers={"X-API-Key": SIMULATOR_TOKEN}).status_code == 200
    assert sim_get(simulator, "/api/v1/metrics/nope").status_code == 404
    assert sim_get(simulator, "/api/v1/metrics/nope/query").status_code == 404
    assert sim_get(simulator, "/api/v1/metrics/users.online/query", {"interval": "2m"}).status_code == 400
    fake(simulator).dialect = "opensource"
    empty = sim_get(simulator, "/api/v1/metrics/nope/query", {"aggregation": "avg"})
    assert empty.status_code == 200 and empty.json()["data"] == []
    assert sim_get(simulator, "/api/v1/metrics/nope").status_code == 404
    assert sim_get(simulator, "/api/v1/metrics/users.online/query", {"aggregation": "last,max"}).status_code == 400
    assert set(sim_get(simulator, "/api/v1/metrics").json()) == {"metrics"}


def test_simulator_limiter_answers_429_with_retry_after(simulator: Simulator) -> None:
    fake(simulator).rate_limit = (3, 30.0)
    statuses = [sim_get(simulator, "/api/v1/metrics") for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert 1 <= int(statuses[-1].headers["Retry-After"]) <= 30
    other = sim_get(simulator, "/api/v1/metrics", headers={"X-API-Key": "second"})
    assert other.status_code == 401  # keys are limited separately, unknown keys refused first
    fake(simulator).api_keys.add("second")
    assert sim_get(simulator, "/api/v1/metrics", headers={"X-API-Key": "second"}).status_code == 200


def test_simulator_aggregations_agree_across_buckets_and_groups(simulator: Simulator) -> None:
    def total(params: dict[str, str]) -> float:
        data = sim_get(simulator, "/api/v1/metrics/api.requests/query",
                       {"aggregation": "sum", "from": "2026-05-28T18:00:00Z", "to": "2026-05-28T20:00:00Z",
                        **params}).json()["data"]
        if "groups" in data:
            return sum(p["value"] for points in data["groups"].values() for p in points)
        return sum(p["value"] for p in data["series"])

    minutes = total({"interval": "1m"})
    assert minutes > 0
    assert total({"interval": "1h"}) == minutes == total({"interval": "5m", "group_by": "tags.endpoint"})
    assert math.isclose(total({"interval": "1h", "tags[status]": "200"}) + total({"interval": "1h",
                                                                                  "tags[status]": "500"}), minutes)
