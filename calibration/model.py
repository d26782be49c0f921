"""Spectral models: fitted offline, saved as one self-describing file, applied on a gateway.

A model file (``.npz``, readable with numpy alone, no pickle) holds a JSON
description (id, version, content hash, target, input kind, preprocessing
chain, EPO, PLS settings, applicability-domain limits, training summary) and
the arrays (wavelength grid, PLS coefficients, EPO directions, and for a
memory-based local model its spectral library).

Prediction chain, per spectrum: input conversion (counts -> reflectance ->
absorbance) -> resampling onto the model grid -> preprocessing chain
(Savitzky-Golay, SNV) -> EPO projection -> PLS (on y or √y, back-transformed:
calibration.transform; format version 2). Each prediction carries a
standard uncertainty, Hotelling's T² and the Q residual against the
calibration set, and a QARTOD flag (SUSPECT out of domain).

Domain statistics: T² = Σ t_a² / s_a² over the PLS scores; its limit
T²_lim = k (n² - 1) / (n (n - k)) F(k, n - k; α) for a new observation
(Tracy, N.D., Young, J.C., Mason, R.L. 1992, Journal of Quality Technology
24, 88-95). Q = ||x - t P'||², limit g χ²_h(α) with g = var(Q)/(2 mean(Q)),
h = 2 mean(Q)² / var(Q) (Box 1954; Nomikos, P., MacGregor, J.F. 1995,
Technometrics 37, 41-59), with mean and variance of the cross-validated Q
of the calibration samples; from EMPIRICAL_Q_MIN_N samples on, the empirical
quantile of those cross-validated Q instead (robust to library outliers). Prediction uncertainty:
u = RMSECV · sqrt(1 + 1/n + T²/(n - 1)), the leverage-based prediction error
of ASTM E1655-17 ("Standard Practices for Infrared Multivariate Quantitative
Analysis", section on leverage), with RMSECV standing for the reference and
model error.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from calibration._stats import chi2_ppf, f_ppf
from calibration.epo import Epo, fit_epo
from calibration.metrics import figures_of_merit
from calibration.pls import PlsFit, cross_validate, fit_pls
from calibration.spectra import SavitzkyGolay, absorbance, reflectance, resample
from calibration.transform import TRANSFORMS, TargetTransform
from humus.records import QualityFlag

FORMAT = "humus-spectral-model"
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
"""Version 2 added ``target_transform``; version 1 files (no transform) still load."""
DEFAULT_PREPROCESSING: tuple[dict[str, Any], ...] = (
    {"op": "savgol", "window": 11, "polyorder": 2, "deriv": 1},
    {"op": "snv"},
)
"""Savitzky-Golay first derivative then SNV: the reference chain of TARGETS.md."""
EMPIRICAL_Q_MIN_N = 100
"""From this many calibration samples on, the Q limit is the empirical quantile of cross-validated Q."""
DOMAIN_LEVEL = 0.99
"""Confidence level of the T² and Q limits: 1 % of calibration-like spectra exceed each."""

InputKind = Literal["absorbance", "reflectance", "counts"]


class ModelFileError(Exception):
    """A model file that cannot be used; str() is the one line to show."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """One predicted value with its uncertainty, domain statistics and flag."""

    value: float
    uncertainty: float
    t2: float
    q: float
    flag: QualityFlag
    flag_test: str
    model_id: str
    model_version: str


@dataclass(frozen=True)
class LocalSettings:
    """Memory-based local PLS: for each spectrum, fit PLS on its nearest library neighbours.

    Neighbours by correlation of the preprocessed spectra; the prediction is
    the mean of the local models with min..max components (the weighted-
    average PLS idea of Shenk, J.S., Westerhaus, M.O., Berzaghi, P. 1997,
    J. Near Infrared Spectroscopy 5, 223-232, with equal weights; see
    Ramirez-Lopez, L. et al. 2013, Geoderma 195, 268-279, for memory-based
    learning of soil spectra). Defaults: the steadiest of the settings compared
    on NIRsoil in docs/calibration.md.
    """

    neighbours: int = 60
    min_components: int = 3
    max_components: int = 15
    blend: bool = False
    """Average the local prediction with the global model's (on the model's target scale): over 20
    random hold-outs of NIRsoil the blend beat either alone (docs/calibration.md)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_components <= self.max_components:
            raise ValueError(f"local PLS components {self.min_components}-{self.max_components}: "
                             f"expected 1 <= MIN <= MAX")
        if self.neighbours < self.max_components + 2:
            raise ValueError(f"local PLS with {self.neighbours} neighbours: expected at least "
                             f"MAX components + 2 = {self.max_components + 2}")


class Chain:
    """A preprocessing chain, prepared once: each step is fast on one spectrum."""

    def __init__(self, steps: Sequence[dict[str, Any]]) -> None:
        self.steps = [dict(s) for s in steps]
        self._ops: list[Any] = []
        for i, s in enumerate(self.steps):
            op = s.get("op")
            if op == "savgol":
                unknown = set(s) - {"op", "window", "polyorder", "deriv"}
                if unknown:
                    raise ValueError(f"preprocessing step {i + 1} (savgol): unknown keys {sorted(unknown)}")
                self._ops.append(SavitzkyGolay(int(s["window"]), int(s["polyorder"]), int(s.get("deriv", 0))))
            elif op == "snv":
                self._ops.append("snv")
            else:
                raise ValueError(f"preprocessing step {i + 1}: op {op!r}, expected 'savgol' or 'snv'")

    def __call__(self, a: np.ndarray) -> np.ndarray:
        for op in self._ops:
            if op == "snv":
                if a.ndim == 1:
                    c = a - a.mean()
                    ss = float(c @ c)
                    if not ss > 0:               # flat (or NaN) spectrum: nothing to scale
                        return np.full_like(a, np.nan)
                    a = c * (1.0 / math.sqrt(ss / (c.shape[0] - 1)))
                else:
                    c = a - a.mean(axis=1, keepdims=True)
                    a = c / c.std(axis=1, ddof=1, keepdims=True)
            else:
                a = op(a)
        return a


class SpectralModel:
    """A loaded spectral model, with its prediction terms precomputed.

    Build one with `fit_spectral_model` or `SpectralModel.load(path)`.
    """

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.meta = meta
        self.arrays = arrays
        self.id: str = meta["id"]
        self.version: str = str(meta["version"])
        self.grid: np.ndarray = arrays["wavelengths_nm"]
        self.input: str = meta["input"]
        self.chain = Chain(meta["preprocessing"])
        self.pls = PlsFit(arrays["x_mean"], float(meta["pls"]["y_mean"]), arrays["weights"], arrays["loadings"],
                          arrays["y_loadings"], arrays["rotations"], arrays["score_var"])
        self.epo = Epo(arrays["epo_directions"]) if "epo_directions" in arrays else None
        self.local = LocalSettings(**meta["local"]) if meta.get("local") else None
        self.transform = TargetTransform.from_meta(meta.get("target_transform"))
        d = meta["domain"]
        self.t2_limit, self.q_limit = float(d["t2_limit"]), float(d["q_limit"])
        tr = meta["training"]
        self._rmse = float(tr["rmsecv"])
        self._n = int(tr["n"])
        self._y_range = (float(tr["y_min"]), float(tr["y_max"]))
        self._precompute()

    # -- precomputation: fold EPO and centring into a handful of small matrices --
    def _precompute(self) -> None:
        p = self.pls
        r, l = p.rotations, p.loadings
        k = r.shape[1]
        xm = p.x_mean
        # With P = I - V V' (or I without EPO) and xc = zP - x_mean:
        #   t = xc R = z (P R) - x_mean R
        #   L'xc = z (P L) - L' x_mean
        #   ||xc||² = ||zP||² - 2 z (P x_mean) + ||x_mean||²,  ||zP||² = z·z - ||V'z||²
        #   Q = ||xc - t L'||² = ||xc||² - 2 t·(L'xc) + t'(L'L)t
        if self.epo is not None:
            v = self.epo.directions
            pr, pl, pxm = r - v @ (v.T @ r), l - v @ (v.T @ l), xm - v @ (v.T @ xm)
            cols = [pr, pl, pxm[:, None], v]
        else:
            cols = [r, l, xm[:, None]]
        self._w = np.ascontiguousarray(np.hstack(cols))
        self._k = k
        self._t_off = xm @ r
        self._l_off = l.T @ xm
        self._xm2 = float(xm @ xm)
        self._ltl = l.T @ l
        self._q = p.y_loadings
        self._inv_var = 1.0 / p.score_var
        self._ymean = p.y_mean
        self._last_wl: Any = None
        self._last_wl_same = False
        if self.local is not None:
            lib = self.arrays["library_x"]
            c = lib - lib.mean(axis=1, keepdims=True)
            self._lib_unit = c / np.linalg.norm(c, axis=1, keepdims=True)
            self._lib_yt = self.transform.forward(self.arrays["library_y"])

    # -- prediction --
    def predict(self, wavelengths_nm: Any, spectrum: Any, *, kind: InputKind | None = None,
                dark: Any = None, white: Any = None) -> Prediction:
        """Predict from one spectrum measured at `wavelengths_nm`.

        `kind` says what `spectrum` is (default: the model's input, normally
        absorbance); raw ``counts`` need the `dark` and `white` references.
        """
        kind = kind or self.input
        a = np.asarray(spectrum, dtype=float)
        flag, test = QualityFlag.PASS, ""
        if kind == "counts":
            if dark is None or white is None:
                return self._missing("missing_reference")
            rc = reflectance(a, dark, white)
            if rc.flag is not QualityFlag.PASS:
                flag, test = rc.flag, rc.flag_test
                if flag in (QualityFlag.FAIL, QualityFlag.MISSING):
                    return self._missing(test)
            a = absorbance(rc.value)
        elif kind == "reflectance":
            a = absorbance(a)
        elif kind != "absorbance":
            raise ValueError(f"input kind {kind!r}: expected 'absorbance', 'reflectance' or 'counts'")
        if not self._same_grid(wavelengths_nm):
            try:
                a = resample(wavelengths_nm, a, self.grid)
            except ValueError:
                return self._missing("spectrum_shape")
        if a.shape == self.grid.shape and a.max() == a.min():
            return self._missing("spectrum_flat")     # a dead or saturated detector: no information
        z = self.chain(a)
        if not np.isfinite(z).all():
            return self._missing("spectrum_incomplete")
        return self._predict_preprocessed(z, flag, test)

    def _same_grid(self, wavelengths_nm: Any) -> bool:
        if wavelengths_nm is self._last_wl:
            return self._last_wl_same
        wl = np.asarray(wavelengths_nm, dtype=float)
        same = wl.shape == self.grid.shape and bool(np.allclose(wl, self.grid, rtol=0, atol=1e-6))
        self._last_wl, self._last_wl_same = wavelengths_nm, same
        return same

    def _stats(self, z: np.ndarray) -> tuple[float, float, np.ndarray]:
        k = self._k
        s = z @ self._w
        t = s[:k] - self._t_off
        lxc = s[k:2 * k] - self._l_off
        zz = z @ z
        if self.epo is not None:
            vz = s[2 * k + 1:]
            zz -= vz @ vz
        xc2 = zz - 2.0 * s[2 * k] + self._xm2
        q = xc2 - 2.0 * (t @ lxc) + t @ self._ltl @ t
        t2 = float((t * t) @ self._inv_var)
        return t2, max(float(q), 0.0), t

    def _predict_preprocessed(self, z: np.ndarray, flag: QualityFlag, test: str) -> Prediction:
        t2, q, t = self._stats(z)
        if self.local is None:
            value = float(self.transform.inverse(float(t @ self._q) + self._ymean))
        else:
            v = self._local_value(z)
            if self.local.blend:
                v = 0.5 * (v + float(t @ self._q) + self._ymean)
            value = float(self.transform.inverse(v))
        unc = self._rmse * math.sqrt(1.0 + 1.0 / self._n + t2 / (self._n - 1))
        if t2 > self.t2_limit or q > self.q_limit:
            flag, test = QualityFlag.worst(flag, QualityFlag.SUSPECT), test or "applicability_domain"
        lo, hi = self._y_range
        margin = 0.1 * (hi - lo)
        if not lo - margin <= value <= hi + margin:
            flag, test = QualityFlag.worst(flag, QualityFlag.SUSPECT), test or "calibration_range"
        return Prediction(value, unc, t2, q, flag, test, self.id, self.version)

    def _local_value(self, z: np.ndarray) -> float:
        zp = self.epo.apply(z) if self.epo is not None else z
        c = zp - zp.mean()
        corr = self._lib_unit @ (c / np.linalg.norm(c))
        k = min(self.local.neighbours, corr.shape[0])
        nn = np.argpartition(-corr, k - 1)[:k]
        return _local_pls(self.arrays["library_x"][nn], self._lib_yt[nn], zp[None, :], self.local)[0]

    def _missing(self, test: str) -> Prediction:
        return Prediction(float("nan"), float("nan"), float("nan"), float("nan"), QualityFlag.MISSING, test,
                          self.id, self.version)

    def predict_many(self, wavelengths_nm: Any, spectra: Any, *, kind: InputKind | None = None) -> list[Prediction]:
        """Predict each row of `spectra` (absorbance or reflectance)."""
        return [self.predict(wavelengths_nm, row, kind=kind) for row in np.asarray(spectra, dtype=float)]

    # -- files --
    @property
    def content_hash(self) -> str:
        return str(self.meta["content_hash"])

    def save(self, path: str | Path) -> Path:
        """Write the model as one .npz file (numpy arrays + a JSON description, no pickle)."""
        path = Path(path)
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=np.array(json.dumps(self.meta, indent=1, sort_keys=True)), **self.arrays)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SpectralModel":
        """Load and verify a model file; ModelFileError (one line) when it cannot be used."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                magic = f.read(4)
            if magic != b"PK\x03\x04":
                raise ModelFileError(f"{path}: not a Humus model file (expected a .npz archive)")
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: np.array(z[name]) for name in z.files}
        except FileNotFoundError:
            raise ModelFileError(f"{path}: model file not found") from None
        except IsADirectoryError:
            raise ModelFileError(f"{path}: is a directory, expected a model file") from None
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise ModelFileError(f"{path}: not a Humus model file (.npz): {e}") from None
        try:
            meta = json.loads(str(arrays.pop("meta")))
        except (KeyError, ValueError):
            raise ModelFileError(f"{path}: no valid JSON description ('meta') in the model file") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFileError(f"{path}: format is not {FORMAT!r}")
        if meta.get("format_version") not in READABLE_FORMAT_VERSIONS:
            raise ModelFileError(f"{path}: format_version {meta.get('format_version')!r}, "
                                 f"this Humus reads {', '.join(map(str, READABLE_FORMAT_VERSIONS))}")
        expected = content_hash(meta, arrays)
        if meta.get("content_hash") != expected:
            raise ModelFileError(f"{path}: content hash mismatch (file altered or truncated): "
                                 f"recorded {meta.get('content_hash')!r}, computed {expected!r}")
        try:
            return cls(meta, arrays)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ModelFileError(f"{path}: incomplete or inconsistent model: {e!r}") from None

    def describe(self) -> dict[str, Any]:
        """The JSON description (what `humus calibrate show` prints)."""
        return dict(self.meta)


def content_hash(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the description (without its hash) and every array's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    desc = {k: v for k, v in meta.items() if k != "content_hash"}
    h.update(json.dumps(desc, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def _local_pls(lib_x: np.ndarray, lib_y: np.ndarray, z: np.ndarray, local: LocalSettings) -> np.ndarray:
    kmax = min(local.max_components, lib_x.shape[0] - 2)
    kmin = min(local.min_components, kmax)
    fit = fit_pls(lib_x, lib_y, kmax)
    # Deflating the new spectra component by component gives the nested models' predictions
    # (t_a = x_a·w_a, x_{a+1} = x_a - t_a p_a, ŷ_k = ȳ + Σ_{a<=k} t_a q_a) without inverting P'W.
    xc = z - fit.x_mean
    cum = np.full(z.shape[0], fit.y_mean)
    total = np.zeros(z.shape[0])
    for a in range(kmax):
        t = xc @ fit.weights[:, a]
        cum = cum + t * fit.y_loadings[a]
        xc = xc - np.outer(t, fit.loadings[:, a])
        if a + 1 >= kmin:
            total += cum
    # A local model does not extrapolate beyond its neighbours' reference values: spectral outliers
    # (flagged out of domain anyway) otherwise get predictions far outside any plausible value.
    return np.clip(total / (kmax - kmin + 1), lib_y.min(), lib_y.max())


def fit_spectral_model(wavelengths_nm: Any, x: Any, y: Any, *, model_id: str, version: str = "1",
                       target: str = "soc", unit: str = "%", input: InputKind = "absorbance",
                       preprocessing: Sequence[dict[str, Any]] = DEFAULT_PREPROCESSING,
                       max_components: int = 20, n_components: int | None = None, folds: int = 10,
                       epo_pairs: tuple[Any, Any] | None = None, epo_components: int = 2,
                       local: LocalSettings | None = None, seed: int = 0, transform: str = "none",
                       extra: dict[str, Any] | None = None) -> SpectralModel:
    """Fit a spectral PLS model from arrays in memory.

    `x` holds one spectrum per row on `wavelengths_nm` (absorbance, or
    reflectance with ``input="reflectance"``), `y` the reference values.
    Components are chosen by `folds`-fold cross-validation unless
    `n_components` is given. `epo_pairs` = (wet, dry) paired spectra on the
    same grid fit an EPO projection applied before PLS. `local` makes a
    memory-based local PLS model (the library travels in the model file).
    `transform` ("none", "sqrt" or "auto") is the scale y is modelled on
    (calibration.transform); "auto" keeps "sqrt" only when it lowers the
    cross-validated RMSE in the property's own unit (and y >= 0).
    """
    grid = np.asarray(wavelengths_nm, dtype=float)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float).ravel()
    if x.ndim != 2 or x.shape[1] != grid.shape[0]:
        raise ValueError(f"spectra of shape {x.shape} for {grid.shape[0]} wavelengths")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} spectra but {y.shape[0]} reference values")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("spectra and reference values must be finite (drop rows with missing values first)")
    if np.any(np.diff(grid) <= 0):
        raise ValueError("wavelengths must increase strictly")
    if input not in ("absorbance", "reflectance"):
        raise ValueError(f"input {input!r}: expected 'absorbance' or 'reflectance' spectra to fit on")
    steps = [dict(s) for s in preprocessing]
    chain = Chain(steps)
    if any(s["op"] == "savgol" for s in steps):
        step = np.diff(grid)
        if not np.allclose(step, step.mean(), rtol=1e-3, atol=0):
            raise ValueError("Savitzky-Golay needs an evenly spaced wavelength grid; resample first")
    to_abs = absorbance if input == "reflectance" else (lambda v: v)
    z = chain(to_abs(x))
    epo = None
    if epo_pairs is not None:
        wet, dry = (chain(to_abs(np.asarray(v, dtype=float))) for v in epo_pairs)
        epo = fit_epo(wet, dry, epo_components)
        z = epo.apply(z)
    if transform == "auto":
        names = ["none", "sqrt"] if y.min() >= 0 else ["none"]
    elif transform in TRANSFORMS:
        names = [transform]
    else:
        raise ValueError(f"target transform {transform!r}: expected one of {', '.join(TRANSFORMS)} or 'auto'")
    candidates = [_fit_scale(z, y, TargetTransform(name), max_components, n_components, folds, seed, local)
                  for name in names]
    rmse_of = {c[0].name: float(np.sqrt(np.mean((c[3] - y) ** 2))) for c in candidates}
    tf, cv, pls, cv_pred, q_cv = min(candidates, key=lambda c: rmse_of[c[0].name])
    k = pls.n_components
    fitted = tf.inverse(pls.predict(z))
    t2_limit, q_limit = _domain_limits(len(y), k, q_cv, DOMAIN_LEVEL)
    cvfm = figures_of_merit(y, cv_pred)
    meta: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "id": model_id, "version": str(version),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": target, "unit": unit, "input": input,
        "preprocessing": steps,
        "epo": {"n_components": epo.n_components, "pairs": int(np.asarray(epo_pairs[0]).shape[0])} if epo else None,
        "pls": {"n_components": k, "y_mean": pls.y_mean, "cv_folds": folds, "cv_seed": seed,
                "rmsecv_by_components": [round(float(v), 6) for v in cv.rmsecv]},
        "local": vars(local) if local else None,
        "target_transform": {**tf.to_meta(), "requested": transform,
                             "rmsecv_by_transform": {n: round(v, 6) for n, v in rmse_of.items()}},
        "domain": {"level": DOMAIN_LEVEL, "t2_limit": t2_limit, "q_limit": q_limit},
        "training": {"n": int(len(y)), "rmsec": float(np.sqrt(np.mean((fitted - y) ** 2))),
                     "rmsecv": cvfm["rmse"], "r2cv": cvfm["r2"], "biascv": cvfm["bias"],
                     "rpd": cvfm["rpd"], "rpiq": cvfm["rpiq"],
                     "y_min": float(y.min()), "y_max": float(y.max()), "y_mean": float(y.mean())},
        "wavelength_range_nm": [float(grid[0]), float(grid[-1])],
        "bands": int(grid.shape[0]),
    }
    if extra:
        meta["extra"] = extra
    arrays = {"wavelengths_nm": grid, "x_mean": pls.x_mean, "weights": pls.weights, "loadings": pls.loadings,
              "y_loadings": pls.y_loadings, "rotations": pls.rotations, "score_var": pls.score_var}
    if epo is not None:
        arrays["epo_directions"] = epo.directions
    if local is not None:
        arrays["library_x"], arrays["library_y"] = z, y
    meta["content_hash"] = content_hash(meta, arrays)
    return SpectralModel(meta, arrays)


def _fit_scale(z: np.ndarray, y: np.ndarray, tf: TargetTransform, max_components: int,
               n_components: int | None, folds: int, seed: int, local: LocalSettings | None):
    """Fit on one target scale: (transform with its bias term, CV, PLS, CV predictions in y's unit, CV Q)."""
    yt = tf.forward(y)
    cv = cross_validate(z, yt, max_components, folds=folds, seed=seed)
    k = int(n_components) if n_components is not None else cv.n_components
    pls = fit_pls(z, yt, k)
    cv_t, q_cv = _cv_predictions(z, yt, k, folds, seed)
    if local is not None:
        cv_local = _local_cv(z, yt, local, folds, seed)
        cv_t = 0.5 * (cv_t + cv_local) if local.blend else cv_local
    if tf.name != "none":
        tf = TargetTransform(tf.name, float(np.mean((cv_t - yt) ** 2)))
    return tf, cv, pls, tf.inverse(cv_t), q_cv


def _cv_predictions(z: np.ndarray, y: np.ndarray, k: int, folds: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated predictions and Q residuals of each sample against the model without it.

    The Q limit comes from these: a calibration sample's own residual is
    smaller than a new spectrum's (the model was fitted to it), so in-sample
    residuals would flag far more than 1 - level of new, ordinary spectra.
    """
    order = np.random.default_rng(seed).permutation(len(y))
    pred, q = np.zeros(len(y)), np.zeros(len(y))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        fit = fit_pls(z[train], y[train], k)
        xc = z[test] - fit.x_mean
        pred[test] = xc @ fit.coef + fit.y_mean
        resid = xc - (xc @ fit.rotations) @ fit.loadings.T
        q[test] = np.einsum("ij,ij->i", resid, resid)
    return pred, q


def _local_cv(z: np.ndarray, y: np.ndarray, local: LocalSettings, folds: int, seed: int) -> np.ndarray:
    c = z - z.mean(axis=1, keepdims=True)
    unit = c / np.linalg.norm(c, axis=1, keepdims=True)
    order = np.random.default_rng(seed).permutation(len(y))
    pred = np.zeros(len(y))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        corr = unit[test] @ unit[train].T
        kn = min(local.neighbours, len(train))
        for row, i in enumerate(test):
            nn = train[np.argpartition(-corr[row], kn - 1)[:kn]]
            pred[i] = _local_pls(z[nn], y[nn], z[i][None, :], local)[0]
    return pred


def _domain_limits(n: int, k: int, q_cv: np.ndarray, level: float) -> tuple[float, float]:
    if n - k > 0:
        t2 = k * (n * n - 1) / (n * (n - k)) * f_ppf(level, k, n - k)
    else:
        t2 = float("inf")
    if len(q_cv) >= EMPIRICAL_Q_MIN_N:
        # Soil libraries hold a few spectral outliers whose huge Q inflates the moments the
        # Box approximation needs; with enough samples the empirical quantile is the honest limit.
        return t2, float(np.quantile(q_cv, level))
    mean, var = float(q_cv.mean()), float(q_cv.var(ddof=1))
    if mean > 0 and var > 0:
        g, h = var / (2 * mean), 2 * mean * mean / var
        q = g * chi2_ppf(level, h)
    else:
        q = float("inf")
    return t2, q
