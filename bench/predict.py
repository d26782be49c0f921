"""Spectra predicted per second on the gateway path, one spectrum per call.

Ours: `SpectralModel.predict` (Savitzky-Golay 1st derivative, SNV, EPO,
PLS on the √y scale, Hotelling T² and Q residual, the moisture index on
the absorbance, the calibrated sample-specific uncertainty, flags) on
absorbance spectra already on the model grid: everything that does not
depend on the spectrum is folded into a few arrays when the model loads.
Baseline: scipy.signal.savgol_filter + numpy SNV +
numpy EPO projection + scikit-learn PLSRegression.predict and .transform
(for T²) + numpy Q residual; it does less than ours (no moisture index, no
uncertainty model), so the ratio is conservative. Also printed: the minimal baseline
(savgol_filter + PLSRegression.predict only) and the memory-based local PLS
path. Data: shared/data/nirsoil (EPO from shared/data/soilspec-epo), or the
test subset in tests/calibration/data when shared/ is absent.

Usage: .venv/bin/python bench/predict.py [--seconds S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from calibration.dataset import read_spectral_csv  # noqa: E402
from calibration.model import LocalSettings, fit_spectral_model  # noqa: E402
from calibration.spectra import resample  # noqa: E402


def load():
    shared = REPO.parent / "shared" / "data"
    lib = shared / "nirsoil" / "train.csv"
    if not lib.exists():
        lib = REPO / "tests" / "calibration" / "data" / "nirsoil_subset.csv"
    ds = read_spectral_csv(lib)
    y = ds.numeric("Ciso")
    ok = np.isfinite(y)
    wl, x = ds.wavelengths_nm, ds.spectra[ok]
    pairs = None
    epo_csv = shared / "soilspec-epo" / "spectra.csv"
    if epo_csv.exists():
        e = read_spectral_csv(epo_csv)
        state, sample = np.array(e.columns["state"]), np.array(e.columns["sample"])
        common = sorted(set(sample[state == "wet"]) & set(sample[state == "dry"]))
        idx = {(s, st): i for i, (s, st) in enumerate(zip(sample, state))}
        wet = resample(e.wavelengths_nm, e.spectra[[idx[(s, "wet")] for s in common]], wl)
        dry = resample(e.wavelengths_nm, e.spectra[[idx[(s, "dry")] for s in common]], wl)
        pairs = (wet, dry)
    else:   # synthetic moisture effect: a water band at 1940 nm
        m = np.linspace(0.05, 0.3, 30)[:, None] * np.exp(-0.5 * ((wl - 1940) / 50.0) ** 2)
        pairs = (x[:30] + m, x[:30])
    return lib, wl, x, y[ok], pairs


def rate(fn, spectra, seconds: float) -> float:
    """Spectra per second calling fn(spectrum) once per spectrum, best of 3 rounds."""
    best = 0.0
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        deadline = t0 + seconds / 3
        while time.perf_counter() < deadline:
            for row in spectra:
                fn(row)
            n += len(spectra)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="time per measurement (default 6)")
    args = ap.parse_args()
    from scipy.signal import savgol_filter
    from sklearn.cross_decomposition import PLSRegression

    lib, wl, x, y, pairs = load()
    print(f"data: {lib} ({x.shape[0]} spectra x {x.shape[1]} bands); EPO pairs: {pairs[0].shape[0]}")
    t0 = time.perf_counter()
    # The target on the square-root scale, as `humus calibrate fit` chooses on this library (its default).
    model = fit_spectral_model(wl, x, y, model_id="bench-ciso", max_components=20, epo_pairs=pairs,
                               epo_components=2, transform="sqrt")
    k = model.pls.n_components
    s2 = model.transform.residual_var
    print(f"fit: {time.perf_counter() - t0:.2f} s, {k} components, EPO 2 components, sqrt target scale")

    # Baseline: the same chain through scipy + scikit-learn.
    v = model.epo.directions

    def prep(a):
        s = savgol_filter(a, 11, 2, deriv=1, axis=-1)
        s = (s - s.mean(axis=-1, keepdims=True)) / s.std(axis=-1, ddof=1, keepdims=True)
        return s - (s @ v) @ v.T

    z_train = prep(x)
    sk = PLSRegression(n_components=k, scale=False).fit(z_train, np.sqrt(y))
    var = sk.transform(z_train).var(axis=0, ddof=1)
    xmean, loadings = z_train.mean(axis=0), sk.x_loadings_

    def baseline(a):
        z = prep(a)[None, :]
        value = np.maximum(sk.predict(z), 0.0) ** 2 + s2
        t = sk.transform(z)
        t2 = float(((t**2) / var).sum())
        r = (z - xmean) - t @ loadings.T
        return value, t2, float((r * r).sum())

    def minimal(a):
        return np.maximum(sk.predict(savgol_filter(a, 11, 2, deriv=1)[None, :]), 0.0) ** 2 + s2

    sample = x[:: max(1, x.shape[0] // 50)][:50]
    ours = [model.predict(wl, a) for a in sample]
    ref = [baseline(a) for a in sample]
    dv = max(abs(o.value - float(np.ravel(r[0])[0])) for o, r in zip(ours, ref))
    dt = max(abs(o.t2 - r[1]) / max(1.0, r[1]) for o, r in zip(ours, ref))
    dq = max(abs(o.q - r[2]) / max(1e-9, r[2]) for o, r in zip(ours, ref))
    print(f"agreement with the baseline: |value| {dv:.2e}, T2 rel {dt:.2e}, Q rel {dq:.2e}")

    ours_rate = rate(lambda a: model.predict(wl, a), sample, args.seconds)
    print(f"humus full chain:            {ours_rate:10.0f} spectra/s ({1e6 / ours_rate:.1f} us/spectrum)")
    base_rate = rate(baseline, sample, args.seconds)
    print(f"scipy+sklearn same chain:    {base_rate:10.0f} spectra/s ({1e6 / base_rate:.1f} us/spectrum)")
    min_rate = rate(minimal, sample, args.seconds)
    print(f"scipy savgol + sklearn only: {min_rate:10.0f} spectra/s ({1e6 / min_rate:.1f} us/spectrum)")
    local = fit_spectral_model(wl, x, y, model_id="bench-local", max_components=20, epo_pairs=pairs,
                               epo_components=2, local=LocalSettings(blend=True), folds=2, transform="sqrt")
    local_rate = rate(lambda a: local.predict(wl, a), sample[:10], args.seconds / 2)
    print(f"humus local PLS, blended:    {local_rate:10.0f} spectra/s ({1e6 / local_rate:.1f} us/spectrum)")
    ratio = ours_rate / base_rate
    print(f"ratio vs same chain: {ratio:.1f}x (target >= 10x: {'met' if ratio >= 10 else 'NOT met'}); "
          f"vs minimal baseline: {ours_rate / min_rate:.1f}x")
    print(f"RESULT predict spectra_per_s={ours_rate:.0f} sklearn_spectra_per_s={base_rate:.0f} "
          f"ratio={ratio:.2f} minimal_sklearn_spectra_per_s={min_rate:.0f} "
          f"ratio_minimal={ours_rate / min_rate:.2f} local_spectra_per_s={local_rate:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
