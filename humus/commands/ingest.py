"""`humus ingest --config observatory.toml`: MQTT observation batches into the archive, exactly once."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest", help="store observation batches from the broker (exactly once)",
        description="Subscribe to humus/v1/+/+/obs (shared subscription by default), validate each batch, "
                    "store it and acknowledge it only once stored. Stops cleanly on SIGTERM/SIGINT. "
                    "See docs/ingest.md.")
    p.add_argument("--config", required=True, metavar="FILE", help="observatory TOML file with an [ingest] table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from humus.cli import CommandError
    from observatory.config import load_observatory_config
    from observatory.ingest import run_daemon
    from observatory.store import StoreError

    cfg = load_observatory_config(args.config)
    os.umask(os.umask(0o027) | 0o027)   # archive, state and dead letters 0640 at most, whatever started us
    try:
        return run_daemon(cfg)
    except StoreError as e:
        raise CommandError(f"{e}; check [ingest] store and state_file in {args.config}") from None
