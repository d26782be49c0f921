"""The signature verification stored with the data: per value, on both backends, and shown by `humus query`.

Real Mosquitto, a real ingest worker with a gateway registry, the SQLite
archive and the real InfluxDB 1.x; batches signed by the gateway's own
spool code. Also: archives from before the record, and the `qc` bit that
carries it on InfluxDB next to the test codes.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from collector.spool import Spool
from humus import wire
from humus.obsrows import BatchedObservations, ObservationRows, SignedObservations, groups, mark_signed
from humus.records import Observation, QualityFlag, Source
from humus.signing import new_key_pair, registry_line, sign_payload
from humus.wire import encode_batch, obs_topic
from observatory import query
from observatory.aggregate import aggregate
from observatory.store import SeriesData
from observatory.stores import lineprotocol as lp
from observatory.stores import open_store
from observatory.stores.influx import _piece
from observatory.stores.sqlite import SqliteStore
from observatory.validate import Validator
from observatory.versions import concat, take
from observatory.worker import IngestWorker
from test_ingest import REPO, T0, Publisher, config, running, wait_for
from test_signing import _signer

pytestmark = [pytest.mark.timeout(120)]

WAVELENGTHS = (1000.0, 1500.0, 2000.0)


def _observations(site: str, gw: str, n: int) -> list[Observation]:
    """Scalars with a known test, a test named in the string field, and one spectrum."""
    out = []
    for i in range(n):
        test = ("spike", "my_lab_check", None)[i % 3]
        out.append(Observation(site=site, gateway=gw, probe="p", quantity="vwc", time_ns=T0 + i * 10**9,
                               value=0.2 + i / 100, unit="m3/m3", depth_cm=10.0,
                               flag=QualityFlag.SUSPECT if test else QualityFlag.PASS, flag_test=test,
                               uncertainty=0.01 if i % 2 else None))
    out.append(Observation(site=site, gateway=gw, probe="nir", quantity="reflectance", time_ns=T0,
                           value=(0.1, 0.2, 0.3), unit="1", depth_cm=0.0, flag=QualityFlag.FAIL,
                           flag_test="saturated", wavelengths_nm=WAVELENGTHS))
    return out


def _spooled(tmp_path, site: str, gw: str, sign, n: int) -> list[bytes]:
    """Batches as the gateway's spool forms them (signed when `sign` is given)."""
    sp = Spool(tmp_path / f"{gw}.spool", site=site, gateway=gw, quota_bytes=10**8, sign=sign)
    for o in _observations(site, gw, n):
        sp.append([o])
    out = []
    while (b := sp.form_batch(max_obs=3, max_bytes=65536)) is not None:
        out.append(b.payload)
    sp.close()
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "humus.cli", "query", *args], cwd=REPO, capture_output=True,
                          text=True)


# -- end to end: a real worker on both backends --------------------------------------------------

@pytest.mark.servers
@pytest.mark.parametrize("fast", [True, False], ids=["fast-decoder", "exact-decoder"])
def test_signed_values_come_back_signed_and_others_not(tmp_path, mosquitto, store_url, fast, monkeypatch):
    monkeypatch.setattr(wire, "FAST_PATH", fast)
    pem, public = new_key_pair()
    registry = tmp_path / "gateways.toml"
    registry.write_text(registry_line("farm-1", "gw-1", public) + registry_line("farm-1", "gw-2", ""))
    signed = _spooled(tmp_path, "farm-1", "gw-1", _signer(pem, tmp_path, "gw1"), 6)
    unsigned = _spooled(tmp_path, "farm-1", "gw-2", None, 6)
    forged = sign_payload(encode_batch("farm-1", "gw-1", 99, _observations("farm-1", "gw-1", 1)[:1]),
                          _signer(new_key_pair()[0], tmp_path, "other"))
    cfg = config(mosquitto.port, store_url, registry_file=str(registry), state_file=str(tmp_path / "state.sqlite"))
    store = open_store(store_url)
    pub = Publisher(mosquitto.port)
    try:
        with running(IngestWorker(cfg, store)) as w:
            gw1, gw2 = obs_topic("farm-1", "gw-1"), obs_topic("farm-1", "gw-2")
            messages = [(gw1, p) for p in signed] + [(gw2, p) for p in unsigned] + [(gw1, forged)]
            pub.send_many(messages)
            wait_for(lambda: w.metrics.messages_acked >= len(messages), 30, "every message handled")
            assert dict(w.metrics.rejected) == {"bad_signature": 1}
    finally:
        pub.close()
        store.close()

    for gw, expected in (("gw-1", True), ("gw-2", False)):
        found = query.series(store_url, gateway=gw)
        assert sorted(s.quantity for s in found) == ["reflectance", "vwc"]
        for s in found:
            assert s.signed is not None and s.signed.dtype == bool and len(s.signed) == len(s)
            assert s.signed.tolist() == [expected] * len(s), (gw, s.quantity)
        vwc = next(s for s in found if s.quantity == "vwc")
        assert list(vwc.flag_test) == ["spike", "my_lab_check", None, "spike", "my_lab_check", None]
        assert np.isnan(vwc.uncertainty[0]) and vwc.uncertainty[1] == 0.01
        spectrum = next(s for s in found if s.quantity == "reflectance")
        assert spectrum.flag_test[0] == "saturated" and spectrum.spectra[0].tolist() == [0.1, 0.2, 0.3]
    daily = query.series(store_url, gateway="gw-1", quantity="vwc", every="1d", min_flag="suspect")
    assert daily[0].signed.tolist() == [True]

    r = _cli("--store", store_url, "--quantity", "vwc", "--format", "json", "--signatures")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {(d["gateway"], d["signed"]) for d in rows} == {("gw-1", True), ("gw-2", False)} and len(rows) == 12
    r = _cli("--store", store_url, "--quantity", "vwc", "--format", "csv", "--signatures")
    assert r.returncode == 0, r.stderr
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {(d["gateway"], d["signed"]) for d in table} == {("gw-1", "yes"), ("gw-2", "no")}
    r = _cli("--store", store_url, "--gateway", "gw-1", "--quantity", "vwc", "--signatures")
    assert r.returncode == 0, r.stderr
    header, *lines = r.stdout.splitlines()
    assert header.split()[-1] == "signed" and lines and all(x.split()[-1] == "yes" for x in lines)
    r = _cli("--store", store_url, "--quantity", "vwc", "--format", "json")
    assert "signed" not in json.loads(r.stdout)[0]                  # only when asked for


def test_a_newer_copy_of_a_point_carries_its_own_batch_status(store):
    o = _observations("farm-1", "gw-1", 2)
    store.write(SignedObservations(o))
    (s,) = [x for x in store.columns(query.selection(quantity="vwc"))]
    assert s.signed.tolist() == [True, True]
    store.write([o[1]])                                             # an unsigned copy of the second point
    (s,) = [x for x in store.columns(query.selection(quantity="vwc"))]
    assert s.signed.tolist() == [True, False] and list(s.flag_test) == ["spike", "my_lab_check"]
    (spectrum,) = [x for x in store.columns(query.selection(quantity="reflectance"))]
    assert spectrum.signed.tolist() == [True]


def test_one_write_of_signed_and_unsigned_batches_keeps_each_status_and_the_last_copy(store):
    o = _observations("farm-1", "gw-1", 3)[:3]
    store.write(BatchedObservations([SignedObservations(o[:2]), tuple(o[1:2]), SignedObservations(o[2:])]))
    (s,) = [x for x in store.columns(query.selection(quantity="vwc"))]
    assert s.signed.tolist() == [True, False, True]


# -- archives from before the record ---------------------------------------------------------------

def test_an_archive_without_the_column_reads_unknown_read_only_and_gets_it_on_a_writable_open(tmp_path):
    path = tmp_path / "old.sqlite"
    with SqliteStore(path) as s:
        s.write(SignedObservations(_observations("farm-1", "gw-1", 3)))
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE observation DROP COLUMN signed")      # as written before the record
    con.close()

    def columns() -> list[str]:
        c = sqlite3.connect(path)
        try:
            return [row[1] for row in c.execute("PRAGMA table_info(observation)")]
        finally:
            c.close()

    found = query.series(f"sqlite:{path}", quantity="vwc")
    assert len(found[0]) == 3 and found[0].signed is None
    r = _cli("--store", f"sqlite:{path}", "--quantity", "vwc", "--format", "json", "--signatures")
    assert r.returncode == 0, r.stderr
    assert [d["signed"] for d in json.loads(r.stdout)] == [None, None, None]
    r = _cli("--store", f"sqlite:{path}", "--quantity", "vwc", "--format", "csv", "--signatures")
    assert [d["signed"] for d in csv.DictReader(io.StringIO(r.stdout))] == ["", "", ""]
    assert "signed" not in columns()                                # a query changed nothing

    with SqliteStore(path) as s:                                    # a writable open adds it
        assert "signed" in columns()
        (old,) = s.columns(query.selection(quantity="vwc"))
        assert old.signed.tolist() == [False, False, False]
        s.write(SignedObservations(_observations("farm-1", "gw-1", 3)[:1]))
        (now,) = s.columns(query.selection(quantity="vwc"))
        assert now.signed.tolist() == [True, False, False]
    with SqliteStore(path) as s:                                    # opening again: nothing to add
        assert columns().count("signed") == 1


def test_an_old_archive_written_by_a_read_only_open_gets_the_column_first(tmp_path):
    path = tmp_path / "old.sqlite"
    SqliteStore(path).close()
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE observation DROP COLUMN signed")
    con.close()
    s = open_store(f"sqlite:{path}", create=False)
    try:
        s.write(SignedObservations(_observations("farm-1", "gw-1", 1)[:1]))
        (got,) = s.columns(query.selection(quantity="vwc"))
        assert got.signed.tolist() == [True]
    finally:
        s.close()


# -- the pieces ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fast", [True, False], ids=["fast-decoder", "exact-decoder"])
def test_the_validator_marks_the_observations_of_a_verified_batch(tmp_path, monkeypatch, fast):
    monkeypatch.setattr(wire, "FAST_PATH", fast)
    pem, public = new_key_pair()
    registry = tmp_path / "gateways.toml"
    registry.write_text(registry_line("farm-1", "gw-1", public) + registry_line("farm-1", "gw-2", ""))
    v = Validator(registry_file=registry)
    obs = _observations("farm-1", "gw-1", 2)
    b = v.check(obs_topic("farm-1", "gw-1"), sign_payload(encode_batch("farm-1", "gw-1", 1, obs),
                                                          _signer(pem, tmp_path, "gw")), now_ns=T0)
    assert b.signed and b.observations.signed is True and list(b.observations) == obs
    assert isinstance(b.observations, ObservationRows if fast else SignedObservations)
    u = v.check(obs_topic("farm-1", "gw-2"), encode_batch("farm-1", "gw-2", 1, _observations("farm-1", "gw-2", 2)),
                now_ns=T0)
    assert not u.signed and getattr(u.observations, "signed", False) is False
    assert [g[3] for g in groups(b.observations)] == [True] and {g[3] for g in groups(u.observations)} == {False}


def test_the_signed_bit_of_qc_leaves_the_test_codes_as_they_were():
    obs = _observations("farm-1", "gw-1", 3)
    plain, signed = lp.encode(obs), lp.encode(mark_signed(tuple(obs)))
    assert len(plain) == len(signed)
    for a, b in zip(plain, signed):
        if a.startswith(lp.AXIS):
            assert a == b
            continue
        qa, qb = (int(x.split("qc=")[1].split("i")[0]) for x in (a, b))
        assert qa < lp.SIGNED and qb == qa + lp.SIGNED and (qa >> 2) == ((qb >> 2) & lp.TEST_MASK)
    assert max(4 * lp.TEST_NAMED + 3, *(4 * c + 3 for c in lp.TEST_CODES.values())) < lp.SIGNED
    qcs = [4 * lp.TEST_CODES["spike"] + lp.SIGNED, 4 * lp.TEST_NAMED + 2 + lp.SIGNED, 2, 4 * lp.TEST_CODES["spike"]]
    rows = [[T0 + i, 0.5, 0.01, 3, qc, "my_lab_check" if i == 1 else None] for i, qc in enumerate(qcs)]
    piece = _piece(lp.SCALAR, {"unit": "1"}, ["time", "value", "uncertainty", "flag", "qc", "flag_test"], rows)
    assert list(piece["flag_test"]) == ["spike", "my_lab_check", None, "spike"]
    assert piece["signed"].tolist() == [1, 1, 0, 0] and np.isnan(piece["uncertainty"][1])


def _series(signed, flags=(1, 1, 1, 1)) -> SeriesData:
    n = len(flags)
    return SeriesData("s", "g", "p", 10.0, "vwc", Source.RAW, time_ns=np.arange(n, dtype=np.int64) * 10**9,
                      value=np.arange(n, dtype=np.float64), uncertainty=np.full(n, np.nan),
                      flag=np.array(flags, dtype=np.uint8), unit=["1"] * n, flag_test=[None] * n,
                      model_id=[None] * n, model_version=[None] * n,
                      signed=None if signed is None else np.array(signed, dtype=bool))


def test_aggregates_and_versions_keep_the_status_of_each_row():
    s = _series([True, True, True, False], flags=(1, 1, 1, 4))       # the unsigned row fails: not used
    assert aggregate(s, 2 * 10**9).signed.tolist() == [True, True]
    assert aggregate(_series([True, False, True, True]), 2 * 10**9).signed.tolist() == [False, True]
    assert aggregate(_series([True] * 4, flags=(4, 4, 1, 1)), 2 * 10**9).signed.tolist() == [False, True]
    assert aggregate(_series(None), 2 * 10**9).signed is None
    assert take(s, np.array([3, 0])).signed.tolist() == [False, True]
    assert concat([s, _series([False] * 4)], "vwc").signed.tolist() == [True, True, True, False] + [False] * 4
    assert concat([s, _series(None)], "vwc").signed is None


@pytest.mark.servers
def test_influxql_reads_the_test_code_and_the_signed_bit_as_documented(influx_v1_store_url):
    from observatory.stores.influx import parse_results

    store = open_store(influx_v1_store_url)
    try:
        obs = _observations("farm-1", "gw-1", 3)
        store.write(SignedObservations(obs[:1]))
        store.write(obs[1:3])
        q = ('SELECT floor("qc" / 4) % 256 AS "test", floor("qc" / 1024) AS "signed" FROM "humus_obs" '
             "WHERE \"quantity\"='vwc'")
        (data,) = parse_results(store.raw_query(q, "test", chunked=False), "test").values()
        got = [(int(t), int(s)) for _, t, s in data["values"]]
        assert got == [(lp.TEST_CODES["spike"], 1), (lp.TEST_NAMED, 0), (0, 0)]
    finally:
        store.close()
