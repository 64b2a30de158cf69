"""How the HTTP client was chosen (#19): CPU per request of httpx, httpx2 and aiohttp, bounded or not.

    python benchmarks/clients.py --requests 3000 10000 --bounds 0 8 32
    python benchmarks/clients.py --requests 3000 --bounds 0 32 --clients httpx   # unbounded 10,000 takes minutes

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
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Answer(NamedTuple):
    status_code: int


class AiohttpClient:
    """aiohttp's session behind the two calls the measurement makes, as httpx names them."""

    def __init__(self, base_url: str, pool: int) -> None:
        import aiohttp

        self.base_url = base_url
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool),
                                             timeout=aiohttp.ClientTimeout(total=120))

    async def get(self, path: str) -> Answer:
        async with self.session.get(self.base_url + path) as response:
            await response.read()
            return Answer(response.status)

    async def aclose(self) -> None:
        await self.session.close()


def client_of(module: str, base_url: str, pool: int) -> Any:
    if module == "aiohttp":
        return AiohttpClient(base_url, pool)
    lib: Any = importlib.import_module(module)
    return lib.AsyncClient(base_url=base_url, timeout=120,
                           limits=lib.Limits(max_connections=pool, max_keepalive_connections=pool))


async def measure(module: str, port: int, requests: int, bound: int) -> tuple[float, float]:
    """(CPU seconds per request, wall seconds) for one client and bound."""
    client = client_of(module, f"http://127.0.0.1:{port}/bird", bound or 100)
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
    # httpx unbounded at 10,000 requests takes many minutes: leave it out there.
    parser.add_argument("--clients", nargs="*", default=["httpx", "httpx2", "aiohttp"])
    args = parser.parse_args()
    port = _free_port()
    sim = subprocess.Popen([sys.executable, "-m", "exporter", "simulate", "--listen", f"127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f"http://127.0.0.1:{port}/_sim/requests")
        print("| client | requests | in flight | CPU per request | wall |")
        print("|---|---:|---:|---:|---:|")
        for module in args.clients:
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
