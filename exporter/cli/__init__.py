"""Command line: `run` (default) | `check` | `once` | `backfill` | `simulate` |
`config-schema` | `sample-config`, and `--version`.

One module per command; this one parses the arguments, loads the config
(an invalid one prints every problem and exits 2) and dispatches.

Exit codes: 0 success; 1 `once` or `backfill` with a failed target; 2 invalid
configuration or usage; 130 `backfill` interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from exporter import __version__
from exporter.app.settings import load_settings
from exporter.cli.backfill import add_arguments as add_backfill_arguments
from exporter.cli.check import targets_table
from exporter.cli.common import EXIT_CONFIG, EXIT_OK
from exporter.cli.run import run, simulator_for
from exporter.cli.sample import sample_config
from exporter.cli.schema import config_schema
from exporter.cli.simulate import simulate
from exporter.config.load import ConfigError, resolve_config_path
from exporter.logs import setup_logging
from exporter.sources import REGISTRY

__all__ = ["main", "simulator_for"]


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
    once = commands.add_parser("once", parents=[common],
                               help="poll the targets once, print their series and a summary per target")
    once.add_argument("--source", action="append", default=[], metavar="NAME",
                      help="poll only this source (repeatable)")
    once.add_argument("--target", action="append", default=[], metavar="ID",
                      help="poll only this target id, or SOURCE/ID (repeatable)")
    once.add_argument("--self-metrics", action="store_true", help="also print the apimetrics_* self-metrics")
    commands.add_parser("config-schema", parents=[common], help="print the JSON Schema of exporter.toml")
    sample = commands.add_parser("sample-config", parents=[common],
                                 help="print a commented example config for one source type")
    sample.add_argument("source_type", metavar="TYPE", choices=list(REGISTRY), help=", ".join(REGISTRY))
    backfill = commands.add_parser("backfill", parents=[common],
                                   help="load vendor history into an OpenMetrics file (for promtool) or over OTLP")
    add_backfill_arguments(backfill)
    simulate = commands.add_parser("simulate", parents=[common], help="run only the vendor API simulator")
    simulate.add_argument("--listen", default="127.0.0.1:9688", help="host:port (default 127.0.0.1:9688)")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--freeze-time", type=float, default=None, help="fixed epoch seconds for the clock")
    simulate.add_argument("--hostile-fixtures", action="store_true",
                          help="add test fixtures to the data (label values with quotes, newlines, colliding keys)")
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
    if command == "config-schema":
        return config_schema()
    if command == "sample-config":
        return sample_config(args.source_type)
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
    if command == "backfill":
        from exporter.cli.backfill import backfill

        return asyncio.run(backfill(settings, args))
    if command == "once":
        from exporter.cli.once import once

        return asyncio.run(once(settings, args.source, args.target, args.self_metrics, args.log_format == "json"))
    return asyncio.run(run(settings, str(resolve_config_path(args.config, os.environ))))
