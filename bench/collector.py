"""Collector footprint: CPU seconds per 10,000 observations, peak RSS, fsyncs per poll cycle.

Starts Mosquitto (tests/servers.py, the test configuration) and 16 simulated
probes on real ptys: 8 TEROS-12 (SDI-12 firmware, `measure_s` 0) and 8
Modbus RTU 3-in-1 soil sensors, by default each on its own port
(``--per-port 4`` puts them on SDI-12 and RS-485 buses of four). Then it
runs the real daemon, ``humus collect``, as a subprocess, every probe polled
every second:

- TEROS-12: raw_counts, soil_temp, ec_bulk (raw) + vwc (teros12_vwc) =
  4 observations; QARTOD gross range, rate of change and flat line on
  soil_temp, gross range and spike on vwc;
- Modbus: moisture, soil_temp, ec (raw) + vwc (polynomial of the
  reading) + ec25 = 5 observations; gross range and rate of change on
  soil_temp.

A subscriber plays the centre: it counts the observations that arrive and
answers each batch with a receipt (`humus.receipts`), so the spool deletes
what was delivered, as in production.

Figures, each over a window after start-up:
- CPU: the daemon's user + system time (/proc/<pid>/stat) while N
  observations arrived, scaled to 10,000;
- peak RSS: the kernel's high-water mark of the daemon (VmHWM);
- fsyncs per poll cycle: strace attached for a separate window (never
  during the CPU window: tracing slows the process) counts fsync and
  fdatasync calls of every thread; with every probe at 1 s, one poll cycle
  is one second.
Then the same again with two NIR spectrometers (256-band spectra with dark
and white references, a spectral SOC model fitted like `humus demo`'s)
added, reported apart: spectra and their model need numpy.

Target (issue 15): <= 2 CPU s per 10,000 observations and <= 40 MB peak RSS
for the 16 SDI-12/Modbus probes.
Usage: .venv/bin/python bench/collector.py [--observations 10000] [--per-port 1] [--spectral-observations 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TEROS_QC = """
[probes.qc.soil_temp]
gross_range = { fail_span = [-40, 60], suspect_span = [-10, 45] }
rate_of_change = { threshold = 0.5 }
flat_line = { suspect_threshold_s = 30, fail_threshold_s = 60, tolerance = 0.0001 }
[probes.qc.vwc]
gross_range = { fail_span = [0, 0.7] }
spike = { suspect_threshold = 0.05, fail_threshold = 0.15 }
"""

MODBUS_CAL = """
[probes.calibration.vwc]
model = "polynomial_vwc"
input = "moisture"
coefficients = [0.0, 0.01]
polynomial_input = "reading"
uncertainty = 0.03
[probes.calibration.ec25]
model = "ec25"
input = "ec"
temperature_input = "soil_temp"
[probes.qc.soil_temp]
gross_range = { fail_span = [-40, 80] }
rate_of_change = { threshold = 0.5 }
"""


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


def start_probes(work: Path, teros: int, modbus: int, per_port: int, nir: int) -> tuple[list, str]:
    """Simulated probes on ptys, and the [[probes]] tables of a gateway configuration for them."""
    from firmware_bridge.sim import modbus_soil, nir_spectrometer, sdi12
    from firmware_bridge.sim.faults import FaultSwitches
    from firmware_bridge.sim.pty import PtyProbe

    sims, tables = [], []
    for kind, count in (("teros", teros), ("modbus", modbus)):
        for bus in range(0, count, per_port):
            n = min(per_port, count - bus)
            link = work / f"tty-{kind}-{bus}"
            if kind == "teros":
                addresses = [str(a) for a in range(n)]
                fw = sdi12.make_firmware(",".join(addresses), bus, FaultSwitches(), measure_s=0.0)
            else:
                addresses = [str(a + 1) for a in range(n)]
                fw = modbus_soil.make_firmware(",".join(addresses), bus, FaultSwitches(), time_scale=60.0)
            sims.append(PtyProbe(fw, link).start())
            for a in addresses:
                if kind == "teros":
                    tables.append(f"""
[[probes]]
id = "teros-{bus}-{a}"
driver = "teros12"
port = "{link}"
address = "{a}"
interval_s = 1
depth_cm = 10
[probes.calibration.vwc]
model = "teros12_vwc"
input = "raw_counts"
{TEROS_QC}""")
                else:
                    tables.append(f"""
[[probes]]
id = "modbus-{bus}-{a}"
driver = "modbus-soil"
port = "{link}"
address = "{a}"
interval_s = 1
depth_cm = 20
{MODBUS_CAL}""")
    if nir:
        import numpy as np

        from humus.demo import fit_demo_model

        model = work / "soc-model.json"
        fit_demo_model(model, np.linspace(nir_spectrometer.FIRST_NM, nir_spectrometer.LAST_NM,
                                          nir_spectrometer.BANDS), seed=7)
        for i in range(nir):
            link = work / f"tty-nir-{i}"
            sims.append(PtyProbe(nir_spectrometer.make_firmware("", 100 + i, FaultSwitches(), soc_percent=2.0,
                                                                time_scale=3600.0), link).start())
            tables.append(f"""
[[probes]]
id = "nir-{i}"
driver = "nir-spectrometer"
port = "{link}"
interval_s = 5
depth_cm = 5
[probes.calibration.soc]
model = "spectral"
path = "{model}"
kind = "counts"
""")
    return sims, "".join(tables)


class Centre:
    """Counts arriving observations and confirms every batch with a receipt, as humus ingest does."""

    def __init__(self, port: int, site: str, gateway: str) -> None:
        import paho.mqtt.client as mqtt

        from humus.receipts import encode_receipt, receipt_topic

        self.count = 0
        self.batches = 0
        self.lock = threading.Lock()
        self._encode, self._topic = encode_receipt, receipt_topic(site, gateway)
        self.site, self.gateway = site, gateway
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-centre-{os.getpid()}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"humus/v1/{site}/{gateway}/obs", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        doc = json.loads(msg.payload)
        with self.lock:
            self.count += len(doc["observations"])
            self.batches += 1
        client.publish(self._topic, self._encode(self.site, self.gateway, stored=[doc["seq"]], by="bench"), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def count_fsyncs(pid: int, seconds: float) -> int | None:
    """fsync + fdatasync calls of every thread of `pid` in `seconds` (strace attached), None without strace."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    proc = subprocess.Popen([strace, "-f", "-c", "-e", "trace=fsync,fdatasync", "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None
    total = 0
    seen = False
    for line in err.splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync"):
            seen = True
            total += int(parts[3])     # % time, seconds, usecs/call, calls, [errors,] syscall
    if not seen and "attach" in err and "Operation not permitted" in err:
        return None
    return total


def run_config(label: str, args: argparse.Namespace, nir: int, observations: int) -> dict:
    servers = _servers()
    work = Path(tempfile.mkdtemp(prefix="humus-bench-collector-"))
    broker = servers.mosquitto(work / "mosquitto").start()
    sims, tables = start_probes(work, args.teros, args.modbus, args.per_port, nir)
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
""" + tables)
    centre = Centre(broker.port, "bench", "gw-1")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(work / "collect.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "humus.cli", "--log-level", "WARNING", "collect", "--config",
                             str(cfg)], cwd=REPO, env=env, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while centre.count == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if centre.count == 0:
            raise SystemExit(f"{label}: no observation arrived; see {work / 'collect.log'}")
        time.sleep(3)       # past start-up: first connections, first QC windows
        startup_hwm = vm_hwm_mb(proc.pid)
        cpu0, n0, t0 = cpu_seconds(proc.pid), centre.count, time.monotonic()
        print(f"[{label}] running: {args.teros + args.modbus} SDI-12/Modbus probe(s)"
              f"{f' + {nir} NIR spectrometer(s)' if nir else ''}, {args.per_port} per port "
              f"(peak RSS after start-up {startup_hwm:.1f} MB)")
        last = t0
        while centre.count - n0 < observations and time.monotonic() - t0 < args.max_seconds:
            time.sleep(0.5)
            if time.monotonic() - last >= 20:
                last = time.monotonic()
                print(f"  {time.monotonic() - t0:5.0f} s: {centre.count - n0} observations, "
                      f"CPU {cpu_seconds(proc.pid) - cpu0:.2f} s")
        cpu1, n1, t1 = cpu_seconds(proc.pid), centre.count, time.monotonic()
        fsyncs = count_fsyncs(proc.pid, args.strace_s)
        hwm = vm_hwm_mb(proc.pid)
        errors = (work / "collect.log").read_text(errors="replace").strip().splitlines()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        centre.close()
        for s in sims:
            s.stop()
        broker.stop()
    n, cpu, secs = n1 - n0, cpu1 - cpu0, t1 - t0
    per10k = cpu / n * 10_000 if n else float("nan")
    per_cycle = fsyncs / args.strace_s if fsyncs is not None else float("nan")
    print(f"[{label}] {n} observations in {secs:.1f} s ({n / secs:.0f} obs/s), collector CPU {cpu:.2f} s "
          f"({100 * cpu / secs:.0f} % of a core)")
    print(f"[{label}] per 10,000 observations: {per10k:.2f} CPU s; peak RSS {hwm:.1f} MB; "
          f"fsyncs per 1 s poll cycle: {per_cycle:.1f} (strace, {args.strace_s:.0f} s)")
    for line in errors[-5:]:
        print(f"[{label}] collector log: {line[:200]}")
    return {"per10k": per10k, "hwm": hwm, "fsyncs": per_cycle, "n": n}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--observations", type=int, default=10_000)
    ap.add_argument("--spectral-observations", type=int, default=4_000,
                    help="observations for the spectral configuration (0: skip it)")
    ap.add_argument("--teros", type=int, default=8)
    ap.add_argument("--modbus", type=int, default=8)
    ap.add_argument("--per-port", type=int, default=1, help="probes per SDI-12 or RS-485 bus")
    ap.add_argument("--nir", type=int, default=2, help="NIR spectrometers in the spectral configuration")
    ap.add_argument("--strace-s", type=float, default=10.0)
    ap.add_argument("--max-seconds", type=float, default=200)
    args = ap.parse_args()

    base = run_config("sdi12+modbus", args, 0, args.observations)
    spec = run_config("spectral", args, args.nir, args.spectral_observations) \
        if args.spectral_observations and args.nir else None
    print(f"per 10,000 observations: {base['per10k']:.2f} CPU s (target <= 2), peak RSS {base['hwm']:.1f} MB "
          "(target <= 40)")
    extra = ""
    if spec is not None:
        extra = (f" spectral_cpu_s_per_10k_obs={spec['per10k']:.3f} spectral_peak_rss_mb={spec['hwm']:.1f} "
                 f"spectral_fsyncs_per_cycle={spec['fsyncs']:.2f}")
    print(f"RESULT collector cpu_s_per_10k_obs={base['per10k']:.3f} peak_rss_mb={base['hwm']:.1f} "
          f"fsyncs_per_cycle={base['fsyncs']:.2f} observations={base['n']} probes={args.teros + args.modbus} "
          f"probes_per_port={args.per_port}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
