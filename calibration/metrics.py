"""Figures of merit for a calibration, as reported in soil spectroscopy.

RPD = SD(y) / RMSE (Williams, P.C. 1987, in *Near-Infrared Technology in the
Agricultural and Food Industries*); RPIQ = (Q3 - Q1) / RMSE (Bellon-Maurel,
V. et al. 2010, TrAC Trends in Analytical Chemistry 29, 1073-1081), which
suits the skewed distributions of soil carbon better than RPD.
"""

from __future__ import annotations

import numpy as np


def figures_of_merit(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """n, RMSE, R² (1 - SSE/SST), bias (mean predicted - observed), RPD and RPIQ."""
    y = np.asarray(observed, dtype=float).ravel()
    p = np.asarray(predicted, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.shape[0]} observed values but {p.shape[0]} predictions")
    n = int(y.shape[0])
    if n < 2:
        raise ValueError(f"figures of merit need at least 2 samples, got {n}")
    err = p - y
    rmse = float(np.sqrt(np.mean(err**2)))
    sst = float(np.sum((y - y.mean()) ** 2))
    q1, q3 = np.percentile(y, [25, 75])
    return {
        "n": n,
        "rmse": rmse,
        "r2": float(1.0 - np.sum(err**2) / sst) if sst > 0 else float("nan"),
        "bias": float(err.mean()),
        "rpd": float(y.std(ddof=1) / rmse) if rmse > 0 else float("inf"),
        "rpiq": float((q3 - q1) / rmse) if rmse > 0 else float("inf"),
    }
