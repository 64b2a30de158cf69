"""How the HTTP client was chosen (#19): CPU per request of httpx and httpx2, bounded or not.

    python benchmarks/clients.py --requests 3000 10000 --bounds 0 8 32

One client sends N concurrent GETs to a simulator in another process, with at
most `bound` in flight (0: all at once, the pool queues them). The simulator
answers 404 at once, so the figure is the client's own work per request.
Printed as a Markdown table; figures go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def measure(module: str, port: int, requests: int, bound: int) -> tuple[float, float]:
    """(CPU seconds per request, wall seconds) for one client and bound."""
    lib: Any = importlib.import_module(module)
    pool = bound or 100
    client = lib.AsyncClient(base_url=f"http://127.0.0.1:{port}/bird", timeout=120,
                             limits=lib.Limits(max_connections=pool, max_keepalive_connections=pool))
    slots = asyncio.Semaphore(bound) if bound else None

    async def one(i: int) -> int:
        if slots is None:
            return int((await client.get(f"/x/{i}")).status_code)
        async with slots:
            return int((await client.get(f"/x/{i}")).status_code)

    await asyncio.gather(*(one(i) for i in range(50)))  # connections open, imports done
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(one(i) for i in range(requests)))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    await client.aclose()
    return cpu / requests, wall


def main() -> None:
    from benchmarks.bench import _free_port, _wait

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, nargs="*", default=[3000, 10000])
    parser.add_argument("--bounds", type=int, nargs="*", default=[0, 8, 32])
    args = parser.parse_args()
    port = _free_port()
    sim = subprocess.Popen([sys.executable, "-m", "exporter", "simulate", "--listen", f"127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f"http://127.0.0.1:{port}/_sim/requests")
        print("| client | requests | in flight | CPU per request | wall |")
        print("|---|---:|---:|---:|---:|")
        for module in ("httpx", "httpx2"):
            for requests in args.requests:
                for bound in args.bounds:
                    per, wall = asyncio.run(measure(module, port, requests, bound))
                    print(f"| {module} | {requests:,} | {bound or 'all'} | {per * 1e3:.2f} ms | {wall:.1f} s |",
                          flush=True)
    finally:
        sim.terminate()
        sim.wait()


if __name__ == "__main__":
    main()
