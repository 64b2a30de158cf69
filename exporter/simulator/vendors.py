"""The list of vendor fakes the simulator serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.simulator.server import Simulator, Vendor


def build_vendors(simulator: Simulator) -> list[Vendor]:
    from exporter.simulator.bird import BirdFake
    from exporter.simulator.flux import FluxFake
    from exporter.simulator.k6_cloud import K6CloudFake
    from exporter.simulator.pluto import PlutoFake
    from exporter.simulator.whatsapp_flows import WhatsAppFlowsFake

    return [K6CloudFake(simulator), BirdFake(simulator), PlutoFake(simulator), WhatsAppFlowsFake(simulator),
            FluxFake(simulator)]
