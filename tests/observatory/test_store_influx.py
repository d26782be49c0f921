"""What the InfluxDB backend adds to the contract: request sizes, line protocol, helpful refusals."""

from __future__ import annotations

import pytest

from humus.records import Observation, QualityFlag
from observatory.store import StoreError
from observatory.stores import lineprotocol as lp
from observatory.stores import open_store


def test_a_batch_of_long_spectra_is_split_into_requests_the_server_accepts():
    from observatory.stores.influx import MAX_BODY_BYTES, _requests
    lines = ["x" * 300_000] * 40 + ["short"] * 12_000
    bodies = list(_requests(lines))
    assert all(len(b) <= MAX_BODY_BYTES + 300_001 for b in bodies)
    assert b"".join(bodies).decode().splitlines() == lines



def test_line_protocol_escapes_strings_and_writes_every_field():
    o = Observation("s", "g", "p", "vwc", 5, 0.5, 'kPa "gauge" \\ x', flag=QualityFlag.FAIL)
    (line,) = lp.encode([o])
    assert line == ('humus_observation,site=s,gateway=g,probe=p,quantity=vwc,source=raw value=0.5,missing=false,'
                    'uncertainty=-1.0,flag=4i,flag_test="",unit="kPa \\"gauge\\" \\\\ x",model_id="",'
                    'model_version="" 5')


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
