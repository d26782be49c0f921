"""Helpers for the collector tests: a recording subscriber, gateway configs, the daemon as a subprocess.

A module of its own (not conftest.py): test files import from it, and several
conftest.py files in tests/ would shadow one another as the module `conftest`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


class Recorder:
    """Subscribes to everything of one gateway and keeps what arrives (thread-safe)."""

    def __init__(self, port: int, topic: str = "humus/v1/#", *, receipts: bool = True) -> None:
        import paho.mqtt.client as mqtt

        self.receipts = receipts
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rec-{os.getpid()}-{id(self)}",
                                  protocol=mqtt.MQTTv311, clean_session=False)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
        if self.receipts and msg.topic.endswith("/obs"):
            # Acting as the centre: a batch the recorder holds is "stored" (humus.receipts).
            from humus.receipts import encode_receipt, receipt_topic

            doc = json.loads(msg.payload)
            client.publish(receipt_topic(doc["site"], doc["gateway"]),
                           encode_receipt(doc["site"], doc["gateway"], stored=[doc["seq"]], by="recorder"), qos=1)

    def batches(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/obs")]

    def statuses(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/status")]

    def alerts(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/alerts")]

    def observations(self) -> list[dict]:
        return [o for b in self.batches() for o in b["observations"]]

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def gateway_toml(data_dir: Path, mqtt_port: int, probes: list[dict], *, gateway: str = "", publish: str = "",
                 site: str = "s1", gw: str = "gw1") -> str:
    lines = [
        "[gateway]", f'site = "{site}"', f'id = "{gw}"', f'data_dir = "{data_dir}"', 'clock_check = "epoch"',
        "heartbeat_s = 1", gateway, "", "[mqtt]", 'host = "127.0.0.1"', f"port = {mqtt_port}", "",
        "[publish]", "reconnect_min_s = 0.2", "reconnect_max_s = 1", publish, "",
    ]
    for p in probes:
        lines += ["[[probes]]"] + [f"{k} = {json.dumps(v)}" for k, v in p.items() if not isinstance(v, dict)]
        for k, v in p.items():
            if isinstance(v, dict):
                for q, table in v.items():
                    lines.append(f"[probes.{k}.{q}]")
                    lines += [f"{kk} = {_toml(vv)}" for kk, vv in table.items()]
        lines.append("")
    return "\n".join(lines)


def _toml(v) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def start_collect(config: Path, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """`humus collect --config FILE` as a real subprocess."""
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "humus.cli", "--log-level", "INFO", "collect", "--config",
                                 str(config)], cwd=REPO, env=e, stdout=out, stderr=subprocess.STDOUT
                                if log else subprocess.PIPE)
    finally:
        if log:
            out.close()


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def wait_until(predicate, timeout: float, what: str) -> None:
    """Poll `predicate` every 50 ms; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class RunningCollector:
    """A Collector (in this process) on its own thread; the context manager stops and joins it, and fails
    the test if `run` raised."""

    def __init__(self, cfg_path: Path) -> None:
        from collector.config import load_gateway_config
        from collector.daemon import Collector

        self.collector = Collector(load_gateway_config(cfg_path))
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.collector.run(self.stop)
        except BaseException as e:  # noqa: BLE001 - the test reports it
            self.errors.append(e)

    def __enter__(self):
        self.thread.start()
        assert self.collector.ready.wait(10), "collector not ready"
        return self.collector

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


@contextlib.contextmanager
def tmpfs(directory: Path, size: str):
    """A real filesystem of `size` (tmpfs, e.g. "2m") mounted on `directory`, unmounted afterwards.

    Mounting needs root: elsewhere the test is skipped, under CI (root) it fails, so a full disk is
    always tested there."""
    import pytest

    directory.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a {size} tmpfs on {directory} ({r.stderr.strip()}); CI runs as root and "
                        "must test the full disk", pytrace=False)
        pytest.skip(f"mounting a tmpfs is not permitted here ({r.stderr.strip()}); run as root to test a full disk")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
