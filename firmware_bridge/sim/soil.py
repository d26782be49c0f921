"""A seeded soil the simulated probes all measure: moisture, temperature, EC, carbon.

Every simulator reads the same `SoilModel`, so a Modbus moisture probe and a
NIR spectrometer in one simulated plot agree: when it rains, the moisture
rises and the spectra darken at the water bands. The model is a pure
function of (seed, time): the same seed gives the same soil, byte for byte.

The physics is deliberately simple but shaped like the literature:

- Temperature: a damped diurnal sine, amplitude ``A0 * exp(-z/d)`` and phase
  lag ``z/d`` with damping depth d (Hillel, *Environmental Soil Physics*,
  1998, ch. 12, eq. 12.19).
- Moisture: rain events (Poisson in time) raise volumetric water content
  towards field capacity; between events it dries exponentially towards the
  wilting point (a first-order drydown, McColl et al. 2017, GRL 44:3682).
- Bulk EC: Archie-type power law of water-filled porosity, with the 2 %/°C
  temperature dependence of solution conductivity (Rhoades et al. 1976,
  SSSAJ 40:651; USDA Handbook 60 temperature factor).
- Reflectance: Beer-Lambert-like absorbance terms added in log space:
  a dry mineral soil continuum, organic carbon darkening with C-H/C=O
  features near 1700 and 2300 nm (Stenberg et al. 2010, Adv. Agron. 107:163,
  table 2), and water darkening plus O-H bands near 970, 1200, 1450 and
  1940 nm following the exponential moisture model of Lobell & Asner 2002
  (SSSAJ 66:722).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class SoilState:
    """The soil at one instant and one depth."""

    vwc: float              # volumetric water content, m3/m3
    temperature_c: float    # °C
    ec_us_cm: float         # bulk electrical conductivity, µS/cm
    soc_percent: float      # soil organic carbon, % mass


class SoilModel:
    """Deterministic soil over time for one plot; `state(t_s)` with t in seconds since the start."""

    def __init__(self, seed: int = 0, *, soc_percent: float | None = None, depth_cm: float = 10.0,
                 mean_temp_c: float = 14.0, surface_amplitude_c: float = 8.0, damping_depth_cm: float = 12.0,
                 wilting_point: float = 0.08, field_capacity: float = 0.36, porosity: float = 0.48,
                 drydown_days: float = 4.0, rain_per_day: float = 0.25, horizon_days: int = 400) -> None:
        rng = random.Random(seed)
        self.seed = seed
        self.soc_percent = soc_percent if soc_percent is not None else round(rng.uniform(0.8, 4.0), 2)
        self.depth_cm = depth_cm
        self.mean_temp_c = mean_temp_c + rng.uniform(-2.0, 2.0)
        self.amplitude_c = surface_amplitude_c * math.exp(-depth_cm / damping_depth_cm)
        self.phase = depth_cm / damping_depth_cm          # radians of lag (Hillel eq. 12.19)
        self.wilting_point = wilting_point
        self.field_capacity = field_capacity
        self.porosity = porosity
        self.tau_s = drydown_days * DAY_S
        self.horizon_s = horizon_days * DAY_S
        # Rain events: exponential gaps (Poisson process), amounts as fraction of the gap to field capacity.
        events: list[tuple[float, float]] = []
        t = 0.0
        while t < self.horizon_s and len(events) < 10_000:
            t += rng.expovariate(rain_per_day / DAY_S)
            events.append((t, rng.uniform(0.2, 0.9)))
        self._rain = events
        self._v0 = rng.uniform(wilting_point + 0.05, field_capacity - 0.03)

    # -- state -------------------------------------------------------------
    def vwc(self, t_s: float) -> float:
        """Volumetric water content at t: drydowns between rain events (cycles after the horizon)."""
        t = t_s % self.horizon_s if t_s >= 0 else 0.0
        v, last = self._v0, 0.0
        for when, fraction in self._rain:
            if when > t:
                break
            v = self._dry(v, when - last)
            v += fraction * (self.field_capacity - v)
            last = when
        return self._dry(v, t - last)

    def _dry(self, v: float, dt: float) -> float:
        return self.wilting_point + (v - self.wilting_point) * math.exp(-dt / self.tau_s)

    def temperature_c(self, t_s: float) -> float:
        """Diurnal sine damped with depth, warmest mid-afternoon at the surface (t=0 is midnight)."""
        omega = 2 * math.pi / DAY_S
        return self.mean_temp_c + self.amplitude_c * math.sin(omega * t_s - math.pi * 0.75 - self.phase)

    def ec_us_cm(self, vwc: float, temperature_c: float) -> float:
        """Archie-type bulk EC (exponent 2) with ~2 %/°C temperature dependence (Rhoades et al. 1976)."""
        saturation = min(1.0, max(0.0, vwc / self.porosity))
        ec25 = 1800.0 * saturation ** 2 + 40.0
        return ec25 * (1 + 0.02 * (temperature_c - 25.0))

    def state(self, t_s: float) -> SoilState:
        v = self.vwc(t_s)
        temp = self.temperature_c(t_s)
        return SoilState(vwc=v, temperature_c=temp, ec_us_cm=self.ec_us_cm(v, temp), soc_percent=self.soc_percent)


# -- spectra ------------------------------------------------------------------
def _band(wl: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((wl - centre) / width) ** 2)


def reflectance(wavelengths_nm: np.ndarray | list[float] | tuple[float, ...], soc_percent: float,
                vwc: float) -> np.ndarray:
    """Diffuse reflectance (0-1) of the simulated soil at each wavelength.

    R = exp(-(A_dry + soc * A_c + vwc * A_w)): absorbances add, so log(1/R)
    is linear in carbon and water, the premise of PLS calibrations of soil
    spectra (Stenberg et al. 2010) and of moisture removal by EPO (Minasny
    et al. 2011, Geoderma 167:118). Valid from 350 to 2500 nm.
    """
    wl = np.asarray(wavelengths_nm, dtype=float)
    x = (wl - 350.0) / 2150.0
    # Dry mineral continuum: dark in the blue, bright and flat in the SWIR; clay Al-OH at 2200 nm.
    a_dry = (1.9 * np.exp(-4.0 * x) + 0.55 + 0.10 * _band(wl, 1415, 25) + 0.08 * _band(wl, 1915, 30)
             + 0.12 * _band(wl, 2205, 25) + 0.06 * _band(wl, 2345, 35))
    # Organic carbon: broad darkening strongest in the visible, C-H near 1730/2310 nm, C=O near 2270.
    a_c = (0.10 + 0.12 * np.exp(-3.0 * x) + 0.05 * _band(wl, 1730, 30) + 0.04 * _band(wl, 1700, 25)
           + 0.07 * _band(wl, 2310, 30) + 0.04 * _band(wl, 2270, 25) + 0.03 * _band(wl, 1100, 60))
    # Water: overall darkening plus O-H overtone/combination bands.
    a_w = (1.2 + 0.6 * _band(wl, 970, 40) + 0.9 * _band(wl, 1200, 50) + 3.5 * _band(wl, 1450, 45)
           + 5.5 * _band(wl, 1940, 55) + 1.0 * np.clip((wl - 2300) / 200, 0, 1))
    return np.exp(-(a_dry + soc_percent * a_c + vwc * a_w))


SOIL_PARAMS = ("soc_percent", "depth_cm")


def firmware_params(model: str, seed: int, params: dict, allowed: tuple[str, ...]) -> dict:
    """Check `humus sim --param` names for `model`; turn soil parameters into a shared `soil=` model.

    Returns the keyword arguments for the firmware class. A wrong name is a
    ValueError naming the model, the parameter and the known ones.
    """
    known = tuple(allowed) + SOIL_PARAMS + ("soil",)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"unknown {model} parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    out = {k: v for k, v in params.items() if k not in SOIL_PARAMS}
    soil_kw = {k: float(params[k]) for k in SOIL_PARAMS if k in params}
    if soil_kw and "soil" in params:
        raise ValueError(f"{model}: give either soil= or {', '.join(soil_kw)}, not both")
    if soil_kw:
        out["soil"] = SoilModel(seed, **soil_kw)
    return out
