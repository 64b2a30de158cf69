"""A faithful fake of the vendor APIs, for `simulate`, demos, tests and benchmarks."""

from exporter.simulator.common import SIMULATOR_TOKEN, Fault
from exporter.simulator.server import Simulator

__all__ = ["SIMULATOR_TOKEN", "Fault", "Simulator"]
