"""Calibration: pure numerics from raw readings to SOC stocks and 4-per-1000 progress.

Numpy only (no scipy at run time), no I/O other than model files. Every
calibrated value comes with its standard uncertainty and a QARTOD flag
(`humus.records.QualityFlag`) naming the test that set it; values outside
physical limits are flagged, never clipped.

Stable API (for the collector, the observatory and the demo):

Moisture (`calibration.moisture`), scalars or numpy arrays in, same shape out,
each returning ``Calibrated(value, uncertainty, flag, flag_test)``:
    teros12_vwc(raw_counts, media="mineral" | "soilless")   # m³/m³, METER manual Eq. 5/6
    teros12_permittivity(raw_counts)                         # ε_a, manual Eq. 7
    topp_vwc(permittivity, permittivity_uncertainty=None)    # Topp et al. 1980, input uncertainty carried
    polynomial_vwc(x, PolynomialCalibration(...))            # per-soil, from config
    ec_at_25c(ec_us_cm, temperature_c)                       # Sheets & Hendrickx 1995

Spectra (`calibration.spectra`): reflectance(counts, dark, white) -> Calibrated,
absorbance(r), snv(a), SavitzkyGolay(window, polyorder, deriv)(a), resample(wl, a, grid).

Spectral models (`calibration.model`):
    model = SpectralModel.load(path)            # ModelFileError (one line) if unusable
    p = model.predict(wavelengths_nm, spectrum, kind="absorbance" | "reflectance" | "counts",
                      dark=None, white=None)
    p.value, p.uncertainty, p.t2, p.q, p.flag, p.flag_test, p.model_id, p.model_version, p.moisture
    model.id, model.version, model.content_hash, model.save(path)
    fit_spectral_model(wavelengths_nm, X, y, model_id=..., epo_pairs=(wet, dry), epo_components=None,
                       method="global" | "local" | "blend" | "auto", local=LocalSettings(...),
                       transform="none" | "sqrt" | "auto", groups=soil_ids)   # choices by CV: calibration.fit
    check_applicable(model, probe_wavelengths_nm, input_kind, probe=...)   # -> list of problems (config checks)
    check_moisture_calibration(model_name, driver, probe=...)               # calibration.applicability
Predictions that cannot be made (spectrum not covering the grid, missing
references) come back with value NaN and flag MISSING, never an exception.

Stocks and trends:
    layer_stock(Layer(...)), cumulative_stock(layers, 30), soil_mass_to_depth(layers, 30, basis=...),
    equivalent_mass_stock(layers, ref_mass, basis="fine_soil" | "mineral", interpolation="linear" | "pchip")
                                                             # calibration.stock, Mg C/ha -> EsmStock
    stock_trend(times_years, stocks, uncertainties=None) -> Trend   # calibration.trend: GLS, AR(1), χ² check
    years_to_detect(rate, noise_sd, interval_years, phi=0.0)
"""

import importlib as _importlib

# The names above, each imported from its module on first use (PEP 562): `import calibration.applicability`
# on a gateway configured without spectra then loads neither numpy nor the model code.
_SOURCES = {
    "applicability": ("check_applicable", "check_moisture_calibration"),
    "calibrated": ("Calibrated",),
    "model": ("LocalSettings", "ModelFileError", "Prediction", "SpectralModel", "fit_spectral_model"),
    "moisture": ("PolynomialCalibration", "ec_at_25c", "polynomial_vwc", "teros12_permittivity", "teros12_vwc",
                 "topp_vwc"),
    "spectra": ("SavitzkyGolay", "absorbance", "reflectance", "resample", "snv"),
    "transform": ("TargetTransform",),
    "stock": ("EsmStock", "Layer", "cumulative_stock", "equivalent_mass_stock", "layer_stock", "soil_mass_to_depth"),
    "trend": ("Trend", "TrendFit", "fit_trend", "stock_trend", "years_to_detect"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'calibration' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"calibration.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))


__all__ = [
    "Calibrated", "LocalSettings", "ModelFileError", "Prediction", "SpectralModel", "fit_spectral_model",
    "PolynomialCalibration", "ec_at_25c", "polynomial_vwc", "teros12_permittivity", "teros12_vwc", "topp_vwc",
    "TargetTransform", "SavitzkyGolay", "absorbance", "reflectance", "resample", "snv",
    "EsmStock", "Layer", "cumulative_stock", "equivalent_mass_stock", "layer_stock", "soil_mass_to_depth",
    "Trend", "TrendFit", "fit_trend", "stock_trend", "years_to_detect",
    "check_applicable", "check_moisture_calibration",
]
