"""The fast decoder (msgspec, column checks) says yes only to what the exact decoder says yes to, with the same values.

`humus.fastdecode.decode` returns a batch or None ("decode exactly"); the
exact decoder then explains any refusal, so every rejection reason and
message is the exact decoder's by construction. What must be tested is
that the fast path never accepts more, nor reads a number differently.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from humus import fastdecode, wire
from humus.obsrows import ObservationRows
from humus.records import Observation, QualityFlag, Source
from humus.wire import SCHEMA, WireError, decode_batch, encode_batch

from test_wire import T0, TOPIC, sample
from test_wire_fuzz import mutated_batches

DIFF = settings(max_examples=400, deadline=None)
LIMIT_NS = T0 + 600 * 10**9


def exact(payload: bytes, topic: str = TOPIC):
    """What the exact decoder answers: a batch, or the rejection's reason."""
    saved = wire.FAST_PATH
    wire.FAST_PATH = False
    try:
        return decode_batch(topic, payload, now_ns=T0)
    except WireError as e:
        return e.reason
    finally:
        wire.FAST_PATH = saved


def fast(payload: bytes):
    got = fastdecode.decode("farm-1", "gw-1", SCHEMA, payload, wire.MAX_OBS_PER_BATCH, LIMIT_NS)
    return None if got is None else wire.Batch("farm-1", "gw-1", *got)


def same_batch(a, b) -> bool:
    """Equal, telling -0.0 from 0.0 and NaN from anything (repr does both)."""
    return (a.seq, a.sent_ns, [repr(o) for o in a.observations]) == (b.seq, b.sent_ns, [repr(o) for o in b.observations])


def assert_agrees(payload: bytes) -> None:
    got = fast(payload)
    if got is None:
        return
    reference = exact(payload)
    assert isinstance(reference, wire.Batch), f"fast path accepted what the exact one refuses ({reference})"
    assert same_batch(got, reference)


@DIFF
@given(mutated_batches())
def test_mutated_batches_are_accepted_by_the_fast_path_only_as_the_exact_one_does(payload):
    assert_agrees(payload)


number_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-10**20, 10**20), st.integers(-340, 320)),
    st.builds(lambda i, f: f"{i}.{f}", st.integers(-10**6, 10**6), st.text("0123456789", min_size=1, max_size=40)),
    st.sampled_from(["-0", "-0.0", "0.1000000000000000055511151231257827", "9007199254740993", "1E5", "1e-400",
                     "2.2250738585072011e-308", "1.7976931348623158e308", "1.7976931348623159e308", "4.9e-324"]),
)


@DIFF
@given(st.sampled_from(["value", "depth_cm", "uncertainty", "time_ns", "rev", "flag"]), number_text)
def test_numbers_are_read_as_the_exact_decoder_reads_them(field, text):
    marker = "__NUMBER__"
    d = json.loads(encode_batch("farm-1", "gw-1", 7, sample()[:2], sent_ns=T0))
    d["observations"][1][field] = marker
    payload = json.dumps(d).replace(f'"{marker}"', text).encode()
    assert_agrees(payload)


@DIFF
@given(st.lists(st.sampled_from(["2301.0", "0", "-1.5e3", "1e-320", "123456789012345678901"]), min_size=1,
                max_size=5), st.sampled_from(["value", "wavelengths_nm"]))
def test_spectra_numbers_are_read_as_the_exact_decoder_reads_them(items, field):
    d = json.loads(encode_batch("farm-1", "gw-1", 7, sample()[2:3], sent_ns=T0))
    other = "wavelengths_nm" if field == "value" else "value"
    d["observations"][0][other] = [1.0] * len(items)
    d["observations"][0][field] = "__LIST__"
    payload = json.dumps(d).replace('"__LIST__"', "[" + ",".join(items) + "]").encode()
    assert_agrees(payload)


def test_the_collectors_batches_take_the_fast_path_and_build_no_observation():
    payload = encode_batch("farm-1", "gw-1", 7, sample(), sent_ns=T0)
    batch = decode_batch(TOPIC, payload, now_ns=T0)
    assert isinstance(batch.observations, ObservationRows)
    assert batch.observations._observations is None and len(batch.observations) == 4
    assert same_batch(batch, exact(payload))
    assert batch.observations._observations is not None  # built when asked for


def test_a_batch_with_colons_in_strings_takes_the_fast_path():
    obs = [Observation("farm-1", "gw-1", "nir-1", "soc", T0 + i, 2.5, "%", flag=QualityFlag.PASS,
                       source=Source.CALIBRATED, model_id="pls:v", model_version="2026-01-01T00:00", flag_test="a:b")
           for i in range(5)]
    payload = encode_batch("farm-1", "gw-1", 7, obs, sent_ns=T0)
    assert fast(payload) is not None
    forged = payload.replace(b'"unit":', b'"unit":"m:s","unit":', 1)
    assert fast(forged) is None and exact(forged) is wire.Rejection.BAD_SCHEMA


@pytest.mark.parametrize("mangle", [
    lambda p: p.replace(b'"rev":', b'"rev":1,"rev":', 1),
    lambda p: p.replace(b'"probe":"teros-a"', b'"probe":"x","probe":"teros-a"', 1),
    lambda p: p.replace(b'"seq":7', b'"seq":7,"seq":7', 1),
    lambda p: p.replace(b'"depth_cm":10.0', b'"depth_cm":null', 1),  # a null the collector never sends
    lambda p: p.replace(b'"flag":1', b'"flag":9', 1).replace(b'"value":2301.0', b'"value":null', 1),
])
def test_repeated_keys_fall_back_and_explicit_nulls_decode_the_same(mangle):
    first = Observation("farm-1", "gw-1", "teros-a", "raw_counts", T0, 2301.0, "counts", depth_cm=10.0,
                        flag=QualityFlag.PASS, revision=2)
    payload = mangle(encode_batch("farm-1", "gw-1", 7, [first, sample()[1]], sent_ns=T0))
    reference = exact(payload)
    got = fast(payload)
    if isinstance(reference, wire.Batch):
        assert got is None or same_batch(got, reference)
        assert same_batch(decode_batch(TOPIC, payload, now_ns=T0), reference)
    else:
        assert got is None


def test_a_missing_value_decodes_as_nan_with_flag_9():
    batch = decode_batch(TOPIC, encode_batch("farm-1", "gw-1", 7, sample(), sent_ns=T0), now_ns=T0)
    missing = batch.observations[3]
    assert math.isnan(missing.value) and missing.flag is QualityFlag.MISSING


def test_decoded_observations_behave_as_the_tuple_they_were():
    payload = encode_batch("farm-1", "gw-1", 7, sample(), sent_ns=T0)
    rows = decode_batch(TOPIC, payload, now_ns=T0).observations
    reference = exact(payload).observations
    assert rows == reference and rows[1:3] == reference[1:3] and rows[-1] is rows[3]
    assert rows + rows == reference + reference and () + rows == reference
    assert list(reversed(rows)) == list(reversed(reference)) and rows[0] in rows
