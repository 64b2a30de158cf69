"""The scale benchmark (#19): n Bird flows polled every 60 s on one exporter, against a simulator process.

    python benchmarks/bench.py scale --targets 1000 3000 10000 --minutes 3

Each target count runs in a process of its own (peak RSS is per process). For
each: start-up until `/metrics` answers, exporter CPU share over the
measurement window (after one interval of warm-up, so every first poll is
done; `/metrics` is scraped through it as through the window), peak RSS,
scheduling lag (actual - planned start) p50/p99, overruns, failed polls,
and `/metrics` median/p99 (and the three slowest) over the window's
scrapes, made while polls go on.
Figures are measured, never asserted: each target line says "met" or "MISSED".
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

INTERVAL = 60.0
SCRAPE_EVERY = 5.0
# Scrapes /metrics like Prometheus (text, no gzip) every SCRAPE_EVERY seconds:
# prints [seconds...], body size.
SCRAPER = """
import json, socket, sys, time
port, n, every = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
buffer = memoryview(bytearray(1 << 20))
times, size = [], 0
for _ in range(n):
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\\r\\nAccept: text/plain;version=0.0.4\\r\\n\\r\\n")
        size = 0
        while read := sock.recv_into(buffer):
            size += read
    times.append(time.perf_counter() - start)
    time.sleep(max(0.0, every - times[-1]))
print(json.dumps([times, size]))
"""


def run_one(targets: int, minutes: float) -> dict[str, Any]:
    """One target count, in this process; prints its figures and returns them."""
    from benchmarks.bench import SCRAPER_TEXT, _free_port, _wait, p99, raw_get

    port, listen = _free_port(), _free_port()
    sim = subprocess.Popen([sys.executable, "-m", "exporter", "simulate", "--listen", f"127.0.0.1:{port}",
                            "--freeze-time", str(time.time())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f"http://127.0.0.1:{port}/_sim/requests")
        started = time.monotonic()
        serving: list[float] = []
        threading.Thread(target=_first_answer, args=(listen, started, serving, raw_get, SCRAPER_TEXT),
                         daemon=True).start()
        result = asyncio.run(_scenario(targets, minutes, port, listen))
    finally:
        sim.terminate()
        sim.wait()
    result["startup"] = serving[0] if serving else float("nan")
    result["targets"] = targets
    scrapes = result.pop("scrapes")
    result["scrape_median"], result["scrape_p99"] = statistics.median(scrapes), p99(scrapes)
    result["scrape_max"] = max(scrapes)
    result["scrape_slowest"] = sorted(scrapes)[-3:][::-1]
    lags = result.pop("lags")
    result["lag_p50"], result["lag_p99"] = (statistics.median(lags), p99(lags)) if lags else (0.0, 0.0)
    result["runs"] = len(lags)
    _print(result, minutes)
    return result


def _first_answer(listen: int, started: float, into: list[float], raw_get: Any, headers: dict[str, str]) -> None:
    while True:
        try:
            raw_get(listen, headers)
        except OSError:
            time.sleep(0.05)
            continue
        into.append(time.monotonic() - started)
        return


async def _scenario(targets: int, minutes: float, port: int, listen: int) -> dict[str, Any]:
    from exporter.app import App, keep_settled, settle_heap
    from exporter.app.settings import Settings
    from exporter.simulator import SIMULATOR_TOKEN

    # ~12 series a flow: 10,000 flows pass the default [limits] max_series (100,000).
    settings = Settings(server={"listen": f"127.0.0.1:{listen}"}, limits={"max_series": 10_000_000}, sources=[{
        "type": "bird_flow_runs", "name": "bird", "interval": INTERVAL, "base_url": f"http://127.0.0.1:{port}/bird",
        "access_key": SIMULATOR_TOKEN, "workspace_id": "ws", "flow_ids": [f"flow-{i}" for i in range(targets)]}])
    app = App(settings)
    await app.start()
    settle_heap()  # as the daemon does: now, and when the first polls have ended
    settling = asyncio.create_task(keep_settled(app))
    assert app.poller is not None
    # Scraped from the start, as Prometheus would: the first scrape after a
    # minute without any joins every family afresh, which a deployment
    # scraped every 15-30 s never sees. Not measured.
    warm_up = time.monotonic()
    await (await _scraper(listen, int(INTERVAL / SCRAPE_EVERY))).communicate()
    await asyncio.sleep(max(0.0, INTERVAL - (time.monotonic() - warm_up)))  # every first poll is done
    lags: list[float] = []
    app.poller.observe_lag = lags.append
    pauses = _gc_pauses()
    before = _totals(app)
    # /metrics scraped while the polls go on (its CPU is part of the share, as
    # in a deployment), from another process: a client thread in this one
    # would fight the exporter for the GIL on every recv and measure itself.
    scraper = await _scraper(listen, int(minutes * 60 / SCRAPE_EVERY))
    cpu0, wall0 = time.process_time(), time.monotonic()
    out, _ = await scraper.communicate()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    app.poller.observe_lag = None
    gc.callbacks.clear()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    after = _totals(app)
    scrapes, body = json.loads(out)
    settling.cancel()
    await app.stop()
    return {"cpu_share": cpu / wall, "peak_rss": peak, "lags": lags, "scrapes": scrapes, "body": body,
            "polls": after[0] - before[0], "overruns": after[1] - before[1], "failures": after[2] - before[2],
            "cpu_per_poll": cpu / max(1, after[0] - before[0]), "tracked": len(gc.get_objects()),
            "full_gcs": len(pauses[2]), "gc_max": max(pauses[2], default=0.0),
            "young_gcs": len(pauses[0]) + len(pauses[1]), "young_gc_max": max(pauses[0] + pauses[1], default=0.0)}


async def _scraper(listen: int, scrapes: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-c", SCRAPER, str(listen), str(scrapes),
                                                str(SCRAPE_EVERY), stdout=asyncio.subprocess.PIPE)


def _gc_pauses() -> dict[int, list[float]]:
    """Durations of the collections from now on, by generation (the daemon's
    own young collections in app/heap.py included)."""
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(watch)
    return pauses


def _totals(app: Any) -> tuple[int, int, int]:
    statuses = list(app.runner.status.values())
    return (sum(s.polls for s in statuses), sum(s.stats.overruns for s in statuses),
            sum(int(sum(s.stats.errors.values())) for s in statuses))


def _print(r: dict[str, Any], minutes: float) -> None:
    from benchmarks.bench import verdict

    n = r["targets"]
    print(f"\n## Scale: {n:,} targets every {INTERVAL:g} s, measured for {minutes:g} min after a {INTERVAL:g} s warm-up\n")
    print(f"- start-up until /metrics answers: {r['startup']:.1f} s")
    print(f"- exporter CPU: {r['cpu_share']*100:.1f}% of one core, {r['cpu_per_poll']*1e3:.2f} ms per poll "
          f"({r['polls']:,} polls, {r['failures']} failed)")
    print(f"- peak RSS: {r['peak_rss']/2**20:.0f} MiB")
    print(f"- scheduling lag p50 {r['lag_p50']*1e3:.1f} ms, p99 {r['lag_p99']*1e3:.1f} ms over {r['runs']:,} runs; "
          f"overruns {r['overruns']}")
    print(f"- full garbage collections in the window: {r['full_gcs']}, longest {r['gc_max']*1e3:.0f} ms; "
          f"young ones: {r['young_gcs']}, longest {r['young_gc_max']*1e3:.0f} ms ({r['tracked']:,} objects tracked)")
    print(f"- /metrics ({r['body']/1e6:.1f} MB), scraped every {SCRAPE_EVERY:g} s during the window: median "
          f"{r['scrape_median']*1e3:.1f} ms, p99 {r['scrape_p99']*1e3:.1f} ms, slowest "
          + ", ".join(f"{t*1e3:.0f}" for t in r["scrape_slowest"]) + " ms")
    if n >= 10_000:
        checks = [("serving /metrics within 30 s of start", r["startup"] < 30, f"{r['startup']:.1f} s"),
                  ("under 35% of one core", r["cpu_share"] < 0.35, f"{r['cpu_share']*100:.1f}%"),
                  ("under 600 MB RSS", r["peak_rss"] < 600e6, f"{r['peak_rss']/1e6:.0f} MB"),
                  ("scheduling lag p99 under 1 s", r["lag_p99"] < 1, f"{r['lag_p99']*1e3:.0f} ms"),
                  ("no overrun", r["overruns"] == 0, f"{r['overruns']}"),
                  ("/metrics p99 under 100 ms", r["scrape_p99"] < 0.1, f"{r['scrape_p99']*1e3:.0f} ms")]
    else:
        checks = [("CPU under 10% of a core per 1,000 targets", r["cpu_share"] < 0.10 * n / 1000,
                   f"{r['cpu_share']*100:.1f}%"),
                  ("scheduling lag p99 under 1 s", r["lag_p99"] < 1, f"{r['lag_p99']*1e3:.0f} ms")]
    for what, ok, detail in checks:
        print(f"- {what}: " + verdict(ok, detail))
    print("RESULT " + json.dumps(r), flush=True)


def run_all(counts: list[int], minutes: float, bench: str) -> None:
    """Each count in a process of its own; then the cost per target against the smallest count."""
    results = []
    for n in counts:
        out = subprocess.run([sys.executable, bench, "scale", "--targets", str(n), "--minutes", str(minutes),
                              "--quiet"], check=True, capture_output=True, text=True).stdout
        print("\n".join(line for line in out.splitlines() if not line.startswith("RESULT ")), flush=True)
        results += [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    if len(results) < 2:
        return
    from benchmarks.bench import verdict

    print("\n## Scale summary\n")
    print("| targets | start-up | CPU | CPU/poll | peak RSS | lag p50 / p99 | overruns | /metrics median / p99 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['targets']:,} | {r['startup']:.1f} s | {r['cpu_share']*100:.1f}% | {r['cpu_per_poll']*1e3:.2f} ms | "
              f"{r['peak_rss']/2**20:.0f} MiB | {r['lag_p50']*1e3:.1f} / {r['lag_p99']*1e3:.1f} ms | {r['overruns']} | "
              f"{r['scrape_median']*1e3:.1f} / {r['scrape_p99']*1e3:.1f} ms |")
    small, large = results[0], results[-1]
    ratio = (large["cpu_share"] / large["targets"]) / (small["cpu_share"] / small["targets"])
    print(f"\n- cost per target at {large['targets']:,} within 1.5x of {small['targets']:,}: "
          + verdict(ratio <= 1.5, f"{ratio:.2f}x"))
