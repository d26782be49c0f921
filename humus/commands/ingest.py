"""`humus ingest`: placeholder until its issue lands."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="(not yet available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from humus.cli import CommandError

    raise CommandError("'humus ingest' is not available in this version yet")
