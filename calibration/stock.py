"""Soil organic carbon stocks: per layer, cumulative to a depth, and at equivalent soil mass.

Layer stock (Mg C/ha) = SOC (%, g/100 g fine earth) × BD (g/cm³, fine-earth
bulk density) × thickness (cm) × (1 - coarse fragments, volume fraction):
units g/100 g · g/cm³ · cm = 10⁻² g C/cm² = 1 Mg C/ha. FAO (2020) *A protocol
for measurement, monitoring, reporting and verification of soil organic
carbon in agricultural landscapes* (GSOC-MRV), Eq. 1; Poeplau, C. et al.
(2017) SOIL 3, 61-66, on why coarse fragments must be removed.
Fine-soil mass (Mg/ha) = 100 × BD × thickness × (1 - coarse).

Uncertainty: first-order propagation with independent relative errors
(JCGM 100:2008, GUM, 5.1.2); layers are summed in quadrature.

Equivalent soil mass (ESM): comparing stocks to a fixed depth confounds
carbon change with bulk-density change (tillage, compaction). ESM compares
the carbon in the same mass of fine soil: cumulative SOC is interpolated
against cumulative soil mass at a reference mass (Ellert, B.H., Bettany,
J.R. 1995, Can. J. Soil Sci. 75, 529-538; Wendt, J.W., Hauser, S. 2013,
Eur. J. Soil Sci. 64, 58-65; von Haden, A.C., Yang, W.H., DeLucia, E.H.
2020, Global Change Biology 26, 3759-3770). Interpolation here is linear in
cumulative mass, i.e. SOC concentration constant within each sampled layer;
Wendt & Hauser's cubic spline differs only between layer boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from calibration.calibrated import Calibrated
from humus.records import QualityFlag

BD_LIMITS = (0.05, 2.65)
"""g/cm³: from peat to the particle density of quartz (nothing denser is soil)."""


@dataclass(frozen=True)
class Layer:
    """One sampled soil layer; depths in cm from the surface, SOC in %, BD in g/cm³."""

    top_cm: float
    bottom_cm: float
    soc_percent: float
    bulk_density: float
    coarse_fraction: float = 0.0
    soc_uncertainty: float = 0.0
    bd_uncertainty: float = 0.0

    @property
    def thickness_cm(self) -> float:
        return self.bottom_cm - self.top_cm

    @property
    def soil_mass(self) -> float:
        """Fine-soil mass, Mg/ha."""
        return 100.0 * self.bulk_density * self.thickness_cm * (1.0 - self.coarse_fraction)

    def problems(self) -> list[str]:
        out = []
        if not self.bottom_cm > self.top_cm >= 0:
            out.append(f"layer {self.top_cm}-{self.bottom_cm} cm: expected 0 <= top < bottom")
        if not 0 <= self.soc_percent <= 100:
            out.append(f"SOC {self.soc_percent} %: expected 0-100")
        if not 0 <= self.coarse_fraction < 1:
            out.append(f"coarse fraction {self.coarse_fraction}: expected 0 <= fraction < 1")
        if self.soc_uncertainty < 0 or self.bd_uncertainty < 0:
            out.append("uncertainties must be >= 0")
        return out


def layer_stock(layer: Layer) -> Calibrated:
    """SOC stock of one layer, Mg C/ha, with its standard uncertainty.

    FAIL for impossible inputs (raises nothing: the flag says why); SUSPECT for
    a bulk density outside BD_LIMITS or SOC above 58 % (pure organic matter
    holds about 58 % C, the van Bemmelen factor).
    """
    problems = layer.problems()
    value = layer.soc_percent * layer.bulk_density * layer.thickness_cm * (1.0 - layer.coarse_fraction)
    rel = math.hypot(layer.soc_uncertainty / layer.soc_percent if layer.soc_percent else 0.0,
                     layer.bd_uncertainty / layer.bulk_density if layer.bulk_density else 0.0)
    unc = abs(value) * rel
    if layer.soc_percent == 0:
        unc = math.hypot(unc, layer.soc_uncertainty * layer.bulk_density * layer.thickness_cm
                         * (1.0 - layer.coarse_fraction))
    if problems:
        return Calibrated(value, unc, QualityFlag.FAIL, "stock_inputs")
    if not BD_LIMITS[0] <= layer.bulk_density <= BD_LIMITS[1]:
        return Calibrated(value, unc, QualityFlag.SUSPECT, "bulk_density_range")
    if layer.soc_percent > 58.0:
        return Calibrated(value, unc, QualityFlag.SUSPECT, "soc_range")
    return Calibrated(value, unc, QualityFlag.PASS, "")


def cumulative_stock(layers: Sequence[Layer], depth_cm: float = 30.0) -> Calibrated:
    """Stock from the surface to `depth_cm` (Mg C/ha), prorating a layer that crosses it.

    Layers must be contiguous from 0 cm; a gap, an overlap or a profile
    shallower than `depth_cm` gives FAIL (no silent extrapolation).
    """
    ordered = sorted(layers, key=lambda l: l.top_cm)
    total, var = 0.0, 0.0
    flag, test = QualityFlag.PASS, ""
    expected_top = 0.0
    for layer in ordered:
        if layer.top_cm >= depth_cm:
            break
        if abs(layer.top_cm - expected_top) > 1e-9:
            return Calibrated(math.nan, math.nan, QualityFlag.FAIL, "layers_not_contiguous")
        part = Layer(layer.top_cm, min(layer.bottom_cm, depth_cm), layer.soc_percent, layer.bulk_density,
                     layer.coarse_fraction, layer.soc_uncertainty, layer.bd_uncertainty)
        s = layer_stock(part)
        total += s.value
        var += s.uncertainty**2
        if s.flag is not QualityFlag.PASS and QualityFlag.worst(flag, s.flag) is s.flag:
            flag, test = s.flag, s.flag_test
        expected_top = layer.bottom_cm
    if expected_top < depth_cm - 1e-9:
        return Calibrated(total, math.sqrt(var), QualityFlag.FAIL, "profile_too_shallow")
    return Calibrated(total, math.sqrt(var), flag, test)


def equivalent_mass_stock(layers: Sequence[Layer], reference_mass: float) -> Calibrated:
    """SOC (Mg C/ha) in the top `reference_mass` Mg/ha of fine soil.

    Typically the reference is the baseline's fine-soil mass to 30 cm, and
    each later profile is evaluated at that same mass. Beyond the sampled
    mass the deepest layer's concentration is extended and the result is
    flagged SUSPECT (``esm_extrapolated``): sample deeper than the reference.
    """
    if not reference_mass > 0:
        raise ValueError(f"reference soil mass {reference_mass}: expected > 0 Mg/ha")
    ordered = sorted(layers, key=lambda l: l.top_cm)
    remaining = reference_mass
    total, var = 0.0, 0.0
    for layer in ordered:
        if layer.problems():
            return Calibrated(math.nan, math.nan, QualityFlag.FAIL, "stock_inputs")
        mass = layer.soil_mass
        take = min(mass, remaining)
        s = layer_stock(layer)
        total += s.value * take / mass
        var += (s.uncertainty * take / mass) ** 2
        remaining -= take
        if remaining <= 0:
            return Calibrated(total, math.sqrt(var), QualityFlag.PASS, "")
    if not ordered:
        raise ValueError("no layers")
    deepest = ordered[-1]
    total += remaining * deepest.soc_percent / 100.0
    rel = deepest.soc_uncertainty / deepest.soc_percent if deepest.soc_percent else 0.0
    var += (remaining * deepest.soc_percent / 100.0 * rel) ** 2
    return Calibrated(total, math.sqrt(var), QualityFlag.SUSPECT, "esm_extrapolated")


def soil_mass_to_depth(layers: Sequence[Layer], depth_cm: float = 30.0) -> float:
    """Fine-soil mass (Mg/ha) from the surface to `depth_cm`: the usual ESM reference."""
    total = 0.0
    for layer in sorted(layers, key=lambda l: l.top_cm):
        if layer.top_cm >= depth_cm:
            break
        frac = (min(layer.bottom_cm, depth_cm) - layer.top_cm) / layer.thickness_cm
        total += layer.soil_mass * frac
    return total
