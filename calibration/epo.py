"""External Parameter Orthogonalisation: remove the soil-moisture effect from spectra.

Roger, J.-M., Chauchard, F., Bellon-Maurel, V. (2003) EPO-PLS external
parameter orthogonalisation of PLS application to temperature-independent
measurement of sugar content of intact fruits. Chemometrics and Intelligent
Laboratory Systems 66, 191-204; applied to soil moisture by Minasny, B.,
McBratney, A.B., Bellon-Maurel, V., Roger, J.-M., Gobrecht, A., Ferrand, L.,
Joalland, S. (2011) Removing the effect of soil moisture from NIR diffuse
reflectance spectra for the prediction of soil organic carbon. Geoderma
167-168, 118-124.

D holds the differences wet - dry of paired spectra (after the same
preprocessing the model uses). The first g right singular vectors V of D
(eigenvectors of D'D) span the moisture effect; P = I - V V' projects it out.
D is not centred: its mean is the bulk of the moisture effect. P is applied
to the calibration spectra before fitting PLS and to every new spectrum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Epo:
    """A fitted EPO projection, stored as its g orthonormal directions V (p, g)."""

    directions: np.ndarray

    @property
    def n_components(self) -> int:
        return int(self.directions.shape[1])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x P = x - (x V) V' for one spectrum (p,) or many (n, p); never forms the p x p matrix."""
        x = np.asarray(x, dtype=float)
        v = self.directions
        return x - (x @ v) @ v.T

    def projection(self) -> np.ndarray:
        """The (p, p) matrix P = I - V V'."""
        v = self.directions
        return np.eye(v.shape[0]) - v @ v.T


def fit_epo(wet: np.ndarray, dry: np.ndarray, n_components: int) -> Epo:
    """Fit EPO from paired spectra: row i of `wet` and of `dry` are the same soil."""
    wet, dry = np.asarray(wet, dtype=float), np.asarray(dry, dtype=float)
    if wet.shape != dry.shape or wet.ndim != 2:
        raise ValueError(f"paired spectra need the same 2-D shape, got wet {wet.shape} and dry {dry.shape}")
    g = int(n_components)
    if not 1 <= g <= min(wet.shape):
        raise ValueError(f"{g} EPO components: expected 1 to {min(wet.shape)} for {wet.shape[0]} pairs")
    _, _, vt = np.linalg.svd(wet - dry, full_matrices=False)
    return Epo(vt[:g].T.copy())
