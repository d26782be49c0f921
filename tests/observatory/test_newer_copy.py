"""The newer copy wins: a revised observation (later batch, higher revision) stays stored whatever order
workers write the copies in, on SQLite and on InfluxDB (observatory.revisions)."""

from __future__ import annotations

import threading
import time

import pytest

from humus.records import Observation, QualityFlag
from humus.wire import Batch, encode_batch, obs_topic
from observatory.revisions import RevisionLog
from observatory.store import Selection
from observatory.stores import open_store
from observatory.worker import IngestWorker, Received
from test_ingest import T0, Publisher, config, running, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

TOPIC = obs_topic("farm-1", "gw-1")


def reading(i: int, flag: QualityFlag = QualityFlag.PASS, revision: int = 0) -> Observation:
    return Observation(site="farm-1", gateway="gw-1", probe="teros-a", quantity="vwc", time_ns=T0 + i * 10**9,
                       value=0.25 + i / 100, unit="m3/m3", depth_cm=10.0, flag=flag,
                       flag_test="spike" if revision else "gross_range", revision=revision)


ORIGINAL = encode_batch("farm-1", "gw-1", 4, [reading(i) for i in range(5)])
"""Batch 4: five readings, reading 2 passed the spike test so far."""
REVISION = encode_batch("farm-1", "gw-1", 5, [reading(2, QualityFlag.SUSPECT, revision=1), reading(5)])
"""Batch 5: the late spike verdict on reading 2, beside the next reading."""


@pytest.fixture(params=["sqlite", "influxdb"])
def url_and_state(request, tmp_path):
    """(store URL, ingest settings) on each backend; the state file is shared by the workers of a test."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'archive.sqlite'}", {}
    url = request.getfixturevalue("influx_v1_store_url") + "?retries=1&timeout=5"
    return url, {"state_file": str(tmp_path / "state.sqlite")}


def flags(store) -> dict[int, tuple[QualityFlag, str]]:
    return {(o.time_ns - T0) // 10**9: (o.flag, o.flag_test) for o in store.query(Selection(gateway="gw-1"))}


def test_a_revision_stored_before_its_original_stays_with_two_workers_on_a_shared_subscription(
        url_and_state, mosquitto):
    url, extra = url_and_state
    stores = [open_store(url), open_store(url)]
    workers = [IngestWorker(config(mosquitto.port, url, client_id=f"w{i}", **extra), stores[i]) for i in range(2)]
    pub = Publisher(mosquitto.port)
    acked = lambda: sum(w.metrics.messages_acked for w in workers)  # noqa: E731
    try:
        with running(workers[0]), running(workers[1]):
            pub.send(TOPIC, REVISION)  # the gateway's later batch reaches the store first
            wait_for(lambda: acked() == 1, 15, "the revision stored")
            pub.send(TOPIC, ORIGINAL)
            wait_for(lambda: acked() == 2, 15, "the original stored")
            pub.send(TOPIC, ORIGINAL)  # and re-sent once more, as a gateway does without a receipt
            wait_for(lambda: acked() == 3, 15, "the re-sent original stored")
        stored = flags(stores[0])
        assert stored[2] == (QualityFlag.SUSPECT, "spike")
        assert stored == {0: (QualityFlag.PASS, "gross_range"), 1: (QualityFlag.PASS, "gross_range"),
                          2: (QualityFlag.SUSPECT, "spike"), 3: (QualityFlag.PASS, "gross_range"),
                          4: (QualityFlag.PASS, "gross_range"), 5: (QualityFlag.PASS, "gross_range")}
    finally:
        pub.close()
        for s in stores:
            s.close()


class Interleaved:
    """A real store that runs `first` (another worker's whole batch) just before its first write."""

    def __init__(self, store, first) -> None:
        self.store, self.first, self.writes = store, first, []

    def write(self, observations) -> None:
        first, self.first = self.first, None
        if first is not None:
            first()
        self.writes.append(list(observations))
        self.store.write(observations)

    def query(self, selection):
        return self.store.query(selection)

    def close(self) -> None:
        self.store.close()


def message(worker: IngestWorker, payload: bytes) -> Received:
    now = time.time_ns()
    return Received(TOPIC, payload, 1, 1, 0, now, time.monotonic(), batch=worker.validator.check(TOPIC, payload))


def two_workers(url: str, extra: dict, first_writer: str):
    """Workers A (original) and B (revision), off any broker; `first_writer`'s store first runs the other."""
    stop = threading.Event()
    plain = {name: open_store(url) for name in "AB"}
    a_store = Interleaved(plain["A"], None)
    b_store = Interleaved(plain["B"], None)
    a = IngestWorker(config(1, url, client_id="a", **extra), a_store)
    b = IngestWorker(config(1, url, client_id="b", **extra), b_store)
    if first_writer == "A":
        a_store.first = lambda: b._process([message(b, REVISION)], stop)
    else:
        b_store.first = lambda: a._process([message(a, ORIGINAL)], stop)
    return a, b, a_store, b_store, stop


def test_an_original_written_over_its_revision_is_written_again_with_the_revision(url_and_state):
    url, extra = url_and_state
    a, b, a_store, b_store, stop = two_workers(url, extra, first_writer="A")
    try:
        # A found no revision before writing; B then recorded and wrote one; A's write lands on top.
        a._process([message(a, ORIGINAL)], stop)
        assert [o.flag for o in a_store.writes[0] if o.time_ns == T0 + 2 * 10**9] == [QualityFlag.PASS]
        assert [(o.flag, o.revision) for o in a_store.writes[1]] == [(QualityFlag.SUSPECT, 1)], \
            "A did not write the revision again after its own write"
        assert flags(a_store)[2] == (QualityFlag.SUSPECT, "spike")
    finally:
        for w in (a, b):
            w.store.close()
            for state in w._owned:
                state.close()


def test_an_original_arriving_after_its_revision_was_recorded_is_never_written(url_and_state):
    url, extra = url_and_state
    a, b, a_store, b_store, stop = two_workers(url, extra, first_writer="B")
    try:
        # B recorded the revision, then A handles the original before B's store write.
        b._process([message(b, REVISION)], stop)
        (written_by_a,) = a_store.writes
        assert [(o.flag, o.revision) for o in written_by_a if o.time_ns == T0 + 2 * 10**9] == \
            [(QualityFlag.SUSPECT, 1)], "A wrote the older copy"
        assert len(written_by_a) == 5
        assert flags(a_store)[2] == (QualityFlag.SUSPECT, "spike")
    finally:
        for w in (a, b):
            w.store.close()
            for state in w._owned:
                state.close()


def test_the_revision_log_keeps_the_copy_the_gateway_ranks_highest_whatever_the_arrival_order(tmp_path):
    def batch(seq: int, *obs: Observation) -> Batch:
        return Batch("farm-1", "gw-1", seq, T0, obs)

    with RevisionLog(tmp_path / "state.sqlite") as log:
        assert log.record([batch(7, reading(1))]) == 0, "an observation never revised costs no row"
        log.record([batch(9, reading(1, QualityFlag.FAIL, revision=1))])
        log.record([batch(8, reading(1, QualityFlag.SUSPECT, revision=2))])  # older batch, arriving late
        (kept,) = log.newer([batch(7, reading(1))]).values()
        assert kept.rank == (9, 1) and kept.observation.flag is QualityFlag.FAIL
        log.record([batch(9, reading(1, QualityFlag.MISSING, revision=2))])  # same batch, later revision
        (kept,) = log.newer([batch(7, reading(1))]).values()
        assert kept.rank == (9, 2) and kept.observation == reading(1, QualityFlag.MISSING, revision=2)
        assert log.newer([batch(10, reading(1))]) == {}, "a later batch is not outranked"
        assert log.newer([batch(7, reading(3))]) == {}, "another time is not touched"
        log.withdraw([batch(9, reading(1, QualityFlag.MISSING, revision=2))])
        assert log.count() == 0
