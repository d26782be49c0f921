from pathlib import Path

import numpy as np
import pytest

from calibration.dataset import read_spectral_csv

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def nirsoil():
    """(wavelengths, absorbance spectra, Ciso) of the 120-sample test subset."""
    ds = read_spectral_csv(DATA / "nirsoil_subset.csv")
    return ds.wavelengths_nm, ds.spectra, ds.numeric("Ciso")


@pytest.fixture(scope="session")
def nirsoil_csv():
    return DATA / "nirsoil_subset.csv"


@pytest.fixture(scope="session")
def synthetic():
    """The `synthetic_spectra` generator."""
    return synthetic_spectra


def synthetic_spectra(n: int, seed: int = 0, bands: int = 120):
    """Smooth synthetic absorbance spectra whose carbon signal is known (for EPO and demo-sized fits)."""
    rng = np.random.default_rng(seed)
    wl = np.linspace(1000.0, 2500.0, bands)
    base = 0.4 + 0.1 * np.sin(wl / 300.0)
    carbon_band = np.exp(-0.5 * ((wl - 1700.0) / 60.0) ** 2)
    clay_band = np.exp(-0.5 * ((wl - 2200.0) / 40.0) ** 2)
    c = rng.uniform(0.5, 4.0, n)
    clay = rng.uniform(0.0, 1.0, n)
    x = (base + 0.05 * c[:, None] * carbon_band + 0.08 * clay[:, None] * clay_band
         + rng.normal(0, 0.002, (n, 1)) + rng.normal(0, 3e-4, (n, bands)))
    return wl, x, c


@pytest.fixture(scope="session")
def skewed():
    """The `skewed_carbon_set` generator."""
    return skewed_carbon_set


def skewed_carbon_set(n: int, seed: int = 0, bands: int = 120):
    """Spectra of soils with right-skewed carbon (log-normal, 0.2-10 %) whose reference error grows with carbon.

    Reference values carry a 15 % relative error (a laboratory's typical
    repeatability grows with the content), so a calibration's errors are
    heteroscedastic the way soil-carbon errors are; a single RMSECV then
    over-covers low-carbon soils and under-covers high-carbon ones.
    """
    rng = np.random.default_rng(seed)
    wl = np.linspace(1000.0, 2500.0, bands)
    base = 0.4 + 0.1 * np.sin(wl / 300.0)
    carbon_band = np.exp(-0.5 * ((wl - 1700.0) / 60.0) ** 2)
    clay_band = np.exp(-0.5 * ((wl - 2200.0) / 40.0) ** 2)
    c = np.exp(rng.normal(0.3, 0.7, n))
    clay = rng.uniform(0.0, 1.0, n)
    x = (base + 0.05 * c[:, None] * carbon_band + 0.08 * clay[:, None] * clay_band
         + rng.normal(0, 0.002, (n, 1)) + rng.normal(0, 3e-4, (n, bands)))
    y = np.maximum(c * (1 + 0.15 * rng.normal(size=n)), 0.01)
    return wl, x, y
