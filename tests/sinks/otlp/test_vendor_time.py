"""Every vendor point over OTLP once, at its own time, oldest first, across a restart with a state dir.

In process, over real sockets: the simulator (its clock moved a minute per
poll), an `App` with the OTLP sink, the test receiver. What must arrive is
read from the simulator's API directly, not from our samples.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.app import App
from exporter.simulator import SIMULATOR_TOKEN, Simulator
from exporter.sources.kit.periods import rfc3339
from exporter.sources.kit.timeparse import parse_timestamp
from tests.conftest import FROZEN_NOW, k6_config, settings_from
from tests.otlp_receiver import OtlpReceiver, ReceivedPoint

# 90 s before a full hour: the polls cross it, so WhatsApp serves a new hourly bucket.
T0 = (FROZEN_NOW // 3600 + 1) * 3600 - 90
FLOW = "1234567890123456"


def config(sim: Simulator, receiver: OtlpReceiver, state: Path | None) -> str:
    text = k6_config(sim, [103054]) + f"""
    [[sources]]
    type = "flux"
    name = "flux"
    base_url = "{sim.base_url('flux')}"
    api_key = "{SIMULATOR_TOKEN}"
    bucket = "1m"
    metrics = [{{ name = "users.online", type = "gauge", group_by = ["region"] }}]

    [[sources]]
    type = "whatsapp_flows"
    name = "wa"
    base_url = "{sim.base_url('whatsapp')}"
    access_token = "{SIMULATOR_TOKEN}"
    flow_ids = ["{FLOW}"]
    metrics = ["ENDPOINT_REQUEST_ERROR_RATE"]

    [otlp]
    enabled = true
    protocol = "{receiver.protocol}"
    endpoint = "{receiver.endpoint}"
    """
    if state is not None:
        text += f'\n[state]\ndir = "{state}"\n'
    return text


def run(sim: Simulator, text: str, tmp_path: Path, times: list[float]) -> None:
    """One exporter process's life: a poll of every target at each time, then stop (flush)."""
    app = App(settings_from(tmp_path, text), clock=sim.now)

    async def go() -> None:
        app.build()
        try:
            for when in times:
                sim.clock.frozen = when
                assert await app.poll_all()
        finally:
            await app.stop()

    asyncio.run(go())


def k6_expected(sim: Simulator, first: float, last: float) -> dict[tuple[str, str, float], float]:
    """{(metric id, stat, time): value} of run 103054's vus and checks series within [first, last]."""
    base, auth = f"{sim.base_url('k6')}/loadtests/v2", {"Authorization": f"Token {SIMULATOR_TOKEN}"}
    metrics = httpx.get(f"{base}/metrics", params={"test_run_id": 103054}, headers=auth).json()["k6-metrics"]
    wanted = {m["id"]: m for m in metrics if m["name"] in ("vus", "checks")}
    expected = {}
    for metric_id, metric in wanted.items():
        stat = {"gauge": "value", "rate": "rate"}[metric["type"]]
        serie = httpx.get(f"{base}/series", params={"test_run_id": 103054, "ids[]": metric_id, "method": stat},
                          headers=auth).json()["k6-serie"][0]["values"]
        for point in serie:
            when = parse_timestamp(point["timestamp"])
            if first <= when <= last:
                expected[(metric["name"], stat, when)] = float(point["value"])
    return expected


def newest_k6_time(sim: Simulator, at: float) -> float:
    return (at // 15) * 15


def flux_expected(sim: Simulator, first: float, last: float) -> dict[tuple[str, float], float]:
    """{(region, bucket start): last} of users.online over complete 1m buckets within [first, last]."""
    answer = httpx.get(f"{sim.base_url('flux')}/api/v1/metrics/users.online/query", params={
        "from": rfc3339(first - 600), "to": rfc3339(last + 120), "interval": "1m", "aggregation": "last",
        "group_by": "tags.region"}, headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"})
    groups = answer.json()["data"]["groups"]
    return {(region, parse_timestamp(p["timestamp"])): float(p["value"]) for region, points in groups.items()
            for p in points if first <= parse_timestamp(p["timestamp"]) <= last}


def by_time(points: list[ReceivedPoint], metric: str) -> collections.Counter[tuple[Any, ...]]:
    return collections.Counter((p.attributes, p.time_ns) for p in points if p.metric == metric)


@pytest.mark.parametrize("protocol", ["grpc"])
def test_every_new_point_once_at_its_time_across_a_restart(protocol: str, tmp_path: Path) -> None:
    times = [T0 + 60 * i for i in range(5)]
    with Simulator("127.0.0.1:0", seed=7, freeze_time=T0) as sim, OtlpReceiver(protocol) as receiver:
        text = config(sim, receiver, tmp_path / "state")
        run(sim, text, tmp_path, times[:3])
        run(sim, text, tmp_path, times[3:])  # a restart: the state dir says what was sent
        sim.clock.frozen = times[-1]
        k6 = k6_expected(sim, newest_k6_time(sim, times[0]), newest_k6_time(sim, times[-1]))
        flux = flux_expected(sim, (times[0] // 60 - 1) * 60, (times[-1] // 60 - 1) * 60)
    points = receiver.points()

    # k6: every 15 s point from the first poll's newest to the last poll's, once, oldest first per series.
    got = [p for p in points if p.metric in ("k6_vus", "k6_checks")]
    seen = collections.Counter((p.metric.removeprefix("k6_"), dict(p.attributes)["stat"], p.time_ns / 1e9)
                               for p in got)
    assert len(k6) == 2 * (1 + 4 * 4) and set(seen) == set(k6) and set(seen.values()) == {1}
    assert all(p.value == k6[(p.metric.removeprefix("k6_"), dict(p.attributes)["stat"], p.time_ns / 1e9)]
               for p in got)
    for series in {p.attributes for p in got}:
        stamps = [p.time_ns for p in got if p.attributes == series]
        assert stamps == sorted(stamps)

    # Flux: every complete bucket once, at its start, with the server's value.
    flux_got = [p for p in points if p.metric == "flux_users_online"]
    assert collections.Counter((dict(p.attributes)["region"], p.time_ns / 1e9) for p in flux_got) == \
        collections.Counter(flux.keys())
    assert all(p.value == flux[(dict(p.attributes)["region"], p.time_ns / 1e9)] for p in flux_got)

    # WhatsApp: the error ratio of the hour the polls started in, then of the new hour, once each.
    ratio = by_time(points, "whatsapp_flow_endpoint_request_error")
    hour = int(T0 // 3600 * 3600)
    assert sorted(t for _, t in ratio) == [hour * 10**9, (hour + 3600) * 10**9] and set(ratio.values()) == {1}
    assert sorted(p.name for p in (tmp_path / "state").glob("*.otlp.json")) and \
        len(list((tmp_path / "state").glob("*.otlp.json"))) == 3


def test_without_a_state_dir_a_restart_sends_only_the_newest_point(tmp_path: Path) -> None:
    times = [T0, T0 + 60, T0 + 120]
    with Simulator("127.0.0.1:0", seed=7, freeze_time=T0) as sim, OtlpReceiver("http/protobuf") as receiver:
        text = config(sim, receiver, None)
        run(sim, text, tmp_path, times[:2])
        run(sim, text, tmp_path, times[2:])
    stamps = sorted(t for (attributes, t) in by_time(receiver.points(), "k6_vus"))
    newest = [newest_k6_time(sim, t) for t in times]
    # First life: the first poll's newest point, then the four 15 s points since;
    # second life: no state, so only its first poll's newest point (the three before it are not sent).
    assert stamps == [round(t * 1e9) for t in [newest[0], *(newest[0] + 15 * i for i in range(1, 5)), newest[2]]]
