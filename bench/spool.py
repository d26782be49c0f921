"""Spool append and replay rates against plain SQLite WAL with the same batch sizes.

Append: the collector's unit of durability is one poll (here 16
observations, one transaction, synchronous=FULL: one fsync per poll).
`Spool.append` (JSON-encode each Observation, insert, commit) is compared
with plain executemany inserts of pre-encoded rows of the same size into a
WAL table, one transaction per 16 rows, synchronous=FULL.

Replay: draining a backlog into MQTT messages of 500 observations:
`Spool.form_batch` (select, build the payload, insert the batch, delete the
rows, advance the seq, commit with fsync) + `Spool.ack` (delete on PUBACK)
against plain ``SELECT ... LIMIT 500`` + ``DELETE`` of the same rows in one
transaction.

Targets (TARGETS.md): both ratios >= 0.5.
Usage: .venv/bin/python bench/spool.py [--observations 40000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.spool import Spool  # noqa: E402
from humus.records import Observation  # noqa: E402
from humus.wire import observation_to_dict  # noqa: E402

POLL = 16
BATCH = 500
T0 = 1_790_000_000 * 10**9


def observations(n: int) -> list[Observation]:
    return [Observation(site="bench", gateway="gw-1", probe=f"teros-{i % 16}", quantity="soil_temp",
                        time_ns=T0 + i * 10**6, value=20.0 + (i % 100) / 100, unit="degC", depth_cm=10.0)
            for i in range(n)]


def plain(path: Path, rows: list[tuple[int, str]]) -> tuple[float, float]:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE obs (id INTEGER PRIMARY KEY AUTOINCREMENT, time_ns INTEGER, body TEXT)")
    t = time.perf_counter()
    for i in range(0, len(rows), POLL):
        db.execute("BEGIN")
        db.executemany("INSERT INTO obs(time_ns, body) VALUES (?, ?)", rows[i:i + POLL])
        db.execute("COMMIT")
    append = time.perf_counter() - t
    t = time.perf_counter()
    while True:
        db.execute("BEGIN")
        got = db.execute("SELECT id, time_ns, body FROM obs ORDER BY id LIMIT ?", (BATCH,)).fetchall()
        if not got:
            db.execute("COMMIT")
            break
        db.execute("DELETE FROM obs WHERE id <= ?", (got[-1][0],))
        db.execute("COMMIT")
    replay = time.perf_counter() - t
    db.close()
    return append, replay


def spool(path: Path, obs: list[Observation]) -> tuple[float, float]:
    sp = Spool(path, site="bench", gateway="gw-1", quota_bytes=10**10)
    t = time.perf_counter()
    for i in range(0, len(obs), POLL):
        sp.append(obs[i:i + POLL])
    append = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    while (b := sp.form_batch(max_obs=BATCH, max_bytes=4 << 20)) is not None:
        sp.ack([b.seq])
        n += b.n
    replay = time.perf_counter() - t
    assert n == len(obs), (n, len(obs))
    sp.close()
    return append, replay


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--observations", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    obs = observations(args.observations)
    rows = [(o.time_ns, json.dumps(observation_to_dict(o), separators=(",", ":"))) for o in obs]
    best = {"spool_append": 0.0, "spool_replay": 0.0, "plain_append": 0.0, "plain_replay": 0.0}
    with tempfile.TemporaryDirectory(prefix="humus-bench-spool-") as d:
        for r in range(args.rounds):
            pa, pr = plain(Path(d) / f"plain{r}.sqlite", rows)
            sa, sr = spool(Path(d) / f"spool{r}.sqlite", obs)
            n = len(obs)
            print(f"round {r + 1}: append spool {n / sa:,.0f} obs/s, plain {n / pa:,.0f} obs/s | "
                  f"replay spool {n / sr:,.0f} obs/s, plain {n / pr:,.0f} obs/s")
            for k, v in (("spool_append", n / sa), ("spool_replay", n / sr), ("plain_append", n / pa),
                         ("plain_replay", n / pr)):
                best[k] = max(best[k], v)
    ra = best["spool_append"] / best["plain_append"]
    rr = best["spool_replay"] / best["plain_replay"]
    print(f"best of {args.rounds}: append ratio {ra:.2f}, replay ratio {rr:.2f} (target >= 0.5 each); "
          f"polls of {POLL} observations, batches of {BATCH}")
    print(f"RESULT spool append_obs_per_s={best['spool_append']:.0f} plain_append_obs_per_s={best['plain_append']:.0f} "
          f"append_ratio={ra:.2f} replay_obs_per_s={best['spool_replay']:.0f} "
          f"plain_replay_obs_per_s={best['plain_replay']:.0f} replay_ratio={rr:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
