"""The shared simulated soil: deterministic under a seed, physically shaped, spectra respond to water and carbon."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.sim.faults import FaultSwitches
from firmware_bridge.sim.registry import MODELS
from firmware_bridge.sim.soil import DAY_S, SoilModel, reflectance

NIR = np.linspace(1350, 2500, 256)


def test_same_seed_same_soil_other_seed_other_soil():
    a, b, c = SoilModel(42), SoilModel(42), SoilModel(43)
    times = np.linspace(0, 30 * DAY_S, 200)
    assert [a.state(t) for t in times] == [b.state(t) for t in times]
    assert [a.state(t) for t in times] != [c.state(t) for t in times]


def test_moisture_stays_between_wilting_point_and_field_capacity_and_rain_wets_the_soil():
    soil = SoilModel(1)
    v = np.array([soil.vwc(t) for t in np.linspace(0, 120 * DAY_S, 3000)])
    assert v.min() >= soil.wilting_point and v.max() <= soil.field_capacity
    assert np.any(np.diff(v) > 0.01)                 # rain events
    assert np.mean(np.diff(v) < 0) > 0.8             # mostly drying between them


def test_temperature_follows_a_damped_diurnal_cycle():
    shallow, deep = SoilModel(1, depth_cm=2), SoilModel(1, depth_cm=30)
    day = np.linspace(0, DAY_S, 97)
    ts = [shallow.temperature_c(t) for t in day]
    td = [deep.temperature_c(t) for t in day]
    assert (max(ts) - min(ts)) > 3 * (max(td) - min(td))      # amplitude decays with depth
    assert 10 * 3600 < day[int(np.argmax(ts))] < 18 * 3600     # warmest in the afternoon near the surface


def test_ec_rises_with_moisture_and_temperature():
    soil = SoilModel(0)
    assert soil.ec_us_cm(0.30, 20) > soil.ec_us_cm(0.10, 20)
    assert soil.ec_us_cm(0.30, 25) > soil.ec_us_cm(0.30, 10)


def test_reflectance_darkens_with_water_most_at_the_water_bands():
    dry, wet = reflectance(NIR, 2.0, 0.05), reflectance(NIR, 2.0, 0.35)
    assert np.all(wet < dry) and np.all((dry > 0) & (dry < 1))
    loss = np.log(dry / wet)
    at = lambda nm: loss[np.argmin(abs(NIR - nm))]  # noqa: E731
    assert at(1940) > at(1450) > at(1650) and at(1940) > 1.5 * at(2100)


def test_reflectance_darkens_with_carbon_with_features_near_1700_and_2300_nm():
    low, high = reflectance(NIR, 0.5, 0.15), reflectance(NIR, 5.0, 0.15)
    assert np.all(high < low)
    gain = np.log(low / high)
    at = lambda nm: gain[np.argmin(abs(NIR - nm))]  # noqa: E731
    assert at(1730) > at(1600) and at(2310) > at(2150)


def test_log_reflectance_is_linear_in_carbon_so_a_demo_model_can_learn_it():
    wl = np.linspace(410, 2500, 50)
    socs = np.linspace(0.5, 5, 10)
    a = np.array([-np.log(reflectance(wl, s, 0.2)) for s in socs])
    coef = np.polyfit(socs, a, 1)
    assert np.allclose(np.polyval(coef, socs[:, None]).T, a.T, atol=1e-9)


@pytest.mark.parametrize("model", ["modbus-soil", "as7265x", "nir-spectrometer", "ascii-temp"])
def test_each_simulator_is_registered_and_byte_for_byte_deterministic_under_a_seed(model):
    m = MODELS[model]
    requests = {
        "modbus-soil": bytes.fromhex("01030000000305cb"),
        "as7265x": b"ATLED1=100\r\nATDATA\r\nATCDATA\r\n",
        "nir-spectrometer": None,
        "ascii-temp": b"R\r\nR\r\n",
    }
    if model == "nir-spectrometer":
        from firmware_bridge.protocols.spectro import Capture, Command, encode_frame
        requests[model] = encode_frame(Command.ACQUIRE, bytes([Capture.SAMPLE]))
    outputs = []
    for seed in (5, 5, 6):
        faults = FaultSwitches(garbage=False)
        fw = m.load()(m.default_address, seed, faults)
        outputs.append(fw.receive(requests[model], 100.0) + fw.receive(requests[model], 160.0))
    assert outputs[0] == outputs[1] and outputs[0]
    assert outputs[0] != outputs[2]


@pytest.mark.parametrize("name, cls", [("modbus-soil", "ModbusSoilDriver"), ("as7265x", "AS7265xDriver"),
                                       ("nir-spectrometer", "NirSpectrometerDriver"), ("ascii-temp", "AsciiTempDriver")])
def test_driver_registry_names_load_these_drivers(name, cls):
    from firmware_bridge.drivers import get_driver
    driver = get_driver(name)
    assert driver.__name__ == cls and driver.name == name
    assert MODELS[name].settings == driver.serial_settings


@pytest.mark.parametrize("model", ["modbus-soil", "as7265x", "nir-spectrometer", "ascii-temp"])
def test_unknown_simulator_parameter_is_refused_with_the_known_ones(model):
    m = MODELS[model]
    with pytest.raises(ValueError, match=f"unknown {model} parameter.*known: .*soc_percent"):
        m.load()(m.default_address, 1, FaultSwitches(), colour=1)


def test_soc_parameter_darkens_the_simulated_nir_spectrum():
    from firmware_bridge.protocols.spectro import Capture, Command, decode_spectrum, encode_frame, parse_frame
    m = MODELS["nir-spectrometer"]
    means = []
    for soc in (0.5, 5.0):
        fw = m.load()("", 1, FaultSwitches(), soc_percent=soc)
        [(_, reply)] = fw.receive(encode_frame(Command.ACQUIRE, bytes([Capture.SAMPLE])), 0.0)
        means.append(np.mean(decode_spectrum(parse_frame(reply).frame.payload).counts))
    assert means[1] < 0.8 * means[0]
