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

Domain statistics: T² = Σ t_a² / s_a² over the PLS scores (Hotelling) and
Q = ||x - t P'||² (the residual; Jackson, J.E., Mudholkar, G.S. 1979,
Technometrics 21, 341-349); their limits come from the cross-validated T²
and Q of the calibration samples so that about 1 - level of calibration-like
spectra are flagged (calibration.domain), and a moisture check on the
absorbance itself flags wet spectra reaching a dry model whatever the
preprocessing. Prediction uncertainty is sample-specific and calibrated on
cross-validated errors (calibration.uncertainty); model files written before
it (no ``uncertainty`` member) keep u = RMSECV · sqrt(1 + 1/n + T²/(n - 1)),
ASTM E1655-17's leverage-based prediction error. How the model was chosen
(components, EPO dimension, target scale, global or local PLS) is recorded
under ``selection`` (calibration.fit).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from calibration.applicability import check_applicable  # noqa: F401  (public: calibration.model.check_applicable)
from calibration.domain import MoistureIndex
from calibration.epo import Epo
from calibration.model_file import ModelFileError, check_model_arrays, read_model_file
from calibration.pls import PlsFit, fit_pls
from calibration.spectra import SavitzkyGolay, absorbance, reflectance, resample
from calibration.transform import TargetTransform
from calibration.uncertainty import UncertaintyModel
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
DOMAIN_LEVEL = 0.99
"""Level of the applicability domain: about 1 % of calibration-like spectra are flagged by T² or Q (the
union, calibration.domain), and 1 % of calibration spectra by the moisture check of a dry model."""

InputKind = Literal["absorbance", "reflectance", "counts"]


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
    moisture: float | None = None
    """The moisture index (calibration.domain) when the model carries a moisture check."""


@dataclass(frozen=True)
class LocalSettings:
    """Memory-based local PLS: for each spectrum, fit PLS on its nearest library neighbours.

    Neighbours by correlation of the preprocessed spectra; the prediction is
    the mean of the local models with min..max components (the weighted-
    average PLS idea of Shenk, J.S., Westerhaus, M.O., Berzaghi, P. 1997,
    J. Near Infrared Spectroscopy 5, 223-232, with equal weights; see
    Ramirez-Lopez, L. et al. 2013, Geoderma 195, 268-279, for memory-based
    learning of soil spectra). Defaults: the steadiest of the settings compared
    on NIRsoil in docs/calibration.md. `fit_spectral_model` without explicit
    settings replaces `max_components` by the global model's cross-validated
    component count (calibration.fit).
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
        # Members added after format version 2 was first written; absent in older files.
        self.uncertainty = (UncertaintyModel.from_meta(meta["uncertainty"], arrays)
                            if meta.get("uncertainty") else None)
        self.moisture: MoistureIndex | None = None
        m = meta.get("moisture") or {}
        if m.get("check"):
            w = arrays["moisture_weights"]
            if w.shape != self.grid.shape:
                raise ValueError(f"moisture_weights of shape {w.shape} for {self.grid.shape[0]} bands")
            self.moisture = MoistureIndex(w, float(m["offset"]), float(m["limit"]), str(m["basis"]))
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
        return self._predict_preprocessed(z, flag, test, a)

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

    def _predict_preprocessed(self, z: np.ndarray, flag: QualityFlag, test: str,
                              a: np.ndarray | None = None) -> Prediction:
        t2, q, t = self._stats(z)
        v = float(t @ self._q) + self._ymean
        if self.local is not None:
            v_local = self._local_value(z)
            v = 0.5 * (v_local + v) if self.local.blend else v_local
        value = float(self.transform.inverse(v))
        if self.uncertainty is not None:
            unc = self.uncertainty(value, t2, q, v, t)
        else:   # model files from before the calibrated uncertainty: ASTM E1655 leverage form
            unc = self._rmse * math.sqrt(1.0 + 1.0 / self._n + t2 / (self._n - 1))
        flags = [(flag, test)]
        if t2 > self.t2_limit or q > self.q_limit:
            flags.append((QualityFlag.SUSPECT, "applicability_domain"))
        moisture = None
        if self.moisture is not None and a is not None:
            moisture = float(a @ self.moisture.weights) + self.moisture.offset
            if moisture > self.moisture.limit:
                flags.append((QualityFlag.SUSPECT, "moisture" if self.moisture.basis == "calibration"
                              else "moisture_beyond_epo_pairs"))
        lo, hi = self._y_range
        if lo >= 0.0 and value < 0.0:
            flags.append((QualityFlag.FAIL, "prediction_negative"))   # a content below zero cannot exist
        margin = 0.1 * (hi - lo)
        if not lo - margin <= value <= hi + margin:
            flags.append((QualityFlag.SUSPECT, "calibration_range"))
        if len(flags) > 1:
            flag, test = _worst_flag(flags)
        return Prediction(value, unc, t2, q, flag, test, self.id, self.version, moisture)

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
        meta, arrays = read_model_file(path)      # sizes, pickle and nesting checked before reading (model_file)
        if meta.get("format") != FORMAT:
            raise ModelFileError(f"{path}: format is not {FORMAT!r}")
        if meta.get("format_version") not in READABLE_FORMAT_VERSIONS:
            raise ModelFileError(f"{path}: format_version {meta.get('format_version')!r}, "
                                 f"this Humus reads {', '.join(map(str, READABLE_FORMAT_VERSIONS))}")
        expected = content_hash(meta, arrays)
        if meta.get("content_hash") != expected:
            raise ModelFileError(f"{path}: content hash mismatch (file altered or truncated): "
                                 f"recorded {meta.get('content_hash')!r}, computed {expected!r}")
        check_model_arrays(path, meta, arrays)
        try:
            model = cls(meta, arrays)
            probe = model.chain(np.linspace(0.0, 1.0, model.grid.shape[0]))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise ModelFileError(f"{path}: incomplete or inconsistent model: {type(e).__name__}: {str(e)[:120]}") \
                from None
        if probe.shape != model.grid.shape:
            raise ModelFileError(f"{path}: inconsistent model: its preprocessing turns {model.grid.shape[0]} bands "
                                 f"into {probe.shape}")
        return model

    def describe(self) -> dict[str, Any]:
        """The JSON description (what `humus calibrate show` prints)."""
        return dict(self.meta)


def _worst_flag(flags: list[tuple[QualityFlag, str]]) -> tuple[QualityFlag, str]:
    """The worst flag and the name of the first test that set it (PASS has no test name)."""
    worst = QualityFlag.worst(*(f for f, _ in flags))
    if worst is QualityFlag.PASS:
        return worst, ""
    return worst, next(t for f, t in flags if f is worst and t) if any(f is worst and t for f, t in flags) else ""


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
                       epo_pairs: tuple[Any, Any] | None = None, epo_components: int | None = None,
                       local: LocalSettings | None = None, method: str | None = None, seed: int = 0,
                       transform: str = "none", groups: Sequence[Any] | None = None,
                       extra: dict[str, Any] | None = None) -> SpectralModel:
    """Fit a spectral PLS model from arrays in memory (every choice by cross-validation, calibration.fit).

    `x` holds one spectrum per row on `wavelengths_nm` (absorbance, or
    reflectance with ``input="reflectance"``), `y` the reference values.
    Components: the simplest count not significantly worse than the CV
    minimum up to `max_components` (calibration.selection), unless
    `n_components` is given. `epo_pairs` = (wet, dry) paired spectra on the
    same grid fit an EPO projection applied before PLS, with
    `epo_components` (None: chosen by CV on the pairs). `method` is
    "global", "local", "blend" (local and global averaged) or "auto" (the
    simplest not significantly worse by CV); None means "global", or what
    `local` asks for (its `blend`). `local` holds the neighbourhood
    settings. `transform` ("none", "sqrt" or "auto") is the scale y is
    modelled on (calibration.transform); "auto" keeps the one with the lower
    CV RMSE in the property's own unit. `groups` (e.g. soil ids) keep all
    rows of one group in one CV fold.
    """
    from calibration import fit as fitting

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
    if groups is not None and len(groups) != y.shape[0]:
        raise ValueError(f"{len(groups)} group labels for {y.shape[0]} samples")
    if method is None:
        method = "global" if local is None else ("blend" if local.blend else "local")
    if method not in ("auto", *fitting.METHODS):
        raise ValueError(f"method {method!r}: expected auto, global, local or blend")
    methods = list(fitting.METHODS) if method == "auto" else [method]
    # Without explicit local settings the local models' component ceiling follows the global model's
    # cross-validated choice (calibration.fit).
    ceiling_from_k = local is None
    local = LocalSettings(local.neighbours, local.min_components, local.max_components) if local else LocalSettings()
    steps = [dict(s) for s in preprocessing]
    chain = Chain(steps)
    if any(s["op"] == "savgol" for s in steps):
        step = np.diff(grid)
        if not np.allclose(step, step.mean(), rtol=1e-3, atol=0):
            raise ValueError("Savitzky-Golay needs an evenly spaced wavelength grid; resample first")
    to_abs = absorbance if input == "reflectance" else (lambda v: v)
    a = to_abs(x)
    z = chain(a)
    pairs = pairs_abs = None
    if epo_pairs is not None:
        pairs_abs = tuple(to_abs(np.asarray(v, dtype=float)) for v in epo_pairs)
        if pairs_abs[0].shape != pairs_abs[1].shape or pairs_abs[0].ndim != 2 or \
                pairs_abs[0].shape[1] != grid.shape[0]:
            raise ValueError(f"EPO pairs: wet {pairs_abs[0].shape} and dry {pairs_abs[1].shape} spectra, expected "
                             f"the same shape with {grid.shape[0]} bands")
        pairs = (chain(pairs_abs[0]), chain(pairs_abs[1]))
        if epo_components is not None and not 1 <= int(epo_components) <= min(pairs[0].shape):
            raise ValueError(f"{epo_components} EPO components: expected 1 to {min(pairs[0].shape)} "
                             f"for {pairs[0].shape[0]} pairs")
    folds = max(2, min(int(folds), len(set(map(str, groups))) if groups is not None else y.shape[0]))
    fold = fitting.fold_ids(y.shape[0], folds, seed, groups)
    choice = fitting.choose(z, y, scales=fitting.check_scales(transform, y), max_components=max_components,
                            n_components=n_components, fold=fold, seed=seed, pairs=pairs,
                            epo_components=epo_components, methods=methods, local=local,
                            local_ceiling_from_k=ceiling_from_k)
    meta, arrays = fitting.build(grid, a, y, steps, choice, model_id=model_id, version=version, target=target,
                                 unit=unit, input=input, folds=folds, seed=seed, local=local, pairs_abs=pairs_abs,
                                 requested_transform=transform, level=DOMAIN_LEVEL, extra=extra)
    meta["content_hash"] = content_hash(meta, arrays)
    return SpectralModel(meta, arrays)
