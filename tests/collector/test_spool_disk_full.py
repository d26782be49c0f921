"""A full disk degrades the spool, never stops it: a real 2 MB tmpfs, filled past capacity.

Nothing drains while it fills (no broker): the spool and the collector's poll
path are called directly, or a Collector runs with simulated probes and an
unreachable broker.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from collector.spool import Spool, SpoolError
from collector_support import tmpfs, wait_until
from humus.records import Observation
from humus.wire import decode_batch, obs_topic

T0 = 1_790_000_000 * 10**9
RESERVE = 96 * 1024


def obs(i: int, probe: str = "p1") -> Observation:
    return Observation(site="s1", gateway="gw1", probe=probe, quantity="soil_temp", time_ns=T0 + i * 10**9,
                       value=20.0 + i / 100, unit="degC")


def poll(i: int, n: int = 10, probe: str = "p1") -> list[Observation]:
    return [obs(i * n + k, probe) for k in range(n)]


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB filesystem (tmpfs), unmounted at teardown."""
    with tmpfs(tmp_path / "disk", "2m") as d:
        yield d


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file until the filesystem is full (what a runaway log does to an SD card)."""
    path = directory / name
    chunk = b"\0" * 4096
    with open(path, "ab", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
    return path


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def spool_on(directory: Path, quota: int = 10**9, reserve: int = RESERVE) -> Spool:
    return Spool(directory / "spool.sqlite", site="s1", gateway="gw1", quota_bytes=quota, reserve_bytes=reserve)


def drain(sp: Spool) -> list[int]:
    """Form and acknowledge batches until the spool is empty; the time_ns of every observation, in order."""
    seen = []
    while (b := sp.form_batch(max_obs=200, max_bytes=32 * 1024)) is not None:
        seen += [o.time_ns for o in decode_batch(obs_topic("s1", "gw1"), b.payload).observations]
        assert sp.ack([b.seq]) == 1
    return seen


def test_a_spool_on_a_disk_smaller_than_its_quota_drops_the_oldest_and_counts_every_drop(small_disk):
    sp = spool_on(small_disk)
    n_polls, dropped, reasons = 0, 0, set()
    while n_polls < 3000:               # ~3x the disk in payload
        result = sp.append(poll(n_polls))
        dropped += result.dropped
        if result.dropped:
            reasons.add(result.reason)
        n_polls += 1
    st = sp.stats()
    assert reasons == {"disk_full"}
    assert dropped == st.dropped_by_quota > 0
    assert st.dropped_by_quota + st.depth == n_polls * 10
    assert st.disk_bytes + st.reserve_bytes <= 2 * 1024 * 1024
    assert st.reserve_bytes == RESERVE
    assert free_bytes(small_disk) > 0
    # Nothing drains while it fills, yet forming and acknowledging batches works on the full disk.
    seen = drain(sp)
    assert seen == [obs(i).time_ns for i in range(st.dropped_by_quota, n_polls * 10)]   # exactly the oldest went
    sp.append(poll(n_polls))
    assert sp.stats().depth == 10
    sp.close()


def test_batches_are_formed_and_acknowledged_when_something_else_filled_the_disk(small_disk, caplog):
    sp = spool_on(small_disk)
    for i in range(200):
        sp.append(poll(i))
    filler = fill(small_disk)
    assert free_bytes(small_disk) < 4096
    caplog.set_level(logging.WARNING, logger="collector.spool")
    # Polls keep coming: the spool recycles its own pages, dropping the oldest to keep the newest.
    dropped = 0
    for i in range(200, 260):
        result = sp.append(poll(i))
        assert result.reason in (None, "disk_full")
        dropped += result.dropped
    st = sp.stats()
    assert 0 < dropped == st.dropped_by_quota and st.depth + dropped == 2600
    assert any("released" in r.getMessage() and "free space" in r.getMessage() for r in caplog.records)
    seen = drain(sp)
    assert seen == [obs(i).time_ns for i in range(dropped, 2600)]
    assert sp.stats().depth == 0 and free_bytes(small_disk) < 256 * 1024
    # Space comes back: appends resume without drops and the reserve is made again.
    filler.unlink()
    for i in range(300, 310):
        assert sp.append(poll(i)).dropped == 0
    st = sp.stats()
    assert st.depth == 100 and st.reserve_bytes == RESERVE
    sp.close()


def test_a_failed_commit_reports_the_disk_error_not_the_rollback(small_disk):
    sp = spool_on(small_disk, reserve=0)           # no reserve: a full disk must surface, with its real cause
    for i in range(100):
        sp.append(poll(i))
    fill(small_disk)
    with pytest.raises(SpoolError) as info:
        for _ in range(50):
            assert sp.form_batch(max_obs=1000, max_bytes=256 * 1024) is not None
    msg = str(info.value)
    assert "full" in msg and "no transaction is active" not in msg
    assert str(sp.path) in msg and "free space" in msg
    sp.close()


def test_disk_used_by_the_spool_stays_near_its_quota_through_fill_and_drain(tmp_path):
    with tmpfs(tmp_path / "disk", "16m") as d:
        quota = 2_000_000
        sp = spool_on(d, quota=quota)
        worst = 0
        i = 0
        for _round in range(3):
            target = sp.stats().dropped_by_quota + 100
            while sp.stats().dropped_by_quota < target:             # fill past the quota
                assert sp.append(poll(i)).reason in (None, "quota")
                i += 1
                worst = max(worst, sp.disk_bytes())
            while (b := sp.form_batch(max_obs=500, max_bytes=64 * 1024)) is not None:   # drain it all
                sp.ack([b.seq])
                worst = max(worst, sp.disk_bytes())
        st = sp.stats()
        sp.close()
        # Measured: 1.02x (it was 3.6x before the WAL was checkpointed and truncated, 1.3x counting payload).
        assert worst <= 1.1 * quota, f"spool used {worst / quota:.2f}x its quota on disk"
        assert st.depth == 0 and st.bytes == 0


def test_quota_drops_are_counted_exactly_under_two_threads(tmp_path):
    sp = Spool(tmp_path / "spool.sqlite", site="s1", gateway="gw1", quota_bytes=20_000)
    reported = [0, 0]

    def writer(k: int) -> None:
        for i in range(150):
            reported[k] += sp.append(poll(i, 4, probe=f"p{k}")).dropped

    threads = [threading.Thread(target=writer, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    st = sp.stats()
    assert st.dropped_by_quota > 0
    assert sum(reported) == st.dropped_by_quota
    assert st.dropped_by_quota + st.depth == 2 * 150 * 4
    sp.close()


# -- the collector's poll path -----------------------------------------------------------------------

def _collector(tmp_path, data_dir, sim_probes, n: int = 2):
    import servers
    from collector.config import load_gateway_config
    from collector.daemon import Collector
    from collector_support import gateway_toml

    probes = sim_probes(n)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(gateway_toml(data_dir, servers.free_port(),          # nothing listens: nothing drains
                                [{"id": f"p{i}", "driver": "ascii-temp", "port": str(p.link), "interval_s": 1}
                                 for i, p in enumerate(probes)], publish="max_batch_bytes = 16384"))
    return Collector(load_gateway_config(cfg))


@pytest.fixture
def alerts(monkeypatch):
    """Every alert the collector raises (the real Publisher.alert still runs)."""
    from collector.publisher import Publisher

    seen: list[tuple[str, str, str]] = []
    original = Publisher.alert

    def alert(self, kind, subject, message, **extra):
        seen.append((kind, subject, message))
        return original(self, kind, subject, message, **extra)

    monkeypatch.setattr(Publisher, "alert", alert)
    return seen


def polls(c) -> int:
    with c.state.lock:
        return sum(p.polls for p in c.state.probes.values())


def test_the_collector_keeps_polling_on_a_full_disk_and_accounts_for_every_observation(
        tmp_path, small_disk, sim_probes, alerts, caplog):
    caplog.set_level(logging.INFO)
    c = _collector(tmp_path, small_disk / "data", sim_probes)
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert c.ready.wait(10)
        wait_until(lambda: polls(c) >= 2, 10, "first polls")
        filler = fill(small_disk)
        full_at = polls(c)
        wait_until(lambda: polls(c) >= full_at + 6, 15, "polls on the full disk")
        assert all(w.thread.is_alive() for w in c.workers)
        kinds = {k for k, _, _ in alerts}
        print("alerts on the full disk:", sorted(kinds), "failed polls:", c.state.spool_failures,
              "dropped:", c.spool.stats().dropped_by_quota)
        assert kinds & {"disk_full", "spool_failure"}
        filler.unlink()
        freed_ns = time.time_ns()
        freed_at = polls(c)
        wait_until(lambda: polls(c) >= freed_at + 4, 15, "polls after space came back")
        assert c.healthy()
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert not [r for r in caplog.records if "unexpectedly" in r.getMessage() or r.exc_info]
    assert sum(k == "spool_failure" for k, _, _ in alerts) <= 1          # once per episode
    sp = spool_on(small_disk / "data")
    st = sp.stats()
    seen = drain(sp)
    sp.close()
    # Every observation of every poll is spooled, counted as dropped, or counted as lost.
    assert st.depth + st.dropped_by_quota + c.state.spool_lost_observations == polls(c)
    assert max(seen) >= freed_ns - 10**9                     # polls after space came back were spooled


def test_polls_the_spool_refuses_are_counted_and_alerted_once_per_episode(tmp_path, sim_probes, alerts, caplog,
                                                                           monkeypatch):
    import sqlite3

    failing = threading.Event()
    original = Spool._make_room

    def make_room(self, size, extra=0):          # fault injection below the spool's own error handling
        if failing.is_set():
            raise sqlite3.OperationalError("disk I/O error")
        return original(self, size, extra)

    monkeypatch.setattr(Spool, "_make_room", make_room)
    caplog.set_level(logging.INFO)
    c = _collector(tmp_path, tmp_path / "data", sim_probes)
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert c.ready.wait(10)
        wait_until(lambda: polls(c) >= 2, 10, "first polls")
        for episode in (1, 2):
            failing.set()
            wait_until(lambda: c.state.spool_failures >= 4 * episode, 15, "polls the spool refused")
            failing.clear()
            ok_at = polls(c)
            wait_until(lambda: polls(c) >= ok_at + 2, 10, "polls spooled again")
        status = c.status()
        assert all(w.thread.is_alive() for w in c.workers)
    finally:
        stop.set()
        t.join(30)
    assert [k for k, _, _ in alerts].count("spool_failure") == 2                 # one per episode
    assert status["spool"]["failed_polls"] == c.state.spool_failures
    assert status["spool"]["lost_observations"] == c.state.spool_lost_observations == c.state.spool_failures
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all(str(c.config.spool_path) in m and "check" in m for m in errors)
    assert not [r for r in caplog.records if r.exc_info]
    sp = spool_on(tmp_path / "data")
    st = sp.stats()
    sp.close()
    assert st.depth + c.state.spool_lost_observations == polls(c)
