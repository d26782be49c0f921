"""The `humus` command: one entry point, one module per subcommand.

Subcommand modules live in `humus.commands` and each provides
``add_parser(subparsers)`` that sets ``func`` on its parser. They import
their heavy dependencies inside ``func`` so ``humus --help`` stays quick on
a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from humus import __version__
from humus.config import ConfigError

COMMANDS = ("collect", "ingest", "query", "calibrate", "sim", "probe", "demo", "check_config")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A failure to report as one line on stderr (exit status in `status`)."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="humus",
        description="Field sensor data acquisition for soil carbon monitoring.",
        epilog="Run 'humus COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"humus {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log verbosity (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"humus.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"humus {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as e:
        print(f"humus {args.command}: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    # Run through the imported module so exceptions are the ones commands raise
    # (as __main__ this file would define a second CommandError).
    from humus.cli import main as _main

    sys.exit(_main())
