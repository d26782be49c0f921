"""`humus demo` end to end: simulated probes on ptys -> collector -> MQTT -> ingest -> SQLite archive."""

from __future__ import annotations

import math
import shlex
import subprocess
import sys
from collections import defaultdict

import pytest

from humus.records import QualityFlag, Source
from observatory.store import Selection
from observatory.stores import open_store

# quantity -> plausible (low, high) for the simulated soils
PLAUSIBLE = {
    ("teros-a", "raw_counts"): (1500, 3500),
    ("teros-a", "soil_temp"): (-5, 40),
    ("teros-a", "ec_bulk"): (0, 5000),
    ("teros-a", "vwc"): (0.0, 0.6),
    ("modbus-a", "soil_temp"): (-5, 40),
    ("modbus-a", "moisture"): (0, 60),
    ("modbus-a", "ec"): (0, 5000),
    ("modbus-a", "vwc"): (0.0, 0.6),
    ("nir-a", "soc"): (1.9, 2.9),   # the simulated soil holds 2.4 % carbon
}
CALIBRATED = {("teros-a", "vwc"), ("nir-a", "soc"), ("modbus-a", "vwc")}


def run_demo(tmp_path, *extra):
    cmd = [sys.executable, "-m", "humus.cli", "demo", "--duration", "14", "--interval", "1",
           "--dir", str(tmp_path / "demo"), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r


def archive(tmp_path):
    store = open_store(f"sqlite:{tmp_path / 'demo' / 'archive.sqlite'}")
    try:
        return list(store.query(Selection()))
    finally:
        store.close()


def check_archive(observations):
    by_series = defaultdict(list)
    for o in observations:
        by_series[(o.probe, o.quantity, o.source)].append(o)
    for (probe, quantity), (lo, hi) in PLAUSIBLE.items():
        source = Source.CALIBRATED if (probe, quantity) in CALIBRATED else Source.RAW
        series = by_series.get((probe, quantity, source))
        assert series, f"no {source.value} {quantity} from {probe}; have {sorted(by_series)}"
        good = [o for o in series if o.flag in (QualityFlag.PASS, QualityFlag.NOT_EVALUATED)]
        assert len(good) >= len(series) / 2, f"{probe}/{quantity}: flags {[o.flag for o in series]}"
        for o in good:
            assert lo <= o.value <= hi, f"{probe}/{quantity} = {o.value} outside [{lo}, {hi}]"
        if source is Source.CALIBRATED:
            assert all(o.model_id for o in series)
            assert all(o.uncertainty is not None and o.uncertainty > 0 for o in good)
    # The raw spectrum travels with the dark and white references of the same
    # reading (so history can be recalibrated), and its reflectance beside them.
    for quantity, source in (("spectrum", Source.RAW), ("spectrum_dark", Source.RAW),
                             ("spectrum_white", Source.RAW), ("reflectance", Source.CALIBRATED)):
        spectra = by_series.get(("nir-a", quantity, source))
        assert spectra, f"no {quantity} from nir-a"
        assert len(spectra[0].value) == len(spectra[0].wavelengths_nm) >= 128
        assert all(math.isfinite(v) for v in spectra[0].value)
    assert all(0 < r < 1.2 for r in by_series[("nir-a", "reflectance", Source.CALIBRATED)][0].value)
    # one value per series and time: nothing stored twice
    keys = [(o.series_key, o.time_ns) for o in observations]
    assert len(keys) == len(set(keys))


def test_demo_fills_the_archive_with_every_simulated_quantity(tmp_path):
    r = run_demo(tmp_path)
    check_archive(archive(tmp_path))
    # The demo ends by telling the user how to look at the data; that command works.
    line = next(ln for ln in r.stdout.splitlines() if " query --store " in ln)
    args = shlex.split(line.strip())[1:]
    assert args[0] == "query"
    q = subprocess.run([sys.executable, "-m", "humus.cli", *args], capture_output=True, text=True, timeout=60)
    assert q.returncode == 0, q.stderr
    assert "teros-a" in q.stdout and "vwc" in q.stdout
    # ... and shows every probe's latest data, not one probe and quantity (issue 14)
    assert all(probe in q.stdout for probe in ("teros-a", "nir-a", "modbus-a")), q.stdout[-2000:]


@pytest.mark.servers
def test_demo_through_mosquitto_with_a_shared_subscription(tmp_path, mosquitto):
    run_demo(tmp_path, "--broker", f"127.0.0.1:{mosquitto.port}")
    check_archive(archive(tmp_path))
