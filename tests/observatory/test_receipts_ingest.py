"""The ingest side confirms stored batches to their gateway, and asks for the holes it sees.

Real Mosquitto, a real ingest worker, the SQLite archive; a plain MQTT
client plays the gateway and reads its own receipt topic.
"""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt
import pytest

from humus.receipts import decode_receipt, receipt_topic
from humus.wire import obs_topic
from observatory.store import Selection
from observatory.worker import IngestWorker
from observatory.stores.sqlite import SqliteStore
from test_ingest import Publisher, batch, config, running, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]


class ReceiptReader:
    def __init__(self, port: int, site: str, gw: str) -> None:
        self.site, self.gw = site, gw
        self.receipts = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gw-{site}-{gw}")
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(receipt_topic(site, gw), qos=1)
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(10)

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.receipts.append(decode_receipt(msg.payload, self.site, self.gw))

    def stored(self) -> set[int]:
        with self.lock:
            return {s for r in self.receipts for a, b in r.stored for s in range(a, b + 1)}

    def resend(self) -> set[int]:
        with self.lock:
            return {s for r in self.receipts for a, b in r.resend for s in range(a, b + 1)}

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_stored_batches_are_confirmed_after_the_write_and_duplicates_again(tmp_path, mosquitto):
    path = tmp_path / "archive.sqlite"
    reader = ReceiptReader(mosquitto.port, "farm-1", "gw-1")
    pub = Publisher(mosquitto.port)
    with SqliteStore(path) as store, running(IngestWorker(config(mosquitto.port, f"sqlite:{path}"), store)):
        pub.send_many([(obs_topic("farm-1", "gw-1"), batch("farm-1", "gw-1", s)) for s in (1, 2, 3)])
        wait_for(lambda: reader.stored() >= {1, 2, 3}, 20, "receipts for seqs 1-3")
        # Every confirmed seq is really in the archive.
        assert sum(1 for _ in store.query(Selection())) == 30
        # A re-sent batch (the gateway missed the receipt) is confirmed again.
        n = len(reader.receipts)
        pub.send(obs_topic("farm-1", "gw-1"), batch("farm-1", "gw-1", 2))
        wait_for(lambda: len(reader.receipts) > n, 20, "a receipt for the duplicate")
        assert reader.receipts[-1].stored == ((2, 2),)
    pub.close()
    reader.close()


def test_a_hole_that_stays_open_is_asked_for(tmp_path, mosquitto):
    path = tmp_path / "archive.sqlite"
    reader = ReceiptReader(mosquitto.port, "farm-1", "gw-2")
    pub = Publisher(mosquitto.port)
    cfg = config(mosquitto.port, f"sqlite:{path}", resend_after_s=1.0)
    with SqliteStore(path) as store, running(IngestWorker(cfg, store)):
        pub.send_many([(obs_topic("farm-1", "gw-2"), batch("farm-1", "gw-2", s)) for s in (1, 2, 5)])
        wait_for(lambda: reader.resend() == {3, 4}, 20, "a request to re-send seqs 3-4")
        pub.send_many([(obs_topic("farm-1", "gw-2"), batch("farm-1", "gw-2", s)) for s in (3, 4)])
        wait_for(lambda: reader.stored() >= {1, 2, 3, 4, 5}, 20, "every seq confirmed")
    pub.close()
    reader.close()


def test_receipts_can_be_switched_off(tmp_path, mosquitto):
    path = tmp_path / "archive.sqlite"
    reader = ReceiptReader(mosquitto.port, "farm-1", "gw-3")
    pub = Publisher(mosquitto.port)
    with SqliteStore(path) as store, running(IngestWorker(config(mosquitto.port, f"sqlite:{path}", receipts=False),
                                                         store)) as w:
        pub.send(obs_topic("farm-1", "gw-3"), batch("farm-1", "gw-3", 1))
        wait_for(lambda: w.metrics.messages_acked >= 1, 20, "the batch stored")
    assert reader.receipts == []
    pub.close()
    reader.close()


def test_a_batch_refused_for_its_content_is_confirmed_as_refused(tmp_path, mosquitto):
    import time as _time

    from humus.records import Observation, QualityFlag
    from humus.wire import encode_batch

    path = tmp_path / "archive.sqlite"
    reader = ReceiptReader(mosquitto.port, "farm-1", "gw-4")
    pub = Publisher(mosquitto.port)
    future = Observation(site="farm-1", gateway="gw-4", probe="p", quantity="vwc",
                         time_ns=_time.time_ns() + 86400 * 10**9, value=0.2, unit="m3/m3", flag=QualityFlag.PASS)
    with SqliteStore(path) as store, running(IngestWorker(config(mosquitto.port, f"sqlite:{path}"), store)):
        pub.send(obs_topic("farm-1", "gw-4"), encode_batch("farm-1", "gw-4", 7, [future]))
        pub.send(obs_topic("farm-1", "gw-4"), batch("farm-1", "gw-4", 8))
        wait_for(lambda: reader.stored() >= {8}, 20, "the good batch confirmed")
        wait_for(lambda: any(r.refused == ((7, 7),) for r in reader.receipts), 20, "seq 7 confirmed as refused")
        assert 7 not in reader.stored()
    pub.close()
    reader.close()


def test_the_ingest_daemon_tells_systemd_it_is_ready_and_alive(tmp_path, mosquitto):
    """Type=notify with WatchdogSec in humus-ingest@.service: READY=1, then WATCHDOG=1 while the loop turns."""
    import socket
    import time as _time

    from test_ingest import ingest_process, stop_process, write_config

    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    cfg = write_config(tmp_path / "ingest.toml", mosquitto.port, f"sqlite:{tmp_path / 'archive.sqlite'}", "ingest-sd")
    import os

    os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"] = path, "400000"
    try:
        proc = ingest_process(cfg, tmp_path / "ingest.log")
    finally:
        del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
    seen: list[str] = []
    try:
        deadline = _time.monotonic() + 30
        while _time.monotonic() < deadline and seen.count("WATCHDOG=1") < 3:
            try:
                seen.extend(sock.recv(4096).decode().split("\n"))
            except socket.timeout:
                pass
        assert "READY=1" in seen and seen.count("WATCHDOG=1") >= 3, seen[-10:]
        assert seen.index("READY=1") < seen.index("WATCHDOG=1")
    finally:
        assert stop_process(proc) == 0
        sock.close()
