"""Reconnect storm: many gateways come back at once with a backlog while their live readings go on.

Real processes on loopback: Mosquitto (the test configuration, autosave
every 60 s as deployed), InfluxDB 1.x (or an SQLite archive, `--store
sqlite`), `--workers` `humus ingest` processes on one shared subscription
with receipts on, as deployed. The gateways are the real
`collector.spool.Spool` and `collector.publisher.Publisher` (their MQTT
client, back-off, receipts, live-first order, re-sends), `--sims`
processes holding `--gateways / --sims` of them each, rather than 200 whole
daemons: pollers and probe drivers are left out so that 200 gateways fit
on two cores beside the centre. Their spools live on /dev/shm: each real
gateway has its own SD card, while 200 spools on one disk would measure
that disk.

Between the gateways and the broker sits a TCP relay, the field's uplink
(`Uplink`), that the bench can cut. Scenario:

1. every gateway connects, sends one poll and gets its receipt (its
   series exist in the store, as for gateways that were online before);
2. the uplink is cut: each gateway loses its connection and retries with
   its own back-off; meanwhile its spool gets `--backlog` observations
   (polls of `--poll-obs` values a minute apart, as after an outage);
3. at T the uplink comes back: all gateways reconnect within their
   `reconnect_max_s` (1 s here, the worst case; the default 120 s spreads
   a real field over two minutes) and from T on every gateway appends a
   live poll of `--poll-obs` values every `--interval-s` (phases spread
   over the interval) for `--live-s` seconds. Then every spool must empty.

Measured, all on one clock (the bench's machine):

- lost / duplicated: the store's point count per gateway against what the
  gateway spooled, exactly (every observation has its own key and the
  store keeps one value per key, so equal counts mean each one stored once);
- redelivered: batches the workers saw more than once (re-sends after a
  receipt timeout, broker redeliveries), stored once by the idempotent store;
- drain: from T to the receipt of the last backlog batch;
- live latency: for each live observation (taken after its gateway was
  back: the publisher's own line between backlog and live data, drawn at
  its CONNACK), the time its gateway received the centre's receipt for it
  (sent after the durable write) minus the time the observation was taken:
  end to end, with the gateway's 50 ms linger, the broker both ways and the
  worker's batching. Also for those taken while the backlog was draining.
  Readings taken between T and their gateway's return are backlog: they
  wait for the back-off, which only `reconnect_max_s` sets;
- CPU (utime + stime) of the workers, the broker, the store and the
  simulators from T until the last spool is empty.

Prints `RESULT storm ...`. Usage:
  .venv/bin/python bench/storm.py [--gateways 200] [--backlog 500] [--workers 2] [--store influxdb|sqlite]
(about 40 s on 2 cores)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

import servers  # noqa: E402
from ingest import BROKER_CONF, Influx, Status, cpu_s, start_workers  # noqa: E402

SITE = "storm"
MINUTE_NS = 60 * 10**9


class Uplink:
    """A TCP relay from the gateways to the broker that can be cut and restored (the field's link)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = servers.free_port()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, name="uplink", daemon=True).start()
        self.restore()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, up_w}
        self._open |= pair
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        self._open -= pair

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def restore(self) -> None:
        async def up() -> None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
        self._call(up())

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        async def down() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for w in list(self._open):
                w.transport.abort()
        self._call(down())

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)


# -- the gateway side (runs in the simulator processes) -----------------------------------------

def _spool_class() -> type:
    from collector.spool import Spool

    class TimedSpool(Spool):
        """The real spool, noting which observations each batch carries and when the centre confirmed it."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.batch_times: dict[int, list[int]] = {}     # seq -> time_ns of its observations
            self.formed_ns: dict[int, int] = {}             # seq -> wall clock when it was formed
            self.confirmed_ns: dict[int, int] = {}          # seq -> wall clock when a receipt named it
            self.connects: list[int] = []                   # wall clock of each CONNACK (live data is marked then)

        def max_obs_id(self) -> int:
            self.connects.append(time.time_ns())
            return super().max_obs_id()

        def form_batch(self, **kwargs: Any):  # type: ignore[override]
            b = super().form_batch(**kwargs)
            if b is not None:
                self.formed_ns[b.seq] = time.time_ns()
                self.batch_times[b.seq] = [o["time_ns"] for o in json.loads(b.payload)["observations"]]
            return b

        def ack(self, seqs):  # type: ignore[override]
            seqs = list(seqs)
            now = time.time_ns()
            for s in seqs:
                self.confirmed_ns.setdefault(s, now)
            return super().ack(seqs)

    return TimedSpool


def _poll(gw: str, time_ns: int, n: int, k: int) -> list:
    """One poll of `n` probes: a soil temperature each, the value varying with the poll number `k`."""
    from humus.records import Observation, QualityFlag

    return [Observation(site=SITE, gateway=gw, probe=f"p{j}", quantity="soil_temp", time_ns=time_ns,
                        value=12.0 + 0.01 * ((k + j) % 100), unit="degC", depth_cm=10.0,
                        flag=QualityFlag.PASS, flag_test="gross_range") for j in range(n)]


@dataclass
class SimGateway:
    name: str
    spool: Any
    publisher: Any
    wake: threading.Event
    spooled: int = 0

    def append(self, observations: list) -> None:
        self.spool.append(observations)
        self.spooled += len(observations)
        self.wake.set()


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"simulator: timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def simulate(args: argparse.Namespace) -> None:
    """Simulator process, driven by the bench on stdin/stdout (see the module's docstring for the phases)."""
    from collector.config import GatewayConfig, GatewaySettings, PublishSettings
    from collector.publisher import Publisher, Wake
    from collector.status import GatewayState
    from humus.mqtt import MqttSettings

    spool_cls = _spool_class()
    first, last = (int(x) for x in args.sim.split(":"))
    stop = threading.Event()
    gws: list[SimGateway] = []
    for g in range(first, last):
        name = f"gw-{g}"
        data = Path(args.dir) / name
        data.mkdir(parents=True)
        cfg = GatewayConfig(gateway=GatewaySettings(site=SITE, id=name, data_dir=str(data), heartbeat_s=60.0),
                            mqtt=MqttSettings(host="127.0.0.1", port=args.port),
                            publish=PublishSettings(reconnect_min_s=min(0.2, args.reconnect_max_s),
                                                    reconnect_max_s=args.reconnect_max_s))
        spool = spool_cls(cfg.spool_path, site=SITE, gateway=name, quota_bytes=64 << 20, reserve_bytes=0)
        wake = Wake()
        pub = Publisher(cfg, spool, GatewayState(SITE, name), wake, lambda n=name: {"state": "online", "gateway": n})
        gws.append(SimGateway(name, spool, pub, wake))
    # 1. online: one poll each, confirmed
    for gw in gws:
        gw.publisher.start(stop)
        gw.append(_poll(gw.name, time.time_ns(), args.poll_obs, 0))
    _wait_until(lambda: not any(gw.spool.stats().depth for gw in gws), 60, "the first polls confirmed")
    print("online", flush=True)
    # 2. the uplink is cut: the backlog piles up
    assert sys.stdin.readline().strip() == "cut"
    _wait_until(lambda: not any(gw.publisher.connected for gw in gws), 30, "every gateway to see the cut")
    backlog_start = time.time_ns() - (args.backlog // args.poll_obs + 2) * MINUTE_NS
    for gw in gws:
        polls = [_poll(gw.name, backlog_start + k * MINUTE_NS, args.poll_obs, k)
                 for k in range(-(-args.backlog // args.poll_obs))]
        gw.append([o for p in polls for o in p][:args.backlog])
    print("spooled", flush=True)
    # 3. the uplink is back at T: live polls from T on, gateway i at T + phase_i + k * interval
    t_go = int(sys.stdin.readline().split()[1])
    interval_ns = int(args.interval_s * 1e9)
    end_ns = t_go + int(args.live_s * 1e9)
    schedule = [(t_go + (first + i) * interval_ns // args.gateways, i) for i in range(len(gws))]
    polls = 0
    while True:
        due, i = min(schedule)
        if due >= end_ns:
            break
        time.sleep(max(0.0, (due - time.time_ns()) / 1e9))
        gws[i].append(_poll(gws[i].name, time.time_ns(), args.poll_obs, 1000 + polls))
        polls += 1
        schedule[i] = (due + interval_ns, i)
    deadline = time.monotonic() + args.drain_timeout_s
    while time.monotonic() < deadline and any(gw.spool.stats().depth for gw in gws):
        time.sleep(0.1)
    stop.set()
    for gw in gws:
        if gw.publisher.thread is not None:
            gw.publisher.thread.join(10)

    out: dict[str, Any] = {"gateways": {}, "live": []}
    for gw in gws:
        sp, m = gw.spool, gw.publisher.state.mqtt
        back = min((c for c in sp.connects if c >= t_go), default=None)
        confirmed, backlog_done = 0, None
        for seq, times in sp.batch_times.items():
            at = sp.confirmed_ns.get(seq)
            if at is None:
                continue
            confirmed += len(times)
            for t in times:
                if back is not None and t >= back:
                    out["live"].append((t, at))
                elif at >= t_go:
                    backlog_done = max(backlog_done or 0, at)
        out["gateways"][gw.name] = {
            "spooled": gw.spooled, "confirmed": confirmed, "left": sp.stats().depth,
            "backlog_drained_ns": backlog_done, "reconnected_ns": back, "resent": m.get("resent", 0),
            "batches": {s: (sp.formed_ns[s], sp.confirmed_ns.get(s), len(t)) for s, t in sp.batch_times.items()}}
        sp.close()
    print(json.dumps(out), flush=True)


# -- the centre and the run (the bench's own process) -------------------------------------------

@dataclass
class StormResult:
    gateways: int
    backlog: int
    spooled: int
    stored: int
    lost: int
    duplicated: int
    left_in_spools: int
    redelivered: int
    resent: int
    gaps: int                  # holes the workers reported as gaps (gap_grace_s)
    resend_requests: int       # holes the workers asked the gateways to fill (resend_after_s)
    reconnect_p50_s: float
    reconnect_max_s: float
    drain_s: float
    live_n: int
    live_p50_s: float
    live_p95_s: float
    live_max_s: float
    drain_live_n: int          # live observations taken while the backlog was draining
    drain_live_p95_s: float
    live_confirmed_before_drain: int
    cpu_s: dict[str, float] = field(default_factory=dict)
    per_gateway_lost: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return (f"RESULT storm gateways={self.gateways} backlog={self.backlog} spooled={self.spooled} "
                f"stored={self.stored} lost={self.lost} duplicated={self.duplicated} "
                f"redelivered={self.redelivered} gaps={self.gaps} resend_requests={self.resend_requests} "
                f"drain_s={self.drain_s:.2f} live_p50_s={self.live_p50_s:.3f} "
                f"live_p95_s={self.live_p95_s:.3f} live_max_s={self.live_max_s:.3f} "
                f"drain_live_p95_s={self.drain_live_p95_s:.3f} worker_cpu_s={self.cpu_s.get('workers', 0):.1f}")


def quantile(xs: list[float], q: float) -> float:
    """The q-quantile of xs (nearest rank); NaN for none."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(-(-q * len(xs) // 1)) - 1))]


def _stored_per_gateway(influx: Influx | None, db: str, path: Path | None) -> dict[str, int]:
    if influx is not None:
        q = urllib.parse.urlencode({"db": db, "q": 'SELECT count("flag") FROM "humus_obs" GROUP BY "gateway"'})
        status, data = influx._post("/query", q.encode(), form=True)
        if status != 200:
            raise RuntimeError(f"InfluxDB count answered {status}: {data[:200]!r}")
        series = json.loads(data)["results"][0].get("series") or []
        return {s["tags"]["gateway"]: s["values"][0][1] for s in series}
    con = sqlite3.connect(path)
    try:
        return dict(con.execute("SELECT s.gateway, count(*) FROM observation o JOIN series s ON s.id = o.series_id "
                                "GROUP BY s.gateway").fetchall())
    finally:
        con.close()


def _line(p: subprocess.Popen, what: str, log_file: Path) -> str:
    out = p.stdout.readline()
    if not out:
        p.wait(10)
        raise RuntimeError(f"simulator exited before {what}: {log_file.read_text(errors='replace')[-800:]}")
    return out.strip()


def run_storm(workdir: Path, *, gateways: int = 200, backlog: int = 500, workers: int = 2, sims: int = 4,
              store: str = "influxdb", poll_obs: int = 10, interval_s: float = 1.0, live_s: float = 8.0,
              drain_timeout_s: float = 90.0, reconnect_max_s: float = 1.0, ingest: str = "",
              machines: bool = False, settle_s: float = 1.2, log: Callable[[str], None] = print) -> StormResult:
    """Start the servers, the workers, the uplink and the simulators, run one storm, return what it measured.

    `ingest` is more `[ingest]` lines for the workers' configuration (TOML).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    broker = servers.mosquitto(workdir / "mosquitto", BROKER_CONF).start()
    uplink = Uplink(broker.port)
    influx_srv = influx = None
    sqlite_path: Path | None = None
    db = "storm"
    procs: list[subprocess.Popen] = []
    sim_procs: list[subprocess.Popen] = []
    status: Status | None = None
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
    spools = Path(tempfile.mkdtemp(prefix="humus-storm-spools-", dir=shm))
    ids = [f"storm-{i + 1}" for i in range(workers)]
    try:
        if store == "influxdb":
            influx_srv = servers.influxdb(workdir / "influxdb").start()
            servers.http_ready(influx_srv.url + "/ping")
            influx = Influx(influx_srv.port)
            influx.create(db)
            store_url = f"influxdb://127.0.0.1:{influx_srv.port}/{db}"
        else:
            sqlite_path = workdir / "archive.sqlite"
            store_url = f"sqlite:{sqlite_path}"
        status = Status(broker.port)
        start_workers(workdir, ids, procs, status, store_url=store_url, mqtt_port=broker.port, group="storm",
                      state_file=workdir / ("state-{cid}.sqlite" if machines else "state.sqlite"),
                      metrics_interval_s=1, ingest=ingest)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        bounds = [gateways * i // sims for i in range(sims + 1)]
        logs = [workdir / f"sim-{i}.log" for i in range(sims)]
        for i in range(sims):
            argv = [sys.executable, str(Path(__file__).resolve()), "--sim", f"{bounds[i]}:{bounds[i + 1]}",
                    "--dir", str(spools), "--port", str(uplink.port), "--gateways", str(gateways),
                    "--backlog", str(backlog), "--poll-obs", str(poll_obs), "--interval-s", str(interval_s),
                    "--live-s", str(live_s), "--drain-timeout-s", str(drain_timeout_s),
                    "--reconnect-max-s", str(reconnect_max_s)]
            with open(logs[i], "wb") as err:
                sim_procs.append(subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.PIPE,
                                                  stdout=subprocess.PIPE, stderr=err, text=True))

        def tell(line: str) -> None:
            for p in sim_procs:
                p.stdin.write(line + "\n")
                p.stdin.flush()

        for p, f in zip(sim_procs, logs):
            _line(p, "its gateways were online", f)
        uplink.cut()
        tell("cut")
        for p, f in zip(sim_procs, logs):
            _line(p, "the backlog was spooled", f)
        log(f"{gateways} gateways in {sims} processes, uplink cut, {backlog} observations spooled by each; "
            f"live: {poll_obs} values per gateway every {interval_s:g} s for {live_s:g} s from the reconnection")
        t_go = time.time_ns()
        tell(f"go {t_go}")
        cpu_pids = {"workers": [p.pid for p in procs], "broker": [broker.proc.pid],
                    **({"influxdb": [influx_srv.proc.pid]} if influx_srv else {}),
                    "simulators": [p.pid for p in sim_procs]}
        cpu0 = {k: sum(cpu_s(pid) for pid in pids) for k, pids in cpu_pids.items()}
        uplink.restore()
        reports = [json.loads(_line(p, "its report", f)) for p, f in zip(sim_procs, logs)]
        cpu = {k: sum(cpu_s(pid) for pid in pids) - cpu0[k] for k, pids in cpu_pids.items()}
        elapsed = (time.time_ns() - t_go) / 1e9
        (workdir / "reports.json").write_text(json.dumps({"t_go": t_go, "reports": reports}))
        time.sleep(settle_s)     # one more status document from each worker (and holes past their grace)
        totals = [status.docs.get(c, {}).get("totals", {}) for c in ids]
        redelivered = sum(t.get("duplicates", 0) for t in totals)
        gaps, resend_requests = sum(t.get("gaps", 0) for t in totals), sum(t.get("resend_requests", 0) for t in totals)
        stored = _stored_per_gateway(influx, db, sqlite_path)
    finally:
        for p in sim_procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        if status is not None:
            status.close()
        uplink.close()
        broker.stop()
        if influx_srv is not None:
            influx_srv.stop()
        shutil.rmtree(spools, ignore_errors=True)

    log(f"CPU s over the {elapsed:.1f} s from the reconnection to the last spool emptied: "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    per_gw: dict[str, dict] = {}
    pairs: list[tuple[int, int]] = []    # (taken, confirmed) of each live observation
    for r in reports:
        per_gw.update(r["gateways"])
        pairs += r["live"]
    spooled = sum(g["spooled"] for g in per_gw.values())
    lost = {n: g["spooled"] - stored.get(n, 0) for n, g in per_gw.items() if stored.get(n, 0) < g["spooled"]}
    extra = sum(max(0, stored.get(n, 0) - g["spooled"]) for n, g in per_gw.items())
    extra += sum(v for n, v in stored.items() if n not in per_gw)
    drained = [g["backlog_drained_ns"] for g in per_gw.values()]
    drain_end = max(drained) if all(drained) else None
    reconnect = [(g["reconnected_ns"] - t_go) / 1e9 for g in per_gw.values() if g["reconnected_ns"]]
    live = [(at - t) / 1e9 for t, at in pairs]
    during = [(at - t) / 1e9 for t, at in pairs if drain_end and t < drain_end]
    return StormResult(
        gateways=gateways, backlog=backlog, spooled=spooled, stored=sum(stored.values()), lost=sum(lost.values()),
        duplicated=extra, left_in_spools=sum(g["left"] for g in per_gw.values()), redelivered=redelivered,
        resent=sum(g["resent"] for g in per_gw.values()), gaps=gaps, resend_requests=resend_requests,
        reconnect_p50_s=statistics.median(reconnect) if reconnect else float("nan"),
        reconnect_max_s=max(reconnect, default=float("nan")),
        drain_s=(drain_end - t_go) / 1e9 if drain_end else float("inf"), live_n=len(live),
        live_p50_s=statistics.median(live) if live else float("nan"), live_p95_s=quantile(live, 0.95),
        live_max_s=max(live, default=float("nan")), drain_live_n=len(during),
        drain_live_p95_s=quantile(during, 0.95),
        live_confirmed_before_drain=sum(1 for _, at in pairs if drain_end and at < drain_end),
        cpu_s=cpu, per_gateway_lost=lost)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateways", type=int, default=200)
    ap.add_argument("--backlog", type=int, default=500, help="observations in each gateway's spool at the storm")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sims", type=int, default=4, help="simulator processes holding the gateways")
    ap.add_argument("--store", choices=("influxdb", "sqlite"), default="influxdb")
    ap.add_argument("--poll-obs", type=int, default=10, help="observations per poll (backlog and live)")
    ap.add_argument("--interval-s", type=float, default=1.0, help="live poll interval of each gateway")
    ap.add_argument("--live-s", type=float, default=8.0, help="how long live polls go on after the reconnection")
    ap.add_argument("--drain-timeout-s", type=float, default=90.0)
    ap.add_argument("--reconnect-max-s", type=float, default=1.0, help="the gateways' reconnect back-off at most")
    ap.add_argument("--ingest", default="", help="more [ingest] settings for the workers, TOML lines")
    ap.add_argument("--machines", action="store_true", help="a state file per worker, as on several machines "
                    "(their ledgers shared over the broker unless --ingest 'share_ledger = false')")
    ap.add_argument("--settle-s", type=float, default=1.2, help="wait after the storm before reading the workers' "
                    "counts (longer than gap_grace_s to see the gaps reported)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, state file, reports)")
    # a simulator process (started by the bench itself)
    ap.add_argument("--sim", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sim:
        simulate(args)
        return 0
    work = Path(tempfile.mkdtemp(prefix="humus-storm-"))
    t0 = time.monotonic()
    try:
        r = run_storm(work, gateways=args.gateways, backlog=args.backlog, workers=args.workers, sims=args.sims,
                      store=args.store, poll_obs=args.poll_obs, interval_s=args.interval_s, live_s=args.live_s,
                      drain_timeout_s=args.drain_timeout_s, reconnect_max_s=args.reconnect_max_s,
                      ingest=args.ingest.replace("\\n", "\n"), machines=args.machines, settle_s=args.settle_s)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"spooled {r.spooled} observations (a first poll, {r.gateways} x {r.backlog} backlog, live), stored "
          f"{r.stored}: lost {r.lost}, duplicated {r.duplicated}; left in the spools {r.left_in_spools}")
    if r.per_gateway_lost:
        print(f"  lost by gateway: {dict(list(r.per_gateway_lost.items())[:10])}")
    print(f"batches the workers saw twice {r.redelivered}; re-sent by the gateways {r.resent}; gaps reported "
          f"{r.gaps}, resend requests {r.resend_requests}")
    print(f"gateways reconnected after p50 {r.reconnect_p50_s:.2f} s, max {r.reconnect_max_s:.2f} s; backlog "
          f"drained after {r.drain_s:.2f} s")
    print(f"live observations {r.live_n}, receipt after p50 {r.live_p50_s:.3f} s, p95 {r.live_p95_s:.3f} s, "
          f"max {r.live_max_s:.3f} s; the {r.drain_live_n} taken while the backlog drained: p95 "
          f"{r.drain_live_p95_s:.3f} s; {r.live_confirmed_before_drain} confirmed before the backlog was drained")
    print(f"elapsed {time.monotonic() - t0:.0f} s")
    print(r.line())
    return 0 if r.lost == 0 and r.duplicated == 0 and r.left_in_spools == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
