"""Command line: `run` (default) | `check` | `once` | `simulate`, and `--version`.

Exit codes: 0 success; 1 `once` with a failed target; 2 invalid configuration
or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from exporter import __version__
from exporter.app.settings import Settings, load_settings
from exporter.config.load import ConfigError, resolve_config_path
from exporter.logs import setup_logging

if TYPE_CHECKING:
    from exporter.app import App

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="api-metrics-exporter",
        description="Poll vendor metrics APIs and expose them as Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"api-metrics-exporter {__version__}")
    _add_common(parser, defaults=True)
    # Subcommands repeat the options without defaults, so `--config x check`
    # and `check --config x` both work and neither overwrites the other.
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, defaults=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="run the exporter (default)")
    commands.add_parser("check", parents=[common], help="validate the config and list sources and targets")
    commands.add_parser("once", parents=[common], help="poll every target once and print the exposition")
    simulate = commands.add_parser("simulate", parents=[common], help="run only the vendor API simulator")
    simulate.add_argument("--listen", default="127.0.0.1:9688", help="host:port (default 127.0.0.1:9688)")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--freeze-time", type=float, default=None, help="fixed epoch seconds for the clock")
    return parser


def _add_common(parser: argparse.ArgumentParser, defaults: bool) -> None:
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--config", default=default(None),
                        help="config file (default: $APIMETRICS_CONFIG or ./exporter.toml)")
    parser.add_argument("--log-level", default=default("info"), choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=default("text"), choices=["text", "json"])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    command = args.command or "run"
    if command == "simulate":
        return simulate(args)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print("invalid configuration:", file=sys.stderr)
        for line in exc.lines():
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    if command == "check":
        print(targets_table(settings))
        return EXIT_OK
    if command == "once":
        return asyncio.run(once(settings))
    return asyncio.run(run(settings, str(resolve_config_path(args.config, os.environ))))


def targets_table(settings: Settings) -> str:
    rows = [("SOURCE", "TYPE", "INTERVAL", "ENDPOINT", "TARGETS")]
    for source in settings.sources:
        endpoint = "simulator" if settings.uses_simulator(source) else (source.base_url or "vendor default")
        rows.append((source.name, source.type, f"{source.interval:g}s", endpoint, ", ".join(source.target_ids())))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    total = sum(len(s.target_ids()) for s in settings.sources)
    lines.append(f"config OK: {len(settings.sources)} source(s), {total} target(s)")
    return "\n".join(lines)


@contextmanager
def simulator_for(settings: Settings) -> Iterator[str | None]:
    """The built-in simulator when `[simulator] enabled`: its URL, else None."""
    if not settings.simulator.enabled:
        yield None
        return
    from exporter.simulator import Simulator

    sim = settings.simulator
    with Simulator(sim.listen, seed=sim.seed, freeze_time=sim.freeze_time) as simulator:
        log.info("simulator serving the vendor APIs on %s", simulator.url)
        yield simulator.url


async def once(settings: Settings) -> int:
    from exporter.app import App

    with simulator_for(settings) as simulator_url:
        return await _once(App(settings, simulator_url=simulator_url))


async def _once(app: App) -> int:
    app.build()
    try:
        ok = await app.poll_all()
    finally:
        await app.stop()
    sys.stdout.write(app.exposition().decode())
    sys.stdout.flush()
    return EXIT_OK if ok else EXIT_FAILED


async def run(settings: Settings, config_path: str | None = None) -> int:
    from exporter.app import App

    with simulator_for(settings) as simulator_url:
        return await _run(App(settings, config_path=config_path, simulator_url=simulator_url))


async def _run(app: App) -> int:
    from exporter.app import freeze_startup_heap

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[str | None]] = set()

    def reload() -> None:
        task = loop.create_task(app.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await app.start()
    freeze_startup_heap()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await app.stop()
    return EXIT_OK


def simulate(args: argparse.Namespace) -> int:
    from exporter.simulator import Simulator

    simulator = Simulator(args.listen, seed=args.seed, freeze_time=args.freeze_time)
    log.info("simulator listening on %s (token %r)", simulator.url, "simulator-token")
    try:
        simulator.serve_forever()
    except KeyboardInterrupt:
        pass
    return EXIT_OK
