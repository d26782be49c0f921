"""In-process supervision: a publisher or poller thread that dies is restarted, counted and alerted."""

from __future__ import annotations

import threading
import time

import pytest

import servers
from collector.daemon import restart_delay_s
from collector_support import RunningCollector as Running, gateway_toml, wait_until


def ascii_probe(pid: str, port, interval: float = 1) -> dict:
    return {"id": pid, "driver": "ascii-temp", "port": str(port), "interval_s": interval}


def test_restart_back_off_doubles_and_is_capped():
    delays = [restart_delay_s(n) for n in range(1, 12)]
    assert delays[0] > 0 and all(b >= a for a, b in zip(delays, delays[1:]))
    assert delays[1] == 2 * delays[0]
    assert max(delays) == 30.0


@pytest.mark.servers
def test_a_publisher_killed_by_an_exception_is_restarted_and_publishes_again(tmp_path, mosquitto, sim_probes,
                                                                              recorder_factory, monkeypatch):
    from collector.spool import Spool

    (probe,) = sim_probes(1)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(gateway_toml(tmp_path / "data", mosquitto.port, [ascii_probe("p0", probe.link)]))
    rec = recorder_factory(mosquitto.port)
    armed = threading.Event()
    original = Spool.form_batch

    def form_batch_failing_once(self, **kw):
        if armed.is_set():
            armed.clear()
            raise RuntimeError("injected: spool read failed")
        return original(self, **kw)

    monkeypatch.setattr(Spool, "form_batch", form_batch_failing_once)
    with Running(cfg) as c:
        rec.wait_for(lambda: len(rec.batches()) >= 1, 15, "a first batch")
        first = c.publisher
        armed.set()
        wait_until(lambda: not armed.is_set(), 10, "the injected failure")
        wait_until(lambda: c.publisher is not first and c.publisher.thread.is_alive(), 10, "a new publisher")
        published = len(rec.batches())
        rec.wait_for(lambda: len(rec.batches()) >= published + 2, 15, "batches from the restarted publisher")
        rec.wait_for(lambda: any(a["kind"] == "thread_restart" and a["subject"] == "publisher" for a in rec.alerts()),
                     10, "a thread_restart alert")
        rec.wait_for(lambda: any(s.get("threads", {}).get("restarts", {}).get("publisher") == 1
                                 for s in rec.statuses()), 10, "the restart counted in the status")
        assert c.state.thread_restarts == {"publisher": 1}
        assert c.healthy()
    assert not first.thread.is_alive()


def test_a_poller_thread_that_dies_is_restarted_and_the_probe_is_read_again(tmp_path, sim_probes):
    (probe,) = sim_probes(1)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(gateway_toml(tmp_path / "data", servers.free_port(), [ascii_probe("p0", probe.link)]))
    with Running(cfg) as c:
        wait_until(lambda: c.state.probes["p0"].polls >= 1, 10, "a first poll")
        driver = next(iter(c._probes.values()))[0].driver
        real_read = driver.read

        def read_exiting_once():
            driver.read = real_read
            raise SystemExit("injected: a library called sys.exit() on the poller thread")

        driver.read = read_exiting_once
        first = c.workers[0]
        wait_until(lambda: not first.thread.is_alive(), 5, "the poller thread to die")
        polls = c.state.probes["p0"].polls
        wait_until(lambda: c.state.probes["p0"].polls >= polls + 2, 10, "polls after the restart")
        assert c.state.thread_restarts == {f"port {probe.link}": 1}
        assert c.status()["threads"]["restarts"] == {f"port {probe.link}": 1}
        assert c.healthy()


def test_healthy_turns_false_only_when_restarts_keep_failing(tmp_path, sim_probes, monkeypatch):
    from collector import daemon
    from collector.publisher import Publisher

    (probe,) = sim_probes(1)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(gateway_toml(tmp_path / "data", servers.free_port(), [ascii_probe("p0", probe.link)]))
    monkeypatch.setattr(daemon, "restart_delay_s", lambda n: 0.05)
    monkeypatch.setattr(daemon, "HOUSEKEEPING_S", 0.05)
    failing = threading.Event()
    original = Publisher.turn

    def turn(self):
        if failing.is_set():
            raise RuntimeError("injected: the publisher fails on every turn")
        return original(self)

    monkeypatch.setattr(Publisher, "turn", turn)
    with Running(cfg) as c:
        assert c.healthy()
        failing.set()
        wait_until(lambda: c.state.thread_restarts.get("publisher", 0) >= 1, 10, "a first restart")
        assert c.healthy(), "one restart in progress is recovery, not a failure"
        wait_until(lambda: not c.healthy(), 20, "healthy() to give up")
        assert c.state.thread_restarts["publisher"] >= daemon.GIVE_UP_AFTER
        failing.clear()
        wait_until(c.healthy, 20, "healthy() once a restarted publisher turns again")


@pytest.mark.servers
def test_an_idle_publisher_sleeps_and_a_stored_poll_wakes_it_at_once(tmp_path, mosquitto, sim_probes, monkeypatch):
    """No turn every 0.1 s while there is nothing to do; a stored poll, an alert still go out at once."""
    from collector.publisher import Publisher

    (probe,) = sim_probes(1)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(gateway_toml(tmp_path / "data", mosquitto.port, [ascii_probe("p0", probe.link, interval=5)],
                                publish='confirm = "puback"'))
    turns: list[float] = []
    original = Publisher.turn

    def turn(self):
        turns.append(time.monotonic())
        return original(self)

    monkeypatch.setattr(Publisher, "turn", turn)
    with Running(cfg) as c:
        wait_until(lambda: c.state.mqtt.get("acked", 0) >= 1, 15, "a first batch acknowledged")
        polls = c.state.probes["p0"].polls
        wait_until(lambda: c.state.probes["p0"].polls > polls, 10, "the next poll")
        stored = time.monotonic()
        published = c.state.mqtt["published"]
        n0 = len(turns)
        wait_until(lambda: c.state.mqtt["published"] > published, 2, "the poll published")
        assert time.monotonic() - stored < 0.5
        time.sleep(3)
        # heartbeat_s = 1: a heartbeat and its PUBACK a second, a poll and its PUBACK; 30+ turns before.
        assert len(turns) - n0 <= 16, len(turns) - n0
        c.publisher.alert("probe_state", "p0", "test alert")
        wait_until(lambda: not c.publisher._pending_alerts, 0.3, "the alert sent at once")
