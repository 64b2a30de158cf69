"""`simulate`: run only the vendor API simulator (token `simulator-token`)."""

from __future__ import annotations

import argparse

from exporter.cli.common import EXIT_OK, log


def simulate(args: argparse.Namespace) -> int:
    from exporter.simulator import Simulator

    simulator = Simulator(args.listen, seed=args.seed, freeze_time=args.freeze_time,
                          hostile_fixtures=args.hostile_fixtures)
    log.info("simulator listening on %s (token %r)", simulator.url, "simulator-token")
    try:
        simulator.serve_forever()
    except KeyboardInterrupt:
        pass
    return EXIT_OK
