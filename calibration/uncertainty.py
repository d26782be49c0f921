"""Sample-specific prediction uncertainty, calibrated on cross-validated errors (normalised split-conformal).

Why not one RMSECV for every sample: soil-carbon errors grow with the
carbon level and with distance from the calibration spectra. A single
figure over-covers ordinary soils and under-covers the organic ones (on
NIRsoil, ±1σ covered 95 % of low-carbon soils and 74 % of high-carbon
ones).

Method (fitted from the cross-validated predictions of the calibration set):

1. Difficulty σ(x) = exp(β0 + β1 ln(1 + T²/k) + β2 ln(Q/Q_ref) + β3 ln(ŷ + y_ref))
   from the spectrum's Hotelling T² (k components), Q residual and the
   predicted level (errors of carbon grow with carbon), fitted to the
   absolute CV errors by a Gamma GLM with log link (IRLS; McCullagh, P.,
   Nelder, J.A. 1989, *Generalized Linear Models*, 2nd ed., ch. 8): the
   normalised residuals of locally weighted conformal prediction
   (Papadopoulos, H., Proedrou, K., Vovk, V., Gammerman, A. 2002, ECML,
   LNCS 2430, 345-356; Lei, J., G'Sell, M., Rinaldo, A., Tibshirani, R.J.,
   Wasserman, L. 2018, J. Am. Stat. Assoc. 113, 1094-1111, section 5.2).
   Version 2 adds a fifth feature, β4 ln(e_nn + e_ref): e_nn is the RMS of
   the CV errors of the NEIGHBOURS calibration samples nearest in PLS score
   space (the local error estimate of k-nearest-neighbour conformal
   regression: Papadopoulos, H., Vovk, V., Gammerman, A. 2011, J. Artif.
   Intell. Res. 40, 815-840); for a calibration sample its own error is
   left out. It is kept only when it lowers the out-of-fold Gamma deviance
   of the GLM (K-fold over the CV errors), so where errors have no local
   structure the model falls back to the four global features. The scores
   and CV errors it needs travel in the model file.
2. Scale per bin of the predicted value (Mondrian conformal prediction,
   Vovk, V., Gammerman, A., Shafer, G. 2005, *Algorithmic Learning in a
   Random World*, ch. 4): u = c_b σ(x), the c_b chosen jointly so that
   ±u and ±2u cover as near 68.3 % and 95.4 % of the CV errors as the
   scales can, overall and in each tercile of the reference values (the
   worst miss, relative to ±5 and ±3 points, is minimised; coordinate
   search started from each bin's own balanced scale). The target is per
   tercile of the truth; in CV the truth is known, so the scales aim at it
   directly (on NIRsoil that did better on held-out soils than balancing
   each bin of the predictions alone). Errors are heavier-tailed than normal, so ±1σ alone at 68 %
   would leave ±2σ near 90 %. Cross-validation gives out-of-sample errors
   (the CV+ idea of Barber, R.F., Candès, E.J., Ramdas, A., Tibshirani,
   R.J. 2021, Annals of Statistics 49, 486-507).
3. With EPO (moisture correction) the same calibration on the dry
   calibration spectra is used for wet spectra. The wet-dry prediction
   shift of held-out pairs could be added in quadrature (`shift_var`, the
   delta method dy/dv = 2v carrying it to y's unit on the √y scale), but on
   the paired soils of soilspec-epo the shift was negatively correlated
   with the dry error and adding it over-covered; calibration.fit leaves it
   at 0 and docs/calibration.md reports the coverage measured on wet spectra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ONE_SIGMA, TWO_SIGMA = 0.6827, 0.9545
TOLERANCE = (0.05, 0.03)
"""Acceptable misses of the ±1σ and ±2σ coverage (the project's targets)."""
MIN_BIN = 80
"""Calibration samples per Mondrian bin (at most MAX_BINS bins)."""
MAX_BINS = 5
MIN_N_FOR_SLOPES = 20
"""Below this many CV errors only a constant σ (one scale) is fitted."""
NEIGHBOURS = 20
"""Calibration neighbours whose CV errors give the local error level (version 2)."""
MIN_N_FOR_NEIGHBOURS = 5 * NEIGHBOURS
"""Below this many calibration samples the neighbours are a large share of the set: no neighbour term."""
GLM_FOLDS = 5
VERSIONS = (1, 2)
"""Version 1: four global features; version 2 may add the neighbour term (files of both load)."""


@dataclass(frozen=True)
class UncertaintyModel:
    """u(x) = c_bin(ŷ) · exp(coef · [1, ln(1 + T²/k), ln(Q/q_ref), ln(max(ŷ, 0) + y_ref)(, ln(e_nn + nn_ref))])."""

    coef: tuple[float, ...]
    k: int
    q_ref: float
    y_ref: float                         # offset of the level feature (0 with coef[3] = 0: no level term)
    edges: tuple[float, ...]             # predicted-value bin edges (len = bins - 1)
    scales: tuple[float, ...]            # c_b per bin
    shift_var: float = 0.0               # EPO: variance of the wet-dry prediction shift on the model scale
    sqrt_scale: bool = False             # the model predicts √y (delta method for shift_var)
    coverage_cv: dict[str, Any] = field(default_factory=dict)
    nn_ref: float = 0.0                  # offset of the neighbour feature (coef[4])
    nn_scores: np.ndarray | None = field(default=None, repr=False, compare=False)   # (n, k) calibration scores
    nn_errors: np.ndarray | None = field(default=None, repr=False, compare=False)   # (n,) their |CV errors|
    neighbour_choice: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_neighbours(self) -> bool:
        return len(self.coef) == 5

    def __call__(self, value: float, t2: float, q: float, v: float, scores: np.ndarray | None = None) -> float:
        """Standard uncertainty of one prediction `value` (y unit); `v` is the model-scale prediction,
        `scores` the spectrum's PLS scores (needed by a version-2 model with the neighbour term)."""
        c0, c1, c2, c3 = self.coef[:4]
        e = c0 + c1 * math.log1p(max(t2, 0.0) / self.k) + c2 * math.log(max(q, 1e-12 * self.q_ref) / self.q_ref)
        if c3:
            e += c3 * math.log(max(value, 0.0) + self.y_ref)
        if self.uses_neighbours:
            e += self.coef[4] * math.log(float(self._neighbour_error(np.asarray(scores, dtype=float)[None, :])[0])
                                         + self.nn_ref)
        b = 0
        for edge in self.edges:
            if value > edge:
                b += 1
        u = self.scales[b] * math.exp(e)
        if self.shift_var > 0:
            j = 2.0 * max(v, 0.0) if self.sqrt_scale else 1.0
            u = math.sqrt(u * u + j * j * self.shift_var)
        return u

    def many(self, values: np.ndarray, t2: np.ndarray, q: np.ndarray, v: np.ndarray,
             scores: np.ndarray | None = None, *, leave_self_out: bool = False) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        nn = None
        if self.uses_neighbours:
            nn = self._neighbour_error(np.asarray(scores, dtype=float), leave_self_out=leave_self_out)
        a = _features(values, np.asarray(t2, dtype=float), np.asarray(q, dtype=float), self.k, self.q_ref,
                      self.y_ref if self.coef[3] else 1.0, nn, self.nn_ref)
        s = np.exp(a @ np.asarray(self.coef))
        u = np.asarray(self.scales)[np.searchsorted(np.asarray(self.edges), values, side="left")] * s
        if self.shift_var > 0:
            j = 2.0 * np.maximum(v, 0.0) if self.sqrt_scale else np.ones_like(v)
            u = np.sqrt(u * u + j * j * self.shift_var)
        return u

    def _neighbour_error(self, scores: np.ndarray, leave_self_out: bool = False) -> np.ndarray:
        assert self.nn_scores is not None and self.nn_errors is not None
        return neighbour_error(self.nn_scores, self.nn_errors, scores, leave_self_out=leave_self_out)

    def to_meta(self) -> dict[str, Any]:
        features = ["1", "ln(1+T2/k)", "ln(Q/q_ref)", "ln(max(value,0)+y_ref)"]
        meta = {"version": 2 if self.uses_neighbours else 1,
                "method": "normalised split-conformal on CV errors, Mondrian bins of the prediction",
                "features": features + (["ln(rms CV error of the neighbours + nn_ref)"] if self.uses_neighbours
                                        else []),
                "coef": [float(c) for c in self.coef], "k": self.k, "q_ref": float(self.q_ref),
                "y_ref": float(self.y_ref), "bin_edges": [float(e) for e in self.edges],
                "scales": [float(c) for c in self.scales], "moisture_shift_var": float(self.shift_var),
                "sqrt_scale": self.sqrt_scale, "coverage_cv": self.coverage_cv}
        if self.uses_neighbours:
            meta["neighbours"] = {"n": NEIGHBOURS, "nn_ref": float(self.nn_ref),
                                  "arrays": ["uncertainty_scores", "uncertainty_errors"]}
        if self.neighbour_choice:
            meta["neighbour_choice"] = self.neighbour_choice
        return meta

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the model file must carry for this model (none without the neighbour term)."""
        if not self.uses_neighbours:
            return {}
        return {"uncertainty_scores": np.asarray(self.nn_scores), "uncertainty_errors": np.asarray(self.nn_errors)}

    @classmethod
    def from_meta(cls, m: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> "UncertaintyModel":
        version = m.get("version", 1)
        if version not in VERSIONS:
            raise ValueError(f"uncertainty version {version!r}: this Humus reads {', '.join(map(str, VERSIONS))}")
        coef = tuple(float(c) for c in m["coef"])
        edges = tuple(float(e) for e in m["bin_edges"])
        scales = tuple(float(c) for c in m["scales"])
        y_ref = float(m.get("y_ref", 0.0))
        n_coef = 5 if version == 2 and m.get("neighbours") else 4
        if len(coef) != n_coef or len(scales) != len(edges) + 1 or not all(c > 0 for c in scales):
            raise ValueError(f"uncertainty: expected {n_coef} coefficients and one positive scale per bin")
        if not (float(m["q_ref"]) > 0 and int(m["k"]) >= 1 and (coef[3] == 0 or y_ref > 0)):
            raise ValueError("uncertainty: q_ref must be > 0, k >= 1 and y_ref > 0 with a level term")
        nn_ref, nn_s, nn_e = 0.0, None, None
        if n_coef == 5:
            arrays = arrays or {}
            nn_ref = float(m["neighbours"]["nn_ref"])
            nn_s, nn_e = arrays.get("uncertainty_scores"), arrays.get("uncertainty_errors")
            if nn_s is None or nn_e is None or nn_s.ndim != 2 or nn_s.shape[1] != int(m["k"]) or \
                    nn_e.shape != (nn_s.shape[0],) or nn_s.shape[0] < NEIGHBOURS or not nn_ref > 0:
                raise ValueError(f"uncertainty: the neighbour term needs arrays 'uncertainty_scores' (n, {m['k']}) "
                                 f"and 'uncertainty_errors' (n,), n >= {NEIGHBOURS}, and nn_ref > 0")
        return cls(coef, int(m["k"]), float(m["q_ref"]), y_ref, edges, scales,
                   float(m.get("moisture_shift_var", 0.0)), bool(m.get("sqrt_scale", False)),
                   dict(m.get("coverage_cv", {})), nn_ref, nn_s, nn_e, dict(m.get("neighbour_choice", {})))


def neighbour_error(cal_scores: np.ndarray, cal_errors: np.ndarray, scores: np.ndarray, *,
                    leave_self_out: bool = False) -> np.ndarray:
    """RMS of the CV errors of the NEIGHBOURS calibration samples nearest each row of `scores` (Euclidean)."""
    d = (np.einsum("ij,ij->i", scores, scores)[:, None] - 2.0 * scores @ cal_scores.T
         + np.einsum("ij,ij->i", cal_scores, cal_scores)[None, :])
    if leave_self_out:
        np.fill_diagonal(d, np.inf)
    kn = min(NEIGHBOURS, cal_scores.shape[0] - (1 if leave_self_out else 0))
    nn = np.argpartition(d, kn - 1, axis=1)[:, :kn]
    return np.sqrt(np.mean(cal_errors[nn] ** 2, axis=1))


def _features(pred: np.ndarray, t2: np.ndarray, q: np.ndarray, k: int, q_ref: float, y_ref: float,
              nn: np.ndarray | None, nn_ref: float) -> np.ndarray:
    cols = [np.ones_like(pred), np.log1p(np.maximum(t2, 0) / k), np.log(np.maximum(q, 1e-12 * q_ref) / q_ref),
            np.log(np.maximum(pred, 0.0) + y_ref)]
    if nn is not None:
        cols.append(np.log(nn + nn_ref))
    return np.column_stack(cols)


def fit_uncertainty(predicted: np.ndarray, observed: np.ndarray, t2: np.ndarray, q: np.ndarray, k: int, *,
                    shift_var: float = 0.0, sqrt_scale: bool = False, scores: np.ndarray | None = None,
                    seed: int = 0) -> UncertaintyModel:
    """Fit the model to cross-validated predictions (y unit) and their T² and Q against the fold models.

    `scores` (n, k): the calibration samples' PLS scores under the final model, for the neighbour term.
    """
    pred, y = np.asarray(predicted, dtype=float), np.asarray(observed, dtype=float)
    t2, q = np.asarray(t2, dtype=float), np.asarray(q, dtype=float)
    err = np.abs(pred - y)
    n = err.shape[0]
    q_ref = float(np.median(q)) if np.median(q) > 0 else float(np.mean(q)) or 1.0
    # The level term needs a non-negative property (a content); its offset keeps ln finite near zero.
    level = bool(y.min() >= 0 and np.median(y) > 0)
    y_ref = 0.5 * float(np.median(y)) if level else 0.0
    a = _features(pred, t2, q, k, q_ref, y_ref if level else 1.0, None, 0.0)
    if not level:
        a = a[:, :3]
    nn = nn_ref = None
    choice: dict[str, Any] = {}
    if n >= MIN_N_FOR_SLOPES:
        coef = _gamma_glm(a, err)
        if scores is not None and n >= MIN_N_FOR_NEIGHBOURS:
            nn_all = neighbour_error(np.asarray(scores, dtype=float), err, np.asarray(scores, dtype=float),
                                     leave_self_out=True)
            ref = 0.1 * float(np.median(nn_all)) or 1e-12
            a5 = np.column_stack([a if level else np.column_stack([a, np.zeros(n)]), np.log(nn_all + ref)])
            d4, d5 = _cv_deviance(a, err, seed), _cv_deviance(a5, err, seed)
            gain, se = float(np.mean(d4 - d5)), float(np.std(d4 - d5, ddof=1) / math.sqrt(n))
            # Kept only when better by more than one standard error of the paired difference (the
            # one-standard-error rule of Breiman, L. et al. 1984, *Classification and Regression Trees*, 3.4.3).
            used = gain > se
            choice = {"neighbours": NEIGHBOURS, "cv_gamma_deviance": {"without": round(float(d4.mean()), 6),
                                                                      "with": round(float(d5.mean()), 6),
                                                                      "se_of_difference": round(se, 6)},
                      "used": used}
            if used:
                nn, nn_ref, a = nn_all, ref, a5
                coef = _gamma_glm(a, err)
    else:
        coef = np.zeros(a.shape[1])
        coef[0] = math.log(max(float(err.mean()), 1e-12))
    s = np.exp(a @ coef)
    if not level:
        coef = np.append(coef, 0.0) if nn is None else coef
        coef[3] = 0.0
    bins = min(MAX_BINS, max(1, n // MIN_BIN))
    edges = np.quantile(pred, np.arange(1, bins) / bins) if bins > 1 else np.array([])
    b = np.searchsorted(edges, pred, side="left")
    scales = _joint_scales(err / s, b, bins, y)
    model = UncertaintyModel(tuple(float(c) for c in coef), int(k), q_ref, y_ref, tuple(float(e) for e in edges),
                             tuple(scales), 0.0, sqrt_scale, {}, float(nn_ref or 0.0),
                             None if nn is None else np.asarray(scores, dtype=float).copy(),
                             None if nn is None else err.copy(), choice)
    cov = coverage(y, pred, model.many(pred, t2, q, np.zeros(n), scores, leave_self_out=True))
    return UncertaintyModel(model.coef, model.k, model.q_ref, y_ref, model.edges, model.scales, float(shift_var),
                            sqrt_scale, cov, model.nn_ref, model.nn_scores, model.nn_errors, choice)


def _cv_deviance(a: np.ndarray, err: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold Gamma deviance of each CV error under the GLM with design `a` (K-fold over the errors)."""
    n = err.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=int)
    fold[order] = np.arange(n) % GLM_FOLDS
    e = err + 1e-3 * max(float(np.median(err)), 1e-12)
    out = np.zeros(n)
    for f in range(GLM_FOLDS):
        beta = _gamma_glm(a[fold != f], err[fold != f])
        r = e[fold == f] / np.exp(np.clip(a[fold == f] @ beta, -50, 50))
        out[fold == f] = 2.0 * (r - 1.0 - np.log(r))
    return out


def _gamma_glm(a: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Coefficients of E|e| = exp(a β) by IRLS for a Gamma GLM (log link), started from log-least-squares."""
    floor = 1e-3 * max(float(np.median(err)), 1e-12)
    e = err + floor
    beta = np.linalg.lstsq(a, np.log(e), rcond=None)[0]
    for _ in range(100):
        mu = np.exp(np.clip(a @ beta, -50, 50))
        w = e / mu
        grad = a.T @ (1.0 - w)
        hess = a.T @ (a * w[:, None]) + 1e-9 * np.eye(a.shape[1])
        step = np.linalg.solve(hess, grad)
        beta = beta - step
        if not np.isfinite(beta).all():
            out = np.zeros(a.shape[1])
            out[0] = math.log(float(e.mean()))
            return out
        if np.abs(step).max() < 1e-9:
            break
    return beta


def _miss(scores: np.ndarray) -> float:
    """The worse of the ±1 and ±2 coverage misses of normalised scores, relative to their tolerances."""
    if scores.size == 0:
        return 0.0
    return max(abs(float(np.mean(scores <= 1.0)) - ONE_SIGMA) / TOLERANCE[0],
               abs(float(np.mean(scores <= 2.0)) - TWO_SIGMA) / TOLERANCE[1])


def _joint_scales(r: np.ndarray, b: np.ndarray, bins: int, y: np.ndarray) -> list[float]:
    """Per-bin scales minimising the worst coverage miss overall and in each tercile of y (coordinate search)."""
    scales = np.array([_balanced_scale(r[b == j]) for j in range(bins)])
    if r.size < 3 * MIN_N_FOR_SLOPES:
        return [float(c) for c in scales]
    tercile = np.searchsorted(np.quantile(y, [1 / 3, 2 / 3]), y, side="right")
    parts = [tercile == j for j in range(3)]

    def loss(c: np.ndarray) -> float:
        z = r / c[b]
        return max([_miss(z)] + [_miss(z[m]) for m in parts])

    best = loss(scales)
    factors = np.linspace(0.8, 1.25, 31)
    for _ in range(3):
        for j in range(bins):
            base = scales[j]
            for f in factors:
                scales[j] = base * f
                v = loss(scales)
                if v < best - 1e-12:
                    best, base = v, scales[j]
            scales[j] = base
    return [float(c) for c in scales]


def _balanced_scale(scores: np.ndarray) -> float:
    """c minimising max(|F(c) - 68.3 %|/5 %, |F(2c) - 95.4 %|/3 %) over the empirical scores F."""
    if scores.size == 0:
        return 1.0
    best_c, best_loss = float(np.quantile(scores, ONE_SIGMA)), math.inf
    for c in np.quantile(scores, np.linspace(0.55, 0.9, 141)):
        f1, f2 = float(np.mean(scores <= c)), float(np.mean(scores <= 2 * c))
        loss = max(abs(f1 - ONE_SIGMA) / TOLERANCE[0], abs(f2 - TWO_SIGMA) / TOLERANCE[1])
        if loss < best_loss and c > 0:
            best_c, best_loss = float(c), loss
    return best_c if best_c > 0 else 1.0


def coverage(observed: np.ndarray, predicted: np.ndarray, uncertainty: np.ndarray) -> dict[str, Any]:
    """Share of |predicted - observed| within ±1u and ±2u, overall and per tercile of the observed value."""
    y, p, u = (np.asarray(v, dtype=float) for v in (observed, predicted, uncertainty))
    err = np.abs(p - y)
    cuts = np.quantile(y, [1 / 3, 2 / 3])
    tercile = np.searchsorted(cuts, y, side="right")

    def share(mask: np.ndarray) -> list[float | None]:
        if not mask.any():
            return [None, None]
        return [round(float(np.mean(err[mask] <= u[mask])), 4), round(float(np.mean(err[mask] <= 2 * u[mask])), 4)]

    return {"n": int(y.shape[0]), "one_sigma": share(np.ones_like(y, dtype=bool))[0],
            "two_sigma": share(np.ones_like(y, dtype=bool))[1],
            "terciles": [{"range": [float(y[tercile == j].min()), float(y[tercile == j].max())],
                          "one_sigma": share(tercile == j)[0], "two_sigma": share(tercile == j)[1]}
                         for j in range(3) if (tercile == j).any()]}
