"""`humus report --store URL --sites FILE [--site S ...] --out DIR`: the soil carbon report (HTML + PNG).

One site: its soil carbon card, then the detail. Several sites (repeat
--site, or none for every site of the file): a comparison first. Progress
shows on a terminal. See observatory/report/ and docs/researchers.md.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="soil carbon report: stocks, 4 per 1000 trend, quality (HTML + PNG)",
                       description="Write DIR/index.html with a soil carbon card per site, stocks per layer and to "
                                   "the reference depth (fixed depth and equivalent soil mass), the trend with its "
                                   "confidence interval against 4 per 1000, detectability, moisture and "
                                   "temperature, data quality, models used and lab cores. Needs matplotlib "
                                   "(pip install 'humus[report]').",
                       epilog="Example: humus report --store sqlite:archive.sqlite --sites sites.toml "
                              "--site north-field --out report/")
    p.add_argument("--store", required=True, metavar="URL", help="store URL (docs/stores.md)")
    p.add_argument("--sites", required=True, metavar="FILE", help="sites TOML: layers, bulk density, probes")
    p.add_argument("--site", action="append", help="a site of the file (repeatable; default: all of them)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for index.html, figures/ and summary.json")
    p.add_argument("--every", default="7d", metavar="INTERVAL",
                   help="interval of the stock series and the trend fit: 1d, 7d, 30d... (default 7d)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from humus.cli import EXIT_USAGE, CommandError
    from humus.commands.query import open_archive
    from observatory.aggregate import parse_every
    from observatory.progress import Progress
    from observatory.report import ReportError, build_report
    from observatory.sites import load_sites, pick
    from observatory.store import StoreError, StoreUnavailable

    sites = pick(load_sites(args.sites), args.site, args.sites)
    try:
        parse_every(args.every)
    except ValueError as e:
        raise CommandError(f"--every: {e}", EXIT_USAGE) from None
    store = open_archive(args.store)
    bar = Progress("humus report")
    try:
        result = build_report(store, sites, args.out, every=args.every, progress=bar.update)
    except ReportError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    except StoreUnavailable as e:
        raise CommandError(str(e)) from None
    except StoreError as e:
        raise CommandError(str(e)) from None
    finally:
        bar.finish()
        store.close()
    for a in result.analyses:
        tr = a.trend
        trend = (f"{tr.per_mille:+.2f} per mille/yr (95 % CI {tr.per_mille_ci[0]:+.2f} to {tr.per_mille_ci[1]:+.2f}), "
                 f"{tr.rate:+.3f} Mg C/ha/yr" if tr else a.trend_note)
        print(f"humus report: {a.site.id}: {trend}", file=sys.stderr)
    print(f"humus report: wrote {result.index} and {len(result.figures)} figures", file=sys.stderr)
    return 0
