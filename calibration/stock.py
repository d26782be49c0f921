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
the carbon in the same mass of soil: cumulative SOC is interpolated
against cumulative soil mass at a reference mass (Ellert, B.H., Bettany,
J.R. 1995, Can. J. Soil Sci. 75, 529-538; Wendt, J.W., Hauser, S. 2013,
Eur. J. Soil Sci. 64, 58-65; von Haden, A.C., Yang, W.H., DeLucia, E.H.
2020, Global Change Biology 26, 3759-3770), linearly or by a monotone
cubic, on fine-soil or mineral-soil mass (`equivalent_mass_stock`).
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
    som_percent: float | None = None
    """Measured soil organic matter (%, e.g. loss on ignition), for the mineral-mass ESM basis."""

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
        if self.som_percent is not None and not 0 <= self.som_percent < 100:
            out.append(f"SOM {self.som_percent} %: expected 0 <= SOM < 100")
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


SOM_PER_SOC = 2.0
"""Organic matter per unit organic carbon when no measured SOM is given: Pribyl, D.W. (2010) A critical review of
the conventional SOC to SOM conversion factor. Geoderma 156, 75-83 (2 is closer to most soils than 1.724)."""
ESM_BASES = ("fine_soil", "mineral")
ESM_INTERPOLATIONS = ("linear", "pchip")


@dataclass(frozen=True, slots=True)
class EsmStock(Calibrated):
    """An equivalent-soil-mass stock with the choices that made it (for the record of a carbon audit)."""

    basis: str = "fine_soil"
    interpolation: str = "linear"
    reference_mass: float = 0.0
    som_source: str = ""              # mineral basis: "measured", "estimated (SOM = 2 SOC)" or both


def basis_mass(layer: Layer, basis: str = "fine_soil", som_per_soc: float = SOM_PER_SOC) -> float:
    """Mg/ha of the layer on the ESM basis: fine soil, or its mineral part (fine soil minus organic matter)."""
    if basis == "fine_soil":
        return layer.soil_mass
    som = layer.som_percent if layer.som_percent is not None else som_per_soc * layer.soc_percent
    return layer.soil_mass * (1.0 - som / 100.0)


def equivalent_mass_stock(layers: Sequence[Layer], reference_mass: float, *, basis: str = "fine_soil",
                          interpolation: str = "linear", som_per_soc: float = SOM_PER_SOC) -> EsmStock:
    """SOC (Mg C/ha) in the top `reference_mass` Mg/ha of fine soil (or of mineral soil, `basis="mineral"`).

    Typically the reference is the baseline's mass to 30 cm on the same basis
    (`soil_mass_to_depth(baseline, 30, basis=...)`), and each later profile is
    evaluated at that same mass. Cumulative carbon is interpolated against
    cumulative mass through (0, 0) and each layer's bottom: "linear" (carbon
    concentration constant within a layer; Ellert & Bettany 1995) or "pchip",
    a monotone piecewise cubic Hermite interpolant (Fritsch, F.N., Carlson,
    R.E. 1980, SIAM J. Numer. Anal. 17, 238-246; the smooth cumulative curve
    of Wendt & Hauser 2013 and von Haden et al. 2020, kept monotone as
    cumulative carbon must be). Mineral basis (von Haden et al. 2020): the
    mass compared excludes organic matter, which itself changes with the
    carbon being measured; SOM is the layer's measured `som_percent` or
    `som_per_soc` × SOC.

    Flags: FAIL for impossible layers (`stock_inputs`) or layers that are not
    contiguous from 0 cm (`layers_not_contiguous`, as `cumulative_stock`);
    the worst flag of the layers used is carried (e.g. SUSPECT
    `bulk_density_range`); beyond the sampled mass the deepest layer's
    concentration is extended and the result is SUSPECT `esm_extrapolated`.
    Uncertainty: first-order propagation (GUM, JCGM 100:2008, 5.1.2) with
    sensitivity coefficients taken numerically from this very function, so
    the partial cancellation of bulk-density errors (a denser layer holds
    more carbon but leaves less mass to take from the layer below) is kept.
    """
    if not reference_mass > 0:
        raise ValueError(f"reference soil mass {reference_mass}: expected > 0 Mg/ha")
    if basis not in ESM_BASES:
        raise ValueError(f"ESM basis {basis!r}: expected one of {', '.join(ESM_BASES)}")
    if interpolation not in ESM_INTERPOLATIONS:
        raise ValueError(f"ESM interpolation {interpolation!r}: expected one of {', '.join(ESM_INTERPOLATIONS)}")
    if not layers:
        raise ValueError("no layers")
    ordered = sorted(layers, key=lambda l: l.top_cm)
    som_source = ""
    if basis == "mineral":
        kinds = {"measured" if l.som_percent is not None else f"estimated (SOM = {som_per_soc:g} SOC)"
                 for l in ordered}
        som_source = " and ".join(sorted(kinds))

    def result(value: float, unc: float, flag: QualityFlag, test: str) -> EsmStock:
        return EsmStock(value, unc, flag, test, basis, interpolation, float(reference_mass), som_source)

    for layer in ordered:
        if layer.problems() or (basis == "mineral" and not 0 <= basis_mass(layer, basis, som_per_soc)):
            return result(math.nan, math.nan, QualityFlag.FAIL, "stock_inputs")
    expected_top = 0.0
    for layer in ordered:
        if abs(layer.top_cm - expected_top) > 1e-9:
            return result(math.nan, math.nan, QualityFlag.FAIL, "layers_not_contiguous")
        expected_top = layer.bottom_cm
    soc = [l.soc_percent for l in ordered]
    bd = [l.bulk_density for l in ordered]
    value, used, extrapolated = _esm_value(ordered, soc, bd, reference_mass, basis, interpolation, som_per_soc)
    var = 0.0
    for j, layer in enumerate(ordered):
        for values, u in ((soc, layer.soc_uncertainty), (bd, layer.bd_uncertainty)):
            if u > 0:
                h = 1e-6 * max(abs(values[j]), 1e-3)
                up, down = list(values), list(values)
                up[j] += h
                down[j] -= h
                f_up = _esm_value(ordered, up if values is soc else soc, up if values is bd else bd,
                                  reference_mass, basis, interpolation, som_per_soc)[0]
                f_down = _esm_value(ordered, down if values is soc else soc, down if values is bd else bd,
                                    reference_mass, basis, interpolation, som_per_soc)[0]
                var += ((f_up - f_down) / (2 * h) * u) ** 2
    flag, test = QualityFlag.PASS, ""
    for layer in ordered[:used]:
        s = layer_stock(layer)
        if s.flag is not QualityFlag.PASS and QualityFlag.worst(flag, s.flag) is s.flag and s.flag is not flag:
            flag, test = s.flag, s.flag_test
    if extrapolated and QualityFlag.worst(flag, QualityFlag.SUSPECT) is QualityFlag.SUSPECT:
        flag, test = QualityFlag.SUSPECT, test or "esm_extrapolated"
    return result(value, math.sqrt(var), flag, test)


def _esm_value(ordered: list[Layer], soc: list[float], bd: list[float], reference_mass: float, basis: str,
               interpolation: str, som_per_soc: float) -> tuple[float, int, bool]:
    """(carbon at the reference mass, layers used, extrapolated) for given SOC and BD values per layer."""
    mass, carbon = [0.0], [0.0]
    for layer, c, d in zip(ordered, soc, bd):
        fine = 100.0 * d * layer.thickness_cm * (1.0 - layer.coarse_fraction)
        if basis == "mineral":
            som = layer.som_percent if layer.som_percent is not None else som_per_soc * c
            m = fine * (1.0 - som / 100.0)
        else:
            m = fine
        mass.append(mass[-1] + m)
        carbon.append(carbon[-1] + c * fine / 100.0)
    if reference_mass > mass[-1]:
        # Beyond the sampled mass: the deepest layer's carbon per unit of basis mass, extended.
        per_mass = (carbon[-1] - carbon[-2]) / (mass[-1] - mass[-2]) if mass[-1] > mass[-2] else 0.0
        return carbon[-1] + (reference_mass - mass[-1]) * per_mass, len(ordered), True
    used = next(i for i in range(1, len(mass)) if mass[i] >= reference_mass)
    if interpolation == "linear" or len(mass) < 3:
        j = used
        frac = (reference_mass - mass[j - 1]) / (mass[j] - mass[j - 1])
        return carbon[j - 1] + frac * (carbon[j] - carbon[j - 1]), used, False
    return float(pchip(mass, carbon, reference_mass)), used, False


def pchip(x: Sequence[float], y: Sequence[float], at: float) -> float:
    """Monotone piecewise cubic Hermite interpolation (Fritsch & Carlson 1980; slopes by the weighted harmonic
    mean of Fritsch, F.N., Butland, J. 1984, SIAM J. Sci. Stat. Comput. 5, 300-304, end slopes by the
    shape-preserving three-point formula), as scipy.interpolate.PchipInterpolator."""
    xs, ys = list(map(float, x)), list(map(float, y))
    n = len(xs)
    h = [xs[i + 1] - xs[i] for i in range(n - 1)]
    delta = [(ys[i + 1] - ys[i]) / h[i] for i in range(n - 1)]
    d = [0.0] * n
    for i in range(1, n - 1):
        if delta[i - 1] * delta[i] > 0:
            w1, w2 = 2 * h[i] + h[i - 1], h[i] + 2 * h[i - 1]
            d[i] = (w1 + w2) / (w1 / delta[i - 1] + w2 / delta[i])
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    k = min(max(next((i for i in range(n - 1) if at <= xs[i + 1]), n - 2), 0), n - 2)
    t = (at - xs[k]) / h[k]
    h00, h10 = (1 + 2 * t) * (1 - t) ** 2, t * (1 - t) ** 2
    h01, h11 = t * t * (3 - 2 * t), t * t * (t - 1)
    return h00 * ys[k] + h10 * h[k] * d[k] + h01 * ys[k + 1] + h11 * h[k] * d[k + 1]


def _end_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if d * m0 <= 0:
        return 0.0
    if m0 * m1 <= 0 and abs(d) > abs(3 * m0):
        return 3 * m0
    return d


def soil_mass_to_depth(layers: Sequence[Layer], depth_cm: float = 30.0, *, basis: str = "fine_soil",
                       som_per_soc: float = SOM_PER_SOC) -> float:
    """Soil mass (Mg/ha) from the surface to `depth_cm` on the ESM `basis`: the usual ESM reference."""
    if basis not in ESM_BASES:
        raise ValueError(f"ESM basis {basis!r}: expected one of {', '.join(ESM_BASES)}")
    total = 0.0
    for layer in sorted(layers, key=lambda l: l.top_cm):
        if layer.top_cm >= depth_cm:
            break
        frac = (min(layer.bottom_cm, depth_cm) - layer.top_cm) / layer.thickness_cm
        total += basis_mass(layer, basis, som_per_soc) * frac
    return total
