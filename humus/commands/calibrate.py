"""`humus calibrate fit|evaluate|predict|show`: fit spectral SOC models offline, evaluate, apply, describe them.

Data files use the layout of shared/data/nirsoil/ (property columns, then one
column per wavelength in nm). A bad CSV or model file gives one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import json
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit, evaluate and show spectral calibration models",
                       description="Fit a PLS model of a soil property on spectra (offline), evaluate a "
                                   "model on a data set, or show what a model file holds.")
    cmds = p.add_subparsers(dest="calibrate_command", metavar="ACTION")
    p.set_defaults(func=_usage(p))

    f = cmds.add_parser("fit", help="fit a model from a spectral library CSV",
                        description="Fit PLS on SG + SNV preprocessed absorbance. Every default choice is "
                                    "made by cross-validation on the data and recorded in the model file: "
                                    "components (van der Voet's parsimony rule), target scale, global or local "
                                    "PLS, EPO components; uncertainty calibrated on the CV errors.")
    f.add_argument("--data", required=True, help="CSV: property columns then one column per wavelength (nm)")
    f.add_argument("--target", required=True, help="column to predict (e.g. Ciso)")
    f.add_argument("--out", required=True, help="model file to write (.npz)")
    f.add_argument("--id", dest="model_id", help="model id (default: <target>-<data file stem>)")
    f.add_argument("--model-version", default="1", help="model version (default 1)")
    f.add_argument("--unit", default="%", help="unit of the target (default %%)")
    f.add_argument("--input", choices=["absorbance", "reflectance"], default="absorbance",
                   help="what the CSV spectra are (default absorbance)")
    f.add_argument("--sg", default="11,2,1", metavar="WINDOW,POLY,DERIV",
                   help="Savitzky-Golay window, polynomial order, derivative, or 'none' (default 11,2,1)")
    f.add_argument("--snv", action=argparse.BooleanOptionalAction, default=None,
                   help="standard normal variate after Savitzky-Golay (default: on, off with --epo)")
    f.add_argument("--grid", metavar="START:STOP:STEP",
                   help="resample spectra onto this grid (nm) first (default: none; with --epo, every 10 nm "
                        "from 50 nm inside each end of the data)")
    f.add_argument("--max-components", type=int, default=40,
                   help="ceiling of the components tried by CV (default 40; a CV minimum at the ceiling is "
                        "reported as a warning)")
    f.add_argument("--components", type=int, help="fixed number of PLS components (skips the CV choice)")
    f.add_argument("--folds", type=int, default=10, help="cross-validation folds (default 10)")
    f.add_argument("--method", choices=["auto", "global", "local", "blend"],
                   help="global PLS, memory-based local PLS, or their average (blend); auto (the default) "
                        "tries all three and keeps the simplest not significantly worse by CV")
    f.add_argument("--local", metavar="K[,MIN,MAX]",
                   help="local PLS with K neighbours, averaging MIN..MAX components (default 60,3,15; "
                        "alone it means --method local)")
    f.add_argument("--blend", action="store_true", help="same as --method blend")
    f.add_argument("--epo", metavar="CSV", help="paired wet/dry spectra (columns sample, state) for EPO")
    f.add_argument("--epo-components", type=int,
                   help="EPO components (default: chosen from 1-8 by cross-validation over the pairs, the "
                        "simplest not significantly worse on the held-out pairs' wet spectra)")
    f.add_argument("--transform", choices=["none", "sqrt", "auto"], default="auto",
                   help="scale the target is modelled on: sqrt suits right-skewed carbon; auto (default) "
                        "keeps sqrt only when it lowers the cross-validated RMSE")
    _selection_args(f)
    f.set_defaults(func=run_fit)

    e = cmds.add_parser("evaluate", help="evaluate a model on a CSV with reference values",
                        description="Prints n, RMSE, R², bias, RPD, RPIQ, the fraction out of the "
                                    "applicability domain (T² or Q above its limit) and the RMSE of the rest.")
    e.add_argument("--model", required=True, help="model file (.npz)")
    e.add_argument("--data", required=True, help="CSV with the model's target column and spectra")
    e.add_argument("--target", help="reference column (default: the model's target)")
    e.add_argument("--format", choices=["text", "json"], default="text")
    _selection_args(e)
    e.set_defaults(func=run_evaluate)

    pr = cmds.add_parser("predict", help="predict with a model from a CSV of spectra (e.g. lab cores)",
                         description="One prediction per row: the row's property columns, then value, "
                                     "uncertainty, flag, flag_test, Hotelling T2, Q residual, model id and version.")
    pr.add_argument("--model", required=True, help="model file (.npz)")
    pr.add_argument("--data", required=True, help="CSV: property columns then one column per wavelength (nm)")
    pr.add_argument("--kind", choices=["absorbance", "reflectance"],
                    help="what the CSV spectra are (default: what the model was fitted on)")
    pr.add_argument("--format", choices=["csv", "json"], default="csv")
    pr.set_defaults(func=run_predict)

    s = cmds.add_parser("show", help="describe a model file")
    s.add_argument("model", help="model file (.npz)")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.set_defaults(func=run_show)


def _selection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--select", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep only rows where COLUMN equals VALUE (repeatable), e.g. state=dry")
    p.add_argument("--holdout", type=float, metavar="FRACTION",
                   help="hold out this fraction of the file's rows (seeded): fit trains on the rest, "
                        "evaluate evaluates only them")
    p.add_argument("--holdout-by", metavar="COLUMN",
                   help="hold out whole groups (e.g. sample: every scan of a held-out soil) instead of rows; "
                        "with --epo, the held-out groups' pairs are left out of the EPO fit too")
    p.add_argument("--seed", type=int, default=0, help="seed of the --holdout split (default 0)")


def _usage(p: argparse.ArgumentParser):
    def run(args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    return run


def _fail(message: str) -> Exception:
    from humus.cli import CommandError

    return CommandError(message, EXIT_BAD_INPUT)


def _load_rows(args: argparse.Namespace, *, training: bool):
    """The data set after --select and the --holdout split."""
    import numpy as np

    from calibration.dataset import DatasetError, read_spectral_csv

    try:
        ds = read_spectral_csv(args.data)
    except DatasetError as e:
        raise _fail(str(e)) from None
    n = len(ds)
    keep = np.ones(n, dtype=bool)
    if args.holdout is not None:
        groups = _held_out_groups(args, ds)
        if groups is None:
            held = np.zeros(n, dtype=bool)
            held[np.random.default_rng(args.seed).permutation(n)[: int(round(args.holdout * n))]] = True
        else:
            held = np.array([g in groups for g in ds.columns[args.holdout_by]])
        keep &= ~held if training else held
    for sel in args.select:
        col, sep, value = sel.partition("=")
        if not sep:
            raise _fail(f"--select {sel!r}: expected COLUMN=VALUE")
        if col not in ds.columns:
            raise _fail(f"{ds.path}: --select column {col!r} not found; property columns are "
                        f"{', '.join(ds.columns)}")
        keep &= np.array([v == value for v in ds.columns[col]])
    return ds.subset(keep)


def _held_out_groups(args: argparse.Namespace, ds) -> set[str] | None:
    """The held-out values of --holdout-by (a seeded share of its distinct values), or None for rows."""
    import numpy as np

    if args.holdout is None:
        return None
    if not 0 < args.holdout < 1:
        raise _fail(f"--holdout {args.holdout}: expected a fraction between 0 and 1")
    if not getattr(args, "holdout_by", None):
        return None
    if args.holdout_by not in ds.columns:
        raise _fail(f"{ds.path}: --holdout-by column {args.holdout_by!r} not found; property columns are "
                    f"{', '.join(ds.columns)}")
    values = sorted(set(ds.columns[args.holdout_by]))
    order = np.random.default_rng(args.seed).permutation(len(values))
    return {values[i] for i in order[: int(round(args.holdout * len(values)))]}


def _target(ds, column: str):
    import numpy as np

    from calibration.dataset import DatasetError

    try:
        y = ds.numeric(column)
    except DatasetError as e:
        raise _fail(str(e)) from None
    ok = np.isfinite(y) & np.isfinite(ds.spectra).all(axis=1)
    return y, ok


def run_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from calibration.model import LocalSettings, fit_spectral_model
    from calibration.spectra import resample

    ds = _load_rows(args, training=True)
    y, ok = _target(ds, args.target)
    n = int(ok.sum())
    if n < 10:
        raise _fail(f"{ds.path}: {n} usable rows with {args.target!r} and a complete spectrum; expected at least 10")
    _check_counts(args, n, ds.spectra.shape[1])
    wl, x = ds.wavelengths_nm, ds.spectra[ok]
    # With EPO the moisture effect is removed by projection in absorbance, where
    # water adds linearly: SNV's per-spectrum scaling mixes it back in, and fine
    # 1-nm detail and noisy detector ends are where the residual moisture
    # effect lives. Measured on the paired soils (docs/calibration.md, EPO):
    # 0.73 %C with these defaults against 1.41 with SNV on the native grid.
    snv = args.snv if args.snv is not None else not args.epo
    grid_text = args.grid
    if args.epo and not grid_text:
        lo, hi = math.ceil((wl[0] + 50) / 10) * 10, math.floor((wl[-1] - 50) / 10) * 10
        if hi - lo >= 200:
            grid_text = f"{lo}:{hi}:10"
    if grid_text:
        grid = _grid(grid_text)
        x, wl = resample(wl, x, grid), grid
        if not np.isfinite(x).all():
            raise _fail(f"--grid {grid_text}: extends beyond the data's {ds.wavelengths_nm[0]:g}-"
                        f"{ds.wavelengths_nm[-1]:g} nm")
    steps: list[dict[str, Any]] = []
    if args.sg.lower() != "none":
        try:
            w, po, d = (int(v) for v in args.sg.split(","))
        except ValueError:
            raise _fail(f"--sg {args.sg!r}: expected WINDOW,POLY,DERIV (e.g. 11,2,1) or 'none'") from None
        steps.append({"op": "savgol", "window": w, "polyorder": po, "deriv": d})
    if snv:
        steps.append({"op": "snv"})
    local = None
    method = args.method or ("blend" if args.blend else "local" if args.local else "auto")
    if args.local:
        try:
            parts = [int(v) for v in args.local.split(",")]
        except ValueError:
            raise _fail(f"--local {args.local!r}: expected K or K,MIN,MAX (integers)") from None
        if len(parts) not in (1, 3):
            raise _fail(f"--local {args.local!r}: expected K or K,MIN,MAX (integers)")
        try:
            local = LocalSettings(*parts)
        except ValueError as e:
            raise _fail(f"--local {args.local!r}: {e}") from None
    if args.blend and args.method not in (None, "blend"):
        raise _fail(f"--blend contradicts --method {args.method} (--blend means --method blend)")
    pairs = _epo_pairs(args, wl) if args.epo else None
    # Cross-validation folds never split the scans of one soil (column 'sample', when the file has one).
    groups = [ds.columns["sample"][i] for i in np.flatnonzero(ok)] if "sample" in ds.columns else None
    model_id = args.model_id or f"{args.target}-{Path(args.data).stem}".lower().replace("_", "-")
    try:
        model = fit_spectral_model(wl, x, y[ok], model_id=model_id, version=args.model_version,
                                   target=args.target, unit=args.unit, input=args.input, preprocessing=steps,
                                   max_components=args.max_components, n_components=args.components,
                                   folds=args.folds, epo_pairs=pairs, epo_components=args.epo_components,
                                   local=local, method=method, seed=args.seed, transform=args.transform,
                                   groups=groups, extra={"data": Path(args.data).name, "select": args.select,
                                          "holdout": args.holdout, "holdout_by": args.holdout_by,
                                          "holdout_seed": args.seed})
    except ValueError as e:
        raise _fail(f"cannot fit: {e}") from None
    try:
        model.save(args.out)
    except OSError as e:
        raise _fail(f"{args.out}: cannot write the model ({e.strerror or e})") from None
    tr, sel = model.meta["training"], model.meta["selection"]
    print(f"{args.out}: {model.id} v{model.version}, {model.meta['pls']['n_components']} components, "
          f"n={tr['n']}, RMSECV={tr['rmsecv']:.4g}, R2cv={tr['r2cv']:.3f}, RPD={tr['rpd']:.2f}, "
          f"RPIQ={tr['rpiq']:.2f}, target scale {model.transform.name}")
    for line in _choices(model.meta):
        print(f"  {line}")
    for warning in sel.get("warnings", []):
        print(f"warning: {args.out}: {warning}", file=sys.stderr)
    return 0


def _choices(meta: dict[str, Any]) -> list[str]:
    """What cross-validation chose and why, one line each (fit and show print them)."""
    sel = meta.get("selection") or {}
    if not sel:
        return []
    comp, m = sel["components"], sel["method"]
    lines = [f"components {comp['chosen']} ({sel['rule']}; CV minimum at {comp['cv_minimum_at']}, "
             f"ceiling {sel['max_components']})",
             "scale      " + ", ".join(f"{k} RMSECV {v:.4g}" for k, v in sel["target_scale"].items())
             + f" -> {(meta.get('target_transform') or {}).get('name', 'none')}",
             f"method     {m['chosen']}: {m['reason']}" + ("; model-scale RMSECV " + ", ".join(
                 f"{k} {v:.4g}" for k, v in m["rmsecv_model_scale"].items()) if m.get("rmsecv_model_scale") else "")]
    if sel.get("epo_components"):
        e = sel["epo_components"]
        lines.append(f"epo        {e['chosen']} components; estimated wet RMSE (model scale) by components: "
                     + ", ".join(f"{g}: {v['wet_rmse_model_scale']:.3g}" for g, v in e["tried"].items()))
    cov = (meta.get("uncertainty") or {}).get("coverage_cv")
    if cov:
        lines.append("coverage   CV +-1u {:.0%}, +-2u {:.0%}; terciles ".format(cov["one_sigma"], cov["two_sigma"])
                     + ", ".join(f"{t['one_sigma']:.0%}/{t['two_sigma']:.0%}" for t in cov["terciles"]))
    return lines


def _check_counts(args: argparse.Namespace, n: int, bands: int) -> None:
    """Folds and component counts that can be fitted on `n` samples of `bands` bands, said in the user's terms."""
    if not 2 <= args.folds <= n:
        raise _fail(f"--folds {args.folds}: expected 2 to {n} folds for {n} samples")
    most = max(1, min(n - n // args.folds - 1, bands))     # components a CV training fold can hold
    if not 1 <= args.max_components <= 100:
        raise _fail(f"--max-components {args.max_components}: expected 1 to 100")
    if args.components is not None and not 1 <= args.components <= most:
        raise _fail(f"--components {args.components}: expected 1 to {most} for {n} samples in {args.folds} folds "
                    f"and {bands} bands")
    if args.epo_components is not None and not 1 <= args.epo_components <= 50:
        raise _fail(f"--epo-components {args.epo_components}: expected 1 to 50")


def _grid(text: str):
    import numpy as np

    try:
        start, stop, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise _fail(f"--grid {text!r}: expected START:STOP:STEP in nm (e.g. 400:2450:10)") from None
    if step <= 0 or stop <= start:
        raise _fail(f"--grid {text!r}: expected START < STOP and STEP > 0")
    return np.arange(start, stop + step / 2, step)


def _epo_pairs(args: argparse.Namespace, grid):
    import numpy as np

    from calibration.dataset import DatasetError, read_spectral_csv
    from calibration.spectra import resample

    try:
        ds = read_spectral_csv(args.epo)
    except DatasetError as e:
        raise _fail(str(e)) from None
    for col in ("sample", "state"):
        if col not in ds.columns:
            raise _fail(f"{ds.path}: EPO data needs a {col!r} column (and rows with state wet and dry)")
    excluded: set[str] = set()
    if args.holdout is not None and args.holdout_by == "sample" and Path(args.epo).resolve() == \
            Path(args.data).resolve():
        # The same soils are held out of the EPO fit: their pairs must not teach it their moisture effect.
        excluded = _held_out_groups(args, ds) or set()
    rows: dict[str, dict[str, int]] = {}
    for i, (sample, state) in enumerate(zip(ds.columns["sample"], ds.columns["state"])):
        if sample not in excluded:
            rows.setdefault(sample, {})[state] = i
    pairs = [(r["wet"], r["dry"]) for r in rows.values() if "wet" in r and "dry" in r]
    if len(pairs) < 2:
        raise _fail(f"{ds.path}: {len(pairs)} samples with both a wet and a dry spectrum; expected at least 2")
    wet = resample(ds.wavelengths_nm, ds.spectra[[p[0] for p in pairs]], grid)
    dry = resample(ds.wavelengths_nm, ds.spectra[[p[1] for p in pairs]], grid)
    if not (np.isfinite(wet).all() and np.isfinite(dry).all()):
        raise _fail(f"{ds.path}: EPO spectra do not cover the model's {grid[0]:g}-{grid[-1]:g} nm")
    return wet, dry


def _load_model(path: str):
    from calibration.model import ModelFileError, SpectralModel

    try:
        return SpectralModel.load(path)
    except ModelFileError as e:
        raise _fail(str(e)) from None


def run_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from calibration.metrics import figures_of_merit
    from calibration.uncertainty import coverage
    from humus.records import QualityFlag

    model = _load_model(args.model)
    ds = _load_rows(args, training=False)
    target = args.target or model.meta["target"]
    y, ok = _target(ds, target)
    if ok.sum() < 2:
        raise _fail(f"{ds.path}: {int(ok.sum())} usable rows with {target!r} and a complete spectrum; "
                    f"expected at least 2")
    wl = ds.wavelengths_nm
    preds = [model.predict(wl, row) for row in ds.spectra[ok]]
    missing = [p for p in preds if p.flag is QualityFlag.MISSING]
    if missing:
        raise _fail(f"{ds.path}: {len(missing)} spectra could not be predicted ({missing[0].flag_test}); "
                    f"the data must cover the model's {model.grid[0]:g}-{model.grid[-1]:g} nm")
    obs = y[ok]
    values = np.array([p.value for p in preds])
    unc = np.array([p.uncertainty for p in preds])
    fm = figures_of_merit(obs, values)
    lo, hi = model.meta["training"]["y_min"], model.meta["training"]["y_max"]
    checks = {
        "applicability_domain": np.array([p.t2 > model.t2_limit or p.q > model.q_limit for p in preds]),
        "moisture": np.array([p.moisture is not None and model.moisture is not None
                              and p.moisture > model.moisture.limit for p in preds]),
        "prediction_negative": (values < 0) & (lo >= 0),
        "calibration_range": (values < lo - 0.1 * (hi - lo)) | (values > hi + 0.1 * (hi - lo)),
    }
    flagged = np.array([p.flag is not QualityFlag.PASS for p in preds])

    def rmse(mask):
        return float(np.sqrt(np.mean((values[mask] - obs[mask]) ** 2))) if mask.any() else None

    result = {"model": model.id, "version": model.version, "target": target, **fm,
              "coverage": coverage(obs, values, unc),
              "coverage_cv": (model.meta.get("uncertainty") or {}).get("coverage_cv"),
              "flagged": {name: int(mask.sum()) for name, mask in checks.items()},
              "n_flagged": int(flagged.sum()), "n_in_domain": int((~flagged).sum()),
              "out_of_domain_fraction": float(flagged.mean()),
              "rmse_in_domain": rmse(~flagged), "rmse_out_of_domain": rmse(flagged),
              "mean_uncertainty": float(np.mean(unc))}
    if args.format == "json":
        print(json.dumps(result, indent=1))
        return 0
    cov = result["coverage"]

    def fmt(v):
        return "-" if v is None else format(v, ".4g")

    print(f"{model.id} v{model.version} on {ds.path.name} ({target}): n={fm['n']} RMSE={fm['rmse']:.4g} "
          f"R2={fm['r2']:.3f} bias={fm['bias']:+.3g} RPD={fm['rpd']:.2f} RPIQ={fm['rpiq']:.2f}")
    print(f"  coverage   +-1u {cov['one_sigma']:.0%}, +-2u {cov['two_sigma']:.0%} (nominal 68%, 95%); by tercile "
          + ", ".join(f"{t['range'][0]:g}-{t['range'][1]:g}: {t['one_sigma']:.0%}/{t['two_sigma']:.0%}"
                      for t in cov["terciles"]) + f"; mean u {result['mean_uncertainty']:.3g}")
    print(f"  flagged    {result['n_flagged']} of {fm['n']} ({result['out_of_domain_fraction']:.1%}): "
          + ", ".join(f"{k} {v}" for k, v in result["flagged"].items())
          + f"; RMSE in domain {fmt(result['rmse_in_domain'])} (n={result['n_in_domain']}), "
            f"outside {fmt(result['rmse_out_of_domain'])}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import csv

    from calibration.dataset import DatasetError, read_spectral_csv

    model = _load_model(args.model)
    try:
        ds = read_spectral_csv(args.data)
    except DatasetError as e:
        raise _fail(str(e)) from None
    props = list(ds.columns)
    out = []
    for i in range(len(ds)):
        p = model.predict(ds.wavelengths_nm, ds.spectra[i], kind=args.kind)
        row = {k: ds.columns[k][i] for k in props}
        row.update(value=None if math.isnan(p.value) else p.value,
                   uncertainty=None if math.isnan(p.uncertainty) else p.uncertainty, flag=int(p.flag),
                   flag_test=p.flag_test or "", t2=None if math.isnan(p.t2) else p.t2,
                   q=None if math.isnan(p.q) else p.q, model_id=p.model_id, model_version=p.model_version)
        out.append(row)
    if args.format == "json":
        print(json.dumps(out, indent=1))
        return 0
    w = csv.writer(sys.stdout, lineterminator="\n")
    cols = props + ["value", "uncertainty", "flag", "flag_test", "t2", "q", "model_id", "model_version"]
    w.writerow(cols)
    for row in out:
        w.writerow(["" if row[c] is None else repr(row[c]) if isinstance(row[c], float) else row[c] for c in cols])
    missing = sum(r["value"] is None for r in out)
    if missing:
        print(f"humus calibrate: {missing} of {len(out)} spectra could not be predicted (see flag_test); the data "
              f"must cover the model's {model.grid[0]:g}-{model.grid[-1]:g} nm", file=sys.stderr)
    return 0


def run_show(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    meta = model.describe()
    if args.format == "json":
        print(json.dumps(meta, indent=1))
        return 0
    tr, pls = meta["training"], meta["pls"]
    chain = " -> ".join(_step(s) for s in meta["preprocessing"]) or "none"
    lines = [
        f"model      {meta['id']} version {meta['version']} ({meta['format']} v{meta['format_version']})",
        f"hash       {meta['content_hash']}",
        f"created    {meta['created']}",
        f"target     {meta['target']} ({meta['unit']}), input {meta['input']}",
        f"grid       {meta['wavelength_range_nm'][0]:g}-{meta['wavelength_range_nm'][1]:g} nm, {meta['bands']} bands",
        f"chain      {chain}" + (f" -> EPO ({meta['epo']['n_components']} components, "
                                 f"{meta['epo']['pairs']} pairs)" if meta.get("epo") else ""),
        f"pls        {pls['n_components']} components, global ({pls['cv_folds']}-fold CV)"
        + (f", local: {meta['local']['neighbours']} neighbours, {meta['local']['min_components']}-"
           f"{meta['local']['max_components']} components"
           + (", blended with the global model" if meta["local"].get("blend") else "") if meta.get("local") else ""),
        f"training   n={tr['n']} RMSEC={tr['rmsec']:.4g} RMSECV={tr['rmsecv']:.4g} R2cv={tr['r2cv']:.3f} "
        f"RPD={tr['rpd']:.2f} RPIQ={tr['rpiq']:.2f} range {tr['y_min']:g}-{tr['y_max']:g}",
        f"scale      target modelled as {_scale(meta)}",
        f"domain     T2 limit {meta['domain']['t2_limit']:.4g}, Q limit {meta['domain']['q_limit']:.4g} "
        f"(level {meta['domain']['level']})",
    ]
    moist = meta.get("moisture")
    if moist:
        lines.append("moisture   " + (f"{moist['check']}, limit {moist['limit']:.4g} ({moist['basis']})"
                                      if moist.get("check") else f"no check: {moist.get('reason')}"))
    lines += _choices(meta)
    print("\n".join(lines))
    return 0


def _scale(meta: dict[str, Any]) -> str:
    tt = meta.get("target_transform") or {"name": "none"}
    if tt["name"] == "sqrt":
        return f"sqrt (back-transformed v^2 + {tt['residual_var']:.3g})"
    return "is (no transform)"


def _step(s: dict[str, Any]) -> str:
    if s["op"] == "savgol":
        return f"savgol(window={s['window']}, poly={s['polyorder']}, deriv={s['deriv']})"
    return str(s["op"])
