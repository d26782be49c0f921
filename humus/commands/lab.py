"""`humus lab import|compare`: soil-core lab results beside the sensor series, and how the sensors agree.

    humus lab import --store URL --data cores.csv [--sites sites.toml]
    humus lab compare --store URL --sites sites.toml [--site S] [--window-days 1] [--format text|json]

The CSV layout and the comparison are described in observatory/lab.py and docs/researchers.md.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="import soil-core lab results; compare them with the sensor estimates",
                       description="Lab results of soil cores (SOC %, bulk density, optionally spectra), stored "
                                   "beside the sensor series and paired with them (docs/researchers.md).")
    cmds = p.add_subparsers(dest="lab_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])

    i = cmds.add_parser("import", help="store the cores of a lab CSV in the archive")
    i.add_argument("--store", required=True, metavar="URL", help="store URL (docs/stores.md)")
    i.add_argument("--data", required=True, metavar="CSV",
                   help="columns site, layer (TOP-BOTTOM cm), date, soc_percent [, bulk_density, soc_uncertainty, "
                        "bd_uncertainty, core, one column per wavelength]")
    i.add_argument("--sites", metavar="FILE", help="sites TOML: refuse cores of unknown sites or layers")
    i.add_argument("--spectra", choices=["reflectance", "absorbance"], default="reflectance",
                   help="what the CSV spectra are (default reflectance)")
    i.set_defaults(func=run_import)

    c = cmds.add_parser("compare", help="bias, RMSE and whether the calibration holds, against the lab cores")
    c.add_argument("--store", required=True, metavar="URL", help="store URL (docs/stores.md)")
    c.add_argument("--sites", required=True, metavar="FILE", help="sites TOML (which probes measure which layer)")
    c.add_argument("--site", action="append", help="only this site (repeatable; default all)")
    c.add_argument("--window-days", type=float, default=1.0,
                   help="sensor values within this many days of the core's date (default 1)")
    c.add_argument("--format", choices=["text", "json"], default="text")
    c.set_defaults(func=run_compare)


def _open(url: str, create: bool):
    from humus.commands.query import open_archive

    return open_archive(url, create=create)


def run_import(args: argparse.Namespace) -> int:
    from humus.cli import EXIT_USAGE, CommandError
    from observatory import lab
    from observatory.sites import load_sites
    from observatory.store import StoreError

    try:
        cores = lab.read_lab_csv(args.data)
    except lab.LabError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    if args.sites:
        sites = load_sites(args.sites)
        for c in cores:
            site = sites.get(c.site)
            if site is None:
                raise CommandError(f"{args.data}: site {c.site!r} is not in {args.sites} (it has "
                                   f"{', '.join(sites)})", EXIT_USAGE)
            if site.layer_of(c.top_cm, c.bottom_cm) is None:
                raise CommandError(f"{args.data}: layer {c.layer} of site {c.site} matches no layer of {args.sites} "
                                   f"({', '.join(l.label for l in site.ordered_layers)})", EXIT_USAGE)
    obs = lab.observations(cores, spectrum_unit="1" if args.spectra == "reflectance" else "absorbance")
    store = _open(args.store, create=True)
    try:
        for k in range(0, len(obs), 5000):
            store.write(obs[k:k + 5000])
    except StoreError as e:
        raise CommandError(f"{e}; nothing is lost: import the file again") from None
    finally:
        store.close()
    spectra = sum(c.spectrum is not None for c in cores)
    print(f"humus lab: {len(cores)} cores of {len({c.site for c in cores})} site(s) stored ({spectra} with a "
          f"spectrum) as gateway '{lab.LAB_GATEWAY}'", file=sys.stderr)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from humus.cli import CommandError
    from observatory import lab
    from observatory.query import format_time
    from observatory.sites import load_sites, pick
    from observatory.store import StoreError

    sites = pick(load_sites(args.sites), args.site, args.sites)
    store = _open(args.store, create=False)
    try:
        result = lab.compare(store, sites, window_days=args.window_days)
    except StoreError as e:
        raise CommandError(str(e)) from None
    finally:
        store.close()
    if args.format == "json":
        doc = {"n": result.n, "unmatched": result.unmatched, "bias": result.bias, "rmse": result.rmse,
               "chi2": result.chi2, "chi2_p": result.chi2_p, "holds": result.holds, "verdict": result.verdict,
               "by_model": result.by_model,
               "pairs": [{"site": p.site, "layer": p.layer, "date": format_time(p.time_ns)[:10], "core": p.core,
                          "lab": p.lab, "lab_uncertainty": p.lab_uncertainty, "sensor": p.sensor,
                          "sensor_uncertainty": p.sensor_uncertainty, "n_sensor": p.n_sensor, "model": p.model}
                         for p in result.pairs]}
        print(json.dumps(_no_nan(doc), indent=1, allow_nan=False))
        return 0
    print(f"{'site':<16} {'layer':<10} {'date':<10} {'core':<6} {'lab %':>7} {'sensor %':>9} {'diff':>7} "
          f"{'z':>6}  model")
    for p in result.pairs:
        print(f"{p.site:<16} {p.layer:<10} {format_time(p.time_ns)[:10]:<10} {p.core:<6} {p.lab:>7.3g} "
              f"{p.sensor:>9.3g} {p.difference:>+7.3f} {p.z:>+6.2f}  {p.model}")
    for m, s in result.by_model.items():
        print(f"model {m}: n={s['n']} bias={s['bias']:+.3g} % RMSE={s['rmse']:.3g} %")
    if result.unmatched:
        print(f"{result.unmatched} core(s) without sensor values within {args.window_days:g} day(s)")
    print(result.verdict)
    return 0


def _no_nan(v):
    """JSON has no NaN: null instead."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _no_nan(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_no_nan(x) for x in v]
    return v
