"""Held-out RMSE and uncertainty coverage of `humus calibrate fit` defaults, as docs/calibration.md reports them.

For each split seed S the commands of docs/calibration.md are run as
subprocesses (fit on the rest, `evaluate --format json` on the held-out
part), and the tables are printed: RMSE per split, then coverage at ±1u
and ±2u overall and per tercile of the reference values, as the mean of
the per-split figures (what the docs quote), and the coverage the model
files record from cross-validation. Per split a tercile holds about 45
NIRsoil soils (±5 points is two soils) or 3-4 EPO soils: the mean over
ten splits still moves by a point or two (NIRsoil) from one set of seeds
to the next.

NIRsoil: a seeded quarter of train.csv's rows held out (one scan per soil).
EPO: a seeded fifth of the soils held out (their pairs too), evaluated on
their wet spectra (and dry, for comparison).

Usage: .venv/bin/python bench/calibration_holdout.py [--splits 10] [--first-seed 0]
       [--data-dir /path/to/shared/data] [--only nirsoil|epo] [OPTIONS passed to fit after --]

The docs quote seeds 0..9 (the default); `--first-seed 10` runs seeds 10..19, to check that a change
judged on the first ten holds on other splits.
Takes a few minutes (about 10 s per NIRsoil split, 5 s per EPO split, on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TARGET = ((0.6827, 0.05), (0.9545, 0.03))


def humus(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "humus", "calibrate", *args], cwd=REPO, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"humus calibrate {' '.join(args[:1])} failed: {out.stderr.strip()[:300]}")
    return out.stdout


def run_split(data: Path, fit_args: list[str], eval_args: list[str], model: Path) -> list[dict]:
    humus("fit", "--data", str(data), "--out", str(model), *fit_args)
    return [json.loads(humus("evaluate", "--model", str(model), "--data", str(data), "--format", "json", *a))
            for a in eval_args]


def report(name: str, results: list[dict]) -> None:
    cov = [r["coverage"] for r in results]
    one = np.mean([c["one_sigma"] for c in cov])
    two = np.mean([c["two_sigma"] for c in cov])
    terc = [(np.mean([c["terciles"][j]["one_sigma"] for c in cov]), np.mean([c["terciles"][j]["two_sigma"] for c in cov]))
            for j in range(3)]
    inside = all(abs(a - TARGET[0][0]) <= TARGET[0][1] and abs(b - TARGET[1][0]) <= TARGET[1][1]
                 for a, b in [(one, two), *terc])
    rmse = [r["rmse"] for r in results]
    print(f"{name}: RMSE per split " + " ".join(f"{v:.3f}" for v in rmse)
          + f"; mean {np.mean(rmse):.3f} ± {np.std(rmse, ddof=1) if len(rmse) > 1 else 0:.3f}")
    print(f"  coverage, mean of splits: ±1u/±2u {100 * one:.1f}/{100 * two:.1f} %; by tercile (low, mid, high) "
          + ", ".join(f"{100 * a:.1f}/{100 * b:.1f}" for a, b in terc)
          + f" -> {'inside' if inside else 'OUTSIDE'} 68±5 / 95±3 everywhere")
    cv = [r.get("coverage_cv") or {} for r in results]
    if all(cv):
        print(f"  coverage recorded in the model files (CV): ±1u/±2u "
              f"{100 * np.mean([c['one_sigma'] for c in cv]):.1f}/{100 * np.mean([c['two_sigma'] for c in cv]):.1f} %;"
              " by tercile " + ", ".join(
                  f"{100 * np.mean([c['terciles'][j]['one_sigma'] for c in cv]):.1f}/"
                  f"{100 * np.mean([c['terciles'][j]['two_sigma'] for c in cv]):.1f}" for j in range(3)))
    print(f"  flagged {100 * np.mean([r['out_of_domain_fraction'] for r in results]):.1f} %, RMSE unflagged "
          f"{np.mean([r['rmse_in_domain'] for r in results if r['rmse_in_domain'] is not None]):.3f}, mean u "
          f"{np.mean([r['mean_uncertainty'] for r in results]):.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0, help="split seeds FIRST..FIRST+SPLITS-1 (default 0)")
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--only", choices=["nirsoil", "epo"])
    ap.add_argument("fit_options", nargs="*", help="extra options for fit (after --)")
    args = ap.parse_args()
    nir, epo = args.data_dir / "nirsoil" / "train.csv", args.data_dir / "soilspec-epo" / "spectra.csv"
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "m.npz"
        if args.only in (None, "nirsoil"):
            if not nir.exists():
                raise SystemExit(f"{nir}: not found (--data-dir)")
            res = []
            for s in range(args.first_seed, args.first_seed + args.splits):
                split = ["--holdout", "0.25", "--seed", str(s)]
                res += run_split(nir, ["--target", "Ciso", *split, *args.fit_options], [split], model)
                print(f"  NIRsoil S={s}: RMSE {res[-1]['rmse']:.3f}", file=sys.stderr, flush=True)
            report(f"NIRsoil Ciso, {args.splits} held-out quarters (seeds {args.first_seed}-"
                   f"{args.first_seed + args.splits - 1})", res)
        if args.only in (None, "epo"):
            if not epo.exists():
                raise SystemExit(f"{epo}: not found (--data-dir)")
            wet, dry = [], []
            for s in range(args.first_seed, args.first_seed + args.splits):
                split = ["--holdout", "0.2", "--holdout-by", "sample", "--seed", str(s)]
                w, d = run_split(epo, ["--target", "soilC", "--select", "state=dry", *split, "--epo", str(epo),
                                       *args.fit_options],
                                 [["--select", "state=wet", *split], ["--select", "state=dry", *split]], model)
                wet.append(w)
                dry.append(d)
                print(f"  EPO S={s}: wet RMSE {w['rmse']:.3f}", file=sys.stderr, flush=True)
            report(f"EPO soilC on wet spectra, {args.splits} splits of 10 held-out soils (seeds {args.first_seed}-"
                   f"{args.first_seed + args.splits - 1})", wet)
            report("  same models on the held-out soils' dry spectra", dry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
