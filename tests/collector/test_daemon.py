"""The daemon against a real Mosquitto and simulated probes on real ptys."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest

from collector_support import REPO, gateway_toml, start_collect, stop_process

pytestmark = pytest.mark.servers


def ascii_probe(pid: str, port, interval: float = 1, **extra) -> dict:
    return {"id": pid, "driver": "ascii-temp", "port": str(port), "interval_s": interval, **extra}


def _seqs(batches) -> list[int]:
    return [b["seq"] for b in batches]


def test_kill_9_repeatedly_while_publishing_loses_nothing(tmp_path, mosquitto, sim_probes, recorder_factory):
    probes = sim_probes(3)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(gateway_toml(tmp_path / "data", mosquitto.port,
                                [ascii_probe(f"p{i}", p.link) for i, p in enumerate(probes)],
                                publish="max_batch_observations = 2"))
    rec = recorder_factory(mosquitto.port)
    for round_ in range(4):
        proc = start_collect(cfg, log=tmp_path / "collect.log")
        before = len(rec.batches())
        rec.wait_for(lambda: len(rec.batches()) >= before + 2, 20, "batches from the collector")
        time.sleep(0.3 * round_)
        proc.kill()
        proc.wait(5)
    proc = start_collect(cfg, log=tmp_path / "collect.log")
    time.sleep(2.5)
    assert stop_process(proc) == 0
    from collector.spool import Spool

    sp = Spool(tmp_path / "data" / "spool.sqlite", site="s1", gateway="gw1", quota_bytes=10**9)
    st = sp.stats()
    sp.close()
    batches = rec.batches()
    seqs = sorted(set(_seqs(batches)))
    # Every batch number ever given arrived; whatever the last run did not get acknowledged is still spooled.
    assert seqs == list(range(1, st.next_seq - st.pending_batches)) or seqs == list(range(1, st.next_seq))
    by_seq = defaultdict(set)
    for b in batches:
        by_seq[b["seq"]].add(repr(b["observations"]))
    assert all(len(v) == 1 for v in by_seq.values()), "a seq was republished with other content"
    keys = [(o["probe"], o["time_ns"]) for b in {b["seq"]: b for b in batches}.values() for o in b["observations"]]
    assert len(keys) == len(set(keys)), "an observation travelled in two different batches"
    assert st.unsent_observations == 0
    assert sum(1 for k in keys if k[0] == "p0") >= 5


def test_broker_outage_backlog_drains_and_every_slot_arrives_in_order(tmp_path, mosquitto, sim_probes,
                                                                      recorder_factory):
    from collector.config import load_gateway_config
    from collector.daemon import Collector

    probes = sim_probes(2)
    cfg_path = tmp_path / "gw.toml"
    cfg_path.write_text(gateway_toml(tmp_path / "data", mosquitto.port,
                                     [ascii_probe(f"p{i}", p.link) for i, p in enumerate(probes)],
                                     publish="max_batch_observations = 3\nbacklog_messages_per_s = 20"))
    rec = recorder_factory(mosquitto.port)
    c = Collector(load_gateway_config(cfg_path))
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert c.ready.wait(10)
        rec.wait_for(lambda: len(rec.observations()) >= 4, 15, "first observations")
        mosquitto.stop()
        time.sleep(5)
        assert c.spool.stats().depth >= 6          # kept while the broker was away
        mosquitto.start()
        time.sleep(4)
        stop.set()
        t.join(30)
        rec.wait_for(lambda: c.spool is None, 5, "collector closed")
    finally:
        stop.set()
    from collector.spool import Spool

    sp = Spool(tmp_path / "data" / "spool.sqlite", site="s1", gateway="gw1", quota_bytes=10**9)
    assert sp.stats().depth == 0, "backlog not drained"
    sp.close()
    batches = {b["seq"]: b for b in rec.batches()}
    assert sorted(batches) == list(range(1, max(batches) + 1))
    for probe in ("p0", "p1"):
        times = [o["time_ns"] for s in sorted(batches) for o in batches[s]["observations"] if o["probe"] == probe
                 and o["quantity"] == "soil_temp"]
        assert len(times) == len(set(times))
        slots = sorted(round(x / 1e9) for x in times)
        assert slots == list(range(slots[0], slots[0] + len(slots))), f"{probe}: a slot is missing"
        # within each batch, and across backlog batches, time increases per probe
        for s in sorted(batches):
            ts = [o["time_ns"] for o in batches[s]["observations"] if o["probe"] == probe]
            assert ts == sorted(ts)


def test_spool_at_quota_drops_the_oldest_and_reports_it(tmp_path, mosquitto, sim_probes, recorder_factory):
    from collector.config import load_gateway_config
    from collector.daemon import Collector

    probes = sim_probes(2)
    mosquitto.stop()
    cfg_path = tmp_path / "gw.toml"
    cfg_path.write_text(gateway_toml(tmp_path / "data", mosquitto.port,
                                     [ascii_probe(f"p{i}", p.link) for i, p in enumerate(probes)],
                                     gateway="spool_quota_mb = 0.002"))
    c = Collector(load_gateway_config(cfg_path))
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert c.ready.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and c.spool.stats().dropped_by_quota < 4:
            time.sleep(0.2)
        st = c.spool.stats()
        assert st.dropped_by_quota >= 4 and st.bytes <= 2000
        mosquitto.start()
        rec = recorder_factory(mosquitto.port)
        rec.wait_for(lambda: any(s.get("spool", {}).get("dropped_by_quota", 0) >= 4 for s in rec.statuses()), 15,
                     "a status reporting the drops")
        rec.wait_for(lambda: len(rec.observations()) >= 4, 15, "the kept observations")
    finally:
        stop.set()
        t.join(30)
    first = min(o["time_ns"] for o in rec.observations())
    slots = c.state.probes["p0"].slots
    assert first > slots[0], "the oldest observations should have been dropped"


def test_unplugged_probe_goes_absent_and_recovers_while_the_other_keeps_its_schedule(tmp_path, mosquitto,
                                                                                   sim_probes, recorder_factory):
    from collector.config import load_gateway_config
    from collector.daemon import Collector

    a, b = sim_probes(2)
    cfg_path = tmp_path / "gw.toml"
    cfg_path.write_text(gateway_toml(tmp_path / "data", mosquitto.port,
                                     [ascii_probe("steady", a.link, 1), ascii_probe("flaky", b.link, 1)]))
    rec = recorder_factory(mosquitto.port)
    c = Collector(load_gateway_config(cfg_path))
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert c.ready.wait(10)
        time.sleep(2.5)
        b.unplug()
        rec.wait_for(lambda: any(s.get("probes", {}).get("flaky", {}).get("state") == "absent"
                                 for s in rec.statuses()), 10, "flaky reported absent")
        time.sleep(1.5)
        b.replug()
        rec.wait_for(lambda: rec.statuses() and rec.statuses()[-1]["probes"]["flaky"]["state"] == "ok"
                     and any(s["probes"]["flaky"]["state"] == "absent" for s in rec.statuses()), 15,
                     "flaky back to ok")
        time.sleep(1)
    finally:
        stop.set()
        t.join(30)
    slots = c.state.probes["steady"].slots
    steps = {round((y - x) / 1e9) for x, y in zip(slots, slots[1:])}
    assert steps == {1}, f"steady probe missed slots: {steps}"
    assert all(s % 10**9 == 0 for s in slots)                     # aligned to the wall clock
    flaky = [o for o in rec.observations() if o["probe"] == "flaky"]
    assert any(o["flag"] == 9 and o["flag_test"] == "absent" for o in flaky)
    assert flaky[-1]["flag"] != 9


def _notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.2)
    return s, path


def _collect_until(sock, wanted: str, timeout: float, seen: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.extend(sock.recv(4096).decode().split("\n"))
        except socket.timeout:
            continue
        if wanted in seen:
            return
    raise AssertionError(f"no {wanted} within {timeout} s; got {seen[-10:]}")


def test_systemd_ready_watchdog_reload_and_stop_on_a_fake_notify_socket(tmp_path, mosquitto, sim_probes,
                                                                        recorder_factory):
    (probe,) = sim_probes(1)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(gateway_toml(tmp_path / "data", mosquitto.port, [ascii_probe("p0", probe.link)]))
    rec = recorder_factory(mosquitto.port)
    sock, path = _notify_socket(tmp_path)
    proc = start_collect(cfg, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}, log=tmp_path / "log")
    seen: list[str] = []
    try:
        _collect_until(sock, "READY=1", 20, seen)
        n = seen.count("WATCHDOG=1")
        deadline = time.monotonic() + 5
        while seen.count("WATCHDOG=1") < n + 3 and time.monotonic() < deadline:
            _collect_until(sock, "WATCHDOG=1", 2, seen)
            seen.append("")
        assert seen.count("WATCHDOG=1") >= n + 3
        # a broken configuration on SIGHUP: refused, the daemon keeps running the old one
        cfg.write_text(cfg.read_text().replace('interval_s = 1', 'interval_s = "often"'))
        proc.send_signal(signal.SIGHUP)
        _collect_until(sock, "RELOADING=1", 10, seen)
        time.sleep(1.5)
        assert proc.poll() is None
        assert "reload refused" in (tmp_path / "log").read_text()
        # a good one is taken
        cfg.write_text(gateway_toml(tmp_path / "data", mosquitto.port, [ascii_probe("p0", probe.link, 2)]))
        seen.clear()
        proc.send_signal(signal.SIGHUP)
        _collect_until(sock, "RELOADING=1", 10, seen)
        _collect_until(sock, "READY=1", 10, seen)
        rec.wait_for(lambda: any(s.get("config", {}).get("reloads") == 1 and s["probes"]["p0"]["interval_s"] == 2
                                 for s in rec.statuses()), 10, "status after reload")
        proc.send_signal(signal.SIGTERM)
        _collect_until(sock, "STOPPING=1", 10, seen)
        assert proc.wait(20) == 0
        rec.wait_for(lambda: rec.statuses() and rec.statuses()[-1]["state"] == "offline", 5, "offline status")
    finally:
        stop_process(proc, signal.SIGKILL)
        sock.close()


def test_bad_configuration_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateway]\nsite = "S 1"\nid = "gw1"\n')
    r = subprocess.run([sys.executable, "-m", "humus.cli", "collect", "--config", str(cfg)], cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "gateway.site" in lines[0]


def test_unknown_driver_is_a_configuration_error_naming_the_key(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text(gateway_toml(tmp_path / "data", 1883, [{"id": "p0", "driver": "nope", "port": "/dev/null"}]))
    r = subprocess.run([sys.executable, "-m", "humus.cli", "collect", "--config", str(cfg)], cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "probes[0].driver" in r.stderr and len(r.stderr.strip().splitlines()) == 1
