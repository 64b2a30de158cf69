"""Benchmarks for issue #9: memory, scrape cost, poll-path cost, OTLP encoding, scale.

    make bench                      # everything, each in its own process, prints tables
    python benchmarks/bench.py scrape --sizes 10000 100000 --repeat 300
    python benchmarks/bench.py poll | otlp | memory
    python benchmarks/bench.py scale --targets 1000 3000 10000 --minutes 3   # benchmarks/scale.py
    BENCH_PROFILE=k6_cloud python benchmarks/bench.py poll   # where a source's poll goes

Figures are measured, never asserted: each target line says "met" or "MISSED
by …". Results go in docs/performance.md with the machine and date.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.model import Family, Kind, Sample  # noqa: E402
from exporter.sinks.prometheus.blocks import render_blocks  # noqa: E402
from exporter.sinks.prometheus.store import Store  # noqa: E402

FAMILIES, TARGETS = 100, 1000
SCRAPER_TEXT = {"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "identity"}
SCRAPER_OM = {"Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding": "identity"}
SCRAPER_GZIP = {"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "gzip"}


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def verdict(ok: bool, detail: str) -> str:
    return f"met ({detail})" if ok else f"MISSED ({detail})"


# --- synthetic store ----------------------------------------------------------------------

def synthetic_samples(series: int) -> Iterator[tuple[str, list[Sample]]]:
    """`series` gauges over 100 families and 1,000 targets, 4 labels each."""
    families = [Family(f"bench_metric_{i:03d}_seconds", Kind.GAUGE, f"Benchmark family {i}.", "seconds")
                for i in range(FAMILIES)]
    per_target = max(1, series // TARGETS)
    for t in range(TARGETS):
        target = f"target-{t:04d}"
        samples = []
        for j in range(per_target):
            family = families[j % FAMILIES]
            labels = (("target", target), ("endpoint", f"/api/v1/resource/{j}"), ("method", "GET"),
                      ("status", str(200 + j % 5)))
            samples.append(Sample(family, labels, j * 0.001 + t))
        yield target, samples


def build_store(series: int) -> Store:
    store = Store()
    for target, samples in synthetic_samples(series):
        store.put(("bench", target, 0), render_blocks(samples))
    return store


class StockCollector(Collector):
    """prometheus_client's stock path: build Metric objects on every collect()."""

    def __init__(self, series: int) -> None:
        self.data = list(synthetic_samples(series))

    def collect(self) -> Iterator[Metric]:
        metrics: dict[str, Metric] = {}
        for _, samples in self.data:
            for s in samples:
                metric = metrics.get(s.family.name)
                if metric is None:
                    metric = metrics[s.family.name] = Metric(s.family.name, s.family.help, "gauge", s.family.unit)
                metric.add_sample(s.family.name, dict(s.labels), s.value)
        yield from metrics.values()


class _View:
    """What the web server needs of the app: a Prometheus sink over the store."""

    def __init__(self, store: Store) -> None:
        from exporter.sinks.prometheus import PrometheusSink

        self.sink = PrometheusSink(CollectorRegistry(auto_describe=False))
        self.sink.store = store

    def metrics_body(self, accept: str | None, accept_encoding: str | None) -> tuple[list[bytes], dict[str, str]]:
        return self.sink.body(accept, accept_encoding)

    def target_views(self) -> list[object]:
        return []

    def process_view(self) -> object:
        raise NotImplementedError("the benchmark serves /metrics only")

    def ready(self) -> bool:
        return True

    def reload_from_thread(self) -> str | None:
        return "no reload in the benchmark"


_RECV_BUFFER: list[bytearray] = []  # allocated by the first scrape: other benchmarks measure RSS


def raw_get(port: int, headers: dict[str, str]) -> int:
    """GET /metrics on a raw socket, reading the whole body undecoded into one
    reused buffer: the client side costs next to nothing (as Prometheus' Go
    reader), so the figure is the server's."""
    import socket

    request = "GET /metrics HTTP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    if not _RECV_BUFFER:
        _RECV_BUFFER.append(bytearray(64 * 1024 * 1024))
    view = memoryview(_RECV_BUFFER[0])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request.encode())
        total = 0
        while read := sock.recv_into(view[total % len(view):]):  # wraps: only the length counts
            total += read
    return total


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def bench_scrape(sizes: list[int], repeat: int) -> None:
    from exporter.web import WebServer

    print("\n## Scrape latency (HTTP, median / p99, ms)\n")
    print("| series | text | OpenMetrics | gzip | text, all families changed | stock text | stock gzip | join floor "
          "| memcpy | text vs stock | text vs join | gzip vs stock gzip |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    for size in sizes:
        store = build_store(size)
        server = WebServer("127.0.0.1:0", _View(store))  # type: ignore[arg-type]
        server.start()
        results = {}
        n = repeat if size <= 100_000 else max(3, repeat // 10)
        for name, headers in (("text", SCRAPER_TEXT), ("om", SCRAPER_OM), ("gzip", SCRAPER_GZIP)):
            raw_get(server.port, headers)  # warm (OpenMetrics renders lazily once)
            results[name] = timed(lambda h=headers: raw_get(server.port, h), n)  # noqa: B023 - timed() calls it at once
        # A poll between two scrapes: one target's blocks are swapped in again.
        # Every target has a block in every family here, so each family's
        # cached body is joined again by the scrape (the worst case).
        one_key = next(iter(store._blocks))  # noqa: SLF001 - benchmark instrumentation
        one_target = store._blocks[one_key]  # noqa: SLF001
        results["changed"] = []
        for _ in range(n):
            store.put(one_key, one_target)  # the poll, not timed
            results["changed"] += timed(lambda: raw_get(server.port, SCRAPER_TEXT), 1)  # noqa: B023 - timed() calls it at once
        server.stop()
        parts = store.parts(openmetrics=False, compressed=False)
        body = b"".join(parts)
        join = timed(lambda: b"".join(parts), n)  # noqa: B023 - timed() calls it at once
        memcpy = timed(lambda: bytearray(body), n)  # noqa: B023 - timed() calls it at once
        stock_registry = CollectorRegistry(auto_describe=False)
        stock_registry.register(StockCollector(size))
        stock_n = 3 if size >= 1_000_000 else (5 if size >= 100_000 else n)
        stock = timed(lambda: generate_latest(stock_registry), stock_n)  # noqa: B023 - timed() calls it at once
        stock_gz = timed(lambda: gzip.compress(generate_latest(stock_registry)), stock_n)  # noqa: B023 - timed() calls it at once
        med = {k: statistics.median(v) for k, v in results.items()}
        ratio_text = statistics.median(stock) / med["text"]
        ratio_join = med["text"] / statistics.median(join)
        ratio_gz = statistics.median(stock_gz) / med["gzip"]
        print(f"| {size:,} | {med['text']*1e3:.1f} / {p99(results['text'])*1e3:.1f} | "
              f"{med['om']*1e3:.1f} / {p99(results['om'])*1e3:.1f} | {med['gzip']*1e3:.1f} / {p99(results['gzip'])*1e3:.1f} | "
              f"{med['changed']*1e3:.1f} / {p99(results['changed'])*1e3:.1f} | "
              f"{statistics.median(stock)*1e3:.0f} | {statistics.median(stock_gz)*1e3:.0f} | "
              f"{statistics.median(join)*1e3:.1f} | {statistics.median(memcpy)*1e3:.1f} | "
              f"{ratio_text:.0f}x | {ratio_join:.2f}x | {ratio_gz:.0f}x |")
        if size == 1_000_000:
            notes.append("1M text ≥ 50x stock: " + verdict(ratio_text >= 50, f"{ratio_text:.0f}x"))
            notes.append("1M text within 2x of the join floor: " + verdict(ratio_join <= 2, f"{ratio_join:.2f}x"))
            notes.append("1M gzip ≥ 500x stock gzip: " + verdict(ratio_gz >= 500, f"{ratio_gz:.0f}x"))
        if size == 100_000:
            worst = max(p99(results["text"]), p99(results["om"]), p99(results["gzip"]))
            notes.append("100k p99 < 10 ms (unchanged store): " + verdict(worst < 0.010, f"{worst*1e3:.1f} ms"))
            changed = p99(results["changed"])
            notes.append("100k p99 < 10 ms (every family changed since the last scrape): "
                         + verdict(changed < 0.010, f"{changed*1e3:.1f} ms"))
        gc.collect()
    print()
    for note in notes:
        print(f"- {note}")


# --- poll path ---------------------------------------------------------------------------

def bench_poll(rounds: int) -> None:
    """CPU per 1,000 samples from HTTP body to rendered blocks, per source,
    against json.loads of the same bodies (the floor the issue names).

    Each source polls the simulator (another process) once while the HTTP
    client's per-attempt seam (`HttpClient._attempt`) records every response;
    then the same responses are replayed through it, so the timed path is exactly body -> JSON ->
    payload models -> samples -> rendered blocks, with no socket or httpx work.
    The whole poll over loopback HTTP is printed beside it for context."""
    from exporter.sinks.prometheus.blocks import render_blocks

    # A fixed instant (the tests' one): the simulated answers, and so the figures, repeat run after run.
    port, now = _free_port(), 1_780_000_000.0
    sim = subprocess.Popen([sys.executable, "-m", "exporter", "simulate", "--listen", f"127.0.0.1:{port}",
                            "--freeze-time", str(now)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f"http://127.0.0.1:{port}/_sim/requests")
        base = f"http://127.0.0.1:{port}"
        print("\n## Poll path (CPU ms per 1,000 samples; floor = json.loads of the same bodies)\n")
        print("| source | requests | samples/poll | body→blocks | json.loads floor | ratio | whole poll over HTTP |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        notes = []
        for source_config in _poll_sources(base):
            row = _poll_row(source_config, rounds, render_blocks, now)
            name, requests, count, per_k, floor_k, http_k = row
            ratio = per_k / floor_k if floor_k else float("inf")
            print(f"| {name} | {requests} | {count} | {per_k:.2f} | {floor_k:.2f} | {ratio:.1f}x | {http_k:.1f} |")
            notes.append(f"{name}: body→blocks ≤ 3x json.loads: " + verdict(ratio <= 3, f"{ratio:.1f}x"))
        print()
        for note in notes:
            print(f"- {note}")
    finally:
        sim.terminate()
        sim.wait()


def _poll_row(source_config: dict[str, object], rounds: int,
              render: Callable[..., Any], now: float) -> tuple[str, int, int, float, float, float]:
    from exporter.app import App, settle_heap
    from exporter.app.settings import Settings

    # The exporter's clock is frozen with the simulator's, so every poll asks
    # for the same windows and the replayed answers match.
    # `_cold`: forget the target's state before each poll, so an incremental
    # source (Pluto) reads its whole history every time.
    config = dict(source_config)
    cold = bool(config.pop("_cold", False))
    app = App(Settings(sources=[config]), clock=lambda: now)
    app.build()
    loop = asyncio.new_event_loop()
    source = app.sources[0]
    if source.discovers:
        loop.run_until_complete(app.discover(source))
    target = next(t for s, t in app.targets if s is source)
    # The seam: every attempt of the source's HTTP client (budget included).
    inner = source.http._attempt  # noqa: SLF001 - benchmark instrumentation
    recorded: dict[str, Any] = {}

    async def record(*args: Any) -> Any:
        sent = await inner(*args)
        recorded[repr(args)] = sent
        return sent

    async def replay(*args: Any) -> Any:
        return recorded[repr(args)]

    async def one() -> int:
        if cold:
            source.forget(target)
        samples = await source.poll(target)
        render(tuple(samples))
        return len(samples)

    source.http._attempt = record  # type: ignore[method-assign]
    loop.run_until_complete(one())  # warm: first-poll state, ledgers
    recorded.clear()  # incremental sources ask for less after the first poll
    settle_heap()  # as the daemon does after start-up
    http_rounds = []
    for _ in range(5):
        start = time.process_time()
        count = loop.run_until_complete(one())
        http_rounds.append(time.process_time() - start)
    http_cpu = statistics.median(http_rounds)
    source.http._attempt = replay  # type: ignore[method-assign]
    rounds_cpu = []
    profile = _profiler(source.type)
    for _ in range(rounds):
        start = time.process_time()
        loop.run_until_complete(one())
        rounds_cpu.append(time.process_time() - start)
    if profile is not None:
        profile.disable()
        import pstats

        pstats.Stats(profile).sort_stats(os.environ.get("BENCH_SORT", "tottime")).print_stats(int(os.environ.get("BENCH_LINES", "25")))
    bodies = [body for _, _, body in recorded.values()]
    floor_cpu = []
    for _ in range(rounds):
        start = time.process_time()
        for body in bodies:
            json.loads(body)
        floor_cpu.append(time.process_time() - start)
    loop.run_until_complete(source.aclose())
    loop.close()
    per_k = 1e6 / max(count, 1)  # ms per 1,000 samples
    name = f"{source.type} ({'full read' if cold else 'incremental'})" if source.type == "pluto" else source.type
    return (name, len(bodies), count, statistics.median(rounds_cpu) * per_k,
            statistics.median(floor_cpu) * per_k, http_cpu * per_k)


def _profiler(source_type: str) -> Any:
    """BENCH_PROFILE=<source type> prints where that source's poll spends its time."""
    if os.environ.get("BENCH_PROFILE") != source_type:
        return None
    import cProfile

    profile = cProfile.Profile()
    profile.enable()
    return profile


def _poll_sources(base: str) -> list[dict[str, object]]:
    from exporter.simulator import SIMULATOR_TOKEN

    http = {"retries": 0}
    return [
        {"type": "k6_cloud", "name": "k6", "base_url": f"{base}/k6", "token": SIMULATOR_TOKEN,
         "test_run_ids": [103056], "http": http},
        {"type": "bird_flow_runs", "name": "bird", "base_url": f"{base}/bird", "access_key": SIMULATOR_TOKEN,
         "workspace_id": "ws", "flow_ids": ["f1"], "period_group": "minute", "lookback": 1000, "http": http},
        {"type": "whatsapp_flows", "name": "wa", "base_url": f"{base}/whatsapp", "access_token": SIMULATOR_TOKEN,
         "flow_ids": ["1234567890123456"], "granularity": "HOUR", "lookback": "30d", "http": http},
        {"type": "pluto", "name": "pluto", "base_url": f"{base}/pluto", "api_key": SIMULATOR_TOKEN,
         "project": "research", "run_ids": [4101], "http": http, "_cold": True},
        {"type": "pluto", "name": "pluto", "base_url": f"{base}/pluto", "api_key": SIMULATOR_TOKEN,
         "project": "research", "run_ids": [4101], "http": http},
        {"type": "flux", "name": "flux", "base_url": f"{base}/flux", "api_key": SIMULATOR_TOKEN,
         "bucket": "1m", "lookback": 60, "http": http},
    ]


# --- scale: benchmarks/scale.py -------------------------------------------------------------

# --- OTLP encoding -------------------------------------------------------------------

def bench_otlp(series: int, repeat: int) -> None:
    """Points/s of the SDK path (our MetricsData + `encode_metrics` +
    `SerializeToString`) against `otlp_wire.WireEncoder`, on the synthetic
    series as gauges, counters and histograms, in batches of the sink's
    default size, with each series encoded a second time (the next poll)."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    from exporter.sinks.otlp.config import OtlpConfig
    from exporter.sinks.otlp.points import build_resource, encode, new_points, scope
    from exporter.sinks.otlp.transport import Encoded
    from exporter.sinks.otlp.wire import WireEncoder

    resource, instrumentation = build_resource({}, {}, "bench:9687", "bench"), scope("bench")
    batch_size = OtlpConfig().max_batch_points
    samples = [s for _, target in synthetic_samples(series) for s in target]
    kinds = _mixed_kinds(samples)
    points, _ = new_points(kinds, time.time(), time.time() - 3600, {})
    batches = [points[i:i + batch_size] for i in range(0, len(points), batch_size)]
    encoder = WireEncoder(resource, instrumentation)

    def sdk() -> int:
        return sum(len(encode_metrics(encode(b, resource, instrumentation)).SerializeToString()) for b in batches)

    def ours() -> int:
        return sum(len(encoder.encode(b)) for b in batches)

    def ours_sent() -> int:
        # What the transport hands the SDK exporter: parsed, then serialised again by it.
        return sum(len(Encoded(encoder.encode(b), len(b)).request().SerializeToString()) for b in batches)

    ours()  # first poll: the attribute cache fills; what follows is every later poll
    results = {}
    for name, fn in (("SDK encode_metrics + SerializeToString", sdk), ("otlp_wire.WireEncoder", ours),
                     ("otlp_wire + the SDK exporter's parse and re-serialise", ours_sent)):
        cpu = []
        for _ in range(repeat):
            start = time.process_time()
            fn()
            cpu.append(time.process_time() - start)
        results[name] = len(points) / statistics.median(cpu)
    print(f"\n## OTLP encoding ({len(points):,} points, batches of {batch_size:,}, one core)\n")
    print("| encoder | points/s | µs/point |")
    print("|---|---:|---:|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} | {1e6 / rate:.2f} |")
    ours_rate = results["otlp_wire + the SDK exporter's parse and re-serialise"]
    print(f"\n- speed-up: {ours_rate / results['SDK encode_metrics + SerializeToString']:.1f}x")
    print("- OTLP ≥ 300k points/s per core: " + verdict(ours_rate >= 300_000, f"{ours_rate:,.0f} points/s"))


def _mixed_kinds(samples: list[Sample]) -> list[Sample]:
    """Every tenth series a counter, every hundredth a histogram: what the
    sources send (mostly gauges, ledger counters, WhatsApp latency histograms)."""
    import dataclasses

    from exporter.model import HistogramValue

    out = []
    for i, sample in enumerate(samples):
        if i % 100 == 0:
            family = dataclasses.replace(sample.family, name=sample.family.name + "_hist", kind=Kind.HISTOGRAM)
            value = HistogramValue(tuple((float(b), float(b * 10)) for b in (1, 2, 5, 10)) + ((math.inf, 100.0),), 321.0)
            out.append(dataclasses.replace(sample, family=family, value=value, created=time.time() - 7200))
        elif i % 10 == 0:
            family = dataclasses.replace(sample.family, name=sample.family.name + "_events", kind=Kind.COUNTER, unit="")
            out.append(dataclasses.replace(sample, family=family, created=time.time() - 7200))
        else:
            out.append(sample)
    return out


# --- memory ------------------------------------------------------------------------------

def bench_memory(series: int) -> None:
    gc.collect()
    before = rss_bytes()
    store = build_store(series)
    # Scrape once in each format so the joined per-family caches count too.
    rendered = sum(len(p) for p in store.parts(False, False))
    gz = sum(len(p) for p in store.parts(False, True))
    store.parts(True, False)
    store.parts(True, True)
    gc.collect()
    after = rss_bytes()
    per = (after - before) / series
    print(f"\n## Memory at {series:,} series\n")
    print(f"- RSS delta per series, all four formats scraped once: {per:.0f} bytes "
          f"(text {rendered/series:.0f} B, gzip {gz/series:.0f} B per series): "
          + (verdict(per < 450, f"{per:.0f} B") if series >= 1_000_000 else "the 450 B target is set at 1M series"))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str) -> None:
    for _ in range(100):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("simulator did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="*", default=["memory", "scrape", "poll", "otlp", "scale"])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--targets", type=int, nargs="*", default=[1000, 3000, 10000])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if len(args.what) > 1:
        # Each benchmark in a process of its own, so that RSS figures (peak
        # RSS of `scale`, the delta of `memory`) are not inflated by another's.
        print(f"# api-metrics-exporter benchmarks — {platform.node()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}", flush=True)
        passed = ["--sizes", *map(str, args.sizes), "--repeat", str(args.repeat),
                  "--targets", *map(str, args.targets), "--minutes", str(args.minutes)]
        for what in args.what:
            subprocess.run([sys.executable, __file__, what, *passed, "--quiet"], check=True)
        return
    if not args.quiet:
        print(f"# api-metrics-exporter benchmarks — {platform.node()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    if "memory" in args.what:
        bench_memory(max(args.sizes))
    if "scrape" in args.what:
        bench_scrape(args.sizes, args.repeat)
    if "poll" in args.what:
        bench_poll(rounds=40)
    if "otlp" in args.what:
        bench_otlp(100_000, repeat=5)
    if "scale" in args.what:
        from benchmarks.scale import run_all, run_one

        if len(args.targets) == 1:
            run_one(args.targets[0], args.minutes)
        else:
            run_all(args.targets, args.minutes, __file__)


if __name__ == "__main__":
    main()
