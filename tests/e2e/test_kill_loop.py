"""The whole pipeline survives kill -9 of the collector and of the ingest worker, over and over.

Real processes (`humus collect`, `humus ingest`), real Mosquitto, simulated
probes on ptys, the SQLite archive. A recording subscriber with a persistent
session sees every batch the collector ever published; at the end the
archive must hold exactly those observations, once each, and the batch
numbers must have no hole.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import paho.mqtt.client as mqtt

from firmware_bridge.sim.faults import FaultSwitches
from firmware_bridge.sim.pty import PtyProbe
from firmware_bridge.sim.registry import get_model
from observatory.store import Selection
from observatory.stores import open_store
from test_broker_restart import humus


class Recorder:
    def __init__(self, port: int) -> None:
        self.batches: dict[int, dict] = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="kill-loop-recorder",
                             protocol=mqtt.MQTTv311, clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("humus/v1/+/+/obs", qos=1)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        doc = json.loads(msg.payload)
        with self.lock:
            old = self.batches.setdefault(doc["seq"], doc)
            assert old["observations"] == doc["observations"], f"seq {doc['seq']} republished with other content"

    def keys(self) -> set:
        with self.lock:
            return {(o["probe"], o["quantity"], o["source"], o["time_ns"])
                    for b in self.batches.values() for o in b["observations"]}


def test_kill_9_of_collector_and_ingest_in_turn_loses_and_duplicates_nothing(tmp_path, mosquitto):
    probes = []
    for i, model in enumerate(("teros12", "ascii-temp")):
        fw = get_model(model).load()(get_model(model).default_address, 10 + i, FaultSwitches(),
                                     **({"measure_s": 0.1} if model == "teros12" else {}))
        probes.append(PtyProbe(fw, tmp_path / f"tty{i}").start())
    gw = tmp_path / "gateway.toml"
    gw.write_text(f"""
[gateway]
site = "farm-1"
id = "gw-1"
data_dir = "{tmp_path / 'gw'}"
clock_check = "epoch"
heartbeat_s = 2
[mqtt]
port = {mosquitto.port}
client_id = "gw-1-collector"
[publish]
max_batch_observations = 7
[[probes]]
id = "teros-a"
driver = "teros12"
port = "{tmp_path / 'tty0'}"
address = "0"
interval_s = 1
[probes.calibration.vwc]
model = "teros12_vwc"
input = "raw_counts"
[[probes]]
id = "temp-a"
driver = "ascii-temp"
port = "{tmp_path / 'tty1'}"
interval_s = 1
""")
    archive = tmp_path / "archive.sqlite"
    obs = tmp_path / "observatory.toml"
    obs.write_text(f"""
[ingest]
store = "sqlite:{archive}"
client_id = "ingest-a"
batch_latency_s = 0.3
[mqtt]
port = {mosquitto.port}
""")
    rec = Recorder(mosquitto.port)
    log = tmp_path / "processes.log"
    collect = humus("collect", "--config", str(gw), log=log)
    ingest = humus("ingest", "--config", str(obs), log=log)
    try:
        for round_ in range(6):
            time.sleep(1.5 + 0.4 * round_)
            if round_ % 2 == 0:
                collect.kill()
                collect.wait(10)
                collect = humus("collect", "--config", str(gw), log=log)
            else:
                ingest.kill()
                ingest.wait(10)
                ingest = humus("ingest", "--config", str(obs), log=log)
        time.sleep(2)
        collect.send_signal(signal.SIGTERM)
        assert collect.wait(30) == 0
        # The collector is stopped: what it published reaches the archive (what it had not yet
        # published stays in its spool for the next start, which collector tests cover).
        deadline = time.monotonic() + 60
        expected = rec.keys()
        stored: set = set()
        while time.monotonic() < deadline:
            expected = rec.keys()
            store = open_store(f"sqlite:{archive}")
            try:
                rows = list(store.query(Selection()))
            finally:
                store.close()
            stored = {(o.probe, o.quantity, o.source.value, o.time_ns) for o in rows}
            if stored == expected:
                break
            time.sleep(0.5)
        ingest.send_signal(signal.SIGTERM)
        assert ingest.wait(30) == 0
    finally:
        for p in (collect, ingest):
            if p.poll() is None:
                p.kill()
        rec.c.loop_stop()
        rec.c.disconnect()
        for p in probes:
            p.stop()
    seqs = sorted(rec.batches)
    assert seqs == list(range(1, seqs[-1] + 1)), f"batch numbers with holes: {sorted(set(range(1, seqs[-1] + 1)) - set(seqs))}"
    assert len(expected) > 50
    assert stored == expected, (f"{len(expected - stored)} published observations missing from the archive, "
                                f"{len(stored - expected)} unexpected")
    assert len(rows) == len(stored), "an observation stored twice"
    assert {k[0] for k in stored} == {"teros-a", "temp-a"}
