"""The peer: a Node-RED 4 flow (mqtt in -> function -> influxdb batch) against one `humus ingest` worker.

Same broker (Mosquitto, the test configuration, autosave as deployed), same InfluxDB 1.x, same
pre-encoded messages (bench/ingest.py: 10 gateways x 16 probes, 100
observations per message, QoS 1). Node-RED 4 and node-red-contrib-influxdb
are installed with npm into a cache directory on first use
($XDG_CACHE_HOME/humus-bench/node-red, else ~/.cache/...); without npm this
bench says so and exits 0.

The flow is the one people write: `mqtt in` (QoS 1, parsed JSON) ->
`function` (one point per observation: 4 tags site, gateway, probe,
quantity; fields value and flag; the time in milliseconds, which is what a
JavaScript number holds exactly) -> `influxdb batch` (one write per
message). It acknowledges each message on receipt, before its write, and
keeps no unit, uncertainty, model, source, depth nor nanoseconds; Humus
acknowledges after the durable write and validates everything. Both runs
are timed alike: from the first publish until the database holds every
point (a count query every 0.1 s). Rounds alternate; medians are reported.

Usage: .venv/bin/python bench/peer_nodered.py [--messages N] [--rounds R]   (about 2 minutes; npm install once)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import BROKER_CONF, Influx, cpu_s, make_messages, publish_all, run_ingest, settle, wait  # noqa: E402

import servers  # noqa: E402

NODE_RED = "node-red@4"
INFLUX_NODE = "node-red-contrib-influxdb@0.7"

FUNCTION = """
const b = msg.payload;
const points = [];
for (const o of b.observations) {
    if (typeof o.value !== "number") continue;
    points.push({measurement: "nodered_obs",
                 tags: {site: b.site, gateway: b.gateway, probe: o.probe, quantity: o.quantity},
                 fields: {value: o.value, flag: o.flag},
                 timestamp: new Date(Math.floor(o.time_ns / 1e6))});
}
msg.payload = points;
return msg;
"""


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "humus-bench" / "node-red"


def install(cache: Path) -> Path:
    """node-red/red.js in the cache, installed with npm when missing."""
    red = cache / "node_modules" / "node-red" / "red.js"
    influx = cache / "node_modules" / "node-red-contrib-influxdb" / "influxdb.js"
    if red.exists() and influx.exists():
        return red
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "package.json").exists():
        (cache / "package.json").write_text('{"name": "humus-bench-node-red", "private": true}\n')
    print(f"installing {NODE_RED} and {INFLUX_NODE} into {cache} with npm...")
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", NODE_RED, INFLUX_NODE],
                   cwd=cache, check=True, timeout=600)
    return red


def flow(mqtt_port: int, influx_port: int, db: str) -> list[dict]:
    return [
        {"id": "tab", "type": "tab", "label": "humus peer"},
        {"id": "broker", "type": "mqtt-broker", "name": "bench", "broker": "127.0.0.1", "port": str(mqtt_port),
         "clientid": f"nodered-bench-{db}", "protocolVersion": "4", "cleansession": True, "keepalive": "60",
         "autoConnect": True, "usetls": False},
        {"id": "in", "type": "mqtt in", "z": "tab", "name": "", "topic": "humus/v1/+/+/obs", "qos": "1",
         "datatype": "json", "broker": "broker", "nl": False, "rap": False, "inputs": 0, "x": 100, "y": 100,
         "wires": [["fn"]]},
        {"id": "fn", "type": "function", "z": "tab", "name": "to points", "func": FUNCTION, "outputs": 1,
         "x": 300, "y": 100, "wires": [["out"]]},
        {"id": "db", "type": "influxdb", "hostname": "127.0.0.1", "port": str(influx_port), "protocol": "http",
         "database": db, "name": "bench", "usetls": False, "influxdbVersion": "1.x"},
        {"id": "out", "type": "influxdb batch", "z": "tab", "influxdb": "db", "precision": "ms",
         "retentionPolicy": "", "name": "", "x": 500, "y": 100, "wires": []},
    ]


def run_nodered(red: Path, work: Path, mqtt_port: int, influx: Influx, messages, n_obs: int, tag: str,
                db_pid: int) -> dict:
    db = f"nodered_{tag}"
    settle(db_pid)
    influx.create(db)
    user = work / f"nodered-{tag}"
    user.mkdir()
    (user / "flows.json").write_text(json.dumps(flow(mqtt_port, influx.port, db)))
    (user / "settings.js").write_text(
        "module.exports = {uiPort: %d, uiHost: '127.0.0.1', httpAdminRoot: false, httpNodeRoot: false, "
        "flowFile: 'flows.json', credentialSecret: false, logging: {console: {level: 'info'}}};\n"
        % servers.free_port())
    log_path = user / "node-red.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(["node", str(red), "--userDir", str(user), "--settings", str(user / "settings.js")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"Node-RED exited: {log_path.read_text()[-800:]}")
            text = log_path.read_text(errors="replace")
            return "Connected to broker" in text and "Started flows" in text

        wait(ready, 60, "Node-RED connected to the broker", interval=0.1)
        time.sleep(0.5)  # its subscription is sent right after the connection
        cpu0, db0 = cpu_s(proc.pid), cpu_s(db_pid)
        t0 = time.perf_counter()
        t_pub = publish_all(mqtt_port, messages, f"nodered-{tag}")
        wait(lambda: influx.count(db, "nodered_obs") >= n_obs, 240, f"{n_obs} Node-RED points", interval=0.1)
        elapsed = time.perf_counter() - t0
        res = {"rate": n_obs / elapsed, "worker_cpu": (cpu_s(proc.pid) - cpu0) / n_obs * 1e5,
               "db_cpu": (cpu_s(db_pid) - db0) / n_obs * 1e5}
        stored = influx.count(db, "nodered_obs")
        if stored != n_obs:
            raise RuntimeError(f"Node-RED stored {stored} of {n_obs} points")
        influx.drop(db)
        print(f"  Node-RED {tag}: published in {t_pub:.2f} s, stored in {elapsed:.2f} s: {res['rate']:,.0f} obs/s; "
              f"CPU s per 100k obs: Node-RED {res['worker_cpu']:.2f}, InfluxDB {res['db_cpu']:.2f}")
        return res
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=3000, help="messages of 100 observations per run (3000)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (3)")
    args = ap.parse_args()
    if not shutil.which("npm") or not shutil.which("node"):
        print("npm (and node) not found: the Node-RED peer bench needs them; skipped")
        print("RESULT peer_nodered skipped=1")
        return 0
    red = install(cache_dir())
    version = json.loads((red.parent / "package.json").read_text())["version"]
    print(f"Node-RED {version}, {INFLUX_NODE}, node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}")

    messages, all_obs = make_messages(args.messages)
    n_obs = len(all_obs)
    print(f"{args.messages} messages x 100 observations = {n_obs} per run")
    work = Path(tempfile.mkdtemp(prefix="humus-bench-peer-"))
    broker = servers.mosquitto(work / "mosquitto", BROKER_CONF).start()
    server = servers.influxdb(work / "influxdb").start()
    servers.http_ready(server.url + "/ping")
    influx = Influx(server.port)
    peer: list[dict] = []
    humus: list[dict] = []
    try:
        for r in range(args.rounds):
            peer.append(run_nodered(red, work, broker.port, influx, messages, n_obs, str(r), server.proc.pid))
            db = f"humus_{r}"
            settle(server.proc.pid)
            influx.create(db)
            res = run_ingest(work, broker.port, f"influxdb://127.0.0.1:{server.port}/{db}", 1, messages, n_obs,
                             work / f"state-{r}.sqlite", f"peer{r}", server.proc.pid,
                             stored=lambda: influx.count(db, "humus_obs") >= n_obs)
            if influx.count(db, "humus_obs") != n_obs:
                raise RuntimeError(f"Humus stored {influx.count(db, 'humus_obs')} of {n_obs}")
            influx.drop(db)
            humus.append(res)
            print(f"  Humus {r}, 1 worker: {res['rate']:,.0f} obs/s; CPU s per 100k obs: worker "
                  f"{res['worker_cpu']:.2f}, InfluxDB {res['db_cpu']:.2f}")
    finally:
        broker.stop()
        server.stop()

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(x[key] for x in runs)

    ratio = med(humus, "rate") / med(peer, "rate")
    print(f"Humus 1 worker / Node-RED flow: {ratio:.2f} (goal >= 1.5: {'met' if ratio >= 1.5 else 'not met'}); "
          f"worker CPU s per 100k obs: Humus {med(humus, 'worker_cpu'):.2f}, Node-RED {med(peer, 'worker_cpu'):.2f}; "
          f"InfluxDB: {med(humus, 'db_cpu'):.2f} and {med(peer, 'db_cpu'):.2f}")
    print(f"RESULT peer_nodered nodered_obs_per_s={med(peer, 'rate'):.0f} humus_1w_obs_per_s={med(humus, 'rate'):.0f} "
          f"ratio={ratio:.2f} nodered_cpu_s_per_100k={med(peer, 'worker_cpu'):.2f} "
          f"humus_cpu_s_per_100k={med(humus, 'worker_cpu'):.2f} nodered_influx_cpu_s_per_100k={med(peer, 'db_cpu'):.2f} "
          f"humus_influx_cpu_s_per_100k={med(humus, 'db_cpu'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
