"""End-to-end ingest throughput and cost: observations/s from publish to stored and acknowledged, CPU per 100k.

Starts Mosquitto (the test configuration: max_queued_messages 0,
max_inflight_messages 1000; autosave every 60 s as deployed) and InfluxDB
1.x (Debian's) on loopback.
Publishes the same pre-encoded messages (10 gateways, 16 TEROS-12-like
probes each: raw counts, calibrated water content with its model and
uncertainty, soil temperature, bulk EC; 100 observations per message, as
`humus collect` batches them) at QoS 1 as fast as the broker takes them,
to 1, 2 and 4 `humus ingest` processes on one shared subscription (each
its own client id and persistent session), and times from the first
publish until the workers report every observation written (their
retained status, every 0.1 s). Each run writes a fresh database whose
point count is then checked exactly.

Anchor in the same run: the raw write rate of plain 3-field points
(the same series as 6 tags; value, uncertainty, flag), 5,000 points per
request on one keep-alive connection, before and after the ingest runs;
the better of the two is kept, so a disturbed anchor cannot flatter the
ingest figures. Every run starts once InfluxDB is idle (`settle`), and its
database is dropped once counted, so that no run pays for the snapshots and
compactions of the one before. CPU seconds per 100k observations come from
/proc/<pid>/stat (utime + stime) of the worker processes and of influxd
over each run (a worker's start-up is left out). Figures of N rounds
(--rounds) are medians. Also: SQLite archive with 1 and 2 workers.

Usage: .venv/bin/python bench/ingest.py [--messages N] [--rounds R]   (about 2 minutes per round)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402

import servers  # noqa: E402
from humus.records import Observation, QualityFlag, Source  # noqa: E402
from humus.wire import encode_batch, obs_topic  # noqa: E402

BROKER_CONF = "autosave_interval 60\n"
"""As deploy/mosquitto/humus.conf: the tests' broker saves its sessions every second (restart tests),
which with a backlog of unacknowledged messages in a persistent session stalls it for a while."""
PER_MESSAGE = 100
GATEWAYS = 10
PROBES = 16
T0 = 1_790_000_000_000_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (proc(5), /proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def poll_observations(gw: str, t: int, time_ns: int) -> list[Observation]:
    """One poll of a gateway's 16 probes: 4 observations each."""
    out = []
    for p in range(PROBES):
        common = dict(site="farm-1", gateway=gw, probe=f"teros-{p}", time_ns=time_ns, depth_cm=float(10 * (1 + p % 4)))
        out += [
            Observation(quantity="raw_counts", value=2300.0 + (t + p) % 50, unit="counts", flag=QualityFlag.PASS,
                        flag_test="gross_range", **common),
            Observation(quantity="vwc", value=0.2 + 0.001 * ((t + p) % 50), unit="m3/m3", uncertainty=0.03,
                        flag=QualityFlag.PASS, source=Source.CALIBRATED, model_id="teros12-mineral",
                        model_version="1", **common),
            Observation(quantity="soil_temp", value=12.5 + 0.1 * ((t + p) % 30), unit="degC", flag=QualityFlag.PASS,
                        flag_test="gross_range", **common),
            Observation(quantity="ec_bulk", value=0.41, unit="dS/m",
                        flag=QualityFlag.SUSPECT if (t + p) % 17 == 0 else QualityFlag.PASS, flag_test="spike",
                        **common),
        ]
    return out


def make_messages(n_messages: int) -> tuple[list[tuple[str, bytes]], list[Observation]]:
    """`n_messages` batches of 100 observations, spread over the gateways, each a stream of polls a minute apart."""
    per_gateway = -(-n_messages // GATEWAYS)
    messages, all_obs = [], []
    streams = []
    for g in range(GATEWAYS):
        gw, obs, t = f"gw-{g}", [], 0
        while len(obs) < per_gateway * PER_MESSAGE:
            obs += poll_observations(gw, t, T0 + t * 60 * 10**9)
            t += 1
        streams.append((gw, [obs[i:i + PER_MESSAGE] for i in range(0, per_gateway * PER_MESSAGE, PER_MESSAGE)]))
    for seq in range(per_gateway):
        for gw, batches in streams:
            if len(messages) < n_messages:
                messages.append((obs_topic("farm-1", gw), encode_batch("farm-1", gw, seq, batches[seq])))
                all_obs.extend(batches[seq])
    return messages, all_obs


def plain_lines(observations: list[Observation]) -> list[str]:
    """The raw anchor: plain 3-field points (value, uncertainty, flag) of the same series, 6 sorted tags."""
    return [f"plain,depth_cm={o.depth_cm:g},gateway={o.gateway},probe={o.probe},quantity={o.quantity},"
            f"site={o.site},source={o.source.value} flag={int(o.flag)}i,uncertainty={o.uncertainty or 0.0!r},"
            f"value={o.value!r} {o.time_ns}" for o in observations]


def request_bodies(lines: list[str]) -> list[bytes]:
    """Line protocol as /write bodies of 5,000 lines (InfluxDB's recommended batch)."""
    return [("\n".join(lines[i:i + 5000]) + "\n").encode() for i in range(0, len(lines), 5000)]


class Influx:
    """Plain HTTP to the bench's InfluxDB: create, write, count."""

    def __init__(self, port: int) -> None:
        self.port = port

    def _post(self, path: str, body: bytes, form: bool = False) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else {}
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    def create(self, db: str) -> None:
        self._post("/query", f"q=CREATE DATABASE {db}".encode(), form=True)

    def drop(self, db: str) -> None:
        """Drop a database once counted: InfluxDB would otherwise go on compacting its shards during later runs."""
        self._post("/query", f"q=DROP DATABASE {db}".encode(), form=True)

    def count(self, db: str, measurement: str, field: str = "flag") -> int:
        q = urllib.parse.urlencode({"db": db, "q": f'SELECT count("{field}") FROM "{measurement}"'}).encode()
        status, data = self._post("/query", q, form=True)
        series = json.loads(data)["results"][0].get("series")
        return series[0]["values"][0][1] if series else 0

    def write_bodies(self, db: str, bodies: list[bytes]) -> float:
        """Seconds to write pre-encoded request bodies into a new database `db`, one keep-alive connection."""
        self.create(db)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        t0 = time.perf_counter()
        for body in bodies:
            conn.request("POST", f"/write?db={db}&precision=ns", body=body)
            r = conn.getresponse()
            answer = r.read()
            if r.status != 204:
                raise RuntimeError(f"{db}: write answered {r.status}: {answer[:200]!r}")
        elapsed = time.perf_counter() - t0
        conn.close()
        return elapsed

    def write_rate(self, db: str, lines: list[str]) -> float:
        """Points/s of pre-encoded lines, 5,000 per request, one keep-alive connection."""
        rate = len(lines) / self.write_bodies(db, request_bodies(lines))
        self.drop(db)
        return rate


def settle(pid: int, idle_cores: float = 0.05, window_s: float = 0.5, timeout_s: float = 30.0) -> None:
    """Wait until a server (InfluxDB) has finished what an earlier run left it (snapshots, compactions):
    at most `idle_cores` of CPU over `window_s`. Such background work would otherwise fall in the next run,
    whichever contender that is (seen: InfluxDB CPU per 100k observations from 0.4 to 1.2 in one bench)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c0 = cpu_s(pid)
        time.sleep(window_s)
        if cpu_s(pid) - c0 <= idle_cores * window_s:
            return


class Status:
    """Retained worker status documents, by client id."""

    def __init__(self, port: int) -> None:
        self.docs: dict[str, dict] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-status-{os.getpid()}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, msg: self.docs.__setitem__(msg.topic.split("/")[3],
                                                                          json.loads(msg.payload))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("humus/v1/_observatory/+/status", qos=1)
        self.client.loop_start()

    def written(self, ids) -> int:
        return sum(self.docs.get(i, {}).get("totals", {}).get("observations_written", 0) for i in ids)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait(predicate, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def publish_all(port: int, messages: list[tuple[str, bytes]], tag: str) -> float:
    """Publish at QoS 1 as fast as the broker takes them; seconds until the last PUBACK."""
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{tag}", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    t0 = time.perf_counter()
    infos = [pub.publish(t, p, qos=1) for t, p in messages]
    for i in infos:
        i.wait_for_publish(timeout=120)
    elapsed = time.perf_counter() - t0
    pub.disconnect()
    pub.loop_stop()
    return elapsed


def forget_sessions(port: int, client_ids: list[str]) -> None:
    """End the persistent sessions of stopped workers: otherwise the broker keeps queueing a copy of every
    later run's messages for their shared-subscription group (and spends CPU doing it)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    for cid in client_ids:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        c.connect("127.0.0.1", port, clean_start=True, properties=props)
        c.loop_start()
        c.disconnect()
        c.loop_stop()


def start_workers(workdir: Path, ids: list[str], procs: list, status: "Status", *, store_url: str, mqtt_port: int,
                  group: str, state_file: Path, metrics_interval_s: float, ingest: str = "",
                  repo: Path = REPO) -> None:
    """Start one `humus ingest` process per client id in `ids` (appended to `procs`, which the caller stops;
    logs in `workdir`), all on one shared subscription `group`, and wait until each reports itself online.
    `ingest`: more `[ingest]` lines (TOML). A "{cid}" in `state_file` gives each worker its own (as on
    several machines)."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    for cid in ids:
        cfg = workdir / f"{cid}.toml"
        state = str(state_file).replace("{cid}", cid)
        cfg.write_text(f'[ingest]\nstore = "{store_url}"\nclient_id = "{cid}"\ngroup = "{group}"\n'
                       f'state_file = "{state}"\nmetrics_interval_s = {metrics_interval_s}\n{ingest}\n\n'
                       f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n')
        with open(workdir / f"{cid}.log", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "humus", "ingest", "--config", str(cfg)],
                                          cwd=repo, stdout=log, stderr=subprocess.STDOUT, env=env))

    def online() -> bool:
        for cid, p in zip(ids, procs):
            if p.poll() is not None:
                raise RuntimeError(f"worker {cid} exited: {(workdir / f'{cid}.log').read_text()[-800:]}")
        return all(status.docs.get(c, {}).get("state") == "online" for c in ids)

    wait(online, 30, "workers online")


def run_ingest(workdir: Path, mqtt_port: int, store_url: str, workers: int, messages, n_obs: int,
               state_file: Path, tag: str, db_pid: int | None, stored=None, repo: Path = REPO,
               broker_pid: int | None = None) -> dict:
    """`workers` `humus ingest` processes on one shared subscription: rate and CPU of workers and database.

    Done when the workers report every observation written, or, with `stored()`, when it says so
    (bench/peer_nodered.py counts points in the database for every contender alike).
    `repo`: the checkout whose `humus ingest` runs (--baseline). With `broker_pid`, also the CPU of the
    broker and of this process (the publisher), which share the machine's cores with the rest.
    """
    status = Status(mqtt_port)
    ids = [f"bench-{tag}-{i}" for i in range(workers)]
    procs: list[subprocess.Popen] = []
    try:
        start_workers(workdir, ids, procs, status, store_url=store_url, mqtt_port=mqtt_port, group=f"bench-{tag}",
                      state_file=state_file, metrics_interval_s=0.1, repo=repo)
        time.sleep(0.3)
        cpu0 = [cpu_s(p.pid) for p in procs]
        db0 = cpu_s(db_pid) if db_pid else 0.0
        broker0, own0 = cpu_s(broker_pid) if broker_pid else 0.0, time.process_time()
        t0 = time.perf_counter()
        t_pub = publish_all(mqtt_port, messages, tag)
        if stored is None:
            wait(lambda: status.written(ids) >= n_obs, 240, f"{n_obs} observations written", interval=0.005)
        else:
            wait(stored, 240, f"{n_obs} observations stored", interval=0.1)
        elapsed = time.perf_counter() - t0
        worker_cpu = sum(cpu_s(p.pid) for p in procs) - sum(cpu0)
        db_cpu = cpu_s(db_pid) - db0 if db_pid else 0.0
        rest_cpu = cpu_s(broker_pid) - broker0 + time.process_time() - own0 if broker_pid else 0.0
        shares = [status.docs[c]["totals"]["messages_in"] for c in ids]
        writes = [status.docs[c]["totals"].get("store_writes") for c in ids]
        print(f"  {tag}: published in {t_pub:.2f} s, stored in {elapsed:.2f} s; messages per worker {shares}, "
              f"store writes {writes}")
        return {"rate": n_obs / elapsed, "worker_cpu": worker_cpu / n_obs * 1e5, "db_cpu": db_cpu / n_obs * 1e5,
                "rest_cpu": rest_cpu / n_obs * 1e5}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        status.close()
        forget_sessions(mqtt_port, ids)


def sqlite_count(path: Path) -> int:
    import sqlite3
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT count(*) FROM observation").fetchone()[0]
    finally:
        con.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=3000, help="messages of 100 observations per run (3000)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of every run; medians are reported (2)")
    ap.add_argument("--no-sqlite", action="store_true", help="skip the SQLite archive runs")
    ap.add_argument("--workers", default="1,2,4", help="InfluxDB runs with these numbers of workers (1,2,4)")
    ap.add_argument("--baseline", type=Path, help="another checkout (a git worktree of an earlier commit): its "
                    "1-worker InfluxDB run too, right after this one's in every round, for a before/after")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    messages, all_obs = make_messages(args.messages)
    n_obs = len(all_obs)
    plain = plain_lines(all_obs)
    print(f"{args.messages} messages x {PER_MESSAGE} observations = {n_obs} per run, "
          f"{sum(len(p) for _, p in messages) / len(messages) / 1024:.1f} KiB per message; "
          f"{GATEWAYS * PROBES * 4} series")

    work = Path(tempfile.mkdtemp(prefix="humus-bench-ingest-"))
    broker = servers.mosquitto(work / "mosquitto", BROKER_CONF).start()
    server = servers.influxdb(work / "influxdb").start()
    servers.http_ready(server.url + "/ping")
    influx = Influx(server.port)
    raw: list[float] = []
    runs: dict[str, list[dict]] = {}
    try:
        for r in range(args.rounds):
            settle(server.proc.pid)
            raw.append(influx.write_rate(f"raw_{r}_a", plain))
            print(f"round {r + 1}: raw 3-field points, 5,000 per request: {raw[-1]:,.0f} points/s")
            plan = [("influx", workers, REPO) for workers in counts]
            if args.baseline:  # next to this checkout's 1-worker run, before it and after it in turn
                at = counts.index(1) if 1 in counts else 0
                plan.insert(at + r % 2, ("baseline", 1, args.baseline.resolve()))
            for kind, workers, repo in plan:
                db = f"{kind}_{r}_{workers}"
                settle(server.proc.pid)
                influx.create(db)
                res = run_ingest(work, broker.port, f"influxdb://127.0.0.1:{server.port}/{db}", workers, messages,
                                 n_obs, work / f"state-{kind}-{r}-{workers}.sqlite", f"{kind}{r}-{workers}",
                                 server.proc.pid, repo=repo, broker_pid=broker.proc.pid)
                stored = influx.count(db, "humus_obs")
                if stored != n_obs:
                    raise RuntimeError(f"InfluxDB {db} holds {stored} of {n_obs} observations")
                influx.drop(db)
                runs.setdefault(f"{kind}_{workers}w", []).append(res)
                print(f"  ingest -> InfluxDB, {workers} worker(s){' (baseline)' if kind == 'baseline' else ''}: "
                      f"{res['rate']:,.0f} obs/s; CPU s per 100k obs: "
                      f"workers {res['worker_cpu']:.2f}, InfluxDB {res['db_cpu']:.2f}, broker and publisher "
                      f"{res['rest_cpu']:.2f}; stored {stored} (exact)")
            if not args.no_sqlite:
                for workers in (1, 2):
                    path = work / f"ingest-{r}-{workers}.sqlite"
                    res = run_ingest(work, broker.port, f"sqlite:{path}", workers, messages, n_obs,
                                     work / f"state-sqlite-{r}-{workers}.sqlite", f"sqlite{r}-{workers}", None)
                    stored = sqlite_count(path)
                    if stored != n_obs:
                        raise RuntimeError(f"SQLite archive {path} holds {stored} of {n_obs} observations")
                    runs.setdefault(f"sqlite_{workers}w", []).append(res)
                    print(f"  ingest -> SQLite, {workers} worker(s): {res['rate']:,.0f} obs/s; worker CPU s per "
                          f"100k obs {res['worker_cpu']:.2f}; stored {stored} (exact)")
            settle(server.proc.pid)
            raw.append(influx.write_rate(f"raw_{r}_b", plain))
            print(f"round {r + 1}: raw 3-field points again: {raw[-1]:,.0f} points/s")
    finally:
        broker.stop()
        server.stop()

    raw_rate = max(raw)
    med = {k: {m: statistics.median(x.get(m, 0.0) for x in v) for m in ("rate", "worker_cpu", "db_cpu", "rest_cpu")}
           for k, v in runs.items()}
    print(f"raw anchor (best of {len(raw)}): {raw_rate:,.0f} points/s")
    for w in counts:
        m = med[f"influx_{w}w"]
        print(f"InfluxDB, {w} worker(s): {m['rate']:,.0f} obs/s = {m['rate'] / raw_rate:.2f} of raw; "
              f"CPU s per 100k obs: workers {m['worker_cpu']:.2f}, InfluxDB {m['db_cpu']:.2f}, broker and "
              f"publisher {m['rest_cpu']:.2f}")
    if "baseline_1w" in med:
        b = med["baseline_1w"]
        print(f"baseline {args.baseline}, 1 worker: {b['rate']:,.0f} obs/s = {b['rate'] / raw_rate:.2f} of raw; "
              f"CPU s per 100k obs: workers {b['worker_cpu']:.2f}, InfluxDB {b['db_cpu']:.2f}; this checkout / "
              f"baseline, by round: " + ", ".join(f"{x['rate'] / y['rate']:.2f}"
                                                  for x, y in zip(runs["influx_1w"], runs["baseline_1w"])))
    one = med.get("influx_1w", {"rate": 0.0, "worker_cpu": 0.0})
    print(f"goals: 1 worker >= 0.5 of raw: {one['rate'] / raw_rate:.2f} "
          f"({'met' if one['rate'] / raw_rate >= 0.5 else 'not met'}); worker CPU <= 0.5 s per 100k obs: "
          f"{one['worker_cpu']:.2f} ({'met' if one['worker_cpu'] <= 0.5 else 'not met'})")
    fields = [f"raw_obs_per_s={raw_rate:.0f}"]
    for w in counts:
        m = med[f"influx_{w}w"]
        fields += [f"influx_{w}w_obs_per_s={m['rate']:.0f}", f"ratio_{w}w={m['rate'] / raw_rate:.2f}",
                   f"worker_cpu_s_per_100k_{w}w={m['worker_cpu']:.2f}", f"influx_cpu_s_per_100k_{w}w={m['db_cpu']:.2f}"]
    for w in (1, 2):
        if f"sqlite_{w}w" in med:
            fields += [f"sqlite_{w}w_obs_per_s={med[f'sqlite_{w}w']['rate']:.0f}",
                       f"sqlite_worker_cpu_s_per_100k_{w}w={med[f'sqlite_{w}w']['worker_cpu']:.2f}"]
    print("RESULT ingest " + " ".join(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
