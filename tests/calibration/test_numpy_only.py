"""The gateway path (load, predict) and fitting need numpy only: scipy and scikit-learn are test-only."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import numpy as np
import calibration
from calibration.model import SpectralModel, fit_spectral_model, LocalSettings
from calibration.trend import stock_trend
wl = np.linspace(1000, 2500, 60)
rng = np.random.default_rng(0)
c = rng.uniform(0.5, 4, 50)
x = 0.4 + 0.05 * c[:, None] * np.exp(-0.5 * ((wl - 1700) / 60) ** 2) + rng.normal(0, 1e-3, (50, 60))
m = fit_spectral_model(wl, x, c, model_id="t", max_components=5, folds=5, local=LocalSettings(20, 2, 5),
                       method="auto", transform="auto", epo_pairs=(x[:10] + 0.01, x[:10]))
m = SpectralModel.load(m.save(sys.argv[1]))
p = m.predict(wl, x[0])
stock_trend(np.arange(12.0), 50 + 0.1 * np.arange(12.0) + rng.normal(0, 0.2, 12), 0.3)
calibration.equivalent_mass_stock([calibration.Layer(0, 10, 2, 1.2, 0, 0.1, 0.05), calibration.Layer(10, 30, 1, 1.4)],
                                  2000.0, interpolation="pchip", basis="mineral")
calibration.teros12_vwc(np.array([2000.0, 2500.0]))
calibration.topp_vwc(12.0)
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("scipy", "sklearn", "pandas"))
print("ok" if not bad else "imported: " + ", ".join(bad[:5]))
"""


def test_fit_load_and_predict_import_neither_scipy_nor_sklearn(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "m.npz")], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
