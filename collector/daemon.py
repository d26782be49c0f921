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

Supervision: a publisher or poller thread that dies (an unexpected exception,
a library calling sys.exit) is restarted in-process after a back-off that
doubles up to RESTART_MAX_S; each restart is counted in the status
(``threads.restarts``) and alerted (``thread_restart``). A poll the spool
refuses is counted (``spool.failed_polls``, ``spool.lost_observations``) and
alerted once per episode (``spool_failure``); the poller never stops for it.
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
from collector.publisher import Publisher, Wake
from collector.schedule import PortWorker, ScheduledProbe
from collector.spool import AppendResult, Spool, SpoolError
from collector.status import GatewayState, ProbeState, status_payload
from humus.config import ConfigError

log = logging.getLogger(__name__)


@dataclass
class _Probe:
    settings: ProbeSettings
    driver: Any
    pipeline: ProbePipeline
    transport: Any


@dataclass(slots=True)
class _Polled:
    """One poll read and processed, waiting for its port's store at the end of its slot."""

    probe: _Probe
    slot_ns: int
    reading: Any
    synced: bool
    observations: list
    qc_state: dict[str, str]


def build_probes(cfg: GatewayConfig, qc_state: dict[str, str] | None = None) -> dict[str, list[_Probe]]:
    """Drivers, transports and pipelines grouped by port; ConfigError for what cannot be built.

    Opens no port: `collector.config.load_gateway_config` calls it to validate
    a file, so what it accepts here is what the daemon will run.
    """
    from collector.calibrate import CalibrationSetupError
    from firmware_bridge.drivers import DRIVERS, get_driver
    from firmware_bridge.drivers.base import DriverConfigError
    from firmware_bridge.transport import SerialTransport

    by_port: dict[str, list[_Probe]] = {}
    transports: dict[str, Any] = {}
    settings_of: dict[str, Any] = {}
    try:
        for i, p in enumerate(cfg.probes):
            if not p.enabled:
                continue
            key = f"probes[{i}]"
            try:
                cls = get_driver(p.driver)
            except KeyError:
                raise ConfigError(cfg.path, f"{key}.driver", f"one of the known drivers ({', '.join(sorted(DRIVERS))})",
                                  p.driver) from None
            except ImportError as e:
                raise ConfigError(cfg.path, f"{key}.driver", "a driver installed here", p.driver,
                                  found=f"it cannot be imported ({e})") from None
            if p.port in settings_of and settings_of[p.port] != cls.serial_settings:
                raise ConfigError(cfg.path, f"{key}.port", f"a port whose probes share one line setting "
                                  f"({settings_of[p.port]} already set by another probe, {cls.serial_settings} here)",
                                  p.port)
            settings_of[p.port] = cls.serial_settings
            try:
                transport = transports.get(p.port) or SerialTransport(p.port, cls.serial_settings)
            except ValueError as e:   # a malformed usb:VID:PID name
                raise ConfigError(cfg.path, f"{key}.port", "a device path, /dev/serial/by-id/... link or "
                                  "usb:VID:PID[:SERIAL]", found=str(e)) from None
            transports[p.port] = transport
            try:
                driver = cls(transport, p.id, p.address, dict(p.options))
            except DriverConfigError as e:
                if e.field:
                    raise ConfigError(cfg.path, f"{key}.{e.field}", e.expected, e.got) from None
                raise ConfigError(cfg.path, key, f"settings driver {p.driver} accepts", found=str(e)) from None
            except (ValueError, TypeError) as e:
                raise ConfigError(cfg.path, key, f"settings driver {p.driver} accepts", found=str(e)) from None
            quantities = cls.quantities_for(p.options)
            _check_quantities(cfg, key, p, quantities)
            try:
                pipeline = ProbePipeline(cfg, p, quantities, qc_state)
            except CalibrationSetupError as e:
                raise ConfigError(cfg.path, f"{key}.calibration.{e.quantity}.path",
                                  "a model file written by 'humus calibrate fit'", found=str(e)) from None
            for cal in pipeline.calibrators:
                if cal.model is not None:
                    _check_spectral(cfg, f"{key}.calibration.{cal.quantity}", p, cls, cal)
            by_port.setdefault(p.port, []).append(_Probe(p, driver, pipeline, transport))
    except BaseException:
        for t in transports.values():
            t.close()
        raise
    return by_port


def close_probes(by_port: dict[str, list[_Probe]]) -> None:
    """Close the transports of built probes (none is open unless it was polled)."""
    for probes in by_port.values():
        for p in probes:
            p.transport.close()


def _check_quantities(cfg: GatewayConfig, key: str, p: ProbeSettings, quantities: Any) -> None:
    """Calibration inputs are quantities of the driver; QC tables name a quantity the probe reports."""
    raw = ", ".join(quantities) or "none"
    for q, c in p.calibration.items():
        if c.model == "spectral":
            continue
        for name in ("input", "temperature_input"):
            value = getattr(c, name)
            if value and value not in quantities:
                raise ConfigError(cfg.path, f"{key}.calibration.{q}.{name}",
                                  f"a quantity of driver {p.driver} ({raw})", value)
    from calibration.applicability import check_moisture_calibration

    for q, c in p.calibration.items():
        problems = check_moisture_calibration(c.model, p.driver, probe=p.id, polynomial_input=c.polynomial_input)
        if problems:
            raise ConfigError(cfg.path, f"{key}.calibration.{q}.model",
                              f"a calibration that fits driver {p.driver}", found=problems[0])
    reported = set(quantities) | set(p.calibration)
    for q in p.qc:
        if q not in reported:
            raise ConfigError(cfg.path, f"{key}.qc.{q}", f"a quantity this probe reports (raw: {raw}; calibrated: "
                              f"{', '.join(p.calibration) or 'none'})", found=f"{q!r}, which it never reports")


def _check_spectral(cfg: GatewayConfig, where: str, p: ProbeSettings, cls: Any, cal: Any) -> None:
    """A spectral model fits its probe: the probe sends spectra of a kind the model reads, over its whole grid."""
    model = cal.model
    if cls.spectrum_unit is None:
        raise ConfigError(cfg.path, f"{where}.model", f"a model for the values of driver {p.driver}, which sends "
                          "no spectrum", "spectral")
    kind = cal.settings.kind or {"counts": "counts", "reflectance": "reflectance"}.get(cls.spectrum_unit)
    if kind is None:
        raise ConfigError(cfg.path, f"{where}.kind", f"counts, reflectance or absorbance: what the spectra of "
                          f"driver {p.driver} ({cls.spectrum_unit}) are for model {model.id}", found="no kind set")
    if kind == "counts" and not cls.spectrum_references:
        raise ConfigError(cfg.path, f"{where}.kind", f"reflectance or absorbance (counts need the dark and white "
                          f"references, which driver {p.driver} does not send)", kind)
    span = cls.wavelength_range_for(p.options)
    g0, g1 = float(model.grid[0]), float(model.grid[-1])
    if span is not None and (g0 < span[0] - 0.01 or g1 > span[1] + 0.01):
        raise ConfigError(cfg.path, f"{where}.path", f"a model within the probe's {span[0]:g}-{span[1]:g} nm",
                          found=f"model {model.id} on {g0:g}-{g1:g} nm (every prediction would be missing)")


RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
GIVE_UP_AFTER = 6
"""Restarts in a row without a good turn after which `healthy()` says no (systemd then restarts the process)."""
GOOD_TURN_S = 1.0
"""A restarted thread that still turns this long after its restart has recovered."""
HOUSEKEEPING_S = 1.0
"""How often the collector thread looks at the clock, the spool's reserve and the other threads (each
look wakes a thread: twice a second was a few per cent of the collector's CPU, for no faster restart)."""


def restart_delay_s(restarts_in_a_row: int) -> float:
    """Wait before the n-th restart in a row: doubling from RESTART_MIN_S, capped at RESTART_MAX_S."""
    return min(RESTART_MAX_S, RESTART_MIN_S * 2 ** max(0, restarts_in_a_row - 1))


@dataclass
class _Supervision:
    """What the supervisor knows of one thread (the publisher, or the poller of one port)."""

    in_a_row: int = 0                    # restarts since the thread last turned well
    restart_at: float | None = None      # when the dead thread is restarted
    started_mono: float = 0.0
    died_of: str = ""


class Collector:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.ready = threading.Event()
        self.state = GatewayState(config.gateway.site, config.gateway.id)
        self.spool: Spool | None = None
        self.publisher: Publisher | None = None
        self.workers: list[PortWorker] = []
        self._probes: dict[str, list[_Probe]] = {}
        self._wake = Wake()
        self._workers_stop = threading.Event()
        self._pub_stop = threading.Event()
        self._lock = threading.Lock()         # a reload and the supervisor never run at once
        self.clock = self._make_clock(config)
        self._supervised: dict[str, _Supervision] = {}
        self._housekeeping_mono: float | None = None
        self._spool_failing = False           # a spool failure episode is going on (under state.lock)
        self._reserve_released = False

    @staticmethod
    def _make_clock(cfg: GatewayConfig) -> Clock:
        return Clock(sane_epoch_ns(cfg), cfg.gateway.clock_step_s, cfg.gateway.clock_check)

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        """Open the spool and build every probe (raises ConfigError/SpoolError); idempotent."""
        if self.spool is None:
            g = self.config.gateway
            # Room to form and delete one batch on a full disk: both land in the WAL.
            reserve = 2 * self.config.publish.max_batch_bytes + 64 * 1024
            sign = None
            if g.signing_key:
                from humus.signing import signer_from_file

                sign = signer_from_file(g.signing_key)   # checked by load_gateway_config
            self.spool = Spool(self.config.spool_path, site=g.site, gateway=g.id,
                               quota_bytes=int(g.spool_quota_mb * 1e6), reserve_bytes=reserve, sign=sign)
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
            self._housekeeping_mono = time.monotonic()
            while not stop.wait(HOUSEKEEPING_S):
                self._housekeeping_mono = time.monotonic()
                self._housekeeping()
                self._supervise()
        finally:
            self._housekeeping_mono = None
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
        """Whether the systemd watchdog should be fed.

        A thread that died is restarted in-process (see `_supervise`), so a death alone is recovery
        in progress, not ill health. No only when recovery itself keeps failing (a thread restarted
        GIVE_UP_AFTER times in a row without turning well since), when the supervisor itself stopped
        turning, or when the publisher is stuck inside one turn: a process restart is then the cure.
        """
        now = time.monotonic()
        if any(s.in_a_row >= GIVE_UP_AFTER for s in list(self._supervised.values())):
            return False
        if self._housekeeping_mono is not None and now - self._housekeeping_mono > 30:
            return False
        pub = self.publisher
        return pub is None or pub.thread is None or not pub.thread.is_alive() or now - pub.alive_mono < 30

    # -- supervision -------------------------------------------------------------------------
    def _supervise(self) -> None:
        """Restart a dead publisher or poller thread after a back-off; count and alert each restart."""
        if not self._lock.acquire(blocking=False):
            return          # a reload is replacing the threads
        try:
            now = time.monotonic()
            pub = self.publisher
            if pub is not None and pub.thread is not None and not self._pub_stop.is_set():
                self._watch("publisher", pub.thread.is_alive(), pub.alive_mono, now, self._restart_publisher)
            if not self._workers_stop.is_set():
                for i, w in enumerate(list(self.workers)):
                    self._watch(f"port {w.port}", w.thread.is_alive(), w.alive_mono, now,
                                lambda i=i, w=w: self._restart_worker(i, w), w.died_of)
        finally:
            self._lock.release()

    def _watch(self, name: str, alive: bool, alive_mono: float, now: float, restart, died_of: str = "") -> None:
        s = self._supervised.setdefault(name, _Supervision(started_mono=now))
        if alive:
            if s.in_a_row and alive_mono - s.started_mono >= GOOD_TURN_S:
                log.info("%s thread turning again since its restart", name)
                s.in_a_row = 0
            return
        if s.restart_at is None:
            s.died_of = died_of or s.died_of or "unknown cause"
            delay = restart_delay_s(s.in_a_row + 1)
            s.restart_at = now + delay
            log.error("%s thread stopped (%s); restarting it in %.1f s", name, s.died_of, delay)
            return
        if now < s.restart_at:
            return
        s.in_a_row += 1
        s.restart_at = None
        s.started_mono = now
        restart()
        with self.state.lock:
            self.state.thread_restarts[name] = self.state.thread_restarts.get(name, 0) + 1
            total = self.state.thread_restarts[name]
        if s.in_a_row >= GIVE_UP_AFTER:
            log.error("%s thread restarted %d times in a row without recovering (%s); withholding the watchdog "
                      "so systemd restarts the collector", name, s.in_a_row, s.died_of)
        if self.publisher:
            self.publisher.alert("thread_restart", name,
                                 f"{name} thread stopped ({s.died_of}) and was restarted",
                                 restarts=total, in_a_row=s.in_a_row)
            self.publisher.heartbeat_now()
        s.died_of = ""

    def _restart_publisher(self) -> None:
        log.warning("restarting the publisher; formed batches are republished from the spool")
        self._start_publisher()

    def _restart_worker(self, i: int, old: PortWorker) -> None:
        log.warning("restarting the poller of port %s", old.port)
        w = PortWorker(old.port, old.probes, self._workers_stop, flush=old.flush)
        w.start()
        self.workers[i] = w

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
            w = PortWorker(port, sched, self._workers_stop, flush=self._flusher(port))
            w.start()
            self.workers.append(w)
        for name in [n for n in self._supervised if n.startswith("port ")]:
            del self._supervised[name]

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
        """poll(slot): read and process one probe; the port's flush stores it with the rest of its slot."""
        port = p.settings.port

        def poll(slot_ns: int) -> _Polled:
            spool = self.spool
            if spool is not None:
                spool.expect(port)     # other ports' commits of this slot may wait for ours
            reading = p.driver.read()
            synced = self.clock.synced(reading.time_ns)
            observations, qc_state = p.pipeline.process(reading, slot_ns, synced)
            return _Polled(p, slot_ns, reading, synced, observations, qc_state)
        return poll

    def _flusher(self, port: str):
        def flush(polled: list[_Polled]) -> None:
            spool = self.spool
            if spool is None:
                return
            if not polled:
                spool.withdraw(port)
                return
            result = self._store(spool, port, polled)
            for x in polled:
                self._record(x)
            if result.dropped:
                self._report_drops(result)
        return flush

    def _record(self, x: _Polled) -> None:
        """A stored (or refused) poll in the probe's state; a change of state is logged and alerted."""
        reading, probe_id, p = x.reading, x.probe.settings.id, x.probe
        with self.state.lock:
            ps = self.state.probes[probe_id]
            previous = ps.state
            ps.state = reading.status.value
            ps.message = reading.message
            ps.port_state = getattr(p.transport, "state", "?")
            ps.last_poll_ns = reading.time_ns
            ps.polls += 1
            ps.slots.append(x.slot_ns)
            del ps.slots[:-50]
            if reading.ok:
                ps.last_ok_ns = reading.time_ns
            else:
                ps.failures += 1
            self.state.clock["synced"] = x.synced
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

    def _store(self, spool: Spool, port: str, polled: list[_Polled]) -> AppendResult:
        """Spool the polls of one port's slot in one append (one commit with the other ports' of that slot).

        A commit the spool refuses is counted (its polls and observations) and alerted once per episode,
        never raised.
        """
        observations = [o for x in polled for o in x.observations]
        qc_state: dict[str, str] = {}
        for x in polled:
            qc_state.update(x.qc_state)
        try:
            result = spool.append(observations, qc_state, writer=port)
        except SpoolError as e:
            with self.state.lock:
                self.state.spool_failures += len(polled)
                self.state.spool_lost_observations += len(observations)
                first, self._spool_failing = not self._spool_failing, True
            if first:
                probes = ", ".join(x.probe.settings.id for x in polled)
                log.error("%s; the observations of probe(s) %s, and of every poll until the spool takes writes "
                          "again, are lost (counted in the status as spool.lost_observations)", e, probes)
                if self.publisher:
                    self.publisher.alert("spool_failure", self.config.gateway.id,
                                         f"observations cannot be spooled: {e}", path=str(spool.path))
                    self.publisher.heartbeat_now()
            return AppendResult()
        self._wake.set()
        if self._spool_failing:
            with self.state.lock:
                ended, self._spool_failing = self._spool_failing, False
                lost = self.state.spool_lost_observations
            if ended:
                log.info("spool %s takes writes again (%d observation(s) lost in all so far)", spool.path, lost)
        return result

    def _report_drops(self, result: AppendResult) -> None:
        g = self.config.gateway
        if result.reason == "disk_full":
            log.warning("spool %s: the disk of %s is full: dropped the %d oldest unsent observation(s); free space "
                        "there (other programs' files, logs) or check the uplink", self.config.spool_path,
                        g.data_dir, result.dropped)
            kind, message = "disk_full", f"disk full: {result.dropped} oldest observations dropped"
        else:
            log.warning("spool %s at its quota of %.0f MB: dropped the %d oldest unsent observation(s); "
                        "check the uplink or raise gateway.spool_quota_mb", self.config.spool_path,
                        g.spool_quota_mb, result.dropped)
            kind, message = "spool_quota", f"spool full: {result.dropped} oldest observations dropped"
        if self.publisher:
            self.publisher.alert(kind, g.id, message, dropped=result.dropped)

    # -- publishing -------------------------------------------------------------------------
    def _start_publisher(self) -> None:
        assert self.spool is not None
        self._pub_stop = threading.Event()
        pub = Publisher(self.config, self.spool, self.state, self._wake, self.status)
        run = pub.run

        def supervised_run(stop: threading.Event) -> None:
            # The publisher logs its own failure; the supervisor restarts it, so no thread traceback too.
            try:
                run(stop)
            except Exception as e:  # noqa: BLE001
                self._supervised.setdefault("publisher", _Supervision()).died_of = f"{type(e).__name__}: {e}"

        pub.run = supervised_run  # type: ignore[method-assign]
        self.publisher = pub
        pub.start(self._pub_stop)

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
        spool = self.spool
        released = spool is not None and spool.reserve_released
        if released != self._reserve_released:
            self._reserve_released = released
            if released and self.publisher:
                self.publisher.alert("disk_full", self.config.gateway.id,
                                     f"disk of {self.config.gateway.data_dir} full: the spool is using its reserve",
                                     path=str(self.config.spool_path))
            elif not released:
                log.info("spool %s: disk space is back, reserve held again", self.config.spool_path)

    def status(self) -> dict[str, Any]:
        spool = self.spool
        error = None
        try:
            stats = spool.stats() if spool is not None else None
        except SpoolError as e:
            stats, error = None, str(e)
        doc = status_payload(self.state, stats, self.config.gateway.data_dir)
        extra: dict[str, Any] = {} if error is None else {"error": error}
        if stats is not None:
            extra.update(disk_bytes=stats.disk_bytes, reserve_bytes=stats.reserve_bytes)
        with self.state.lock:
            doc["threads"] = {"restarts": dict(self.state.thread_restarts)}
            extra.update(failed_polls=self.state.spool_failures,
                         lost_observations=self.state.spool_lost_observations)
        doc.setdefault("spool", {}).update(extra)
        return doc

    # -- reload ----------------------------------------------------------------------------
    def reload(self, new: GatewayConfig) -> None:
        """Swap in `new` (already validated): probes are rebuilt first, so a failure keeps the old ones."""
        with self._lock:
            self._reload(new)

    def _reload(self, new: GatewayConfig) -> None:
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
