"""The MQTT batch payload round-trips, and hostile payloads are refused with a reason."""

import dataclasses
import json
import math

import pytest

from humus.records import Observation, QualityFlag, Source
from humus.wire import Rejection, WireError, decode_batch, encode_batch, obs_topic, observation_to_dict

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
    return json.dumps(d, separators=(",", ":")).encode()


def item(**changes):
    d = json.loads(encode_batch("farm-1", "gw-1", 1, sample()[:1], sent_ns=T0))
    d["observations"][0].update(changes)
    return json.dumps(d, separators=(",", ":")).encode()


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
    assert_rejected(topic, payload, reason)


def assert_rejected(topic: str, payload: bytes, reason: Rejection, *phrases: str) -> WireError:
    with pytest.raises(WireError) as e:
        decode_batch(topic, payload, now_ns=T0)
    assert e.value.reason is reason, str(e.value)
    message = str(e.value)
    assert len(message) <= 400 and "\n" not in message and "\r" not in message
    for phrase in phrases:
        assert phrase in message
    return e.value


# `$` matches before a trailing newline: `re.match(r"^...$")` took "teros-a\n" for an id.
@pytest.mark.parametrize("topic, payload, reason, phrase", [
    (TOPIC, item(probe="teros-a\n"), Rejection.BAD_VALUE, "observations[0]: invalid observation 'teros-a\\n'"),
    (TOPIC, item(quantity="vwc\n"), Rejection.BAD_VALUE, "quantity 'vwc\\n'"),
    (obs_topic("farm-1\n", "gw-1"), doc(site="farm-1\n"), Rejection.BAD_TOPIC, "topic"),
    (obs_topic("farm-1", "gw-1\n"), doc(gateway="gw-1\n"), Rejection.BAD_TOPIC, "topic"),
    (TOPIC, doc(site="farm-1\n"), Rejection.TOPIC_MISMATCH, "farm-1\\n"),
])
def test_an_id_or_quantity_with_a_trailing_newline_is_refused(topic, payload, reason, phrase):
    assert_rejected(topic, payload, reason, phrase)


# Text fields must be text that a log line, a CSV file or line protocol can carry.
@pytest.mark.parametrize("field, text", [
    ("unit", "\ud800"), ("unit", "m3/m3\n"), ("unit", "deg\x00C"), ("flag_test", "spike\x7f"),
    ("flag_test", "gross\x85range"), ("model_id", "teros\udfff"), ("model_version", "1\r"),
    ("model_version", "\x1b[31m"),
])
def test_a_control_character_or_lone_surrogate_in_a_string_is_refused(field, text):
    payload = item(**{field: text, "source": "calibrated", "model_id": "m"} if field != "model_id" else
                   {field: text, "source": "calibrated"})
    assert_rejected(TOPIC, payload, Rejection.BAD_VALUE, "observations[0]", field)


def test_printable_unicode_in_strings_is_kept():
    batch = decode_batch(TOPIC, item(unit="µS/cm", flag_test="contrôle_°", model_id="modèle-β",
                                     source="calibrated"), now_ns=T0)
    o = batch.observations[0]
    assert (o.unit, o.flag_test, o.model_id) == ("µS/cm", "contrôle_°", "modèle-β")


# Numbers that do not fit used to escape as an OverflowError (the worker's "decode_error").
@pytest.mark.parametrize("changes, reason, phrase", [
    (dict(value=10**400), Rejection.BAD_VALUE, "beyond the range of a 64-bit float"),
    (dict(depth_cm=-10**400), Rejection.BAD_VALUE, "beyond the range of a 64-bit float"),
    (dict(uncertainty=10**400), Rejection.BAD_VALUE, "beyond the range of a 64-bit float"),
    (dict(value=[1.0, 10**400], wavelengths_nm=[1.0, 2.0]), Rejection.BAD_VALUE, "beyond the range"),
    (dict(value=[1.0, 2.0], wavelengths_nm=[1.0, 10**400]), Rejection.BAD_VALUE, "beyond the range"),
    (dict(time_ns=10**400), Rejection.BAD_VALUE, "time_ns <integer of 1329 bits>"),
    (dict(flag=10**400), Rejection.BAD_VALUE, "flag must be"),
    (dict(value=True), Rejection.BAD_VALUE, "value True"),
    (dict(value="1.0"), Rejection.BAD_VALUE, "value '1.0'"),
    (dict(depth_cm=True), Rejection.BAD_VALUE, "depth_cm True"),
])
def test_a_number_that_does_not_fit_is_a_bad_value(changes, reason, phrase):
    assert_rejected(TOPIC, item(**changes), reason, "observations[0]", phrase)


def test_a_float_literal_beyond_the_float_range_is_a_bad_value():
    payload = item().replace(b'"value":2301.0', b'"value":1e400')
    assert b"1e400" in payload
    assert_rejected(TOPIC, payload, Rejection.BAD_VALUE, "observations[0]", "value inf")


@pytest.mark.parametrize("changes", [dict(seq=10**400), dict(seq=2**63), dict(seq=True), dict(sent_ns=10**400),
                                     dict(sent_ns=1.5)])
def test_batch_numbers_out_of_range_are_a_bad_schema(changes):
    assert_rejected(TOPIC, doc(**changes), Rejection.BAD_SCHEMA, next(iter(changes)))


def test_an_integer_beyond_pythons_digit_limit_is_a_bad_value():
    huge = b"9" * 5000
    payload = doc().replace(b'"seq":1,', b'"seq":' + huge + b',')
    assert huge in payload
    assert_rejected(TOPIC, payload, Rejection.BAD_VALUE, "more than 4300 digits")


def test_large_finite_numbers_still_pass():
    o = decode_batch(TOPIC, item(value=10**300, uncertainty=1.5e300), now_ns=T0).observations[0]
    assert o.value == 1e300 and o.uncertainty == 1.5e300


# json.loads(bytes) guesses UTF-16 and UTF-32, skips a UTF-8 byte order mark, passes encoded surrogates.
@pytest.mark.parametrize("encode", [
    lambda text: text.encode("utf-16"), lambda text: text.encode("utf-16-le"), lambda text: text.encode("utf-32"),
    lambda text: text.encode("utf-32-be"), lambda text: b"\xef\xbb\xbf" + text.encode(),
    lambda text: text.replace('"counts"', '"\ud800"').encode("utf-8", "surrogatepass"),
])
def test_only_utf8_without_byte_order_mark_is_json(encode):
    text = item().decode()
    assert type(json.loads(encode(text))) is dict  # Python's json alone reads every one of them
    assert_rejected(TOPIC, encode(text), Rejection.MALFORMED_JSON)


# A repeated key was read as its last value ("site" twice passed the topic check).
def test_a_key_twice_in_the_batch_object_is_refused():
    text = doc().decode()
    forged = text.replace('"site":"farm-1"', '"site":"farm-2","site":"farm-1"')
    assert forged != text
    assert_rejected(TOPIC, forged.encode(), Rejection.BAD_SCHEMA, "'site' twice")


@pytest.mark.parametrize("indent", [None, 2])
def test_a_key_twice_in_an_observation_is_refused_however_the_json_is_spaced(indent):
    d = json.loads(item())
    text = json.dumps(d, indent=indent, separators=(" , ", " : ") if indent is None else None)
    forged = text.replace('"value"', '"value" : 1.0, "value"', 1)
    assert forged != text
    assert_rejected(TOPIC, forged.encode(), Rejection.BAD_SCHEMA, "'value' twice")


def test_a_key_twice_is_found_beside_colons_inside_strings():
    # Colons in string values are what the fast duplicate check must discount.
    base = item(flag_test="a:b:c", model_id="x:y", model_version="2024-05-01T12:00:00", source="calibrated")
    assert decode_batch(TOPIC, base, now_ns=T0).observations[0].model_version == "2024-05-01T12:00:00"
    escaped = base.replace(b"12:00:00", b"12\\u003a00\\u003A00")
    assert decode_batch(TOPIC, escaped, now_ns=T0).observations[0].model_version == "2024-05-01T12:00:00"
    for payload in (base, escaped):
        forged = payload.replace(b'"unit":', b'"unit":"m:s","unit":', 1)
        assert_rejected(TOPIC, forged, Rejection.BAD_SCHEMA, "'unit' twice")


def test_a_key_twice_in_a_nested_object_is_refused():
    forged = item().replace(b'"value":2301.0', b'"value":[{"a":1,"a":2}]')
    assert_rejected(TOPIC, forged, Rejection.BAD_SCHEMA, "'a' twice")


# Revisions: a re-published observation says which copy is newer.
def test_a_revision_round_trips_and_is_absent_at_zero():
    first = sample()[0]
    again = dataclasses.replace(first, revision=3)
    assert "rev" not in observation_to_dict(first) and observation_to_dict(again)["rev"] == 3
    assert b'"rev"' not in encode_batch("farm-1", "gw-1", 1, [first], sent_ns=T0)
    batch = decode_batch(TOPIC, encode_batch("farm-1", "gw-1", 1, [first, again], sent_ns=T0), now_ns=T0)
    assert [o.revision for o in batch.observations] == [0, 3]
    assert batch.observations[1] == again


@pytest.mark.parametrize("rev", [-1, 2**31, True, 1.0, "1", None, [1]])
def test_a_revision_out_of_range_is_a_bad_value(rev):
    assert_rejected(TOPIC, item(rev=rev), Rejection.BAD_VALUE, "observations[0]: rev")


def test_encoding_is_unchanged_for_first_publications():
    payload = encode_batch("farm-1", "gw-1", 42, sample()[:2], sent_ns=T0 + 5)
    assert payload == (
        b'{"schema":"humus/v1","site":"farm-1","gateway":"gw-1","seq":42,"sent_ns":1790000000000000005,'
        b'"observations":[{"probe":"teros-a","quantity":"raw_counts","time_ns":1790000000000000000,'
        b'"value":2301.0,"unit":"counts","flag":1,"source":"raw","depth_cm":10.0,"flag_test":"gross_range"},'
        b'{"probe":"teros-a","quantity":"vwc","time_ns":1790000000000000000,"value":0.197,"unit":"m3/m3",'
        b'"flag":1,"source":"calibrated","depth_cm":10.0,"uncertainty":0.03,"model_id":"teros12-mineral",'
        b'"model_version":"1"}]}')
