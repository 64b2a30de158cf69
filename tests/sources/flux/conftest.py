"""Fixtures of the Flux tests: the simulator's Flux fake, apps on it, one HTTP client per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.simulator import Simulator
from exporter.simulator.flux import FluxFake
from tests.sources.flux.support import REPLAY_KEY, Harness, fake, flux_config, use_client


@pytest.fixture
def flux(simulator: Simulator) -> FluxFake:
    fake(simulator).api_keys.add(REPLAY_KEY)
    return fake(simulator)


@pytest.fixture
def harness(simulator: Simulator, flux: FluxFake, tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[Harness] = []

    def make(extra: str = "", **kwargs: str) -> Harness:
        made.append(Harness(simulator, tmp_path, flux_config(simulator, extra, **kwargs)))
        return made[-1]

    yield make
    for h in made:
        h.close()


@pytest.fixture(scope="module", autouse=True)
def client() -> Iterator[httpx.Client]:
    """One connection pool for the test's own requests (a new client per call costs ~50 ms)."""
    with httpx.Client() as pool:
        use_client(pool)
        yield pool
