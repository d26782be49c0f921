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
import typing
from typing import Sequence

from humus import __version__
from humus.config import ConfigError, one_line

COMMANDS = ("collect", "ingest", "query", "calibrate", "sim", "probe", "demo", "check_config", "gateway", "archive",
            "alerts", "report", "recalibrate", "lab")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A failure to report as one line on stderr (exit status in `status`)."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (what is wrong, where to read more), exit status 2.

    Subcommand parsers are made with the class of their parent, so this covers them all.
    """

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    """Run one command; every failure is one line on stderr: 2 for what the user gave, 1 for the rest.

    No traceback reaches the user: an exception no command expected is a
    bug, reported in one line (exit status 1) with its traceback in the
    log at DEBUG level.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:          # --help, --version, or a usage error already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bad = _not_utf8(args)
    if bad:
        _say(args, f"argument {bad[0]}: expected UTF-8 text, got {bad[1]!r}")
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        _say(args, str(e))
        return EXIT_USAGE
    except CommandError as e:
        _say(args, str(e))
        return e.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        logging.getLogger("humus").debug("unexpected error in humus %s", args.command, exc_info=True)
        _say(args, f"unexpected error {type(e).__name__}: {str(e)[:200]}; this is a bug, please report it "
                   "with the output of --log-level DEBUG")
        return EXIT_FAILURE


def _say(args: argparse.Namespace, message: str) -> None:
    print(f"humus {args.command}: {one_line(message)}", file=sys.stderr)


def _not_utf8(args: argparse.Namespace) -> tuple[str, bytes] | None:
    """The first argument that is not UTF-8 (Python keeps such bytes as lone surrogates), as (name, bytes)."""
    for name, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    return name.replace("_", "-"), v.encode("utf-8", "surrogateescape")
    return None


if __name__ == "__main__":
    # Run through the imported module so exceptions are the ones commands raise
    # (as __main__ this file would define a second CommandError).
    from humus.cli import main as _main

    sys.exit(_main())
