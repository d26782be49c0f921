"""`humus query`: print stored observations as an aligned table, CSV or JSON.

Read-only: it never creates an archive. Exit status 2 with one line for a
bad store URL, a missing archive file or a bad time; 1 when the store is
unreachable; 0 with "no observations match" on stderr when nothing matches.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import re
import sqlite3
import sys
from typing import Iterable, Iterator, TextIO

DEFAULT_TABLE_LIMIT = 1000
MAX_LIMIT = 10**9


def _limit(text: str) -> int:
    """--limit: a whole number 1 to MAX_LIMIT (argparse shows the message as 'argument --limit: ...')."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of at most {MAX_LIMIT}, "
                                         f"got {text[:40]!r}") from None
    if not 1 <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a positive number of at most {MAX_LIMIT}, got {text[:40]!r}")
    return n


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query", help="print stored observations (table, CSV or JSON)",
        description="Print observations from an archive. Times are ISO 8601 (UTC unless a zone is given) "
                    "or relative to now: -15m, -1h, -7d, -2w. --since is inclusive, --until exclusive.",
        epilog="Example: humus query --store sqlite:humus-demo/archive.sqlite --quantity vwc --since -1h")
    p.add_argument("--store", required=True, metavar="URL",
                   help="store URL: sqlite:PATH, influxdb://HOST:PORT/DB, influxdb2://HOST:PORT/BUCKET?org=ORG "
                        "(credentials from HUMUS_INFLUX_* variables; see docs/stores.md)")
    p.add_argument("--site")
    p.add_argument("--gateway")
    p.add_argument("--probe")
    p.add_argument("--quantity", help="e.g. vwc, soil_temp, ec, soc, reflectance")
    p.add_argument("--source", choices=["raw", "calibrated"])
    p.add_argument("--since", metavar="T", help="from this time on (inclusive)")
    p.add_argument("--until", metavar="T", help="before this time (exclusive)")
    p.add_argument("--depth", metavar="CM", help="one depth (10) or a layer TOP:BOTTOM (0:30, bottom excluded)")
    p.add_argument("--model-id", metavar="ID", help="only values of this calibration model")
    p.add_argument("--model-version", metavar="V", help="only values of this model version (default: per time "
                   "the newest version, recalibrations included)")
    p.add_argument("--all-versions", action="store_true",
                   help="every model version side by side instead of the newest per time")
    p.add_argument("--min-flag", metavar="FLAG",
                   help="the worst QARTOD flag kept: pass, not_evaluated, suspect, fail (default: all rows; "
                        "with --every: not_evaluated)")
    p.add_argument("--every", metavar="INTERVAL", help="aggregate to regular intervals: 15m, 1h, 1d, 1w (UTC-aligned)")
    p.add_argument("--agg", choices=["mean", "min", "max", "count"], default="mean",
                   help="aggregate of each interval (default mean)")
    p.add_argument("--format", choices=["table", "csv", "json", "parquet", "netcdf"], default="table",
                   help="table (spectra summarised), csv or json (spectra in full) on stdout; parquet or netcdf "
                        "(CF-1.8 timeSeries) into --out; default table")
    p.add_argument("--out", metavar="FILE", help="file to write (parquet and netcdf; csv and json too)")
    p.add_argument("--sites", metavar="FILE", help="sites TOML: latitude and longitude of each site for netcdf")
    p.add_argument("--signatures", action="store_true",
                   help="add a column 'signed': yes where ingest verified the gateway's Ed25519 signature of the "
                        "batch, no where not, empty where the archive cannot say (docs/wire.md)")
    p.add_argument("--limit", type=_limit, metavar="N",
                   help=f"at most N observations (table default {DEFAULT_TABLE_LIMIT}; other formats: all)")
    # Let "--since -1h" through: argparse takes any argument starting with "-"
    # for an option unless it looks like a negative number to this matcher.
    p._negative_number_matcher = re.compile(r"^-\d+(\.\d+)?(s|m|min|h|d|w)?$")
    p.set_defaults(func=run)


def open_archive(url: str, create: bool = False):
    """The store at `url` (created only with `create`); CommandError: exit 1 if unreachable, 2 for a bad URL or file.

    Shared by the commands that use an archive, so each says the same about the same store.
    """
    from humus.cli import EXIT_USAGE, CommandError
    from observatory.store import StoreError, StoreUnavailable
    from observatory.stores import open_store

    try:
        return open_store(url, create=create)
    except StoreUnavailable as e:
        raise CommandError(str(e)) from None
    except StoreError as e:
        raise CommandError(str(e), EXIT_USAGE) from None


EXPORT_WINDOW = "30d"
"""Binary exports read the archive a month at a time (observatory.query.iter_series `window`)."""


def run(args: argparse.Namespace) -> int:
    from humus.cli import EXIT_FAILURE, EXIT_USAGE, CommandError
    from observatory import query
    from observatory.export import ExportError
    from observatory.store import StoreError, StoreUnavailable

    binary = args.format in ("parquet", "netcdf")
    if binary and not args.out:
        raise CommandError(f"--format {args.format} writes a file: add --out FILE", EXIT_USAGE)
    signatures = getattr(args, "signatures", False)
    if binary and signatures:
        raise CommandError("--signatures adds a column to table, csv or json output; not to "
                           f"--format {args.format}", EXIT_USAGE)
    limit = args.limit
    if limit is None and args.format == "table":
        limit = DEFAULT_TABLE_LIMIT
    sites = None
    if args.sites:
        from observatory.sites import load_sites
        sites = load_sites(args.sites)          # ConfigError: one line, exit 2
    filters = dict(site=args.site, gateway=args.gateway, probe=args.probe, quantity=args.quantity,
                   source=args.source, since=args.since, until=args.until,
                   limit=None if limit is None else limit + 1, depth=args.depth, model_id=args.model_id,
                   model_version=args.model_version, min_flag=args.min_flag,
                   versions="all" if args.all_versions else "newest", every=args.every, agg=args.agg,
                   window=EXPORT_WINDOW if binary else None)
    try:
        query.selection(**{k: filters[k] for k in ("site", "gateway", "probe", "quantity", "source", "since",
                                                   "until", "limit")})
    except query.TimeError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    store = open_archive(args.store)
    local = args.store.split(":", 1)[0].lower() == "sqlite"
    counted = [0]

    def stream():
        for s in query.iter_series(store, **filters):
            counted[0] += len(s)
            yield s
    try:
        data = _peeked(stream())
        if binary:
            _export(args, data, sites)
            more = False
        else:
            rows = _rows(data, signatures)
            if limit is not None:
                rows = list(itertools.islice(rows, limit + 1))
                more = len(rows) > limit
                rows = rows[:limit]
            else:
                more = False
            if rows or limit is None:
                out = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout
                try:
                    {"table": write_table, "csv": write_csv, "json": write_json}[args.format](rows, out, signatures)
                finally:
                    if args.out:
                        out.close()
    except StoreUnavailable as e:
        raise CommandError(str(e)) from None
    except (StoreError, ExportError) as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    except OSError as e:
        raise CommandError(f"{args.out or 'stdout'}: cannot write ({e.strerror or e}); check the path and free space",
                           EXIT_FAILURE) from None
    except (sqlite3.DatabaseError, ValueError, TypeError, KeyError, IndexError) as e:
        # An archive file a user names is input: a dropped table or text in a value column is its fault.
        raise CommandError(f"{args.store}: {'archive' if local else 'store'} contents this humus cannot read "
                           f"({type(e).__name__}: {str(e)[:120]}); is it a Humus archive, intact?",
                           EXIT_USAGE if local else EXIT_FAILURE) from None
    finally:
        store.close()
    if counted[0] == 0:
        print(f"humus query: no observations match {_describe(args)} in {args.store}", file=sys.stderr)
        return 0
    if more:
        hint = (f"raise --limit (now {limit}) for more" if args.limit is not None else
                f"a table shows {limit} by default: add --limit N, or --format csv or json for all of them")
        print(f"humus query: showing the first {limit} observations; {hint}", file=sys.stderr)
    return 0


def _peeked(it):
    """The same iterator with its first item read now (so a bad filter fails before any output is written)."""
    first = next(it, None)
    return itertools.chain([] if first is None else [first], it)


def _export(args: argparse.Namespace, data, sites) -> None:
    from observatory import export
    from observatory.progress import Progress

    bar = Progress(f"humus query: {args.format} {args.out}")
    try:
        if args.format == "parquet":
            n = export.write_parquet(data, args.out, progress=bar.update)
            skipped = 0
        else:
            n, skipped = export.write_netcdf(data, args.out, sites=sites, history="humus query --format netcdf",
                                             progress=bar.update)
    finally:
        bar.finish()
    note = f"; {skipped} spectra left out (NetCDF holds scalar series: export spectra as parquet)" if skipped else ""
    if n:
        print(f"humus query: wrote {n} rows to {args.out}{note}", file=sys.stderr)


def _describe(args: argparse.Namespace) -> str:
    parts = [f"{k}={getattr(args, k)}" for k in ("site", "gateway", "probe", "quantity", "source", "since", "until",
                                                 "depth", "model_id", "model_version", "min_flag")
             if getattr(args, k, None) is not None]
    return " ".join(parts) if parts else "(no filter)"


def _rows(data, signatures: bool = False) -> Iterator[dict]:
    """One dict per observation, in the store's order (series, then time); with `signatures`, also
    "signed": True, False, or None where the archive cannot say (SeriesData.signed)."""
    for s in data:
        signed = s.signed if signatures else None
        for i in range(len(s)):
            spectrum = s.spectra[i] if s.spectra is not None else None
            unc = float(s.uncertainty[i])
            yield {
                "time_ns": int(s.time_ns[i]), "site": s.site, "gateway": s.gateway, "probe": s.probe,
                "depth_cm": s.depth_cm, "quantity": s.quantity, "source": s.source.value,
                "value": float(s.value[i]) if spectrum is None else spectrum,
                "wavelengths_nm": None if spectrum is None else s.wavelengths[i],
                "unit": s.unit[i] or "", "uncertainty": None if math.isnan(unc) else unc, "flag": int(s.flag[i]),
                "flag_test": s.flag_test[i], "model_id": s.model_id[i], "model_version": s.model_version[i],
                **({"signed": None if signed is None else bool(signed[i])} if signatures else {}),
            }


def _flag_name(code: int) -> str:
    from humus.records import QualityFlag
    try:
        return QualityFlag(code).name.lower()
    except ValueError:
        return str(code)


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return "NaN" if math.isnan(x) else f"{x:.6g}"


def _depth(d: float | None) -> str:
    return "" if d is None else (f"{d:g}")


def _yes_no(signed: bool | None) -> str:
    return "" if signed is None else "yes" if signed else "no"


def write_table(rows: Iterable[dict], out: TextIO, signatures: bool = False) -> None:
    from observatory.query import format_time

    header = ("time (UTC)", "site", "probe", "depth_cm", "quantity", "value", "unit", "uncertainty", "flag", "source/model")
    if signatures:
        header += ("signed",)
    lines = [header]
    for r in rows:
        if r["wavelengths_nm"] is not None:
            wl = r["wavelengths_nm"]
            value = f"spectrum {len(r['value'])} bands {wl.min():g}-{wl.max():g} nm"
        else:
            value = _num(r["value"])
        flag = _flag_name(r["flag"]) + (f" ({r['flag_test']})" if r["flag_test"] else "")
        origin = r["source"]
        if r["model_id"]:
            origin += f" {r['model_id']}" + (f"@{r['model_version']}" if r["model_version"] else "")
        line = (format_time(r["time_ns"]), r["site"], r["probe"], _depth(r["depth_cm"]), r["quantity"], value,
                r["unit"], "" if r["uncertainty"] is None else "±" + _num(r["uncertainty"]), flag, origin)
        lines.append(line + (_yes_no(r["signed"]),) if signatures else line)
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    numeric = {3, 5, 7}
    for line in lines:
        cells = [cell.rjust(w) if c in numeric and line is not header else cell.ljust(w)
                 for c, (cell, w) in enumerate(zip(line, widths))]
        out.write("  ".join(cells).rstrip() + "\n")


CSV_COLUMNS = ("time", "time_ns", "site", "gateway", "probe", "depth_cm", "quantity", "source", "value", "unit",
               "uncertainty", "flag", "flag_name", "flag_test", "model_id", "model_version", "wavelengths_nm")


def write_csv(rows: Iterable[dict], out: TextIO, signatures: bool = False) -> None:
    """Spectra in full: values and wavelengths as space-separated numbers (repr, so lossless);
    with `signatures`, a last column `signed`: yes, no, or empty where the archive cannot say."""
    from observatory.query import format_time

    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS + ("signed",) if signatures else CSV_COLUMNS)
    for r in rows:
        if r["wavelengths_nm"] is not None:
            value = " ".join(repr(float(x)) for x in r["value"])
            wl = " ".join(repr(float(x)) for x in r["wavelengths_nm"])
        else:
            value, wl = ("" if math.isnan(r["value"]) else repr(r["value"])), ""
        row = (format_time(r["time_ns"]), r["time_ns"], r["site"], r["gateway"], r["probe"],
               "" if r["depth_cm"] is None else repr(r["depth_cm"]), r["quantity"], r["source"], value, r["unit"],
               "" if r["uncertainty"] is None else repr(r["uncertainty"]), r["flag"], _flag_name(r["flag"]),
               r["flag_test"] or "", r["model_id"] or "", r["model_version"] or "", wl)
        w.writerow(row + (_yes_no(r["signed"]),) if signatures else row)


def write_json(rows: Iterable[dict], out: TextIO, signatures: bool = False) -> None:
    """A JSON array of objects; missing values are null (JSON has no NaN), spectra as number arrays;
    with `signatures` (the rows then carry it), "signed": true, false or null where the archive cannot say."""
    from observatory.query import format_time

    out.write("[\n")
    for n, r in enumerate(rows):
        doc = {"time": format_time(r["time_ns"]), **r, "flag_name": _flag_name(r["flag"])}
        if r["wavelengths_nm"] is not None:
            doc["value"] = r["value"].tolist()
            doc["wavelengths_nm"] = r["wavelengths_nm"].tolist()
        elif math.isnan(r["value"]):
            doc["value"] = None
        out.write(("  " if n == 0 else ",\n  ") + json.dumps(doc, allow_nan=False))
    out.write("\n]\n")
