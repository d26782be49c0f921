"""Partial least squares regression (PLS1, NIPALS) with cross-validated component choice.

NIPALS as in Wold, S., Sjöström, M., Eriksson, L. (2001) PLS-regression: a
basic tool of chemometrics. Chemometrics and Intelligent Laboratory Systems
58, 109-130 (single response: the weight vector is X'y normalised, one
iteration per component; X and y deflated by regression on the scores).
This is the same model scikit-learn's ``PLSRegression(scale=False)`` fits, so
its predictions match to numerical precision (tests/calibration).

Fitting and applying need numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlsFit:
    """A fitted PLS1 model with what prediction and domain statistics need.

    x_mean (p,), y_mean, weights W (p, k), loadings P (p, k), y_loadings q (k,),
    rotations R = W (P'W)^-1 (p, k) so scores are t = (x - x_mean) R,
    score_var (k,) the calibration scores' variances (ddof 1).
    """

    x_mean: np.ndarray
    y_mean: float
    weights: np.ndarray
    loadings: np.ndarray
    y_loadings: np.ndarray
    rotations: np.ndarray
    score_var: np.ndarray

    @property
    def n_components(self) -> int:
        return int(self.y_loadings.shape[0])

    @property
    def coef(self) -> np.ndarray:
        """Regression vector b: y = (x - x_mean) b + y_mean."""
        return self.rotations @ self.y_loadings

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=float) - self.x_mean) @ self.coef + self.y_mean

    def truncate(self, k: int) -> "PlsFit":
        """The nested model with the first `k` components (NIPALS models are nested)."""
        w, p = self.weights[:, :k], self.loadings[:, :k]
        return PlsFit(self.x_mean, self.y_mean, w, p, self.y_loadings[:k], _rotations(w, p), self.score_var[:k])


def fit_pls(x: np.ndarray, y: np.ndarray, n_components: int) -> PlsFit:
    """Fit PLS1 by NIPALS on centred (not scaled) X and y."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float).ravel()
    n, p = x.shape
    if y.shape[0] != n:
        raise ValueError(f"{n} spectra but {y.shape[0]} reference values")
    k = int(n_components)
    if not 1 <= k <= min(n - 1, p):
        raise ValueError(f"{k} components: expected 1 to {min(n - 1, p)} for {n} samples and {p} bands")
    x_mean, y_mean = x.mean(axis=0), float(y.mean())
    xk, yk = x - x_mean, y - y_mean
    w_all, p_all, q_all, t_all = np.zeros((p, k)), np.zeros((p, k)), np.zeros(k), np.zeros((n, k))
    for a in range(k):
        w = xk.T @ yk
        norm = np.linalg.norm(w)
        if norm < np.finfo(float).eps * max(1.0, np.abs(xk).max()):
            raise ValueError(f"PLS component {a + 1}: X has no variance left that correlates with y; "
                             f"use fewer components")
        w /= norm
        t = xk @ w
        tt = t @ t
        pl = xk.T @ t / tt
        q = yk @ t / tt
        xk = xk - np.outer(t, pl)
        yk = yk - t * q
        w_all[:, a], p_all[:, a], q_all[a], t_all[:, a] = w, pl, q, t
    return PlsFit(x_mean, y_mean, w_all, p_all, q_all, _rotations(w_all, p_all), t_all.var(axis=0, ddof=1))


def _rotations(w: np.ndarray, p: np.ndarray) -> np.ndarray:
    return w @ np.linalg.pinv(p.T @ w)


@dataclass(frozen=True)
class CrossValidation:
    """RMSECV per number of components (index 0 = 1 component) and the choice made."""

    rmsecv: np.ndarray
    n_components: int
    predictions: np.ndarray      # cross-validated predictions with the chosen components


def cross_validate(x: np.ndarray, y: np.ndarray, max_components: int, folds: int = 10,
                   seed: int = 0) -> CrossValidation:
    """K-fold cross-validation over 1..max_components; choose the minimum RMSECV.

    Folds are a seeded random partition (reproducible). The nested NIPALS
    models make one fit per fold enough for every component count.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float).ravel()
    n = y.shape[0]
    folds = max(2, min(folds, n))
    kmax = min(max_components, n - n // folds - 1, x.shape[1])
    order = np.random.default_rng(seed).permutation(n)
    preds = np.zeros((n, kmax))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        full = fit_pls(x[train], y[train], kmax)
        xc = x[test] - full.x_mean
        for k in range(1, kmax + 1):
            preds[test, k - 1] = xc @ full.truncate(k).coef + full.y_mean
    rmsecv = np.sqrt(np.mean((preds - y[:, None]) ** 2, axis=0))
    best = int(np.argmin(rmsecv)) + 1
    return CrossValidation(rmsecv, best, preds[:, best - 1])
