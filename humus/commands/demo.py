"""`humus demo`: simulated probes -> collector -> MQTT -> ingest -> SQLite archive, on one machine."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline on simulated probes",
        description="Run three simulated probes on pseudo-terminals, a collector polling them over "
                    "serial I/O, an MQTT broker (embedded, or --broker), an ingest worker and an SQLite "
                    "archive in DIR. Without --duration it runs until Ctrl-C; then it prints a summary "
                    "and the 'humus query' command to see the data.")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    p.add_argument("--dir", type=Path, default=Path("humus-demo"), metavar="DIR",
                   help="where the archive, spool, configurations and device links go (default ./humus-demo)")
    p.add_argument("--broker", metavar="HOST:PORT",
                   help="use this MQTT broker (e.g. Mosquitto) instead of the embedded one")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                   help="polling interval of the fast probes (default 2)")
    p.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    p.add_argument("--pull", metavar="PROBE:AFTER:FOR",
                   help="pull PROBE's cable AFTER seconds into the run and plug it back FOR seconds later, "
                        "e.g. teros-a:20:40: the alerts service notifies, then resolves (docs/alerts.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from humus.cli import CommandError
    from humus.demo import run_demo

    if args.duration is not None and args.duration <= 0:
        raise CommandError("--duration must be a positive number of seconds", 2)
    if not 1 <= args.interval <= 3600:
        raise CommandError("--interval must be between 1 and 3600 seconds", 2)
    if args.broker and not args.broker.rpartition(":")[2].isdigit():
        raise CommandError(f"--broker {args.broker!r}: expected HOST:PORT, e.g. 127.0.0.1:1883", 2)
    pull = None
    if args.pull:
        from humus.demo import PROBES

        probe, _, rest = args.pull.partition(":")
        after, _, for_s = rest.partition(":")
        try:
            pull = (probe, float(after), float(for_s))
        except ValueError:
            pull = None
        if pull is None or probe not in {p.id for p in PROBES} or pull[1] < 0 or pull[2] <= 0:
            raise CommandError(f"--pull {args.pull!r}: expected PROBE:AFTER:FOR with PROBE one of "
                               f"{', '.join(p.id for p in PROBES)}, e.g. teros-a:20:40", 2)
    return run_demo(args.dir, args.duration, args.broker, args.seed, args.interval, pull=pull)
