"""The spool: durable appends, numbered batches that never change, deletion only on acknowledgement, quota."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


from collector.spool import Spool
from humus.records import Observation
from humus.wire import decode_batch, obs_topic

REPO = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000 * 10**9


def obs(i: int, probe: str = "p1") -> Observation:
    return Observation(site="s1", gateway="gw1", probe=probe, quantity="soil_temp", time_ns=T0 + i * 10**9,
                       value=20.0 + i / 100, unit="degC")


def spool(path: Path, quota: int = 10**9) -> Spool:
    return Spool(path / "spool.sqlite", site="s1", gateway="gw1", quota_bytes=quota)


def test_batches_carry_every_appended_observation_in_order_and_decode_with_the_wire_codec(tmp_path):
    sp = spool(tmp_path)
    sp.append([obs(i) for i in range(10)])
    sp.append([obs(i) for i in range(10, 25)])
    b1 = sp.form_batch(max_obs=20, max_bytes=1 << 20)
    b2 = sp.form_batch(max_obs=20, max_bytes=1 << 20)
    assert sp.form_batch(max_obs=20, max_bytes=1 << 20) is None
    d1, d2 = (decode_batch(obs_topic("s1", "gw1"), b.payload) for b in (b1, b2))
    assert (d1.seq, d2.seq) == (1, 2)
    assert [o.time_ns for o in [*d1.observations, *d2.observations]] == [obs(i).time_ns for i in range(25)]
    assert d1.observations[0] == obs(0)


def test_batch_size_is_capped_by_bytes(tmp_path):
    sp = spool(tmp_path)
    sp.append([obs(i) for i in range(100)])
    b = sp.form_batch(max_obs=1000, max_bytes=2048)
    assert len(b.payload) <= 2048 and 0 < b.n < 100


def test_an_unacknowledged_batch_survives_reopening_with_the_same_seq_and_bytes(tmp_path):
    sp = spool(tmp_path)
    sp.append([obs(i) for i in range(5)])
    b = sp.form_batch(max_obs=100, max_bytes=1 << 20)
    sp.close()
    sp = spool(tmp_path)
    assert [(p.seq, p.payload) for p in sp.pending_batches()] == [(b.seq, b.payload)]
    sp.append([obs(9)])
    assert sp.form_batch(max_obs=100, max_bytes=1 << 20).seq == b.seq + 1
    assert sp.stats().depth == 6


def test_acknowledged_batches_leave_and_seq_keeps_increasing_after_reopen(tmp_path):
    sp = spool(tmp_path)
    sp.append([obs(1)])
    b = sp.form_batch(max_obs=100, max_bytes=1 << 20)
    assert sp.ack([b.seq]) == 1
    assert sp.stats().depth == 0 and sp.pending_batches() == []
    sp.close()
    sp = spool(tmp_path)
    sp.append([obs(2)])
    assert sp.form_batch(max_obs=100, max_bytes=1 << 20).seq == b.seq + 1


def test_live_and_backlog_are_split_by_row_id(tmp_path):
    sp = spool(tmp_path)
    sp.append([obs(i) for i in range(3)])
    mark = sp.max_obs_id()
    sp.append([obs(i) for i in range(3, 5)])
    live = decode_batch(obs_topic("s1", "gw1"), sp.form_batch(max_obs=100, max_bytes=1 << 20, after_id=mark).payload)
    old = decode_batch(obs_topic("s1", "gw1"), sp.form_batch(max_obs=100, max_bytes=1 << 20, up_to_id=mark).payload)
    assert [o.time_ns for o in live.observations] == [obs(3).time_ns, obs(4).time_ns]
    assert [o.time_ns for o in old.observations] == [obs(i).time_ns for i in range(3)]


def test_at_quota_the_oldest_unsent_observations_are_dropped_and_counted(tmp_path):
    sp = spool(tmp_path, quota=5000)
    for i in range(100):
        sp.append([obs(i)])
    st = sp.stats()
    assert st.bytes <= 5000
    assert st.dropped_by_quota > 0
    assert st.dropped_by_quota + st.depth == 100
    b = decode_batch(obs_topic("s1", "gw1"), sp.form_batch(max_obs=1000, max_bytes=1 << 20).payload)
    times = [o.time_ns for o in b.observations]
    assert times == sorted(times) and times[-1] == obs(99).time_ns      # the newest were kept
    assert times[0] == obs(st.dropped_by_quota).time_ns                   # exactly the oldest were dropped
    sp.close()
    assert spool(tmp_path, quota=5000).stats().dropped_by_quota == st.dropped_by_quota


def test_qc_state_is_saved_with_the_poll(tmp_path):
    sp = spool(tmp_path)
    sp.append([obs(1)], {"p1/soil_temp/raw": "[[1],[2.0],[1]]"})
    sp.close()
    assert spool(tmp_path).qc_state() == {"p1/soil_temp/raw": "[[1],[2.0],[1]]"}


WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from collector.spool import Spool
    from humus.records import Observation
    sp = Spool(sys.argv[1], site="s1", gateway="gw1", quota_bytes=10**9)
    i = 0
    while True:
        sp.append([Observation(site="s1", gateway="gw1", probe="p1", quantity="soil_temp",
                               time_ns={t0} + (i * 4 + k) * 10**6, value=float(i), unit="degC") for k in range(4)])
        print(i, flush=True)          # acknowledged to the 'world' only after the commit returned
        if i % 3 == 2:
            sp.form_batch(max_obs=7, max_bytes=1 << 20)
        i += 1
""")


def test_kill_9_during_appends_loses_no_committed_poll_and_keeps_batches_intact(tmp_path):
    path = tmp_path / "spool.sqlite"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO), t0=T0))
    confirmed = -1
    printed = []
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        last = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            last = int(line)
            if last >= confirmed + 30 + round_ * 7:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        proc.stdout.close()
        assert last is not None
        confirmed = max(confirmed, last)
        printed.append(last)
        # the next round's writer restarts its counter; keep times unique by round offset
        script.write_text(WRITER.format(repo=str(REPO), t0=T0 + (round_ + 1) * 10**15))
    sp = Spool(path, site="s1", gateway="gw1", quota_bytes=10**9)
    seen = []
    for b in sp.pending_batches(0, 10**6):
        seen += [o.time_ns for o in decode_batch(obs_topic("s1", "gw1"), b.payload).observations]
    while (b := sp.form_batch(max_obs=1000, max_bytes=4 << 20)) is not None:
        seen += [o.time_ns for o in decode_batch(obs_topic("s1", "gw1"), b.payload).observations]
    assert len(seen) == len(set(seen))
    for round_ in range(4):
        base = T0 + round_ * 10**15
        got = sorted(t for t in seen if base <= t < base + 10**15)
        n_polls = len(got) // 4
        # every poll a writer printed is present, complete (4 observations), and without gaps
        assert got == [base + j * 10**6 for j in range(n_polls * 4)]
        assert n_polls >= printed[round_] + 1 >= 30
    seqs = [b.seq for b in sp.pending_batches(0, 10**6)]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
