"""The list of vendor fakes the simulator serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.simulator.server import Simulator, Vendor


def build_vendors(simulator: Simulator) -> list[Vendor]:
    from exporter.simulator.bird import BirdFake
    from exporter.simulator.k6_cloud import K6CloudFake

    return [K6CloudFake(simulator), BirdFake(simulator)]
