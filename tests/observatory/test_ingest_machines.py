"""Workers on several machines: one shared subscription, a state file each (observatory.ledgershare).

A "machine" here is a worker with its own state file; the archive is shared
as an InfluxDB would be. Real Mosquitto, real shared subscription.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from humus.wire import obs_topic
from observatory.config import state_path
from observatory.deadletter import BatchLedger
from observatory.stores.sqlite import SqliteStore
from observatory.worker import IngestWorker

from test_ingest import Publisher, batch, config, running, stored_count, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

GRACE_S = 3.0


@contextlib.contextmanager
def two_machines(port: int, tmp_path, share: bool, while_running):
    """Two workers, a state file each, one shared archive. Once both have stored seqs 0-39 of one gateway,
    split between them by the shared subscription, `while_running(workers)`; then, the workers stopped,
    yields (db, workers, stores, publisher)."""
    db = tmp_path / "archive.sqlite"
    stores = [SqliteStore(db), SqliteStore(db)]
    workers = [IngestWorker(config(port, f"sqlite:{db}", client_id=f"host{i}-ingest-1",
                                   state_file=str(tmp_path / f"host{i}.ingest.sqlite"), share_ledger=share,
                                   gap_grace_s=GRACE_S, resend_after_s=2.0), stores[i])
               for i in range(2)]
    pub = Publisher(port)
    try:
        with running(workers[0]), running(workers[1]):
            send(pub, range(40))
            wait_for(lambda: stored_count(db) == 200, 40, "200 observations stored")
            assert min(w.metrics.messages_in for w in workers) > 0, "the subscription did not split the load"
            while_running(workers)
        yield db, workers, stores, pub
    finally:
        pub.close()
        for s in stores:
            s.close()


def send(pub: Publisher, seqs) -> None:
    pub.send_many([(obs_topic("farm-1", "gw-1"), batch("farm-1", "gw-1", s, n=5)) for s in seqs])


def ranges(worker: IngestWorker):
    with BatchLedger(state_path(worker.config)) as ledger:
        return ledger.ranges("farm-1", "gw-1")


def test_without_shared_ledgers_each_machine_reports_the_others_share_as_gaps(mosquitto, tmp_path):
    """The fault the ledger news fixes, measured: a state file per machine sees holes everywhere."""
    def false_gaps(workers):
        wait_for(lambda: sum(w.metrics.gaps for w in workers) > 0, GRACE_S + 15, "false gaps reported")

    with two_machines(mosquitto.port, tmp_path, False, false_gaps) as (_, workers, _, _):
        assert all(ranges(w) != [(0, 39)] for w in workers)


def test_machines_with_their_own_state_files_see_every_seq_stored_and_report_no_gap(mosquitto, tmp_path):
    def no_gaps(workers):
        wait_for(lambda: all(ranges(w) == [(0, 39)] for w in workers), 10, "both ledgers to hold 0-39")
        time.sleep(GRACE_S + 1.0)  # every hole the shares opened would now be a gap
        assert [w.metrics.gaps for w in workers] == [0, 0]
        assert [w.metrics.resend_requests for w in workers] == [0, 0]
        assert min(w.metrics.ledger_news for w in workers) > 0

    with two_machines(mosquitto.port, tmp_path, True, no_gaps) as (db, workers, stores, pub):
        # The second machine is away while the first goes on: the broker keeps the away member's share of
        # 40-59 in its session (a true hole until it is back), and the news of those minutes is not queued
        # for it (QoS 0). Back, it stores its share, and the first one's next news of the gateway, which
        # carries its merged ranges, closes the rest: both ledgers end with every seq.
        workers = [IngestWorker(w.config, s) for w, s in zip(workers, stores)]  # a worker object runs once
        with running(workers[0]):
            send(pub, range(40, 60))
            wait_for(lambda: stored_count(db) >= 240, 40, "the first machine's share of 40-59")
            with running(workers[1]):
                send(pub, range(60, 70))
                wait_for(lambda: stored_count(db) == 350, 40, "350 observations stored")
                wait_for(lambda: all(ranges(w) == [(0, 69)] for w in workers), 10, "both ledgers to hold 0-69")


def test_news_from_a_worker_of_another_group_or_of_the_same_state_file_is_not_merged(mosquitto, tmp_path):
    db = tmp_path / "archive.sqlite"
    with SqliteStore(db) as store:
        mine = IngestWorker(config(mosquitto.port, f"sqlite:{db}", client_id="a-1"), store)
        other_group = IngestWorker(config(mosquitto.port, f"sqlite:{db}", client_id="b-1", group="staging",
                                          state_file=str(tmp_path / "b.sqlite")), store)
        same_file = IngestWorker(config(mosquitto.port, f"sqlite:{db}", client_id="a-2"), store)
        peer = IngestWorker(config(mosquitto.port, f"sqlite:{db}", client_id="c-1",
                                   state_file=str(tmp_path / "c.sqlite")), store)
        with running(mine), running(other_group), running(same_file), running(peer):
            other_group._tell({("farm-1", "gw-9"): [(0, 99)]})
            same_file._tell({("farm-1", "gw-8"): [(0, 99)]})
            time.sleep(1.0)
            peer._tell({("farm-1", "gw-7"): [(0, 99)]})   # the one that counts: same group, another file
            wait_for(lambda: mine.metrics.ledger_news == 1, 10, "the peer's news")
            time.sleep(1.0)  # merged by the main loop within half a second
        assert mine.metrics.ledger_news == 1
        with BatchLedger(state_path(mine.config)) as ledger:
            assert ledger.ranges("farm-1", "gw-7") == [(0, 99)]
            assert ledger.ranges("farm-1", "gw-9") == [] and ledger.ranges("farm-1", "gw-8") == []
