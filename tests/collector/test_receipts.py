"""The gateway keeps a batch until the centre's receipt says it is stored, not until the broker's PUBACK.

Real Mosquitto, simulated probes on ptys, the collector in-process. The
recorder plays the centre: with `receipts=False` it stores nothing, so the
broker acknowledges every message and the gateway must still keep them all.
"""

from __future__ import annotations

import threading

import pytest

from collector_support import Recorder, gateway_toml, wait_until
from humus.receipts import encode_receipt, receipt_topic

pytestmark = pytest.mark.servers


def _probe(pid: str, link) -> dict:
    return {"id": pid, "driver": "ascii-temp", "port": str(link), "interval_s": 1}


def _run_collector(tmp_path, port, probes, publish: str):
    from collector.config import load_gateway_config
    from collector.daemon import Collector

    cfg_path = tmp_path / "gw.toml"
    cfg_path.write_text(gateway_toml(tmp_path / "data", port, [_probe(f"p{i}", p.link) for i, p in enumerate(probes)],
                                     publish=publish))
    c = Collector(load_gateway_config(cfg_path))
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    assert c.ready.wait(10)
    return c, stop, t


def _send_receipt(port: int, **ranges) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-centre")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(receipt_topic("s1", "gw1"), encode_receipt("s1", "gw1", by="test", **ranges), qos=1).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()


def test_puback_alone_deletes_nothing_and_unconfirmed_batches_are_resent_byte_for_byte(
        tmp_path, mosquitto, sim_probes):
    rec = Recorder(mosquitto.port, receipts=False)
    c, stop, t = _run_collector(tmp_path, mosquitto.port, sim_probes(2),
                                "receipt_timeout_s = 1.5\nreceipt_timeout_max_s = 3")
    try:
        rec.wait_for(lambda: len({b["seq"] for b in rec.batches()}) >= 3, 20, "three batches at the broker")
        first_seqs = sorted({b["seq"] for b in rec.batches()})[:3]
        # The broker took them (PUBACK), nobody stored them: they stay in the spool ...
        st = c.spool.stats()
        assert st.pending_batches >= 3
        # ... and come again, identical, after the receipt timeout.
        rec.wait_for(lambda: all(sum(1 for b in rec.batches() if b["seq"] == s) >= 2 for s in first_seqs), 15,
                     "the unconfirmed batches re-sent")
        for s in first_seqs:
            copies = [b for b in rec.batches() if b["seq"] == s]
            assert all(cp == copies[0] for cp in copies), f"seq {s} re-sent with other content"
        def counted(s: dict) -> bool:
            m = s.get("mqtt") or {}
            return m.get("awaiting_receipt", 0) >= 3 and m.get("resent", 0) >= 3

        rec.wait_for(lambda: any(counted(s) for s in rec.statuses()), 10,
                     "a heartbeat counting batches awaiting a receipt and re-sent")
        status = [s for s in rec.statuses() if counted(s)][-1]["mqtt"]
        assert status["confirm"] == "receipt" and status["oldest_unconfirmed_s"] > 1.0

        # The centre confirms: everything up to the newest seq seen is deleted.
        top = max(b["seq"] for b in rec.batches())
        _send_receipt(mosquitto.port, stored=range(1, top + 1))
        wait_until(lambda: c.spool.pending_batches(0, 1000) == [] or
              min(b.seq for b in c.spool.pending_batches(0, 1000)) > top, 10, "confirmed batches deleted")
    finally:
        stop.set()
        t.join(30)
        rec.close()


def test_a_resend_request_is_answered_at_once_and_a_bad_receipt_is_ignored(tmp_path, mosquitto, sim_probes):
    rec = Recorder(mosquitto.port, receipts=False)
    c, stop, t = _run_collector(tmp_path, mosquitto.port, sim_probes(1), "receipt_timeout_s = 600")
    try:
        rec.wait_for(lambda: len({b["seq"] for b in rec.batches()}) >= 2, 20, "two batches")
        _send_receipt(mosquitto.port, resend=[(1, 1)])
        rec.wait_for(lambda: sum(1 for b in rec.batches() if b["seq"] == 1) >= 2, 10, "seq 1 re-sent on request")

        import paho.mqtt.client as mqtt

        bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-bad")
        bad.connect("127.0.0.1", mosquitto.port)
        bad.loop_start()
        bad.publish(receipt_topic("s1", "gw1"), b'{"schema":"humus/v1/receipt","site":"s1","gateway":"gw1",'
                                               b'"stored":[[1,"x"]]}', qos=1).wait_for_publish(5)
        bad.loop_stop()
        bad.disconnect()
        wait_until(lambda: c.state.mqtt.get("bad_receipts", 0) == 1, 10, "the bad receipt counted")
        assert c.spool.pending_batches(0, 1)[0].seq == 1, "a bad receipt deleted something"
        assert t.is_alive() and c.publisher.thread.is_alive()
    finally:
        stop.set()
        t.join(30)
        rec.close()


def test_confirm_puback_deletes_on_the_brokers_acknowledgement(tmp_path, mosquitto, sim_probes):
    rec = Recorder(mosquitto.port, receipts=False)
    c, stop, t = _run_collector(tmp_path, mosquitto.port, sim_probes(1), 'confirm = "puback"')
    try:
        rec.wait_for(lambda: len({b["seq"] for b in rec.batches()}) >= 3, 20, "three batches")
        wait_until(lambda: c.spool.stats().pending_batches <= 1, 5, "acknowledged batches deleted")
    finally:
        stop.set()
        t.join(30)
        rec.close()
