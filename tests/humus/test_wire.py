"""The MQTT batch payload round-trips, and hostile payloads are refused with a reason."""

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from humus.records import Observation, QualityFlag, Source
from humus.wire import Rejection, WireError, decode_batch, encode_batch, obs_topic

T0 = 1_790_000_000_000_000_000
TOPIC = obs_topic("farm-1", "gw-1")


def sample():
    return [
        Observation("farm-1", "gw-1", "teros-a", "raw_counts", T0, 2301.0, "counts", depth_cm=10.0,
                    flag=QualityFlag.PASS, flag_test="gross_range"),
        Observation("farm-1", "gw-1", "teros-a", "vwc", T0, 0.197, "m3/m3", depth_cm=10.0, uncertainty=0.03,
                    flag=QualityFlag.PASS, source=Source.CALIBRATED, model_id="teros12-mineral", model_version="1"),
        Observation("farm-1", "gw-1", "nir-1", "reflectance", T0 + 1, (0.31, 0.29, 0.27), "1",
                    wavelengths_nm=(1350.0, 1354.5, 1359.0)),
        Observation("farm-1", "gw-1", "nir-1", "soc", T0 + 1, math.nan, "%", flag=QualityFlag.MISSING,
                    flag_test="timeout"),
    ]


def test_batch_round_trips_every_field():
    payload = encode_batch("farm-1", "gw-1", 42, sample(), sent_ns=T0 + 5)
    batch = decode_batch(TOPIC, payload, now_ns=T0)
    assert batch.seq == 42 and batch.sent_ns == T0 + 5
    assert batch.observations[:3] == tuple(sample()[:3])
    missing = batch.observations[3]
    assert math.isnan(missing.value) and missing.flag is QualityFlag.MISSING


def doc(**changes):
    d = json.loads(encode_batch("farm-1", "gw-1", 1, sample()[:2], sent_ns=T0))
    d.update(changes)
    return json.dumps(d).encode()


def item(**changes):
    d = json.loads(encode_batch("farm-1", "gw-1", 1, sample()[:1], sent_ns=T0))
    d["observations"][0].update(changes)
    return json.dumps(d).encode()


@pytest.mark.parametrize("topic, payload, reason", [
    (TOPIC, b"{not json", Rejection.MALFORMED_JSON),
    (TOPIC, b"\xff\xfe", Rejection.MALFORMED_JSON),
    (TOPIC, b"[1, 2]", Rejection.BAD_SCHEMA),
    (TOPIC, doc(schema="humus/v0"), Rejection.BAD_SCHEMA),
    (TOPIC, doc(extra=1), Rejection.BAD_SCHEMA),
    (TOPIC, doc(seq=-1), Rejection.BAD_SCHEMA),
    (TOPIC, doc(observations=[]), Rejection.BAD_SCHEMA),
    (obs_topic("farm-1", "gw-2"), doc(), Rejection.TOPIC_MISMATCH),
    (TOPIC, doc(gateway="gw-2"), Rejection.TOPIC_MISMATCH),
    ("humus/v1/farm-1/obs", doc(), Rejection.BAD_TOPIC),
    (TOPIC, item(value="NaN"), Rejection.BAD_VALUE),
    (TOPIC, item(flag=7), Rejection.BAD_VALUE),
    (TOPIC, item(source="guessed"), Rejection.BAD_VALUE),
    (TOPIC, item(time_ns=T0 + 3600 * 10**9), Rejection.FUTURE_TIME),
    (TOPIC, item(probe="../../etc"), Rejection.BAD_VALUE),
    (TOPIC, b'{"schema":"humus/v1","site":"farm-1","gateway":"gw-1","seq":1,"sent_ns":1,'
            b'"observations":[{"probe":"p","quantity":"q","time_ns":1,"value":NaN,"unit":"","flag":1,"source":"raw"}]}',
     Rejection.MALFORMED_JSON),
    (TOPIC, b"[" * 100_000, Rejection.MALFORMED_JSON),
    (TOPIC, b" " * (4 * 1024 * 1024 + 1), Rejection.TOO_LARGE),
])
def test_hostile_payload_is_rejected_with_its_reason(topic, payload, reason):
    with pytest.raises(WireError) as e:
        decode_batch(topic, payload, now_ns=T0)
    assert e.value.reason is reason
    assert len(str(e.value)) < 500


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_but_wire_error(payload):
    try:
        decode_batch(TOPIC, payload, now_ns=T0)
    except WireError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["probe", "quantity", "time_ns", "value", "unit", "flag", "source",
                                        "depth_cm", "uncertainty", "wavelengths_nm", "model_id"]), json_values))
def test_arbitrary_observation_objects_never_raise_anything_but_wire_error(fields):
    payload = json.dumps({"schema": "humus/v1", "site": "farm-1", "gateway": "gw-1", "seq": 1, "sent_ns": 1,
                          "observations": [fields]}).encode()
    try:
        decode_batch(TOPIC, payload, now_ns=T0)
    except WireError:
        pass
