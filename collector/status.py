"""What the gateway says about itself: probe states, counters, and the status/heartbeat payload.

The payload (retained on ``humus/v1/<site>/<gateway>/status``, schema
``humus/v1/status``) is documented in docs/collector.md; the last will
publishes the same schema with ``"state": "offline"`` and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from humus import __version__

STATUS_SCHEMA = "humus/v1/status"
ALERT_SCHEMA = "humus/v1/alert"


@dataclass
class ProbeState:
    probe: str
    port: str
    driver: str
    interval_s: float
    state: str = "starting"         # last driver status: ok, absent, timeout, ...
    message: str = ""
    port_state: str = "closed"
    last_poll_ns: int | None = None
    last_ok_ns: int | None = None
    polls: int = 0
    failures: int = 0
    overruns: int = 0
    slots: list[int] = field(default_factory=list)   # recent scheduled slots (tests, diagnostics)


class GatewayState:
    """Counters shared by the poller threads and the publisher (one lock)."""

    def __init__(self, site: str, gateway: str) -> None:
        self.site, self.gateway = site, gateway
        self.lock = threading.Lock()
        self.started_mono = time.monotonic()
        self.probes: dict[str, ProbeState] = {}
        self.mqtt: dict[str, Any] = {"connected": False, "reconnects": 0, "published": 0, "acked": 0,
                                     "rejected": 0}
        self.clock: dict[str, Any] = {"synced": True, "steps": 0, "last_step_s": None, "last_step_ns": None}
        self.config_reloads = 0
        self.config_errors = 0
        self.thread_restarts: dict[str, int] = {}   # "publisher", "port <name>": in-process restarts
        self.spool_failures = 0                     # polls whose observations could not be spooled
        self.spool_lost_observations = 0            # the observations of those polls

    def probe(self, pid: str) -> ProbeState:
        return self.probes[pid]

    @property
    def overruns(self) -> int:
        with self.lock:
            return sum(p.overruns for p in self.probes.values())


def cpu_temperature_c(root: str = "/sys/class/thermal") -> float | None:
    """The first thermal zone's temperature (Raspberry Pi: the SoC), or None where the board has none."""
    try:
        zones = sorted(Path(root).glob("thermal_zone*/temp"))
        for z in zones:
            raw = z.read_text().strip()
            if raw.lstrip("-").isdigit():
                return int(raw) / 1000.0
    except OSError:
        pass
    return None


def disk_free_bytes(path: str | Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def status_payload(state: GatewayState, spool_stats: Any, data_dir: str | Path, *, now_ns: int | None = None,
                   online: bool = True) -> dict[str, Any]:
    now_ns = time.time_ns() if now_ns is None else now_ns
    oldest = spool_stats.oldest_unsent_ns if spool_stats is not None else None
    with state.lock:
        probes = {p.probe: {"state": p.state, "port": p.port, "port_state": p.port_state, "driver": p.driver,
                            "interval_s": p.interval_s, "last_poll_ns": p.last_poll_ns, "last_ok_ns": p.last_ok_ns,
                            "polls": p.polls, "failures": p.failures, "overruns": p.overruns,
                            **({"message": p.message[:200]} if p.message else {})}
                  for p in state.probes.values()}
        doc: dict[str, Any] = {
            "schema": STATUS_SCHEMA, "state": "online" if online else "offline",
            "site": state.site, "gateway": state.gateway, "time_ns": now_ns, "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - state.started_mono, 3),
            "probes": probes,
            "overruns": sum(p.overruns for p in state.probes.values()),
            "mqtt": dict(state.mqtt),
            "clock": dict(state.clock),
            "config": {"reloads": state.config_reloads, "rejected_reloads": state.config_errors},
        }
    if spool_stats is not None:
        doc["spool"] = {
            "depth": spool_stats.depth, "unsent": spool_stats.unsent_observations,
            "pending_batches": spool_stats.pending_batches, "bytes": spool_stats.bytes,
            "quota_bytes": spool_stats.quota_bytes, "dropped_by_quota": spool_stats.dropped_by_quota,
            "oldest_unsent_age_s": None if oldest is None else round(max(0, now_ns - oldest) / 1e9, 3),
            "next_seq": spool_stats.next_seq,
            "dropped_seqs": [list(r) for r in getattr(spool_stats, "dropped_seqs", ())],
        }
    doc["disk_free_bytes"] = disk_free_bytes(data_dir)
    doc["cpu_temp_c"] = cpu_temperature_c()
    return doc


def offline_payload(site: str, gateway: str) -> bytes:
    return json.dumps({"schema": STATUS_SCHEMA, "state": "offline", "site": site, "gateway": gateway},
                      separators=(",", ":")).encode()


def alert_payload(site: str, gateway: str, kind: str, subject: str, message: str, **extra: Any) -> bytes:
    return json.dumps({"schema": ALERT_SCHEMA, "site": site, "gateway": gateway, "time_ns": time.time_ns(),
                       "kind": kind, "subject": subject, "message": message, **extra},
                      separators=(",", ":"), default=str).encode()
