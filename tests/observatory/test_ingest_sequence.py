"""Pure parts of ingest: seq intervals and gaps, the gateway registry, the metrics document."""

from __future__ import annotations

import pytest

from humus.records import Observation
from humus.wire import Rejection, WireError, encode_batch, obs_topic
from observatory.metrics import IngestMetrics, log_line
from observatory.sequence import GapTracker, contains, holes, merge
from observatory.validate import Validator

S = 10**9


def test_merge_joins_adjacent_and_overlapping_seqs_into_few_intervals():
    assert merge([], [3, 1, 2, 7, 9, 8]) == [(1, 3), (7, 9)]
    assert merge([(0, 5), (10, 12)], [6, 7, 8, 9]) == [(0, 12)]
    assert merge([(0, 5)], [2, 3]) == [(0, 5)]


def test_contains_finds_a_seq_only_inside_an_interval():
    iv = [(0, 5), (10, 12), (20, 20)]
    assert [s for s in range(-1, 23) if contains(iv, s)] == [0, 1, 2, 3, 4, 5, 10, 11, 12, 20]


def test_holes_lie_between_intervals_never_before_the_first():
    assert holes([(5, 7), (10, 12), (14, 20)]) == [(8, 9), (13, 13)]
    assert holes([(100, 200)]) == []


def test_a_hole_becomes_a_gap_only_after_the_grace_period_and_is_reported_once():
    g = GapTracker(grace_ns=60 * S)
    key = ("farm-1", "gw-1")
    assert g.observe(key, [(0, 2), (5, 9)], now_ns=0) == []
    assert g.observe(key, [(0, 2), (5, 12)], now_ns=30 * S) == []
    assert g.observe(key, [(0, 2), (5, 12)], now_ns=61 * S) == [(3, 4)]
    assert g.observe(key, [(0, 2), (5, 12)], now_ns=120 * S) == []


def test_a_hole_filled_by_another_worker_within_the_grace_is_never_a_gap():
    g = GapTracker(grace_ns=60 * S)
    key = ("farm-1", "gw-1")
    g.observe(key, [(0, 2), (5, 9)], now_ns=0)
    assert g.observe(key, [(0, 9)], now_ns=10 * S) == []
    assert g.observe(key, [(0, 9)], now_ns=100 * S) == []
    assert g.open_keys() == set()


def test_a_hole_split_by_a_late_batch_keeps_its_age():
    g = GapTracker(grace_ns=60 * S)
    key = ("farm-1", "gw-1")
    g.observe(key, [(0, 0), (10, 10)], now_ns=0)
    assert g.observe(key, [(0, 0), (5, 5), (10, 10)], now_ns=61 * S) == [(1, 4), (6, 9)]


def _batch(site="farm-1", gw="gw-1") -> bytes:
    o = Observation(site=site, gateway=gw, probe="p", quantity="vwc", time_ns=1, value=0.2, unit="m3/m3")
    return encode_batch(site, gw, 0, [o])


def test_registry_rejects_an_unknown_gateway_before_reading_its_payload():
    v = Validator(gateways=("farm-1/gw-1",))
    assert v.check(obs_topic("farm-1", "gw-1"), _batch()).gateway == "gw-1"
    with pytest.raises(WireError) as e:
        v.check(obs_topic("farm-1", "gw-2"), b"not even json")
    assert e.value.reason is Rejection.UNKNOWN_GATEWAY and "farm-1/gw-2" in str(e.value)


def test_without_registry_any_well_formed_gateway_is_admitted():
    assert Validator().check(obs_topic("farm-2", "gw-9"), _batch("farm-2", "gw-9")).site == "farm-2"


def test_a_lower_size_limit_rejects_as_too_large():
    with pytest.raises(WireError) as e:
        Validator(max_message_bytes=1024).check(obs_topic("farm-1", "gw-1"), b"x" * 2000)
    assert e.value.reason is Rejection.TOO_LARGE


def test_metrics_snapshot_gives_rates_over_the_interval_and_rejections_by_reason():
    m = IngestMetrics(started_ns=0)
    m.add(observations_in=1000, messages_in=10)
    m.store_write(0.02, 1000, 10, lag_s=0.5)
    m.reject("bad_schema")
    doc = m.snapshot(now_ns=2 * S)
    assert doc["rates_per_s"]["observations_written"] == 500.0
    assert doc["totals"]["rejected_by_reason"] == {"bad_schema": 1}
    assert doc["store_latency_s"]["mean"] == 0.02 and doc["lag_s"] == 0.5
    m.add(observations_in=100)
    later = m.snapshot(now_ns=3 * S)
    assert later["rates_per_s"]["observations_in"] == 100.0 and later["store_latency_s"]["mean"] is None
    assert "rejected=bad_schema=1" in log_line(later)
