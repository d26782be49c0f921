"""Line protocol escapes what it can and refuses, before sending anything, what it cannot carry.

Ids are validated long before a store sees them; these tests forge
observations past that validation (object.__setattr__ on the frozen record)
to pin down the encoder's own defence.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from humus.records import Observation
from observatory.store import Selection, StoreRejected
from observatory.stores import lineprotocol as lp
from observatory.stores import open_store

T0 = 1_767_225_600_000_000_000


def forged(o: Observation, **fields) -> Observation:
    """`o` with fields the record's own validation would refuse."""
    o = dataclasses.replace(o)
    for name, value in fields.items():
        object.__setattr__(o, name, value)
    return o


def four(**fields_of_third) -> list[Observation]:
    obs = [Observation("s", "g", f"p{i}", "vwc", T0 + i, 0.5, "m3/m3") for i in range(4)]
    obs[2] = forged(obs[2], **fields_of_third)
    return obs


def test_measurement_names_escape_commas_and_spaces():
    assert lp.escape_measurement("soil obs,v2") == "soil\\ obs\\,v2"
    assert lp.escape_measurement("a=b") == "a=b"  # an equals sign is plain in a measurement


def test_tag_keys_and_values_escape_commas_equals_signs_and_spaces():
    assert lp.escape_tag("a,b c=d") == "a\\,b\\ c\\=d"
    assert lp.escape_tag("teros-a") == "teros-a"


@pytest.mark.parametrize("text, phrase", [
    ("a\nb", "a newline"), ("a\rb", "a carriage return"), ("a\\b", "a backslash"), ("a\\", "a backslash"),
    ("", "is empty"),
])
def test_what_a_tag_cannot_carry_is_refused_with_what_and_where(text, phrase):
    with pytest.raises(StoreRejected, match=phrase) as e:
        lp.escape_tag(text, "tag probe", "observation x")
    assert "tag probe" in str(e.value) and "\n" not in str(e.value)


def test_an_escaped_tag_is_written_in_the_line():
    (line,) = lp.encode([forged(Observation("s", "g", "p", "vwc", 5, 0.5, "m3/m3"), probe="a,b c=d")])
    assert line.startswith("humus_obs,gateway=g,probe=a\\,b\\ c\\=d,quantity=vwc,site=s,source=raw,unit=m3/m3 ")


@pytest.mark.parametrize("fields, where", [
    (dict(probe="p2\nhumus_observation,site=x"), "tag probe"),
    (dict(site="s\r"), "tag site"),
    (dict(quantity="v\\"), "tag quantity"),
    (dict(unit="m3/m3\nx"), "unit"),
    (dict(flag_test="spike\r"), "flag_test"),
    (dict(model_version="1\n"), "model_version"),
])
def test_a_batch_with_one_unwritable_observation_encodes_to_nothing(fields, where):
    with pytest.raises(StoreRejected) as e:
        lp.encode(four(**fields))
    message = str(e.value)
    assert where in message and "'p2" in message and str(T0 + 2) in message and "\n" not in message


def test_a_newline_in_a_tag_stores_none_of_the_batch(influx_v1_store_url):
    # Before: the newline split the third line, InfluxDB stored the points
    # around it and refused the rest ("3 of 4 points written").
    store = open_store(influx_v1_store_url)
    try:
        with pytest.raises(StoreRejected, match="newline"):
            store.write(four(probe="p2\nhumus_observation,site=x"))
        with pytest.raises(StoreRejected, match="line break"):
            store.write(four(unit="m3\nm3"))
        assert list(store.query(Selection())) == []
        store.write(four())  # the same store takes clean data
        assert len(list(store.query(Selection()))) == 4
    finally:
        store.close()


def test_commas_spaces_and_equals_signs_in_tags_round_trip_through_influxdb(influx_v1_store_url):
    store = open_store(influx_v1_store_url)
    try:
        tricky = forged(Observation("s", "g", "p", "vwc", T0, 0.25, "m3/m3", depth_cm=10.0),
                        site="farm 1", probe="a,b c=d", quantity="x=1,y 2")
        store.write([tricky, Observation("s", "g", "plain", "vwc", T0, 0.5, "m3/m3")])
        (series,) = [s for s in store.columns(Selection()) if s.probe != "plain"]
        assert (series.site, series.gateway, series.probe, series.depth_cm, series.quantity) == \
            ("farm 1", "g", "a,b c=d", 10.0, "x=1,y 2")
        assert series.value.tolist() == [0.25]
        answer = b"".join(store.raw_query('SHOW TAG VALUES FROM "humus_obs" WITH KEY = "probe"',
                                          "show tag values", chunked=False))
        values = {v for _, v in json.loads(answer)["results"][0]["series"][0]["values"]}
        assert values == {"a,b c=d", "plain"}
    finally:
        store.close()


# -- the decoder's columns (humus.fastdecode) encode to the same lines as its rows ---------------------

_AWKWARD_FLOATS = [0.5, 2300.0, -0.0, 0.0, 1e16, 1e-5, 0.0001, 0.00012, 10.00001, 1.2345678901234568e17, 5e-324,
                   1.7976931348623157e308, 0.30000000000000004, -123.456, 1e15, 9999999999999998.0]


def _decoded(observations: list[Observation]):
    from humus.wire import decode_batch, encode_batch, obs_topic

    o = observations[0]
    return decode_batch(obs_topic(o.site, o.gateway), encode_batch(o.site, o.gateway, 1, observations),
                        now_ns=T0 + 10**12).observations


def _per_row(rows) -> list[str]:
    lines: list[str] = []
    lp._encode_rows(rows.site, rows.gateway, rows.rows, lines, {}, rows.keys, rows.signed)
    return lines


@pytest.mark.parametrize("value", _AWKWARD_FLOATS)
def test_a_column_of_floats_encodes_as_repr_writes_them(value):
    pytest.importorskip("msgspec")
    obs = [Observation("s", "g", f"p{i}", "vwc", T0 + i, v, "m3/m3", uncertainty=u)
           for i, (v, u) in enumerate([(value, None), (0.25, abs(value)), (value, 0.03), (1.5, None)])]
    rows = _decoded(obs)
    assert getattr(rows, "columns", None) is not None  # the fast decoder's rows
    assert lp.encode(rows) == _per_row(rows)
    assert lp.encode(rows) == lp.encode(list(obs))
    assert f"value={value!r}," in lp.encode(rows)[0]


def test_columns_with_missing_values_and_spectra_take_the_per_row_way():
    pytest.importorskip("msgspec")
    from humus.records import QualityFlag
    obs = [Observation("s", "g", "p", "vwc", T0, 0.5, "m3/m3"),
           Observation("s", "g", "p", "vwc", T0 + 1, float("nan"), "m3/m3", flag=QualityFlag.MISSING),
           Observation("s", "g", "q", "refl", T0 + 2, (0.1, 0.2), "1", wavelengths_nm=(900.0, 1000.0))]
    rows = _decoded(obs)
    assert lp.encode(rows) == lp.encode(list(obs))
    assert lp.encode(rows)[:3] == _per_row(rows)


def test_without_msgspec_columns_are_encoded_row_by_row(monkeypatch):
    obs = [Observation("s", "g", f"p{i}", "vwc", T0 + i, v, "m3/m3", uncertainty=0.03 if i % 2 else None)
           for i, v in enumerate(_AWKWARD_FLOATS)]
    rows = _decoded(obs)
    with_msgspec = lp.encode(rows)
    monkeypatch.setattr(lp, "_json_encode", None)
    assert lp.encode(rows) == with_msgspec == lp.encode(list(obs))
