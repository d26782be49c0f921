"""Dead letters and the batch ledger the ingest worker keeps in a local SQLite file."""

from __future__ import annotations

import multiprocessing

from observatory.deadletter import BatchLedger, DeadLetters


def test_dead_letters_keep_topic_reason_and_raw_bytes(tmp_path):
    path = tmp_path / "state.sqlite"
    letters = DeadLetters(path)
    letters.add("humus/v1/a/b/obs", b"\xff{not json", "malformed_json", "line 1 column 1")
    letters.add("humus/v1/a/c/obs", b"{}", "bad_schema", "no seq", received_ns=5)
    letters.close()
    again = DeadLetters(path)  # survives a restart
    assert again.count() == 2
    assert again.count_by_reason() == {"bad_schema": 1, "malformed_json": 1}
    newest, oldest = again.recent()
    assert (newest.topic, newest.payload, newest.reason, newest.received_ns) == ("humus/v1/a/c/obs", b"{}", "bad_schema", 5)
    assert oldest.payload == b"\xff{not json" and oldest.detail == "line 1 column 1"


def test_ledger_drops_duplicates_and_reports_gaps(tmp_path):
    ledger = BatchLedger(tmp_path / "state.sqlite")
    for seq in (1, 2, 3, 7, 8, 5):
        ledger.record("site", "gw", seq)
    assert ledger.seen("site", "gw", 2) and ledger.seen("site", "gw", 5) and not ledger.seen("site", "gw", 4)
    assert not ledger.seen("site", "other-gw", 2)
    assert ledger.gaps("site", "gw") == [(4, 4), (6, 6)]
    ledger.record_many("site", "gw", [4, 6, 6, 3])
    assert ledger.ranges("site", "gw") == [(1, 8)] and ledger.gaps("site", "gw") == []
    ledger.record("site", "gw", 1000)
    assert ledger.gaps("site", "gw") == [(9, 999)]
    assert ledger.gateways() == [("site", "gw")]


def test_ledger_keeps_ranges_not_one_row_per_batch(tmp_path):
    ledger = BatchLedger(tmp_path / "state.sqlite")
    ledger.record_many("s", "g", range(0, 5000, 2))
    ledger.record_many("s", "g", range(1, 5000, 2))
    assert ledger.ranges("s", "g") == [(0, 4999)]


def _record(path, start):
    ledger = BatchLedger(path)
    for seq in range(start, 400, 4):
        ledger.record("s", "g", seq)


def test_ledger_shared_by_several_processes_merges_everything(tmp_path):
    path = tmp_path / "state.sqlite"
    BatchLedger(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_record, args=(path, k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert BatchLedger(path).ranges("s", "g") == [(0, 399)]
