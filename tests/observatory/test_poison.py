"""No message stops the flow: data a store refuses is dead-lettered, a store that refuses everything is held.

The wire decoder refuses most poison before it reaches a store; these tests
slip it past the validator on purpose (the worker must hold up when
validation misses something), then run a real Mosquitto and real stores.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from humus.records import Observation, QualityFlag
from humus.wire import Batch, encode_batch, obs_topic
from observatory.config import state_path
from observatory.deadletter import DeadLetters
from observatory.store import Selection, StoreError, StoreRejected
from observatory.stores import open_store
from observatory.stores.sqlite import SqliteStore
from observatory.validate import Validator
from observatory.worker import IngestWorker, Received
from test_ingest import T0, Publisher, batch, config, running, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

TOPIC = obs_topic("farm-1", "gw-1")


def poisoned(o: Observation, **bad) -> Observation:
    """`o` with fields no valid observation has (set past the record's own checks)."""
    o = dataclasses.replace(o)
    for name, value in bad.items():
        object.__setattr__(o, name, value)
    return o


class PoisoningValidator(Validator):
    """The real validator, then poison slipped into the first observation of the chosen seqs."""

    def __init__(self, poison: dict[int, dict]) -> None:
        super().__init__()
        self.poison = poison

    def check(self, topic: str, payload: bytes, *, now_ns: int | None = None) -> Batch:
        b = super().check(topic, payload, now_ns=now_ns)
        bad = self.poison.get(b.seq)
        if bad is None:
            return b
        return dataclasses.replace(b, observations=(poisoned(b.observations[0], **bad), *b.observations[1:]))


def count(store) -> int:
    return sum(1 for _ in store.query(Selection()))


def letters_of(cfg) -> list:
    with DeadLetters(state_path(cfg)) as letters:
        return sorted(letters.recent(100), key=lambda d: d.id)


@pytest.mark.parametrize("backend, bad, says", [
    ("sqlite", {"unit": "\ud800"}, "surrogate"),
    ("sqlite", {"model_id": "m-\udfff"}, "surrogate"),
    ("influxdb", {"probe": "teros-a\n"}, ""),
    ("influxdb", {"quantity": "vwc\n"}, ""),
    ("influxdb", {"flag_test": "\ud800"}, ""),
])
def test_a_poison_batch_alone_is_dead_lettered_and_the_batches_after_it_are_stored(
        backend, bad, says, mosquitto, tmp_path, request):
    if backend == "sqlite":
        url = f"sqlite:{tmp_path / 'archive.sqlite'}"
        cfg = config(mosquitto.port, url, client_id="poisoned", batch_messages=1)
    else:
        url = request.getfixturevalue("influx_v1_store_url") + "?retries=1&timeout=5"
        cfg = config(mosquitto.port, url, client_id="poisoned", batch_messages=1,
                     state_file=str(tmp_path / "state.sqlite"))
    store = open_store(url)
    pub = Publisher(mosquitto.port)
    try:
        worker = IngestWorker(cfg, store)
        worker.validator = PoisoningValidator({0: bad})
        with running(worker):
            pub.send(TOPIC, batch("farm-1", "gw-1", 0, n=3))  # alone in its write: batch_messages = 1
            pub.send_many([(TOPIC, batch("farm-1", "gw-1", s, n=3)) for s in range(1, 6)])
            wait_for(lambda: worker.metrics.messages_acked == 6, 15, "the poison handled and 5 batches after it")
        assert count(store) == 15
        (letter,) = letters_of(cfg)
        assert letter.reason == "store_rejected" and "batch seq 0" in letter.detail
        assert says in letter.detail
        assert worker.metrics.rejected == {"store_rejected": 1}
        assert worker.metrics.store_down_since_ns is None

        # The broker has nothing of it left: a worker under the same client id is not handed it again.
        again = IngestWorker(cfg, store)
        again.validator = PoisoningValidator({0: bad})
        with running(again):
            pub.send(TOPIC, batch("farm-1", "gw-1", 6, n=3))
            wait_for(lambda: count(store) == 18, 15, "the next batch after a restart")
        assert again.metrics.messages_in == 1 and again.metrics.rejected == {}
        assert len(letters_of(cfg)) == 1
    finally:
        pub.close()
        store.close()


def test_one_poison_batch_among_many_in_one_write_is_dead_lettered_and_the_rest_stored(mosquitto, tmp_path):
    db = tmp_path / "archive.sqlite"
    cfg = config(mosquitto.port, f"sqlite:{db}", client_id="mixed", batch_latency_s=1.0)
    pub = Publisher(mosquitto.port)
    with SqliteStore(db) as store:
        worker = IngestWorker(cfg, store)
        worker.validator = PoisoningValidator({3: {"flag_test": "\ud800"}})
        with running(worker):
            pub.send_many([(TOPIC, batch("farm-1", "gw-1", s, n=2)) for s in range(8)])
            wait_for(lambda: worker.metrics.messages_acked == 8, 15, "8 messages handled")
        assert count(store) == 14
        assert [d.reason for d in letters_of(cfg)] == ["store_rejected"]
        assert worker.metrics.store_writes < 30, "the write was not narrowed down batch by batch"
    pub.close()


def test_a_sqlite_store_refusing_every_write_holds_the_messages_and_releases_them_when_fixed(
        mosquitto, tmp_path, caplog):
    db = tmp_path / "archive.sqlite"
    cfg = config(mosquitto.port, f"sqlite:{db}", client_id="held", retry_max_s=0.3)
    pub = Publisher(mosquitto.port)
    with SqliteStore(db) as store:
        # What a read-only file answers ("attempt to write a readonly database"); set
        # this way because chmod does not stop root, who may run the tests.
        store._con.execute("PRAGMA query_only=1")
        worker = IngestWorker(cfg, store)
        with caplog.at_level(logging.ERROR, logger="humus.ingest"), running(worker):
            pub.send_many([(TOPIC, batch("farm-1", "gw-1", s, n=2)) for s in range(5)])
            wait_for(lambda: worker.metrics.store_failures >= 5, 15, "the refusals retried")
            assert worker.metrics.messages_acked == 0 and worker.metrics.store_down_since_ns is not None
            store._con.execute("PRAGMA query_only=0")
            wait_for(lambda: worker.metrics.messages_acked == 5, 15, "the held messages written")
        assert count(store) == 10
    pub.close()
    assert letters_of(cfg) == []
    outage = [r for r in caplog.records if "store unavailable" in r.getMessage()]
    assert len(outage) == 1 and "readonly" in outage[0].getMessage(), "an outage is logged once, saying why"


def test_an_influxdb_database_that_does_not_exist_holds_the_messages_until_created(
        influxdb_server, mosquitto, tmp_path):
    url = f"influxdb://127.0.0.1:{influxdb_server.port}/poison_later_{time.time_ns()}?retries=1&timeout=5"
    store = open_store(url)
    cfg = config(mosquitto.port, url, client_id="waiting", retry_max_s=0.3, state_file=str(tmp_path / "s.sqlite"))
    pub = Publisher(mosquitto.port)
    try:
        worker = IngestWorker(cfg, store)
        worker.validator = PoisoningValidator({2: {"quantity": "vwc\n"}})
        with running(worker):
            pub.send_many([(TOPIC, batch("farm-1", "gw-1", s, n=2)) for s in range(4)])
            wait_for(lambda: worker.metrics.store_failures >= 3, 15, "the refusals retried")
            assert worker.metrics.messages_acked == 0
            store.create_database()
            wait_for(lambda: worker.metrics.messages_acked == 4, 15, "the held messages handled")
        assert count(store) == 6
        assert [d.reason for d in letters_of(cfg)] == ["store_rejected"], "only the poison is dead-lettered"
    finally:
        pub.close()
        store.close()


# -- without a broker: the worker's own handling of what validation let through ----------------------

def received(topic: str, batch_: Batch | None = None, payload: bytes = b"{}") -> Received:
    return Received(topic, payload, mid=1, qos=1, generation=0, received_ns=time.time_ns(),
                    received_mono=time.monotonic(), batch=batch_)


def test_ids_that_are_not_ids_are_dead_lettered_with_a_storable_topic(tmp_path):
    db = tmp_path / "archive.sqlite"
    cfg = config(1, f"sqlite:{db}", client_id="offline")
    site = "farm-\ud800"
    o = poisoned(Observation(site="farm-1", gateway="gw-1", probe="p", quantity="vwc", time_ns=T0, value=0.2,
                             unit="1"), site=site)
    weird = received(f"humus/v1/{site}/gw-1/obs", Batch(site, "gw-1", 0, T0, (o,)), payload="\ud800".encode(
        "utf-8", "surrogatepass"))
    newline = received("humus/v1/farm-1/gw-1\n/obs", Batch("farm-1", "gw-1\n", 0, T0, (o,)))
    with SqliteStore(db) as store:
        worker = IngestWorker(cfg, store)
        worker._process([weird, newline], threading.Event())
        assert count(store) == 0
    letters = letters_of(cfg)
    assert [d.reason for d in letters] == ["bad_value", "bad_value"]
    assert letters[0].topic == "humus/v1/farm-\\ud800/gw-1/obs" and letters[0].payload == b"\xed\xa0\x80"
    assert "'gw-1\\n'" in letters[1].detail


def test_a_decoder_crash_is_a_documented_rejection_not_an_exception_text(tmp_path):
    class Broken(Validator):
        def check(self, topic, payload, *, now_ns=None):
            raise KeyError("observations")

    cfg = config(1, f"sqlite:{tmp_path / 'a.sqlite'}", client_id="offline")
    with SqliteStore(tmp_path / "a.sqlite") as store:
        worker = IngestWorker(cfg, store)
        worker.validator = Broken()
        msg = mqtt.MQTTMessage(mid=7, topic=TOPIC.encode())
        msg.payload, msg.qos = b'{"schema": "humus/v1"}', 1
        worker._on_message(None, None, msg)
        item = worker._queue.get_nowait()
        worker._process([item], threading.Event())
    (letter,) = letters_of(cfg)
    assert letter.reason == "bad_schema" and "KeyError" in letter.detail


def test_a_failing_dead_letter_insert_is_reported_as_such_and_the_flow_goes_on(tmp_path, caplog):
    import sqlite3

    db = tmp_path / "archive.sqlite"
    cfg = config(1, f"sqlite:{db}", client_id="offline")
    with SqliteStore(db) as store:
        worker = IngestWorker(cfg, store)
        with sqlite3.connect(state_path(cfg)) as con:
            con.execute("DROP TABLE dead_letter")  # a state file damaged by hand
        o = Observation(site="farm-1", gateway="gw-1", probe="p", quantity="vwc", time_ns=T0, value=0.2, unit="1")
        items = [received(TOPIC, payload=b"garbage"), received(TOPIC, Batch("farm-1", "gw-1", 0, T0, (o,)))]
        items[0].rejection = ("malformed_json", "payload is not JSON")
        done = threading.Event()
        with caplog.at_level(logging.WARNING, logger="humus.ingest"):
            t = threading.Thread(target=lambda: (worker._process(items, threading.Event()), done.set()), daemon=True)
            t.start()
            assert done.wait(10), "a failing dead-letter insert held the worker"
        assert count(store) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"dead-letter table {state_path(cfg)}: ") and "no such table" in m for m in lines), lines
    assert not any("unavailable" in m for m in lines)
    assert worker.metrics.rejected == {"malformed_json": 1}


# -- the stores' classification ----------------------------------------------------------------------

def test_stores_tell_refused_data_from_their_own_faults(influxdb_server, influx_v1_store_url, tmp_path):
    import urllib.request

    good = Observation(site="farm-1", gateway="gw-1", probe="p", quantity="vwc", time_ns=T0, value=0.2, unit="1")
    with SqliteStore(tmp_path / "a.sqlite") as store:
        with pytest.raises(StoreRejected, match="a.sqlite"):
            store.write([good, poisoned(dataclasses.replace(good, probe="q"), unit="\ud800")])
        store.write([good])  # the refused transaction left nothing cached behind
        assert [o.probe for o in store.query(Selection())] == ["p"]
        store._con.execute("PRAGMA query_only=1")
        with pytest.raises(StoreError, match="readonly") as e:
            store.write([good])
        assert not isinstance(e.value, StoreRejected)

    db = influx_v1_store_url.rsplit("/", 1)[1]
    # A string `flag` first: every integer `flag` in that shard is then a field type conflict (400).
    req = urllib.request.Request(f"{influxdb_server.url}/write?db={db}&precision=ns",
                                 data=f"humus_obs,site=farm-1 flag=\"text\" {T0}\n".encode())
    assert urllib.request.urlopen(req, timeout=10).status == 204
    store = open_store(influx_v1_store_url + "?retries=1")
    try:
        with pytest.raises(StoreRejected, match="conflict"):
            store.write([good])
    finally:
        store.close()
    store = open_store(f"influxdb://127.0.0.1:{influxdb_server.port}/never_created?retries=1")
    try:
        with pytest.raises(StoreError, match="404") as e:
            store.write([good])
        assert not isinstance(e.value, StoreRejected), "an unknown database is the store's fault, not the data's"
    finally:
        store.close()
