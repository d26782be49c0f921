"""The spool's observation JSON is byte for byte what the wire's reference encoder writes."""

from __future__ import annotations

import json
import math
import random

import pytest

from collector.obs_json import observation_json
from humus.records import Observation, QualityFlag, Source
from humus.wire import observation_to_dict

T0 = 1_790_000_000 * 10**9


def reference(o: Observation) -> str:
    return json.dumps(observation_to_dict(o), separators=(",", ":"), allow_nan=False)


def random_observation(rng: random.Random) -> Observation:
    calibrated = rng.random() < 0.4
    missing = rng.random() < 0.1
    value = math.nan if missing else rng.choice([0.0, -0.0, 1e-7, 1e16, 123456789.125, rng.uniform(-50, 50),
                                                 float(rng.randint(-5, 5))])
    return Observation(
        site="s1", gateway="gw1", probe=rng.choice(["p1", "teros-a", "m-2"]),
        quantity=rng.choice(["soil_temp", "vwc", "ec_bulk"]), time_ns=T0 + rng.randint(0, 10**15),
        value=value, unit=rng.choice(["degC", "m3/m3", "dS/m", "", "µS/cm", 'a"b\\c']),
        depth_cm=rng.choice([None, 10.0, 2.5, -0.0, 12]),
        uncertainty=rng.choice([None, 0.0, 0.03, 1e-9]) if calibrated else None,
        flag=QualityFlag.MISSING if missing else rng.choice(list(QualityFlag)),
        flag_test=rng.choice([None, "gross_range", "spike", "timeout", "clock_unsynced"]),
        source=Source.CALIBRATED if calibrated else Source.RAW,
        model_id=rng.choice(["teros12_vwc", "polynomial_vwc"]) if calibrated else rng.choice([None, "x"]),
        model_version=rng.choice([None, "1", "2.0-é"]),
        revision=rng.choice([0, 0, 1, 7]))


def test_scalar_observations_encode_exactly_as_the_reference_including_key_order():
    rng = random.Random(5)
    for _ in range(5000):
        o = random_observation(rng)
        assert observation_json(o) == reference(o), o


def test_an_integer_depth_and_a_float_depth_stay_different_texts_through_the_cache():
    a = Observation(site="s1", gateway="gw1", probe="p1", quantity="vwc", time_ns=T0, value=0.3, unit="1",
                    depth_cm=10)
    b = Observation(site="s1", gateway="gw1", probe="p1", quantity="vwc", time_ns=T0, value=0.3, unit="1",
                    depth_cm=10.0)
    assert observation_json(a) == reference(a) and observation_json(a).endswith('"depth_cm":10}')
    assert observation_json(b) == reference(b) and observation_json(b).endswith('"depth_cm":10.0}')


def test_spectra_go_through_the_reference_encoder():
    o = Observation(site="s1", gateway="gw1", probe="nir", quantity="spectrum", time_ns=T0, value=(0.1, 0.2, 0.3),
                    unit="counts", wavelengths_nm=(1000.0, 1100.0, 1200.0))
    assert observation_json(o) == reference(o)
    assert json.loads(observation_json(o))["wavelengths_nm"] == [1000.0, 1100.0, 1200.0]


def test_a_value_json_refuses_is_refused_here_too():
    o = Observation(site="s1", gateway="gw1", probe="p1", quantity="vwc", time_ns=T0, value=0.3, unit="1")
    object.__setattr__(o, "uncertainty", math.inf)     # past the record's own checks, as a bug would
    with pytest.raises(ValueError):
        reference(o)
    with pytest.raises(ValueError):
        observation_json(o)
