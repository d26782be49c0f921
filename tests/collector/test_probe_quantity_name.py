"""A probe names its quantity: an ascii-temp probe in the air reports air_temp, not soil_temp."""

from __future__ import annotations

import time

import pytest

from collector.config import load_gateway_config
from collector.daemon import build_probes, close_probes
from humus.config import ConfigError


def _config(tmp_path, port: str, options: str, qc: str = "air_temp"):
    p = tmp_path / "gw.toml"
    p.write_text(f'''
[gateway]
site = "s1"
id = "gw1"
data_dir = "{tmp_path / 'data'}"
clock_check = "epoch"

[[probes]]
id = "air-1"
driver = "ascii-temp"
port = "{port}"
interval_s = 60
options = {options}
[probes.qc.{qc}]
gross_range = {{ fail_span = [-55, 125] }}
''')
    return load_gateway_config(p)


def test_an_ascii_temp_probe_reports_under_the_quantity_it_is_given(tmp_path, sim_probes):
    (sim,) = sim_probes(1)
    cfg = _config(tmp_path, str(sim.link), '{ quantity = "air_temp" }')
    by_port = build_probes(cfg)
    try:
        (probe,) = by_port[str(sim.link)]
        deadline = time.monotonic() + 10
        reading = probe.driver.read()
        while not reading.ok and time.monotonic() < deadline:
            reading = probe.driver.read()
        assert reading.ok, reading.message
        observations, _ = probe.pipeline.process(reading, reading.time_ns)
    finally:
        close_probes(by_port)
    assert [(o.quantity, o.unit) for o in observations] == [("air_temp", "degC")]
    assert observations[0].flag_test is None and -55 <= observations[0].value <= 125


@pytest.mark.parametrize("options, qc, key", [
    ('{ quantity = "Air Temp" }', "air_temp", "probes[0].options.quantity"),
    ('{ quantity = "air_temp" }', "soil_temp", "probes[0].qc.soil_temp"),
])
def test_a_bad_quantity_name_or_a_qc_table_for_the_old_name_is_refused(tmp_path, options, qc, key):
    with pytest.raises(ConfigError) as e:
        _config(tmp_path, str(tmp_path / "tty"), options, qc)
    assert e.value.key == key, str(e.value)
