"""Ledger news between ingest workers (observatory.ledgershare): the message, its refusals, the merge."""

from __future__ import annotations

import json

import pytest

from observatory.deadletter import BatchLedger
from observatory.ledgershare import (LEDGER_FILTER, MAX_GATEWAYS, MAX_RANGES, MESSAGE_BYTES, decode_news, encode_news,
                                     is_ledger_topic, ledger_topic, uncovered)
from humus.wire import OBS_SUBSCRIPTION


def test_news_round_trip_keeps_every_range_and_splits_many_gateways():
    stored = {("farm-1", "gw-1"): [(0, 9), (12, 40)], ("farm-2", "gw-7"): [(5, 5)]}
    (payload,) = encode_news("ab" * 16, "humus-ingest", "ingest-1", stored, {("farm-1", "gw-1"): [(12, 40)]})
    news = decode_news(payload)
    assert (news.ledger_id, news.group, news.by) == ("ab" * 16, "humus-ingest", "ingest-1")
    assert news.stored == {("farm-1", "gw-1"): ((0, 9), (12, 40)), ("farm-2", "gw-7"): ((5, 5),)}
    assert news.verified == {("farm-1", "gw-1"): ((12, 40),)}
    many = {("farm-1", f"gw-{i}"): [(0, i)] for i in range(MAX_GATEWAYS + 3)}
    parts = encode_news("ab" * 16, "g", "w", many)
    assert len(parts) == 2
    assert sum(len(decode_news(p).stored) for p in parts) == MAX_GATEWAYS + 3


def test_news_of_many_gateways_with_many_holes_is_cut_into_messages_receivers_take():
    holes = [(10**15 + 2 * i, 10**15 + 2 * i) for i in range(MAX_RANGES)]   # about 3 kB per gateway
    many = {("farm-1", f"gw-{i}"): holes for i in range(400)}
    parts = encode_news("ab" * 16, "g", "w", many, many)
    assert len(parts) > 1 and all(len(p) <= 2 * MESSAGE_BYTES for p in parts)
    got = [decode_news(p) for p in parts]
    assert {k for n in got for k in n.stored} == set(many) == {k for n in got for k in n.verified}
    assert all(r == tuple(holes) for n in got for r in n.stored.values())


def test_news_keeps_the_newest_ranges_of_a_gateway_with_many_holes():
    ranges = [(2 * i, 2 * i) for i in range(MAX_RANGES + 10)]
    (payload,) = encode_news("ab" * 16, "g", "w", {("farm-1", "gw-1"): ranges})
    assert decode_news(payload).stored[("farm-1", "gw-1")] == tuple(ranges[-MAX_RANGES:])


def _doc(**changes) -> bytes:
    doc = json.loads(encode_news("ab" * 16, "g", "w", {("farm-1", "gw-1"): [(0, 9)]})[0])
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("payload, says", [
    (b"{not json", "not JSON"),
    (b"[]", "schema"),
    (_doc(schema="humus/ledger/v0"), "schema"),
    (_doc(ledger="XYZ"), "ledger"),
    (_doc(group="a/b"), "group"),
    (_doc(by=""), "by"),
    (_doc(stored={"farm-1": 1}), "stored"),
    (_doc(stored=[["farm-1", "GW 1", [[0, 1]]]]), "stored[0]"),
    (_doc(stored=[["farm-1", "gw-1", [[5, 1]]]]), "range [5, 1]"),
    (_doc(stored=[["farm-1", "gw-1", [[-1, 1]]]]), "range [-1, 1]"),
    (_doc(stored=[["farm-1", "gw-1", [[0, 2**63]]]]), "2**63"),
    (_doc(stored=[["farm-1", "gw-1", [[True, 1]]]]), "first, last"),
    (_doc(verified=[["farm-1", "gw-1", [[0, 1]] * (MAX_RANGES + 1)]]), "verified[0]"),
    (b" " * 1_000_001, "bytes"),
])
def test_a_bad_message_is_refused_with_what_is_wrong(payload, says):
    with pytest.raises(ValueError, match=None) as e:
        decode_news(payload)
    assert says in str(e.value)


def test_ledger_topics_never_match_the_gateways_subscriptions():
    assert ledger_topic("ingest-1") == "humus/v1/_ingest/ingest-1/ledger"
    assert is_ledger_topic(ledger_topic("ingest-1")) and not is_ledger_topic("humus/v1/farm-1/gw-1/obs")
    import paho.mqtt.client as mqtt
    assert mqtt.topic_matches_sub(LEDGER_FILTER, ledger_topic("ingest-2"))
    assert not mqtt.topic_matches_sub(OBS_SUBSCRIPTION, ledger_topic("ingest-2"))


def test_uncovered_keeps_only_what_adds_to_the_ranges_held():
    assert uncovered([(0, 9), (3, 4), (10, 12), (20, 30)], [(0, 9), (20, 25)]) == [(10, 12), (20, 30)]


def test_ledger_id_is_one_per_state_file_and_ranges_merge_with_local_seqs(tmp_path):
    with BatchLedger(tmp_path / "a.sqlite") as a, BatchLedger(tmp_path / "a.sqlite") as a2, \
            BatchLedger(tmp_path / "b.sqlite") as b:
        assert a.ledger_id() == a2.ledger_id() != b.ledger_id()
        a.record_many("farm-1", "gw-1", [0, 1, 4, 9])
        a.record_ranges({("farm-1", "gw-1"): [(2, 3), (5, 8)], ("farm-1", "gw-2"): [(0, 2)]},
                        {("farm-1", "gw-1"): [(2, 3)]})
        assert a.ranges("farm-1", "gw-1") == [(0, 9)]
        assert a.ranges("farm-1", "gw-2") == [(0, 2)]
        assert a.verified_ranges("farm-1", "gw-1") == [(2, 3)]
        first = a.ledger_id()
    with BatchLedger(tmp_path / "a.sqlite") as again:
        assert again.ledger_id() == first


def test_a_user_name_that_cannot_name_a_topic_level_turns_sharing_off_with_one_warning(tmp_path, caplog):
    import dataclasses

    from observatory.stores.sqlite import SqliteStore
    from observatory.worker import IngestWorker
    from test_ingest import config

    db = tmp_path / "a.sqlite"
    with SqliteStore(db) as store:
        ok = IngestWorker(config(1, f"sqlite:{db}", client_id="ingest-1"), store)
        assert ok._ledger_id is not None and ok._ledger_topic == "humus/v1/_ingest/ingest-1/ledger"
        cfg = config(1, f"sqlite:{db}", client_id="ingest-2")
        cfg = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, username="team/ingest"))
        bad = IngestWorker(cfg, store)
        assert bad._ledger_id is None
        assert "does not share its batch seqs" in caplog.text
        plain = IngestWorker(config(1, f"sqlite:{db}", client_id="ingest-3", subscription="plain"), store)
        assert plain._ledger_id is None   # one worker sees every message: nothing to share
