"""A faithful fake of the vendor APIs, for `simulate`, demos, tests and benchmarks."""

from exporter.simulator.server import SIMULATOR_TOKEN, Fault, Simulator

__all__ = ["SIMULATOR_TOKEN", "Fault", "Simulator"]
