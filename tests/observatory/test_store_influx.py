"""What the InfluxDB backend adds to the contract: request sizes, line protocol, helpful refusals."""

from __future__ import annotations

import pytest

from humus.records import Observation, QualityFlag, Source
from observatory.store import StoreError, StoreRejected
from observatory.stores import lineprotocol as lp
from observatory.stores import open_store


def test_a_batch_of_long_spectra_is_split_into_requests_the_server_accepts():
    from observatory.stores.influx import MAX_BODY_BYTES, _requests
    lines = ["x" * 300_000] * 40 + ["short"] * 12_000
    bodies = list(_requests(lines))
    assert all(len(b) <= MAX_BODY_BYTES + 300_001 for b in bodies)
    assert b"".join(bodies).decode().splitlines() == lines



def test_line_protocol_escapes_strings_and_writes_every_field():
    o = Observation("s", "g", "p", "vwc", 5, 0.5, 'kPa "gauge", x', flag=QualityFlag.FAIL, flag_test='a "b" \\ c')
    (line,) = lp.encode([o])
    assert line == ('humus_obs,gateway=g,probe=p,quantity=vwc,site=s,source=raw,unit=kPa\\ "gauge"\\,\\ x '
                    'value=0.5,flag=4i,qc=1022i,flag_test="a \\"b\\" \\\\ c" 5')


def test_series_and_what_rarely_changes_are_tags_sorted_by_key_and_depth_is_written_as_configured():
    o = Observation("north-field", "gw-1", "teros-1", "vwc", 7, 0.251, "m3/m3", depth_cm=10.0, uncertainty=0.02,
                    flag=QualityFlag.PASS, source=Source.CALIBRATED, model_id="teros12-mineral", model_version="1")
    (line,) = lp.encode([o])
    assert line == ("humus_obs,depth_cm=10,gateway=gw-1,model_id=teros12-mineral,model_version=1,probe=teros-1,"
                    "quantity=vwc,site=north-field,source=calibrated,unit=m3/m3 "
                    'value=0.251,uncertainty=0.02,flag=1i,qc=0i 7')
    assert [lp.depth_tag(d) for d in (10.0, 12.5, 0.0, -0.0, -5.0, None)] == ["10", "12.5", "0", "0", "-5", None]


def test_a_missing_value_and_an_unknown_uncertainty_are_absent_and_said_so_with_the_test_code():
    o = Observation("s", "g", "p", "vwc", 5, float("nan"), "m3/m3", flag=QualityFlag.MISSING, flag_test="timeout")
    (line,) = lp.encode([o])
    assert line == 'humus_obs,gateway=g,probe=p,quantity=vwc,site=s,source=raw,unit=m3/m3 flag=9i,qc=63i 5'
    assert 63 == 4 * lp.TEST_CODES["timeout"] + lp.ABSENT_VALUE + lp.ABSENT_UNCERTAINTY


def test_a_unit_or_model_with_a_backslash_is_refused_before_anything_is_sent():
    o = Observation("s", "g", "p", "vwc", 5, 0.5, "m3\\m3")
    with pytest.raises(StoreRejected, match="tag unit .* backslash"):
        lp.encode([Observation("s", "g", "p", "vwc", 4, 0.5, "m3/m3"), o])


def test_writing_to_a_database_that_does_not_exist_says_how_to_create_it(influxdb_server):
    store = open_store(f"influxdb://127.0.0.1:{influxdb_server.port}/not_created")
    with pytest.raises(StoreError, match="CREATE DATABASE not_created"):
        store.write([Observation("s", "g", "p", "vwc", 5, 0.5, "m3/m3")])


def test_a_retention_policy_in_the_url_is_used_for_writes_and_queries(influxdb_server, store_new_influx_db):
    from observatory.store import Selection
    url = store_new_influx_db(influxdb_server)
    db = url.rsplit("/", 1)[1]
    plain = open_store(url)
    plain.http.request("POST", "/query", "create rp", fields={
        "q": f'CREATE RETENTION POLICY "archive" ON "{db}" DURATION INF REPLICATION 1'})
    in_rp = open_store(url + "?rp=archive")
    o = Observation("s", "g", "p", "vwc", 1_767_225_600_000_000_000, 0.5, "m3/m3")
    in_rp.write([o])
    assert list(in_rp.query(Selection())) == [o]
    assert list(plain.query(Selection())) == []  # the default policy holds nothing
