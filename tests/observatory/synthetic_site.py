"""A synthetic monitored site whose true SOC stock trend is known: for report, lab and filter tests.

Two layers (0-15 cm: probes nir-1 and teros-1; 15-30 cm: nir-2), daily
calibrated SOC from 2023-03-01 for three years, rising linearly in each
layer plus white noise, daily moisture and temperature on teros-1, one
suspect day a month. With the bulk densities of SITES_TOML the true stock
rate to 30 cm is TRUE_RATE Mg C/ha/yr (calibration.stock: SOC × BD ×
thickness × (1 - coarse)).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from humus.records import Observation, QualityFlag, Source

DAY = 86400 * 10**9
T0 = 1_677_628_800 * 10**9            # 2023-03-01T00:00:00Z
YEARS = 3
SOC0 = {"nir-1": 2.0, "nir-2": 1.2}    # %
SLOPE = {"nir-1": 0.012, "nir-2": 0.007}   # % per year
NOISE = 0.05                           # % (sd of one daily reading)
STATED_U = 0.25                        # % (the model's stated standard uncertainty)
BD = {"nir-1": 1.30, "nir-2": 1.45}
COARSE = {"nir-1": 0.05, "nir-2": 0.0}
TRUE_RATE = sum(SLOPE[p] * BD[p] * 15 * (1 - COARSE[p]) for p in SLOPE)     # Mg C/ha/yr
TRUE_BASELINE = sum(SOC0[p] * BD[p] * 15 * (1 - COARSE[p]) for p in SOC0)  # Mg C/ha at T0

SITES_TOML = """
[sites.north-field]
name = "North field"
baseline = 2023-03-01
latitude = 48.85
longitude = 2.35

[[sites.north-field.layers]]
top_cm = 0
bottom_cm = 15
coarse_fraction = 0.05
probes = ["nir-1", "teros-1"]
bulk_density = [ { date = 2023-03-01, value = 1.30, uncertainty = 0.05 } ]

[[sites.north-field.layers]]
top_cm = 15
bottom_cm = 30
probes = ["nir-2"]
bulk_density = [ { date = 2023-03-01, value = 1.45, uncertainty = 0.05 } ]

[sites.south-field]
name = "South field"
baseline = 2023-03-01

[[sites.south-field.layers]]
top_cm = 0
bottom_cm = 30
probes = ["nir-9"]
bulk_density = [ { date = 2023-03-01, value = 1.40, uncertainty = 0.05 } ]
"""


def observations(seed: int = 7, site: str = "north-field") -> list[Observation]:
    rng = np.random.default_rng(seed)
    days = YEARS * 365
    out = []
    for probe, depth in (("nir-1", 5.0), ("nir-2", 20.0)):
        t_years = np.arange(days) / 365.25
        soc = SOC0[probe] + SLOPE[probe] * t_years + rng.normal(0, NOISE, days)
        for d in range(days):
            flag = QualityFlag.SUSPECT if d % 30 == 7 else QualityFlag.PASS
            out.append(Observation(site, "gw-1", probe, "soc", T0 + d * DAY + 12 * 3600 * 10**9, float(soc[d]), "%",
                                   depth_cm=depth, uncertainty=STATED_U, flag=flag,
                                   flag_test="applicability_domain" if flag is QualityFlag.SUSPECT else None,
                                   source=Source.CALIBRATED, model_id="soc-pls", model_version="1"))
    for d in range(days):
        season = math.sin(2 * math.pi * d / 365.25)
        t = T0 + d * DAY + 12 * 3600 * 10**9
        out.append(Observation(site, "gw-1", "teros-1", "vwc", t, 0.25 - 0.08 * season, "m3/m3", depth_cm=10.0,
                               uncertainty=0.02, flag=QualityFlag.PASS, source=Source.CALIBRATED,
                               model_id="teros12-vwc-mineral", model_version="meter-18224-eq5"))
        missing = d % 97 == 5
        out.append(Observation(site, "gw-1", "teros-1", "soil_temp", t, math.nan if missing else 11 + 8 * season,
                               "degC", depth_cm=10.0, flag=QualityFlag.MISSING if missing else QualityFlag.PASS,
                               flag_test="timeout" if missing else None))
    return out


def second_site(seed: int = 11) -> list[Observation]:
    """south-field: one 0-30 cm layer, flat SOC (no trend), a year and a half of data."""
    rng = np.random.default_rng(seed)
    days = 540
    soc = 1.5 + rng.normal(0, NOISE, days)
    return [Observation("south-field", "gw-2", "nir-9", "soc", T0 + d * DAY, float(soc[d]), "%", depth_cm=15.0,
                        uncertainty=STATED_U, flag=QualityFlag.PASS, source=Source.CALIBRATED, model_id="soc-pls",
                        model_version="1") for d in range(days)]


def write_sites(directory: Path) -> Path:
    path = directory / "sites.toml"
    path.write_text(SITES_TOML)
    return path


def lab_csv(directory: Path) -> Path:
    """Cores of both north-field layers at two dates, close to the sensors' truth (same scale)."""
    rows = ["site,layer,date,soc_percent,bulk_density,soc_uncertainty,bd_uncertainty,core"]
    for date, years in (("2023-09-01", 0.5), ("2025-09-01", 2.5)):
        for probe, layer in (("nir-1", "0-15"), ("nir-2", "15-30")):
            soc = SOC0[probe] + SLOPE[probe] * years
            for core, delta in (("a", 0.05), ("b", -0.04)):
                rows.append(f"north-field,{layer},{date},{soc + delta:.3f},{BD[probe]},0.1,0.04,{core}")
    path = directory / "cores.csv"
    path.write_text("\n".join(rows) + "\n")
    return path
