"""`humus demo`: the whole pipeline on one machine with nothing else installed.

Three simulated probes on pseudo-terminals (an SDI-12 TEROS-12-like
moisture/temperature/EC probe, a NIR spectrometer for carbon and a Modbus
soil sensor), the collector polling them over real serial I/O, an MQTT
broker (embedded amqtt, or Mosquitto named with --broker), an ingest worker
and the SQLite archive, all wired by the same configuration files a real
deployment uses (written to DIR so they can be read and reused).
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger("humus.demo")

SITE, GATEWAY = "demo-farm", "gw-demo"


@dataclass(frozen=True)
class DemoProbe:
    id: str
    model: str          # simulator model = driver name
    address: str
    depth_cm: float
    params: dict


PROBES = (
    DemoProbe("teros-a", "teros12", "0", 10.0, {"measure_s": 0.5, "hours_per_measurement": 1.0}),
    DemoProbe("nir-a", "nir-spectrometer", "", 5.0, {"soc_percent": 2.4, "time_scale": 3600.0}),
    DemoProbe("modbus-a", "modbus-soil", "1", 20.0, {"time_scale": 3600.0}),
)


def fit_demo_model(path: Path, wavelengths: np.ndarray, seed: int) -> None:
    """A spectral SOC model fitted on simulated soils of known carbon, with EPO for moisture.

    Only for the demo: real models are fitted on laboratory data with
    `humus calibrate fit` (docs/calibration.md).
    """
    from calibration.model import fit_spectral_model
    from firmware_bridge.sim.soil import reflectance

    rng = np.random.default_rng(seed)
    n = 160
    soc = rng.uniform(0.5, 4.5, n)
    vwc = rng.uniform(0.02, 0.40, n)
    noise = lambda: rng.normal(0, 0.015, len(wavelengths))  # noqa: E731  (~ the probe's shot noise)
    x = np.array([reflectance(wavelengths, s, w) * (1 + noise()) for s, w in zip(soc, vwc)])
    dry = np.array([reflectance(wavelengths, s, 0.02) for s in soc[:40]])
    wet = np.array([reflectance(wavelengths, s, w) for s, w in zip(soc[:40], vwc[:40])])
    model = fit_spectral_model(wavelengths, x, soc, model_id="soc-demo-sim", version="1", target="soc",
                               unit="%", input="reflectance", epo_pairs=(wet, dry), max_components=8,
                               # No SNV: on these synthetic spectra carbon and water add linearly in
                               # absorbance, and SNV's per-spectrum scaling would mix them.
                               preprocessing=[{"op": "savgol", "window": 11, "polyorder": 2, "deriv": 1}],
                               folds=5, seed=seed)
    model.save(path)


def gateway_toml(d: Path, host: str, port: int, interval_s: float, links: dict[str, Path], model: Path) -> str:
    t = d / "teros-a"
    return f"""\
# Written by 'humus demo': a complete gateway configuration (see docs/collector.md).
[gateway]
site = "{SITE}"
id = "{GATEWAY}"
data_dir = "{d / 'gateway'}"
heartbeat_s = 5
clock_check = "epoch"

[mqtt]
host = "{host}"
port = {port}
protocol = "3.1.1"
client_id = "humus-demo-gateway"

[[probes]]
id = "teros-a"
driver = "teros12"
port = "{links['teros-a']}"
address = "0"
interval_s = {interval_s}
depth_cm = 10
[probes.calibration.vwc]
model = "teros12_vwc"
input = "raw_counts"
media = "mineral"
[probes.qc.soil_temp.gross_range]
fail_span = [-40.0, 60.0]
suspect_span = [-10.0, 45.0]
[probes.qc.raw_counts.gross_range]
fail_span = [1000.0, 4000.0]

[[probes]]
id = "nir-a"
driver = "nir-spectrometer"
port = "{links['nir-a']}"
interval_s = {interval_s * 2}
depth_cm = 5
[probes.calibration.soc]
model = "spectral"
path = "{model}"
kind = "counts"

[[probes]]
id = "modbus-a"
driver = "modbus-soil"
port = "{links['modbus-a']}"
address = "1"
interval_s = {interval_s}
depth_cm = 20
# This sensor reports moisture in % of volume; a per-soil polynomial turns it into m3/m3.
[probes.calibration.vwc]
model = "polynomial_vwc"
input = "moisture"
coefficients = [0.0, 0.01]
polynomial_input = "reading"
uncertainty = 0.03
[probes.qc.soil_temp.gross_range]
fail_span = [-40.0, 80.0]
"""


def observatory_toml(d: Path, host: str, port: int, plain: bool) -> str:
    return f"""\
# Written by 'humus demo': an ingest configuration (see docs/ingest.md).
[ingest]
store = "sqlite:{d / 'archive.sqlite'}"
client_id = "humus-demo-ingest"
subscription = "{'plain' if plain else 'shared'}"

[mqtt]
host = "{host}"
port = {port}
protocol = "{'3.1.1' if plain else '5'}"

# The alerts service (docs/alerts.md): fast evaluation and notification for a demo that lasts minutes.
[alerts]
client_id = "humus-demo-alerts"
eval_interval_s = 1
resolved_retention_s = 60
[alerts.notify]
group_wait_s = 0
group_interval_s = 1
log = false
[alerts.rules.no_data]
min_gap_s = 5
"""


def run_demo(directory: Path, duration: float | None, broker: str | None, seed: int, interval_s: float,
             say: Callable[[str], None] = print, pull: tuple[str, float, float] | None = None) -> int:
    from collector.config import load_gateway_config
    from collector.daemon import Collector
    from firmware_bridge.sim.faults import FaultSwitches
    from firmware_bridge.sim.pty import PtyProbe
    from firmware_bridge.sim.registry import get_model
    from humus.embedded_broker import EmbeddedBroker
    from observatory.config import load_observatory_config
    from observatory.stores import open_store
    from observatory.worker import IngestWorker

    d = directory.resolve()
    (d / "dev").mkdir(parents=True, exist_ok=True)
    (d / "models").mkdir(exist_ok=True)
    stop = threading.Event()
    started: list[Callable[[], None]] = []   # stop actions, run in reverse
    sims: dict[str, object] = {}
    try:
        if broker:
            host, _, port_s = broker.rpartition(":")
            host, port, plain = host or "127.0.0.1", int(port_s), False
            say(f"broker: Mosquitto (or another MQTT 5 broker) at {host}:{port}")
        else:
            emb = EmbeddedBroker().start()
            started.append(emb.stop)
            host, port, plain = emb.host, emb.port, True
            say(f"broker: embedded amqtt on {host}:{port} (MQTT 3.1.1; use --broker for Mosquitto)")

        links: dict[str, Path] = {}
        for i, p in enumerate(PROBES):
            model = get_model(p.model)
            fw = model.load()(p.address, seed + i, FaultSwitches(), **p.params)
            links[p.id] = d / "dev" / p.id
            sim = PtyProbe(fw, links[p.id]).start()
            sims[p.id] = sim
            started.append(sim.stop)
            say(f"probe {p.id}: simulated {p.model} on {sim.device} (linked at {links[p.id]})")

        from firmware_bridge.sim.nir_spectrometer import FIRST_NM, LAST_NM, BANDS

        model_path = d / "models" / "soc-demo.npz"
        fit_demo_model(model_path, np.linspace(FIRST_NM, LAST_NM, BANDS), seed)
        say(f"model: demo SOC model fitted on simulated spectra -> {model_path}")

        gw_file, obs_file = d / "gateway.toml", d / "observatory.toml"
        gw_file.write_text(gateway_toml(d, host, port, interval_s, links, model_path))
        obs_file.write_text(observatory_toml(d, host, port, plain))
        gw_cfg = load_gateway_config(gw_file)
        obs_cfg = load_observatory_config(obs_file)

        store = open_store(obs_cfg.ingest.store)
        started.append(store.close)
        worker = IngestWorker(obs_cfg, store)
        ingest_stop = threading.Event()
        t_ingest = threading.Thread(target=worker.run, args=(ingest_stop,), name="ingest", daemon=True)
        t_ingest.start()
        started.append(lambda: (ingest_stop.set(), t_ingest.join(15)))

        collector = Collector(gw_cfg)
        collector_stop = threading.Event()
        errors: list[BaseException] = []

        def run_collector() -> None:
            try:
                collector.run(collector_stop)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                stop.set()

        t_coll = threading.Thread(target=run_collector, name="collector", daemon=True)
        t_coll.start()
        started.append(lambda: (collector_stop.set(), t_coll.join(15)))
        if not collector.ready.wait(15) and not errors:
            raise RuntimeError("the collector did not start within 15 s")
        say(f"collector: polling every {interval_s:g} s; configurations in {gw_file} and {obs_file}")
        from observatory.alerts.config import load_alerts_config
        from observatory.alerts.service import start_in_thread

        started.append(start_in_thread(load_alerts_config(obs_file), say=say))
        say("alerts: evaluating the rules every second; notifications are printed here")
        if pull is not None:
            started.append(_pull_probe(sims[pull[0]], pull, say))
        say("running" + (f" for {duration:g} s" if duration else "; press Ctrl-C to stop") + "...")

        deadline = None if duration is None else time.monotonic() + duration
        # SIGTERM (systemd, kill) stops the demo as cleanly as Ctrl-C does.
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        started.append(lambda: signal.signal(signal.SIGTERM, previous))
        try:
            while not stop.wait(0.2):
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except KeyboardInterrupt:
            pass
        if deadline is None or time.monotonic() < deadline:
            say("stopping...")
        if errors:
            raise errors[0]
        # Let the spool drain into the archive before stopping (bounded).
        drain_until = time.monotonic() + 10
        while time.monotonic() < drain_until and _depth(collector) > 0:
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        for action in reversed(started):
            try:
                action()
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                log.warning("demo shutdown: %s", e)
    print_summary(d / "archive.sqlite", say, window_s=6 * interval_s)
    return 0


def _pull_probe(sim, pull: tuple[str, float, float], say: Callable[[str], None]) -> Callable[[], None]:
    """Pull a probe's cable `after` seconds from now and plug it back `for_s` later (--pull PROBE:AFTER:FOR)."""
    probe, after, for_s = pull
    stop = threading.Event()

    def run() -> None:
        if stop.wait(after):
            return
        say(f"demo: pulling the cable of probe {probe} for {for_s:g} s")
        sim.unplug()
        stop.wait(for_s)
        say(f"demo: plugging probe {probe} back in")
        sim.replug()

    t = threading.Thread(target=run, name="pull", daemon=True)
    t.start()
    return lambda: (stop.set(), t.join(5))


def _depth(collector) -> int:
    spool = collector.spool
    return spool.stats().depth if spool is not None else 0


def print_summary(archive: Path, say: Callable[[str], None], window_s: float = 60.0) -> None:
    """The table of what reached the archive, then a `humus query` that shows every probe's latest data.

    The query starts `window_s` before the oldest of the probes' last observations,
    so each probe appears with its last few polls (not the first 1000 rows of one series).
    """
    from observatory.query import format_time
    from observatory.store import Selection
    from observatory.stores import open_store
    from humus.records import QualityFlag

    store = open_store(f"sqlite:{archive}")
    rows: dict[tuple, list] = {}
    last_ns: dict[str, int] = {}
    try:
        for o in store.query(Selection()):
            last_ns[o.probe] = max(last_ns.get(o.probe, o.time_ns), o.time_ns)
            key = (o.probe, o.quantity, o.source.value)
            r = rows.setdefault(key, [0, None, {}, o.unit])
            r[0] += 1
            r[1] = o.value
            r[2][o.flag] = r[2].get(o.flag, 0) + 1
    finally:
        store.close()
    say("")
    say(f"{'probe':<10} {'quantity':<15} {'source':<10} {'count':>5}  {'last value':<26} flags")
    for (probe, quantity, source), (count, last, flags, unit) in sorted(rows.items()):
        if isinstance(last, tuple):
            shown = f"spectrum, {len(last)} bands"
        elif last != last:
            shown = "missing"
        else:
            shown = f"{last:.4g} {unit}"
        flag_text = ", ".join(f"{QualityFlag(f).name.lower()} {n}" for f, n in sorted(flags.items()))
        say(f"{probe:<10} {quantity:<15} {source:<10} {count:>5}  {shown:<26} {flag_text}")
    if not rows:
        say("no observations reached the archive; see the log lines above")
    say("")
    since = "" if not last_ns else f" --since {format_time(min(last_ns.values()) - int(window_s * 1e9))}"
    say("Look at the last polls of every probe with:")
    say(f"  {_humus_command()} query --store sqlite:{archive}{since}")


def _humus_command() -> str:
    """How the user can type `humus` here: `.venv/bin/humus` after `make demo`, unless it is on PATH."""
    exe = Path(sys.argv[0])
    if exe.name != "humus" or shutil.which("humus") == str(exe.resolve()):
        return "humus"
    try:
        return str(exe.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(exe)
