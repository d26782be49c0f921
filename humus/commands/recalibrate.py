"""`humus recalibrate`: recompute calibrated values of archived raw spectra with a new model, beside the old ones.

    humus recalibrate --store sqlite:archive.sqlite --model soc-pls-v2.npz [--site S] [--probe P]
                      [--since T] [--until T] [--quantity soc]

Never overwrites: the new model's values go to their own series (observatory/recalibrate.py,
observatory/versions.py); queries and reports then take, per time, the newest model version.
Running it again writes the same values again (idempotent).
"""

from __future__ import annotations

import argparse
import re
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recalibrate", help="recompute history from archived raw spectra with a new model",
                       description="Apply a spectral model to the archived raw spectra (with their dark and white "
                                   "references) and write the results beside the old values under the model's id "
                                   "and version. Queries and reports use the newest version per time.",
                       epilog="Example: humus recalibrate --store sqlite:humus-demo/archive.sqlite "
                              "--model soc-v2.npz --since 2025-01-01")
    p.add_argument("--store", required=True, metavar="URL", help="store URL (docs/stores.md)")
    p.add_argument("--model", required=True, metavar="FILE", help="spectral model file (.npz, humus calibrate fit)")
    p.add_argument("--quantity", default="soc", help="the calibrated quantity the model gives (default soc)")
    p.add_argument("--site")
    p.add_argument("--gateway")
    p.add_argument("--probe")
    p.add_argument("--since", metavar="T", help="from this time on (inclusive)")
    p.add_argument("--until", metavar="T", help="before this time (exclusive)")
    p.add_argument("--kind", choices=["counts", "reflectance", "absorbance"],
                   help="what the archived spectra are (default: from their unit)")
    p._negative_number_matcher = re.compile(r"^-\d+(\.\d+)?(s|m|min|h|d|w)?$")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calibration.model import ModelFileError, SpectralModel
    from humus.cli import EXIT_USAGE, CommandError
    from humus.commands.query import open_archive
    from humus.records import QUANTITY_PATTERN
    from observatory import query
    from observatory.progress import Progress
    from observatory.recalibrate import RecalibrationError, recalibrate
    from observatory.store import StoreError, StoreUnavailable

    try:
        model = SpectralModel.load(args.model)
    except ModelFileError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    if not QUANTITY_PATTERN.fullmatch(args.quantity) or len(args.quantity) > 32:
        raise CommandError(f"--quantity {args.quantity[:40]!r}: expected a quantity name like soc "
                           "(a-z, 0-9, '_', at most 32 characters)", EXIT_USAGE)
    try:
        sel = query.selection(site=args.site, gateway=args.gateway, probe=args.probe, since=args.since,
                              until=args.until)
    except query.TimeError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    store = open_archive(args.store)
    bar = Progress(f"humus recalibrate: {model.id} {model.version}")
    try:
        res = recalibrate(store, model, quantity=args.quantity, site=args.site, gateway=args.gateway,
                          probe=args.probe, since_ns=sel.since_ns, until_ns=sel.until_ns, kind=args.kind,
                          progress=bar.update)
    except RecalibrationError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    except StoreUnavailable as e:
        raise CommandError(f"{e}; nothing is lost: run the same command again") from None
    except StoreError as e:
        raise CommandError(str(e)) from None
    finally:
        bar.finish()
        store.close()
    if res.spectra == 0:
        print(f"humus recalibrate: no raw spectra match in {args.store}; nothing written", file=sys.stderr)
        return 0
    print(f"humus recalibrate: {res.written} values of {res.quantity} from {res.spectra} spectra of {res.series} "
          f"probe(s) written as {res.model_id} version {res.model_version} (series {res.variant}) in "
          f"{res.seconds:.1f} s; {res.missing} missing, {res.suspect} suspect. Queries now take the newest version "
          f"per time; older versions: humus query --quantity {res.quantity} --all-versions", file=sys.stderr)
    return 0
