"""Group commit: the appends of one poll cycle, from several port threads, share one durable transaction.

Each append must still return only after the commit that holds it (a fresh
connection then sees its rows), a writer that announced an append and never
makes it costs the others at most the window, and a commit that fails fails
every append of its group.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from collector.schedule import PortWorker, ScheduledProbe
from collector.spool import Spool, SpoolError
from collector_support import RunningCollector, gateway_toml, tmpfs, wait_until
from humus.records import Observation

T0 = 1_790_000_000 * 10**9


def poll(writer: int, n: int = 5) -> list[Observation]:
    return [Observation(site="s1", gateway="gw1", probe=f"p{writer}", quantity="soil_temp", time_ns=T0 + k * 10**9,
                        value=20.0 + k / 100, unit="degC") for k in range(n)]


def spool(directory: Path, window_s: float, reserve: int = 96 * 1024) -> Spool:
    return Spool(directory / "spool.sqlite", site="s1", gateway="gw1", quota_bytes=10**9, reserve_bytes=reserve,
                 group_window_s=window_s)


def rows_of(path: Path, probe: str) -> int:
    """Committed rows of `probe`, as another process would see them after a power cut (a new connection)."""
    db = sqlite3.connect(str(path))
    try:
        return db.execute("SELECT COUNT(*) FROM obs WHERE body LIKE ?", (f'{{"probe":"{probe}",%',)).fetchone()[0]
    finally:
        db.close()


def append_all(sp: Spool, writers: list[int], n: int = 5) -> tuple[dict[int, int], dict[int, BaseException]]:
    """Each writer appends on its own thread; the rows each saw committed when its append returned."""
    seen: dict[int, int] = {}
    errors: dict[int, BaseException] = {}

    def run(w: int) -> None:
        try:
            sp.append(poll(w, n), {f"p{w}/soil_temp/raw": "[]"}, writer=f"port-{w}")
            seen[w] = rows_of(sp.path, f"p{w}")
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            errors[w] = e

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return seen, errors


def test_the_appends_of_one_cycle_share_one_commit_and_each_returns_committed(tmp_path):
    sp = spool(tmp_path, window_s=10.0)      # long: only the last announced append may end the wait
    writers = list(range(8))
    for w in writers:
        sp.expect(f"port-{w}")
    start = time.monotonic()
    seen, errors = append_all(sp, writers)
    assert not errors
    assert time.monotonic() - start < 5.0, "the group waited out its window although every writer came"
    assert (sp.commits, sp.appends) == (1, 8)
    assert seen == {w: 5 for w in writers}          # durable when append returned, for every member
    assert len(sp.qc_state()) == 8
    assert sp.stats().unsent_observations == 40
    sp.close()


def test_appends_without_announcement_do_not_wait(tmp_path):
    sp = spool(tmp_path, window_s=10.0)
    start = time.monotonic()
    for i in range(3):
        sp.append(poll(i))
    assert time.monotonic() - start < 5.0
    assert sp.commits == 3
    sp.close()


def test_a_writer_that_announced_and_never_appends_delays_the_others_at_most_the_window(tmp_path):
    sp = spool(tmp_path, window_s=1.0)
    sp.expect("port-dead")                   # its probe hangs: it will not append in this cycle
    start = time.monotonic()
    seen, errors = append_all(sp, [0, 1])
    waited = time.monotonic() - start
    assert not errors and seen == {0: 5, 1: 5}
    assert 1.0 <= waited < 4.0, waited
    sp.withdraw("port-dead")
    start = time.monotonic()
    sp.append(poll(2), writer="port-2")
    assert time.monotonic() - start < 0.9, "a withdrawn announcement still held the group"
    sp.close()


def test_withdrawing_the_last_announcement_ends_the_wait_at_once(tmp_path):
    sp = spool(tmp_path, window_s=20.0)
    sp.expect("port-slow")
    threading.Timer(0.3, sp.withdraw, args=("port-slow",)).start()
    start = time.monotonic()
    sp.append(poll(0))
    waited = time.monotonic() - start
    assert 0.25 <= waited < 10.0, waited
    sp.close()


def test_appends_arriving_during_a_commit_form_the_next_group_and_all_are_stored(tmp_path):
    sp = spool(tmp_path, window_s=0.05)
    per_thread, threads = 40, 6

    def writer(w: int) -> None:
        for i in range(per_thread):
            sp.append(poll(w * 1000 + i, 2), writer=f"port-{w}")

    ts = [threading.Thread(target=writer, args=(w,)) for w in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert sp.appends == per_thread * threads
    assert sp.commits <= sp.appends
    assert sp.stats().unsent_observations == per_thread * threads * 2
    sp.close()


class Interrupted(Exception):
    pass


def test_a_leader_interrupted_while_waiting_still_commits_its_group_and_frees_the_next(tmp_path):
    """A signal (Ctrl-C in `humus demo`) landing in the leader's wait must not leave the spool leaderless."""
    sp = spool(tmp_path, window_s=20.0)
    sp.expect("port-slow")

    def interrupt(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGUSR1)).start()
        start = time.monotonic()
        with pytest.raises(Interrupted):
            sp.append(poll(0))                      # the main thread leads, waiting for port-slow
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert time.monotonic() - start < 10.0
    assert rows_of(sp.path, "p0") == 5              # committed before the interruption was raised
    sp.withdraw("port-slow")
    seen, errors = append_all(sp, [1, 2])
    assert not errors and seen == {1: 5, 2: 5}
    sp.close()


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB filesystem (tmpfs), unmounted at teardown."""
    with tmpfs(tmp_path / "disk", "1m") as d:
        yield d


def test_a_commit_error_reaches_every_append_of_its_group(small_disk):
    sp = spool(small_disk, window_s=10.0, reserve=0)     # no reserve: the full disk must surface
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    writers = [0, 1, 2, 3]
    for w in writers:
        sp.expect(f"port-{w}")
    seen, errors = append_all(sp, writers, n=400)          # ~80 KB: the WAL has to grow
    assert sorted(errors) == writers, (seen, errors)
    assert all(isinstance(e, SpoolError) and "full" in str(e) for e in errors.values())
    assert sp.commits == 0 and sp.stats().unsent_observations == 0
    filler.unlink()
    seen, errors = append_all(sp, writers, n=400)
    assert not errors and seen == {w: 400 for w in writers}
    sp.close()


def test_a_port_stopped_mid_slot_still_hands_over_what_it_read():
    stop = threading.Event()
    flushed: list[list[str]] = []

    def first(slot: int) -> str:
        stop.set()                    # the collector stops while this bus is half way through its slot
        return "first"

    def second(slot: int) -> str:
        return "second"

    probes = [ScheduledProbe("a", 0.2, first), ScheduledProbe("b", 0.2, second)]
    w = PortWorker("bus", probes, stop, flush=flushed.append)
    w.start()
    assert w.join(10)
    assert flushed == [["first"]]


def test_a_slot_whose_polls_all_failed_is_flushed_empty():
    """The collector withdraws its spool announcement on an empty flush; a poll that raised gives one."""
    stop = threading.Event()
    flushed: list[list[str]] = []

    def broken(slot: int) -> str:
        if flushed:
            stop.set()
        raise RuntimeError("injected: a bug in the driver")

    w = PortWorker("bus", [ScheduledProbe("a", 0.2, broken)], stop, flush=flushed.append)
    w.start()
    assert w.join(10)
    assert flushed and all(f == [] for f in flushed)


# -- the collector: a failed or slow port never holds the others' commits ----------------------------

def two_ports(tmp_path: Path, sim_probes) -> RunningCollector:
    """A Collector with two ascii-temp probes, each on its own port, on its own thread."""
    import servers

    probes = sim_probes(2)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(gateway_toml(tmp_path / "data", servers.free_port(),
                                [{"id": f"p{i}", "driver": "ascii-temp", "port": str(p.link), "interval_s": 1}
                                 for i, p in enumerate(probes)]))
    return RunningCollector(cfg)


def polls_of(c, probe: str) -> int:
    with c.state.lock:
        return c.state.probes[probe].polls


def _probe(c, probe_id: str):
    return next(p for ps in c._probes.values() for p in ps if p.settings.id == probe_id)


def test_a_port_whose_polls_all_fail_withdraws_and_never_holds_the_others(tmp_path, sim_probes):
    with two_ports(tmp_path, sim_probes) as c:
        wait_until(lambda: polls_of(c, "p1") >= 1, 10, "a first poll")
        c.spool.group_window_s = 3.0                # a lingering announcement would cost 3 s per commit

        def broken():
            raise RuntimeError("injected: a bug in the driver")

        _probe(c, "p0").driver.read = broken
        time.sleep(1.2)                             # p0's announcement of its last good slot is settled
        before, start = polls_of(c, "p1"), time.monotonic()
        wait_until(lambda: polls_of(c, "p1") >= before + 3, 4.5, "p1 polled each second")
        assert time.monotonic() - start < 4.5


def test_a_slow_port_costs_the_others_at_most_the_window(tmp_path, sim_probes):
    with two_ports(tmp_path, sim_probes) as c:
        wait_until(lambda: polls_of(c, "p1") >= 1, 10, "a first poll")
        c.spool.group_window_s = 0.3
        slow = _probe(c, "p0").driver
        real_read = slow.read

        def read_slowly():
            time.sleep(2.5)                         # a probe timing out on its bus
            return real_read()

        slow.read = read_slowly
        before, p0_before = polls_of(c, "p1"), polls_of(c, "p0")
        wait_until(lambda: polls_of(c, "p1") >= before + 4, 6.0, "p1 polled each second beside the slow p0")
        wait_until(lambda: polls_of(c, "p0") >= p0_before + 2, 8.0, "the slow probe's polls stored too")
        assert c.state.spool_failures == 0
