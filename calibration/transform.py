"""Target transforms for skewed soil properties: fit PLS on √y, report y.

Soil carbon is right-skewed (most soils 0.5-3 %, a few organic ones above
10 %). A linear model fitted on y spends its components on the few high
values and shrinks them towards the mean; on √y (the variance-stabilising
transform of a Poisson-like property, Bartlett, M.S. 1947, Biometrics 3,
39-52) the relation to the spectra is closer to linear over the whole range.
Back-transform with the bias correction E[y] = E[√y]² + Var(√y)
(the second moment of the predicted √y, whose variance is estimated by the
model's cross-validated mean squared error on the √y scale).

The log transform was tried and rejected (docs/calibration.md): exponentiating
an extrapolated prediction of a spectral outlier gives values tens of times
too large.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

TRANSFORMS = ("none", "sqrt")


@dataclass(frozen=True)
class TargetTransform:
    """`name` ("none" or "sqrt") and the residual variance on the transformed scale (bias correction)."""

    name: str = "none"
    residual_var: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in TRANSFORMS:
            raise ValueError(f"target transform {self.name!r}: expected one of {', '.join(TRANSFORMS)}")
        if not (self.residual_var >= 0 and np.isfinite(self.residual_var)):
            raise ValueError(f"target transform residual variance {self.residual_var!r}: expected >= 0")

    def forward(self, y: Any) -> np.ndarray:
        """y on the scale the PLS model is fitted on; ValueError for a negative y under sqrt."""
        y = np.asarray(y, dtype=float)
        if self.name == "sqrt":
            if np.any(y < 0):
                raise ValueError("the sqrt target transform needs reference values >= 0")
            return np.sqrt(y)
        return y

    def inverse(self, v: Any) -> Any:
        """Back to the property's unit; for sqrt, max(v, 0)² + residual variance (never negative)."""
        if self.name == "sqrt":
            v = np.maximum(v, 0.0)
            return v * v + self.residual_var
        return v

    def to_meta(self) -> dict[str, Any]:
        return {"name": self.name, "residual_var": float(self.residual_var)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> "TargetTransform":
        """From a model description; absent (format version 1 files) means no transform."""
        if not meta:
            return cls()
        return cls(str(meta["name"]), float(meta.get("residual_var", 0.0)))
