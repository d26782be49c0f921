"""Disk the spool really takes against its quota, and what it does on a disk that fills.

1. Fill and drain: on a 32 MB tmpfs, polls of 10 observations are appended
   past `--quota-mb`, then drained by forming and deleting batches of
   256 KiB, `--rounds` times. Prints the worst disk used (file + WAL + -shm,
   allocated blocks) over the quota. Before the WAL was bounded this was
   3.6x (7.2 MB for a 2 MB quota).
2. Full disk: on a 2 MB tmpfs with a 1 GB quota, polls are appended until
   3x the disk has gone by, nothing draining; then another file takes the
   remaining space and polls go on. Prints appends refused (expected 0),
   observations dropped (all counted), and whether batches could then be
   formed and deleted on the full disk.
3. The cost of the disk checks per append (statvfs + two PRAGMAs), against
   the whole append, on the tmpfs (no fsync cost, so the worst ratio).

Needs root (mount -t tmpfs). Usage: .venv/bin/python bench/spool_disk.py [--quota-mb 2] [--rounds 4]
"""

from __future__ import annotations

import argparse
import errno
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.spool import Spool, SpoolError  # noqa: E402
from humus.records import Observation  # noqa: E402

T0 = 1_790_000_000 * 10**9


def poll(i: int) -> list[Observation]:
    return [Observation(site="s1", gateway="gw1", probe="p1", quantity="soil_temp", time_ns=T0 + (i * 10 + k) * 10**9,
                        value=20.0 + k / 100, unit="degC") for k in range(10)]


class Tmpfs:
    def __init__(self, size: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="humus-bench-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.dir)], check=True)

    def __enter__(self) -> Path:
        return self.dir

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "-l", str(self.dir)], check=False)
        self.dir.rmdir()


def fill_and_drain(quota: int, rounds: int) -> tuple[float, float]:
    with Tmpfs("32m") as d:
        sp = Spool(d / "spool.sqlite", site="s1", gateway="gw1", quota_bytes=quota)
        worst, i = 0, 0
        for _ in range(rounds):
            target = sp.stats().dropped_by_quota + 100
            while sp.stats().dropped_by_quota < target:
                sp.append(poll(i))
                i += 1
                worst = max(worst, sp.disk_bytes())
            while (b := sp.form_batch(max_obs=5000, max_bytes=256 * 1024)) is not None:
                sp.ack([b.seq])
                worst = max(worst, sp.disk_bytes())
        payload_at_quota = sp.stats().quota_bytes
        sp.close()
        return worst / quota, payload_at_quota


def full_disk() -> dict[str, int]:
    with Tmpfs("2m") as d:
        sp = Spool(d / "spool.sqlite", site="s1", gateway="gw1", quota_bytes=10**9, reserve_bytes=96 * 1024)
        refused = dropped = 0
        i = 0
        while i < 3000:
            try:
                dropped += sp.append(poll(i)).dropped
            except SpoolError:
                refused += 1
            i += 1
        filler = d / "filler"
        with open(filler, "ab", buffering=0) as f:
            while True:
                try:
                    f.write(b"\0" * 4096)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
        for j in range(i, i + 200):
            try:
                dropped += sp.append(poll(j)).dropped
            except SpoolError:
                refused += 1
        st = sp.stats()
        formed = 0
        try:
            while (b := sp.form_batch(max_obs=200, max_bytes=32 * 1024)) is not None:
                sp.ack([b.seq])
                formed += 1
        except SpoolError:
            pass
        drained = int(sp.stats().depth == 0)
        sp.close()
        return {"refused": refused, "dropped": dropped, "counted": st.dropped_by_quota, "kept": st.depth,
                "batches_on_full_disk": formed, "drained": drained}


def check_cost() -> tuple[float, float]:
    with Tmpfs("64m") as d:
        sp = Spool(d / "spool.sqlite", site="s1", gateway="gw1", quota_bytes=10**9)
        n = 3000
        t = time.perf_counter()
        for i in range(n):
            sp.append(poll(i))
        append_us = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for _ in range(n):
            with sp._lock:
                sp._limit()
        limit_us = (time.perf_counter() - t) / n * 1e6
        sp.close()
        return append_us, limit_us


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quota-mb", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    quota = int(args.quota_mb * 1e6)
    factor, _ = fill_and_drain(quota, args.rounds)
    print(f"fill and drain, quota {quota} B, {args.rounds} rounds: worst disk used {factor:.3f}x the quota")
    full = full_disk()
    print("2 MB disk, 1 GB quota, then filled by another file: " + ", ".join(f"{k} {v}" for k, v in full.items()))
    append_us, limit_us = check_cost()
    print(f"append of 10 observations on tmpfs: {append_us:.0f} us, of which disk checks {limit_us:.0f} us")
    print(f"RESULT spool_disk disk_over_quota={factor:.3f} full_disk_refused={full['refused']} "
          f"full_disk_dropped={full['dropped']} full_disk_counted={full['counted']} "
          f"full_disk_drained={full['drained']} append_us={append_us:.0f} disk_check_us={limit_us:.0f}")


if __name__ == "__main__":
    main()
