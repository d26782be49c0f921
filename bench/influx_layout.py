"""What an InfluxDB point layout costs the database: raw write rate and server CPU per layout.

Starts InfluxDB 1.x (Debian's) on loopback and writes the same observations
(10 gateways x 5 probes x raw counts + calibrated water content, one
minute apart) in each candidate layout, as pre-encoded line protocol in
requests of 5,000 lines on one keep-alive connection, each layout into a
fresh database. Layouts are run interleaved, several rounds; the figure
kept per layout is the median. Server CPU comes from /proc/<pid>/stat
(utime + stime) around each run, started once the server is idle.

Layouts:
- v1: the layout of archives written before schema 2 (6 tags; value,
  missing, uncertainty (-1 when none), flag, and 4 string fields:
  flag_test, unit, model_id, model_version).
- v2: the layout written now (observatory.stores.lineprotocol): 9 tags
  (unit, model_id and model_version join the series key), numeric fields
  only: value, uncertainty (only when known), flag, qc (test code and what
  the write did not carry).
- v2_string_test: the alternative not taken: as v2, with flag_test as a
  string field ("" when none) and an `absent` int field instead of qc.
- v2_int_fields: as v2_string_test with flag_test as an int code (two ints).
- plain3: the raw anchor of bench/ingest.py: 6 tags, value, uncertainty, flag.

The server's CPU per point is the steady figure on a shared machine; the
rates vary with what else runs.

Usage: .venv/bin/python bench/influx_layout.py [--points N] [--rounds R]    (about 1-2 minutes)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import servers  # noqa: E402
from ingest import T0, Influx, cpu_s, request_bodies  # noqa: E402


def observations(n: int):
    """(gateway, probe, depth, is_calibrated, time, value) tuples: half raw counts, half calibrated vwc."""
    out = []
    per_time = 10 * 5 * 2
    for i in range(n):
        t, k = divmod(i, per_time)
        gw, rest = divmod(k, 10)
        probe, cal = divmod(rest, 2)
        out.append((f"gw-{gw}", f"teros-{probe}", 10 * (probe + 1), bool(cal), T0 + t * 60 * 10**9,
                    0.2 + 0.001 * (t % 100) if cal else 2300.0 + t % 100))
    return out


def line(layout: str, gw: str, probe: str, depth: int, cal: bool, t: int, v: float) -> str:
    quantity, unit = ("vwc", "m3/m3") if cal else ("raw_counts", "counts")
    source = "calibrated" if cal else "raw"
    if layout == "v1":
        tags = f"site=farm-1,gateway={gw},probe={probe},depth_cm={float(depth)!r},quantity={quantity},source={source}"
        model = ('model_id="teros12-mineral",model_version="1"' if cal else 'model_id="",model_version=""')
        unc = 0.03 if cal else -1.0
        test = "" if cal else "gross_range"
        return (f'humus_observation,{tags} value={v!r},missing=false,uncertainty={unc!r},flag=1i,'
                f'flag_test="{test}",unit="{unit}",{model} {t}')
    if layout == "plain3":
        tags = f"depth_cm={depth},gateway={gw},probe={probe},quantity={quantity},site=farm-1,source={source}"
        return f"plain,{tags} flag=1i,uncertainty={0.03 if cal else 0.0!r},value={v!r} {t}"
    model = ",model_id=teros12-mineral,model_version=1" if cal else ""
    tags = f"depth_cm={depth},gateway={gw}{model},probe={probe},quantity={quantity},site=farm-1,source={source},unit={unit}"
    fields = f"value={v!r}" + (",uncertainty=0.03" if cal else "") + ",flag=1i"
    if layout == "v2":
        fields += (",qc=0i" if cal else ",qc=6i")
    elif layout == "v2_string_test":
        fields += (',flag_test="",absent=0i' if cal else ',flag_test="gross_range",absent=2i')
    elif layout == "v2_int_fields":
        fields += (",flag_test=0i,absent=0i" if cal else ",flag_test=1i,absent=2i")
    return f"humus_obs,{tags} {fields} {t}"


LAYOUTS = ("v1", "v2", "v2_string_test", "v2_int_fields", "plain3")


def settle(pid: int, timeout: float = 15.0) -> None:
    """Wait until the server is idle (its background work on the previous run's points would be counted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c0 = cpu_s(pid)
        time.sleep(0.5)
        if cpu_s(pid) - c0 < 0.03:
            return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    obs = observations(args.points)
    bodies = {}
    for layout in LAYOUTS:
        lines = [line(layout, *o) for o in obs]
        bodies[layout] = request_bodies(lines)
        print(f"{layout:10s} {len(lines[0]) + 1:4d} bytes/point: {lines[1]}")
    work = Path(tempfile.mkdtemp(prefix="humus-bench-layout-"))
    influx = servers.influxdb(work / "influxdb").start()
    servers.http_ready(influx.url + "/ping")
    http = Influx(influx.port)
    rates: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    cpu: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    try:
        for r in range(args.rounds):
            for layout in LAYOUTS:
                db = f"{layout}_{r}"
                settle(influx.proc.pid)
                c0 = cpu_s(influx.proc.pid)
                elapsed = http.write_bodies(db, bodies[layout])
                used = cpu_s(influx.proc.pid) - c0
                n = http.count(db, "plain" if layout == "plain3" else
                               "humus_observation" if layout == "v1" else "humus_obs")
                if n != args.points:
                    raise RuntimeError(f"{layout}: {n} of {args.points} points stored")
                rates[layout].append(args.points / elapsed)
                cpu[layout].append(used / args.points * 1e5)
                print(f"round {r + 1} {layout:10s} {args.points / elapsed:10,.0f} points/s  "
                      f"InfluxDB {used / args.points * 1e5:5.2f} CPU s per 100k points")
    finally:
        influx.stop()
    med = {k: statistics.median(v) for k, v in rates.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print("median of rounds:")
    for k in LAYOUTS:
        print(f"  {k:10s} {med[k]:10,.0f} points/s  {med[k] / med['v1']:.2f}x v1  "
              f"{med_cpu[k]:5.2f} CPU s/100k  ({min(rates[k]):,.0f}-{max(rates[k]):,.0f})")
    print("RESULT influx_layout " + " ".join(f"{k}_points_per_s={med[k]:.0f}" for k in LAYOUTS) + " "
          + " ".join(f"{k}_cpu_s_per_100k={med_cpu[k]:.2f}" for k in LAYOUTS)
          + f" v2_over_v1={med['v2'] / med['v1']:.2f} v2_cpu_over_v1={med_cpu['v2'] / med_cpu['v1']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
