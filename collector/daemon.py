"""The collector daemon core, runnable in-process (`humus demo`) or as `humus collect`.

    collector = Collector(load_gateway_config("gateway.toml"))
    threading.Thread(target=collector.run, args=(stop,)).start()
    collector.ready.wait(10)

`run(stop)` opens the spool, builds one driver and pipeline per probe, starts
one poller thread per serial port and the publisher thread, sets `ready`,
and returns after `stop` is set and the threads have finished what they
were doing (a poll in progress completes and is spooled). `reload(config)`
swaps in a new configuration between polls; `status()` is the heartbeat
payload. systemd and signals are handled by `humus.commands.collect`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from collector.clock import Clock
from collector.config import GatewayConfig, ProbeSettings, sane_epoch_ns
from collector.pipeline import ProbePipeline
from collector.publisher import Publisher
from collector.schedule import PortWorker, ScheduledProbe
from collector.spool import Spool, SpoolError
from collector.status import GatewayState, ProbeState, status_payload
from humus.config import ConfigError

log = logging.getLogger(__name__)


@dataclass
class _Probe:
    settings: ProbeSettings
    driver: Any
    pipeline: ProbePipeline
    transport: Any


def build_probes(cfg: GatewayConfig, qc_state: dict[str, str] | None = None) -> dict[str, list[_Probe]]:
    """Drivers, transports and pipelines grouped by port; ConfigError for what cannot be built."""
    from collector.calibrate import CalibrationSetupError
    from firmware_bridge.drivers import get_driver
    from firmware_bridge.transport import SerialTransport

    by_port: dict[str, list[_Probe]] = {}
    transports: dict[str, Any] = {}
    settings_of: dict[str, Any] = {}
    for i, p in enumerate(cfg.probes):
        if not p.enabled:
            continue
        key = f"probes[{i}]"
        try:
            cls = get_driver(p.driver)
        except KeyError as e:
            raise ConfigError(cfg.path, f"{key}.driver", str(e).strip("'\""), p.driver) from None
        except ImportError as e:
            raise ConfigError(cfg.path, f"{key}.driver", f"an installed driver ({e})", p.driver) from None
        if p.port in settings_of and settings_of[p.port] != cls.serial_settings:
            raise ConfigError(cfg.path, f"{key}.port", f"a port whose probes share one line setting "
                              f"({settings_of[p.port]} already set by another probe, {cls.serial_settings} here)", p.port)
        settings_of[p.port] = cls.serial_settings
        try:
            transport = transports.get(p.port) or SerialTransport(p.port, cls.serial_settings)
        except ValueError as e:   # a malformed usb:VID:PID name
            raise ConfigError(cfg.path, f"{key}.port", str(e), p.port) from None
        transports[p.port] = transport
        try:
            driver = cls(transport, p.id, p.address, dict(p.options))
        except (ValueError, TypeError) as e:
            raise ConfigError(cfg.path, key, str(e)) from None
        quantities = cls.quantities_for(p.options)
        for q, c in p.calibration.items():
            if c.model != "spectral" and c.input not in quantities:
                raise ConfigError(cfg.path, f"{key}.calibration.{q}.input",
                                  f"a quantity of driver {p.driver} ({', '.join(quantities)})", c.input)
        try:
            pipeline = ProbePipeline(cfg, p, quantities, qc_state)
        except CalibrationSetupError as e:
            raise ConfigError(cfg.path, f"{key}.calibration", str(e)) from None
        by_port.setdefault(p.port, []).append(_Probe(p, driver, pipeline, transport))
    return by_port


class Collector:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.ready = threading.Event()
        self.state = GatewayState(config.gateway.site, config.gateway.id)
        self.spool: Spool | None = None
        self.publisher: Publisher | None = None
        self.workers: list[PortWorker] = []
        self._probes: dict[str, list[_Probe]] = {}
        self._wake = threading.Event()
        self._workers_stop = threading.Event()
        self._pub_stop = threading.Event()
        self._lock = threading.Lock()
        self.clock = self._make_clock(config)
        self._reported_drops = 0

    @staticmethod
    def _make_clock(cfg: GatewayConfig) -> Clock:
        return Clock(sane_epoch_ns(cfg), cfg.gateway.clock_step_s, cfg.gateway.clock_check)

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        """Open the spool and build every probe (raises ConfigError/SpoolError); idempotent."""
        if self.spool is None:
            g = self.config.gateway
            self.spool = Spool(self.config.spool_path, site=g.site, gateway=g.id,
                               quota_bytes=int(g.spool_quota_mb * 1e6))
        if not self._probes:
            self._probes = build_probes(self.config, self.spool.qc_state())

    def run(self, stop: threading.Event) -> None:
        try:
            self.open()
        except (ConfigError, SpoolError):
            self.close()
            raise
        self._start_workers()
        self._start_publisher()
        self.ready.set()
        log.info("collector %s/%s running: %d probe(s) on %d port(s), spool %s", self.config.gateway.site,
                 self.config.gateway.id, sum(len(v) for v in self._probes.values()), len(self._probes),
                 self.config.spool_path)
        try:
            while not stop.wait(0.5):
                self._housekeeping()
        finally:
            self._stop_workers()
            self._stop_publisher()
            self.close()
            log.info("collector stopped; unsent observations stay in %s", self.config.spool_path)

    def close(self) -> None:
        for probes in self._probes.values():
            for p in probes:
                try:
                    p.transport.close()
                except Exception:  # noqa: BLE001
                    pass
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def healthy(self) -> bool:
        """Every thread turned recently (the systemd watchdog is fed only then)."""
        now = time.monotonic()
        if self.publisher is not None and self.publisher.thread is not None and not self.publisher.thread.is_alive():
            return False
        if any(not w.thread.is_alive() for w in self.workers):
            return False
        return self.publisher is None or now - self.publisher.alive_mono < 30

    # -- probes ----------------------------------------------------------------------------
    def _start_workers(self) -> None:
        self._workers_stop = threading.Event()
        self.workers = []
        with self.state.lock:
            self.state.probes = {}
            for port, probes in self._probes.items():
                for p in probes:
                    s = p.settings
                    self.state.probes[s.id] = ProbeState(s.id, port, s.driver, s.interval_s)
        for port, probes in self._probes.items():
            sched = [ScheduledProbe(p.settings.id, p.settings.interval_s, self._poller(p),
                                    on_overrun=self._overrun_counter(p.settings.id)) for p in probes]
            w = PortWorker(port, sched, self._workers_stop)
            w.start()
            self.workers.append(w)

    def _stop_workers(self) -> None:
        self._workers_stop.set()
        for w in self.workers:
            if not w.join(30):
                log.warning("port %s: a poll did not finish within 30 s of shutdown; check the probe", w.port)

    def _overrun_counter(self, probe_id: str):
        def count(missed: int) -> None:
            with self.state.lock:
                ps = self.state.probes[probe_id]
                ps.overruns += missed
            log.warning("probe %s: poll overran its interval, %d slot(s) skipped; check the interval against the "
                        "probe's measurement time and the other probes on its bus", probe_id, missed)
        return count

    def _poller(self, p: _Probe):
        probe_id = p.settings.id

        def poll(slot_ns: int) -> None:
            reading = p.driver.read()
            synced = self.clock.synced(reading.time_ns)
            observations, qc_state = p.pipeline.process(reading, slot_ns, synced)
            spool = self.spool
            if spool is None:
                return
            spool.append(observations, qc_state)
            self._wake.set()
            dropped = spool.dropped_in_last_append
            with self.state.lock:
                ps = self.state.probes[probe_id]
                previous = ps.state
                ps.state = reading.status.value
                ps.message = reading.message
                ps.port_state = getattr(p.transport, "state", "?")
                ps.last_poll_ns = reading.time_ns
                ps.polls += 1
                ps.slots = (ps.slots + [slot_ns])[-50:]
                if reading.ok:
                    ps.last_ok_ns = reading.time_ns
                else:
                    ps.failures += 1
                self.state.clock["synced"] = synced
            if previous != ps.state:
                if reading.ok:
                    if previous != "starting":
                        log.info("probe %s on %s: back to ok", probe_id, p.settings.port)
                else:
                    log.warning("probe %s on %s: %s (%s); check the probe, its cable and its address", probe_id,
                                p.settings.port, reading.status.value, reading.message or "no message")
                    if self.publisher:
                        self.publisher.alert("probe_state", probe_id, f"probe {probe_id}: {reading.status.value}",
                                             state=reading.status.value)
                if self.publisher:
                    self.publisher.heartbeat_now()
            if dropped:
                log.warning("spool %s at its quota of %.0f MB: dropped the %d oldest unsent observation(s); "
                            "check the uplink or raise gateway.spool_quota_mb", self.config.spool_path,
                            self.config.gateway.spool_quota_mb, dropped)
                if self.publisher:
                    self.publisher.alert("spool_quota", self.config.gateway.id,
                                         f"spool full: {dropped} oldest observations dropped", dropped=dropped)
        return poll

    # -- publishing -------------------------------------------------------------------------
    def _start_publisher(self) -> None:
        assert self.spool is not None
        self._pub_stop = threading.Event()
        self.publisher = Publisher(self.config, self.spool, self.state, self._wake, self.status)
        self.publisher.start(self._pub_stop)

    def _stop_publisher(self) -> None:
        self._pub_stop.set()
        self._wake.set()
        if self.publisher and self.publisher.thread:
            self.publisher.thread.join(15)

    def _housekeeping(self) -> None:
        step = self.clock.detect_step()
        if step is not None:
            with self.state.lock:
                self.state.clock.update(steps=self.clock.steps, last_step_s=round(step.step_s, 3),
                                        last_step_ns=step.at_ns)
            if self.publisher:
                self.publisher.alert("clock_step", self.config.gateway.id, f"clock stepped by {step.step_s:+.3f} s",
                                     step_s=step.step_s)
                self.publisher.heartbeat_now()

    def status(self) -> dict[str, Any]:
        spool = self.spool
        stats = spool.stats() if spool is not None else None
        return status_payload(self.state, stats, self.config.gateway.data_dir)

    # -- reload ----------------------------------------------------------------------------
    def reload(self, new: GatewayConfig) -> None:
        """Swap in `new` (already validated): probes are rebuilt first, so a failure keeps the old ones."""
        assert self.spool is not None
        if new.gateway.data_dir != self.config.gateway.data_dir or new.gateway.site != self.config.gateway.site \
                or new.gateway.id != self.config.gateway.id:
            raise ConfigError(new.path, "gateway", "the same site, id and data_dir as the running collector "
                              "(restart the service to change them)")
        self._stop_workers()
        qc_state = self.spool.qc_state()
        try:
            probes = build_probes(new, qc_state)
        except ConfigError:
            self._start_workers()
            raise
        for ps in self._probes.values():
            for p in ps:
                p.transport.close()
        self._probes = probes
        old = self.config
        self.config = new
        self.clock = self._make_clock(new)
        self.spool.set_quota(int(new.gateway.spool_quota_mb * 1e6))
        self._start_workers()
        if new.mqtt != old.mqtt or new.publish != old.publish or new.gateway.heartbeat_s != old.gateway.heartbeat_s:
            self._stop_publisher()
            self._start_publisher()
        else:
            assert self.publisher is not None
            self.publisher.cfg = new
            self.publisher.heartbeat_now()
        with self.state.lock:
            self.state.config_reloads += 1
        log.info("configuration %s reloaded: %d probe(s)", new.path, sum(len(v) for v in probes.values()))
