"""What the Flux tests share: the config, the simulator's request log, replays and expected labels.

Expected values are computed from the simulator's own answers: every query the
exporter sent is replayed (with a separate key, so the replays do not spend
the exporter's budget), and the families are derived from those raw answers
by the rules of the docs, independently of the source's code.
"""

from __future__ import annotations

from typing import Any

import httpx

from exporter.simulator import SIMULATOR_TOKEN, Simulator
from exporter.simulator.flux import FluxFake
from exporter.sources.kit.timeparse import parse_timestamp
from tests.conftest import SimHarness

REPLAY_KEY = "replay-key"
EXPORTER_AUTH = f"Bearer {SIMULATOR_TOKEN}"
Labels = tuple[tuple[str, str], ...]


def fake(sim: Simulator) -> FluxFake:
    flux = sim.vendors["flux"]
    assert isinstance(flux, FluxFake)
    return flux


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


def exporter_requests(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.headers.get("authorization") == EXPORTER_AUTH]


def queries(sim: Simulator, metric: str | None = None) -> list[Any]:
    return [r for r in exporter_requests(sim) if r.path.endswith("/query")
            and (metric is None or r.path == f"/flux/api/v1/metrics/{metric}/query")]


# One connection pool for the test's own requests, set by the module-scoped
# `client` fixture (conftest.py): a new client per call costs ~50 ms.
CLIENT: httpx.Client


def use_client(pool: httpx.Client) -> None:
    global CLIENT
    CLIENT = pool


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


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def bulk_exported(text: str) -> set[str]:
    return {line.split("{")[0] for line in text.splitlines() if line.startswith("flux_bulk_metric_")}
