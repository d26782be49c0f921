"""Start real servers on free loopback ports with throw-away directories.

Used by the fixtures in tests/conftest.py and by bench/ scripts. Each server
is a child process that is stopped (and can be stopped and restarted for
outage tests) by the returned handle. When `CI` is set, a missing binary is
a failure; otherwise tests that need it are skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


class ServerMissing(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None, name: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {timeout} s")


def _binary(name: str, *candidates: str) -> str:
    for c in candidates:
        path = shutil.which(c) or (c if os.path.exists(c) else None)
        if path:
            return path
    raise ServerMissing(f"{name} is not installed (make test installs it with apt-get)")


@dataclass
class Server:
    """A running server process; `stop()`/`start()` simulate an outage on the same port and data."""

    name: str
    port: int
    workdir: Path
    argv: list[str]
    extra_ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "Server":
        log = open(self.workdir / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        try:
            wait_port(self.port, timeout, self.proc, self.name)
        except RuntimeError as e:
            self.stop()
            tail = (self.workdir / f"{self.name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{e}\n{tail}") from None
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self, down_s: float = 0.0, timeout: float = 20.0) -> "Server":
        """Stop (SIGTERM: Mosquitto saves its persistence file), stay down `down_s`, start on the same port and data.

        `down_s` is the outage being simulated, not a wait for anything.
        """
        self.stop()
        time.sleep(down_s)
        return self.start(timeout)


MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {dir}/
autosave_interval 1
# Deliberate queue limits (DESIGN.md): never drop QoS 1 messages for a slow
# or absent persistent subscriber, and let a worker batch up to 1000 unacked.
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 1000
persistent_client_expiration 14d
log_dest stderr
log_type error
log_type warning
"""


def mosquitto(workdir: Path, extra_conf: str = "") -> Server:
    binary = _binary("Mosquitto", "mosquitto", "/usr/sbin/mosquitto")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    if os.geteuid() == 0:
        # As root Mosquitto drops to the 'mosquitto' user, which cannot write this
        # directory: persistence would fail silently and a restart forget every session.
        extra_conf = "user root\n" + extra_conf
    conf.write_text(MOSQUITTO_CONF.format(port=port, dir=workdir) + extra_conf)
    return Server("mosquitto", port, workdir, [binary, "-c", str(conf)])


INFLUXDB_CONF = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
[coordinator]
[retention]
  enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = false
  log-enabled = false
  max-body-size = 0
[continuous_queries]
  enabled = false
"""


def influxdb(workdir: Path) -> Server:
    """InfluxDB 1.x (Debian's `influxdb`): HTTP on a free port, RPC on another (DESIGN.md)."""
    binary = _binary("InfluxDB", "influxd")
    port, rpc = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "influxdb.conf"
    conf.write_text(INFLUXDB_CONF.format(port=port, rpc_port=rpc, dir=workdir))
    return Server("influxdb", port, workdir, [binary, "-config", str(conf)], {"rpc": rpc})


def influxdb_auth(workdir: Path) -> Server:
    """The same InfluxDB 1.x with `[http] auth-enabled = true` and no users yet (deploy tests)."""
    srv = influxdb(workdir)
    conf = workdir / "influxdb.conf"
    conf.write_text(conf.read_text().replace("auth-enabled = false", "auth-enabled = true"))
    return srv


def victoria_metrics(workdir: Path) -> Server:
    binary = _binary("VictoriaMetrics", "victoria-metrics")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    return Server("victoria-metrics", port, workdir, [
        binary, f"-storageDataPath={workdir / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
        "-search.disableCache", "-loggerLevel=ERROR",
    ])


ALERTMANAGER_CONF = """\
route:
  receiver: hook
  group_by: [site]
  group_wait: {group_wait}
  group_interval: {group_interval}
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
"""


def alertmanager(workdir: Path, webhook_url: str = "http://127.0.0.1:9/unused", group_wait: str = "1s",
                 group_interval: str = "2s") -> Server:
    """Prometheus Alertmanager (Debian's `prometheus-alertmanager`): web API on a free port, clustering off,
    a throw-away storage path, one route grouping by site to a webhook at `webhook_url`."""
    binary = _binary("Prometheus Alertmanager", "prometheus-alertmanager", "alertmanager")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "alertmanager.yml"
    conf.write_text(ALERTMANAGER_CONF.format(webhook_url=webhook_url, group_wait=group_wait,
                                             group_interval=group_interval))
    return Server("alertmanager", port, workdir, [
        binary, f"--config.file={conf}", f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn",
    ])


def http_ready(url: str, timeout: float = 20.0) -> None:
    """Wait until `url` answers 2xx (InfluxDB /ping, VictoriaMetrics /health)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if 200 <= r.status < 300:
                    return
        except Exception as e:  # noqa: BLE001 - any failure means not ready yet
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout} s: {last}")


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
