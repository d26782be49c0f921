"""Delivery soak: broker restarts, SIGKILLed ingest workers and a long outage, under load.

The long version of tests/e2e/test_broker_restart.py, on the same harness
(`Pipeline`, `Audit` there, whose docstring explains the ground truth: the
gateway's own batch numbers, their content from a recording subscriber whose
plain subscription Mosquitto restores, a drain run that empties the spool).

Real processes on loopback: Mosquitto (the test configuration), one
`humus collect` with five simulated probes polled every second (three
TEROS-12-like sensors on one SDI-12 bus, two ASCII temperature probes, on
ptys), two `humus ingest` workers on the default shared subscription, the
SQLite archive. Phases:

1. disk full (as root; `--tmpfs-mb 0` skips it): the gateway's data
   directory is a 16 MB tmpfs, filled to the last byte for 5 s during a
   broker outage, then freed; a collector that does not reconnect within
   30 s is restarted by the bench, as systemd's watchdog would;
2. restarts: the broker is restarted `--restarts` times (down 1-4 s, up
   1.5-3 s); every third cycle one worker is killed with SIGKILL and
   restarted at once with the same client id;
3. outage: the broker is down `--outage-s` while the spool grows; the
   workers keep running and come back on their own back-off.

Then the drain and the audit. Prints progress and ends with
`RESULT soak published=N archived=N lost=N duplicated=N restarts=N kills=N dropped_by_gateway=N`:
`lost` counts published observations missing from the archive other than those in batches the gateway
reports having dropped on the full disk (drop-oldest, counted: `dropped_by_gateway` observations).

Usage: .venv/bin/python bench/soak.py [--restarts 30] [--outage-s 12] [--tmpfs-mb 16] [--seed 13] [--keep]
(about 3.5 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import servers  # noqa: E402
from test_broker_restart import Pipeline, obs_key, stop_process, wait_for  # noqa: E402



def audit_seq(batches: dict, key) -> int | None:
    """The seq of the batch that carried observation `key`."""
    for seq, b in batches.items():
        if any(obs_key(o) == key for o in b["observations"]):
            return seq
    return None

def progress(t0: float, msg: str) -> None:
    print(f"[{time.monotonic() - t0:6.1f} s] {msg}", flush=True)


def seen(pipe: Pipeline) -> tuple[int, int]:
    """Batches the recorder saw, observations in the archive (for progress lines)."""
    return len(pipe.recorder.snapshot()), len(pipe.archive_rows())


def restarts_phase(pipe: Pipeline, rng: random.Random, n: int, t0: float) -> None:
    for i in range(1, n + 1):
        up = rng.uniform(1.5, 3.0)
        if i % 3 == 0:
            cid = rng.choice(pipe.worker_ids)
            time.sleep(up / 2)
            pipe.kill_worker(cid)
            pipe.start_worker(cid)     # the supervisor: same client id, at once
            time.sleep(up / 2)
            what = f", {cid} killed -9 and restarted"
        else:
            time.sleep(up)
            what = ""
        down = rng.uniform(1.0, 4.0)
        pipe.restart_broker(down)
        batches, archived = seen(pipe)
        progress(t0, f"restart {i}/{n}: down {down:.1f} s{what}; batches seen {batches}, archived {archived}")


def outage_phase(pipe: Pipeline, outage_s: float, t0: float, label: str = "outage") -> tuple[int, int]:
    """The broker down `outage_s` while the spool grows; returns the outage's (start, end) in ns."""
    before = {cid: pipe.recorder.worker_status(cid)[0] for cid in pipe.worker_ids}
    pipe.broker.stop()
    start_ns = time.time_ns()
    progress(t0, f"{label}: broker down for {outage_s:.0f} s, workers left to their back-off")
    time.sleep(outage_s)
    pipe.broker.start()
    end_ns = time.time_ns()
    pipe.broker_starts_ns.append(end_ns)
    pipe.wait_gateway_connected(end_ns, timeout=60)
    progress(t0, f"{label}: broker back; gateway reconnected after {(time.time_ns() - end_ns) / 1e9:.1f} s")
    try:
        pipe.wait_workers_online(before, timeout=60)
        progress(t0, f"{label}: workers resubscribed after {(time.time_ns() - end_ns) / 1e9:.1f} s")
    except AssertionError as e:
        progress(t0, f"{label}: {e}")
    return start_ns, end_ns


def fill(path: Path) -> int:
    """Write zeros into `path` until the filesystem is full (big blocks, then pages); bytes written."""
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096):
            block = b"\0" * size
            while True:
                try:
                    n += os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)
    return n


def disk_full_phase(pipe: Pipeline, hold_s: float, t0: float) -> tuple[int, int, int, int]:
    """Broker down and the gateway's disk full for `hold_s`, then both back.

    Run first, once everything published is archived, and filled 4 s into
    the outage: what the spool's disk-full policy drops is then mostly
    observations taken during the outage, which never got a batch number
    and are counted apart (probe-seconds without an observation, the
    gateway's drop counter). Once no unsent observation is left the policy
    drops the oldest formed batch, which may be one sent as the broker
    stopped and not yet confirmed: that one counts as lost, and the
    breakdown by phase shows it. Returns (broker stop, disk full, disk freed)
    in ns and how many times the bench had to restart the collector because
    it did not reconnect (what systemd's watchdog does).
    """
    try:
        wait_for(pipe.settled, 20, "the archive to catch up before the disk-full phase", interval=0.5)
    except AssertionError as e:
        progress(t0, f"disk full: {e}; going on")
    filler = pipe.dir / "gw" / "filler"
    stop_ns = time.time_ns()
    pipe.broker.stop()
    time.sleep(4.0)        # unsent observations pile up in the spool
    n = fill(filler)
    start = time.time_ns()
    progress(t0, f"disk full: broker down and {n / 1e6:.1f} MB written into the gateway's tmpfs")
    time.sleep(hold_s)
    filler.unlink()
    pipe.broker.start()
    end = time.time_ns()
    pipe.broker_starts_ns.append(end)
    restarted = 0
    try:
        pipe.wait_gateway_connected(end, timeout=30)
    except AssertionError:
        progress(t0, "disk freed, broker back, but the collector did not reconnect within 30 s: restarting it "
                     "as systemd's watchdog would")
        stop_process(pipe.collector)
        pipe.start_collector()
        restarted = 1
        pipe.wait_gateway_connected(end, timeout=60)
    progress(t0, "disk freed, broker back, gateway connected")
    return stop_ns, start, end, restarted


def slots_without_observations(pipe: Pipeline, start_ns: int, end_ns: int) -> int:
    """Probe-seconds in [start, end) with no observation: polls that never reached the spool."""
    have: dict[str, set[int]] = {}
    for b in pipe.recorder.snapshot().values():
        for o in b["observations"]:
            if start_ns <= o["time_ns"] < end_ns:
                have.setdefault(o["probe"], set()).add(o["time_ns"] // 10**9)
    seconds = set(range(-(-start_ns // 10**9), end_ns // 10**9))
    probes = {o["probe"] for b in pipe.recorder.snapshot().values() for o in b["observations"]}
    return sum(len(seconds - have.get(p, set())) for p in probes)


def tracebacks(log: Path) -> int:
    return log.read_text(errors="replace").count("Traceback (most recent call last)") if log.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--restarts", type=int, default=30)
    ap.add_argument("--outage-s", type=float, default=12.0)
    ap.add_argument("--tmpfs-mb", type=float, default=16.0 if os.geteuid() == 0 else 0.0,
                    help="put the gateway's data dir on a tmpfs of this size and fill it during an outage "
                         "(root; default 16 as root, 0 = skip)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, archive, spool)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0, start_ns = time.monotonic(), time.time_ns()
    workdir = Path(tempfile.mkdtemp(prefix="humus-soak-"))
    broker = servers.mosquitto(workdir / "mosquitto").start()
    mounted = False
    if args.tmpfs_mb > 0:
        (workdir / "gw").mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(args.tmpfs_mb * 1024)}k", "tmpfs",
                            str(workdir / "gw")], capture_output=True, text=True)
        mounted = r.returncode == 0
        if not mounted:
            progress(t0, f"no tmpfs ({r.stderr.strip()}): the disk-full phase is skipped")
    pipe = Pipeline(workdir, broker, workers=2, subscription="shared", sdi12_addresses=("0", "1", "2"),
                    ascii_probes=2)
    disk_full: tuple[int, int, int, int] | None = None
    try:
        pipe.start_workers()
        pipe.start_collector()
        wait_for(lambda: len(pipe.recorder.snapshot()) >= 3, 30, "the first batches")
        progress(t0, f"running: 5 probes every 1 s, 2 shared workers, broker on 127.0.0.1:{broker.port}")

        if mounted:
            disk_full = disk_full_phase(pipe, 5.0, t0)
        restarts_start = time.time_ns()
        restarts_phase(pipe, rng, args.restarts, t0)
        time.sleep(2.0)
        restarts_end = time.time_ns()
        outage = outage_phase(pipe, args.outage_s, t0)
        time.sleep(3.0)

        progress(t0, "draining: the collector restarted without probes until its spool is empty")
        try:
            next_seq = pipe.drain(timeout=90)
        except AssertionError as e:
            next_seq = max(pipe.recorder.snapshot(), default=0) + 1
            progress(t0, f"drain incomplete ({e}); auditing batches 1..{next_seq - 1} seen by the recorder")
        audit = pipe.audit(next_seq)
        pipe.stop_workers()

        in_outage = sum(1 for k in audit.lost_keys if outage[0] <= k[3] <= outage[1])
        print(f"published (distinct observations in batches 1..{audit.formed}): {audit.published}")
        print(f"archived: {audit.archived}; lost: {audit.lost} ({audit.lost_percent:.1f} %) in "
              f"{len(audit.lost_seqs)} batches; duplicated: {audit.duplicated}; unexpected: {audit.unexpected}")
        print(f"batches seen on the broker more than once (re-sent or redelivered): {audit.repeats}")
        print(f"lost observations taken during the {args.outage_s:.0f} s outage (its backlog): {in_outage}")
        phases = [("restarts", restarts_start, restarts_end), ("outage", outage[0], time.time_ns())]
        if disk_full:
            phases.insert(0, ("disk-full", disk_full[0], disk_full[2]))
        by_phase = {name: 0 for name, _, _ in phases} | {"other": 0}
        batches = pipe.recorder.snapshot()
        for seq in audit.lost_seqs:
            b = batches[seq]
            n = sum(1 for o in b["observations"] if obs_key(o) in audit.lost_keys)
            name = next((nm for nm, a, z in phases if a <= b["sent_ns"] <= z), "other")
            by_phase[name] += n
        print("lost by the phase their batch was formed in: " + ", ".join(f"{k} {v}" for k, v in by_phase.items()))
        if audit.lost_after_restart_s:
            print(f"lost batches were formed {min(audit.lost_after_restart_s):.1f}-"
                  f"{max(audit.lost_after_restart_s):.1f} s after a broker start")
        for seq in audit.lost_seqs[:5]:
            b = batches[seq]
            missing = sorted({(o["probe"], o["quantity"]) for o in b["observations"] if obs_key(o) in audit.lost_keys})
            print(f"  lost batch {seq}: formed at {(b['sent_ns'] - start_ns) / 1e9:.1f} s, "
                  f"{len(b['observations'])} observations, missing {missing[:6]}")
        if audit.unseen_seqs:
            print(f"ground truth incomplete: the recorder never saw {len(audit.unseen_seqs)} batch(es)")
        print(f"ingest ledger ranges: {audit.ledger[:8]}{' ...' if len(audit.ledger) > 8 else ''}")
        if disk_full:
            print(f"disk full for {(disk_full[2] - disk_full[1]) / 1e9:.0f} s: "
                  f"{slots_without_observations(pipe, disk_full[1], disk_full[2])} probe-seconds without an "
                  f"observation; collector restarted by the bench {disk_full[3]} time(s)")
        dropped = pipe.final_status.get("spool", {}).get("dropped_by_quota", 0)
        print(f"observations the gateway's spool dropped (quota or full disk, its own counter): {dropped}")
        # A formed batch dropped on a full disk (drop-oldest policy, counted and alerted) is not a silent
        # loss: the gateway names its seq (status spool.dropped_seqs). Only the rest counts as lost.
        dropped_seqs = {s for a, b in pipe.final_status.get("spool", {}).get("dropped_seqs", []) for s in range(a, b + 1)}
        in_dropped = sum(1 for k in audit.lost_keys if audit_seq(batches, k) in dropped_seqs)
        silent = audit.lost - in_dropped
        print(f"lost observations in batches the gateway reports dropping: {in_dropped}; lost silently: {silent}")
        print(f"tracebacks in the daemons' log: {tracebacks(pipe.log)}")
        print(f"elapsed {time.monotonic() - t0:.0f} s")
        print(f"RESULT soak published={audit.published} archived={audit.archived} lost={silent} "
              f"duplicated={audit.duplicated} restarts={len(pipe.broker_starts_ns) - 1} kills={pipe.kills} "
              f"dropped_by_gateway={dropped}")
    finally:
        pipe.close()
        broker.stop()
        if mounted:
            subprocess.run(["umount", str(workdir / "gw")], check=False)
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
