"""Collector cost: CPU seconds and peak RSS per 10,000 observations, 16 simulated probes.

Starts Mosquitto (tests/servers.py, the test configuration) and 16 simulated
TEROS-12 probes (SDI-12 firmware, `measure_s` 0) each on its own pty, then
runs the real daemon, `humus collect`, as a subprocess: every probe polled
every second, each reading giving 3 raw + 2 calibrated observations
(teros12_vwc, ec25) with QARTOD checks on soil_temp and vwc, spooled and
published over QoS 1. A subscriber counts what arrives. The daemon's CPU
time (user + system, from /proc) is measured over the window in which the
observations arrived (start-up excluded) and scaled to 10,000
observations; peak RSS is the kernel's high-water mark (VmHWM).

Target (TARGETS.md): <= 2 CPU s and <= 40 MB peak RSS per 10,000 observations.
Usage: .venv/bin/python bench/collector.py [--observations 10000] [--max-seconds 200]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _servers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("servers", REPO / "tests" / "servers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["servers"] = mod
    spec.loader.exec_module(mod)
    return mod


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--observations", type=int, default=10_000)
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=200)
    args = ap.parse_args()

    import paho.mqtt.client as mqtt

    from firmware_bridge.sim.faults import FaultSwitches
    from firmware_bridge.sim.pty import PtyProbe
    from firmware_bridge.sim.sdi12 import make_firmware

    servers = _servers()
    work = Path(tempfile.mkdtemp(prefix="humus-bench-collector-"))
    broker = servers.mosquitto(work / "mosquitto").start()
    sims = [PtyProbe(make_firmware("0", i, FaultSwitches(), measure_s=0.0), work / f"tty{i}").start()
            for i in range(args.probes)]
    probes = []
    for i in range(args.probes):
        probes.append(f"""
[[probes]]
id = "teros-{i}"
driver = "teros12"
port = "{work / f'tty{i}'}"
address = "0"
interval_s = 1
depth_cm = 10
[probes.calibration.vwc]
model = "teros12_vwc"
input = "raw_counts"
[probes.calibration.ec25]
model = "ec25"
input = "ec_bulk"
temperature_input = "soil_temp"
[probes.qc.soil_temp]
gross_range = {{ fail_span = [-40, 60], suspect_span = [-10, 45] }}
rate_of_change = {{ threshold = 0.5 }}
flat_line = {{ suspect_threshold_s = 30, fail_threshold_s = 60, tolerance = 0.0001 }}
[probes.qc.vwc]
gross_range = {{ fail_span = [0, 0.7] }}
spike = {{ suspect_threshold = 0.05, fail_threshold = 0.15 }}
""")
    cfg = work / "gw.toml"
    cfg.write_text(f"""
[gateway]
site = "bench"
id = "gw-1"
data_dir = "{work / 'data'}"
clock_check = "epoch"
heartbeat_s = 10
[mqtt]
host = "127.0.0.1"
port = {broker.port}
""" + "".join(probes))

    count = [0]
    lock = threading.Lock()

    def on_message(client, userdata, msg):
        n = len(json.loads(msg.payload)["observations"])
        with lock:
            count[0] += n

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("humus/v1/bench/gw-1/obs", qos=1)
    sub.loop_start()

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "humus.cli", "--log-level", "WARNING", "collect", "--config",
                             str(cfg)], cwd=REPO, env=env, stderr=open(work / "collect.log", "wb"))
    try:
        deadline = time.monotonic() + 30
        while count[0] == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if count[0] == 0:
            print("no observation arrived; see", work / "collect.log")
            return 1
        cpu0, n0, t0 = cpu_seconds(proc.pid), count[0], time.monotonic()
        print(f"started: {args.probes} probes, first observations after start-up "
              f"(start-up CPU {cpu0:.2f} s, {vm_hwm_mb(proc.pid):.1f} MB)")
        last = t0
        while count[0] - n0 < args.observations and time.monotonic() - t0 < args.max_seconds:
            time.sleep(0.5)
            if time.monotonic() - last >= 20:
                last = time.monotonic()
                print(f"  {time.monotonic() - t0:5.0f} s: {count[0] - n0} observations, "
                      f"CPU {cpu_seconds(proc.pid) - cpu0:.2f} s")
        cpu1, n1, t1 = cpu_seconds(proc.pid), count[0], time.monotonic()
        hwm = vm_hwm_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        sub.loop_stop()
        for s in sims:
            s.stop()
        broker.stop()
    n = n1 - n0
    cpu = cpu1 - cpu0
    per10k = cpu / n * 10_000 if n else float("nan")
    print(f"{n} observations in {t1 - t0:.1f} s ({n / (t1 - t0):.0f} obs/s), collector CPU {cpu:.2f} s, "
          f"peak RSS {hwm:.1f} MB")
    print(f"per 10,000 observations: {per10k:.2f} CPU s (target <= 2), peak RSS {hwm:.1f} MB (target <= 40)")
    print(f"RESULT collector cpu_s_per_10k_obs={per10k:.3f} peak_rss_mb={hwm:.1f} observations={n} "
          f"probes={args.probes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
