"""One year of 15-minute data for 100 probes into numpy, per backend, against the backend's raw export.

TARGETS.md: `observatory.query.series()` (store -> numpy arrays per series)
should take at most twice as long as the backend's own raw export of the
same data:

- SQLite: a plain `SELECT ... FROM observation` with fetchall into numpy.
- InfluxDB 1.x: the raw `/query` answer (`SELECT * FROM humus_obs`,
  chunked JSON, read to the end), and, for information, the same parsed by
  json.loads.

ratio = baseline seconds / our seconds (1.0: as fast as raw; target >= 0.5).
The same data exported as Parquet (`observatory.export.write_parquet` over
`query.iter_series`, a month at a time, as `humus query --format parquet`)
is timed beside it: parquet_ratio = baseline seconds / export seconds.
Loading is timed too, but is not the figure. If the full size would not
finish within the time budget on this machine, the number of days is
scaled down after a calibration write, and the bench says so.

    .venv/bin/python bench/query.py [--probes 100] [--days 365] [--backends sqlite,influxdb] [--budget-s 240]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import servers  # noqa: E402
from humus.records import Observation, QualityFlag  # noqa: E402
from observatory import query  # noqa: E402
from observatory.stores import open_store  # noqa: E402

T0 = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z
STEP = 15 * 60 * 10**9
PER_DAY = 96
BATCH = 10_000


def probe_observations(probe: int, days: int) -> list[Observation]:
    n = days * PER_DAY
    rng = np.random.default_rng(probe)
    values = (0.25 + 0.05 * np.sin(np.arange(n) / PER_DAY * 2 * np.pi) + rng.normal(0, 0.005, n)).tolist()
    flags = np.where(rng.random(n) < 0.01, 3, 1).tolist()
    name = f"p{probe:03d}"
    return [Observation("bench-site", f"gw-{probe // 25}", name, "vwc", T0 + i * STEP, values[i], "m3/m3",
                        depth_cm=10.0, uncertainty=0.02, flag=QualityFlag(flags[i]), flag_test="gross_range")
            for i in range(n)]


def load(store, probes: int, days: int) -> float:
    t = time.perf_counter()
    pending: list[Observation] = []
    for p in range(probes):
        pending += probe_observations(p, days)
        while len(pending) >= BATCH:
            store.write(pending[:BATCH])
            del pending[:BATCH]
    if pending:
        store.write(pending)
    return time.perf_counter() - t


def best_of(n: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(n):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def ours(url: str) -> int:
    data = query.series(url)
    return sum(len(s) for s in data)


def sqlite_raw(path: Path) -> int:
    con = sqlite3.connect(path)
    rows = con.execute("SELECT series_id, time_ns, value, uncertainty, flag FROM observation").fetchall()
    sid, t, v, u, f = zip(*rows)
    arrays = (np.array(sid), np.array(t, dtype=np.int64), np.array(v, dtype=np.float64),
              np.array(u, dtype=np.float64), np.array(f, dtype=np.uint8))
    con.close()
    return len(arrays[1])


def influx_raw(store, parse: bool) -> int:
    n = 0
    for line in store.raw_query("SELECT * FROM humus_obs", "bench raw export"):
        if parse:
            for r in json.loads(line)["results"]:
                for s in r.get("series", ()):
                    n += len(s["values"])
        else:
            n += len(line)
    return n


def parquet_export(url: str) -> int:
    """The archive as one Parquet file, as `humus query --format parquet --out FILE` writes it."""
    from observatory import export

    with tempfile.TemporaryDirectory(prefix="humus-bench-parquet-") as d:
        return export.write_parquet(query.iter_series(url, window="30d"), Path(d) / "export.parquet")


def calibrate(url: str, setup, probes: int) -> float:
    """Seconds per observation to load (the slow part), from a small write."""
    store = setup(url)
    t = time.perf_counter()
    obs = [o for p in range(2) for o in probe_observations(p, 40)]
    for i in range(0, len(obs), BATCH):
        store.write(obs[i:i + BATCH])
    store.close()
    return (time.perf_counter() - t) / len(obs)


def run_backend(name: str, url: str, calib_url: str, setup, probes: int, days: int, budget_s: float, raw_fns) -> dict:
    per_obs = calibrate(calib_url, setup, probes)
    # Loading dominates; querying (ours and each baseline twice) and the Parquet export add about 90 % to it.
    estimate = per_obs * probes * days * PER_DAY * 1.9
    if estimate > budget_s:
        scaled = max(7, int(days * budget_s / estimate))
        print(f"{name}: full size would take about {estimate:.0f} s here; SCALED DOWN to {scaled} days "
              f"({probes * scaled * PER_DAY:,} values instead of {probes * days * PER_DAY:,})", flush=True)
        days = scaled
    n = probes * days * PER_DAY
    store = setup(url)
    load_s = load(store, probes, days)
    print(f"{name}: loaded {n:,} values in {load_s:.1f} s ({n / load_s:,.0f} values/s through Store.write)", flush=True)
    ours_s, count = best_of(2, lambda: ours(url))
    assert count == n, f"{name}: query returned {count} values, loaded {n}"
    print(f"{name}: observatory.query.series -> numpy: {ours_s:.2f} s ({n / ours_s:,.0f} values/s)", flush=True)
    parquet_s, rows = best_of(2, lambda: parquet_export(url))
    assert rows == n, f"{name}: Parquet export wrote {rows} rows, loaded {n}"
    print(f"{name}: Parquet export (windows of 30 days): {parquet_s:.2f} s ({n / parquet_s:,.0f} values/s)", flush=True)
    result = {"values": n, "days": days, "ours_s": ours_s, "parquet_s": parquet_s}
    for label, fn in raw_fns(store):
        raw_s, _ = best_of(2, fn)
        print(f"{name}: raw baseline {label}: {raw_s:.2f} s; ratio {raw_s / ours_s:.2f}, "
              f"Parquet export ratio {raw_s / parquet_s:.2f}", flush=True)
        result[label] = raw_s / ours_s
        result["parquet_vs_" + label] = raw_s / parquet_s
    store.close()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--backends", default="sqlite,influxdb")
    ap.add_argument("--budget-s", type=float, default=150.0, help="seconds per backend (the whole bench must end in 5 min)")
    args = ap.parse_args()
    results = {}
    work = Path(tempfile.mkdtemp(prefix="humus-bench-query-"))
    backends = args.backends.split(",")
    print(f"bench query: {args.probes} probes x {args.days} days x {PER_DAY}/day = "
          f"{args.probes * args.days * PER_DAY:,} values per backend", flush=True)
    if "sqlite" in backends:
        path = work / "bench.sqlite"
        results["sqlite"] = run_backend(
            "sqlite", f"sqlite:{path}", f"sqlite:{work / 'calib.sqlite'}", lambda u: open_store(u), args.probes, args.days, args.budget_s,
            lambda store: [("select_fetchall", lambda: sqlite_raw(path))])
    if "influxdb" in backends:
        srv = servers.influxdb(work / "influxdb")
        srv.start()
        servers.http_ready(srv.url + "/ping")
        try:
            def setup(u):
                s = open_store(u)
                s.create_database()
                return s
            results["influxdb"] = run_backend(
                "influxdb", f"influxdb://127.0.0.1:{srv.port}/bench", f"influxdb://127.0.0.1:{srv.port}/calib", setup, args.probes, args.days,
                args.budget_s, lambda store: [("raw_export", lambda: influx_raw(store, parse=False)),
                                              ("raw_export_parsed", lambda: influx_raw(store, parse=True))])
        finally:
            srv.stop()
    shutil.rmtree(work, ignore_errors=True)
    parts = []
    for name, r in results.items():
        parts.append(f"{name}_values={r['values']}")
        parts.append(f"{name}_s={r['ours_s']:.2f}")
        parts.append(f"{name}_parquet_s={r['parquet_s']:.2f}")
        for k, v in r.items():
            if k.startswith("parquet_vs_"):
                parts.append(f"{name}_parquet_ratio_vs_{k[len('parquet_vs_'):]}={v:.2f}")
            elif k not in ("values", "days", "ours_s", "parquet_s"):
                parts.append(f"{name}_ratio_vs_{k}={v:.2f}")
    print("RESULT query " + " ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
