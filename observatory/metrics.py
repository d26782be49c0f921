"""Counters of one ingest worker, and the status document built from them.

Logged every ``metrics_interval_s`` and published retained on
``humus/v1/_observatory/<client_id>/status`` (docs/ingest.md). Rates are
per second over the last interval; totals are since the worker started.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

OBSERVATORY_TOPIC_ROOT = "humus/v1/_observatory"
"""'_' is not allowed in site ids, so this never collides with a gateway's topics."""


def worker_status_topic(client_id: str) -> str:
    return f"{OBSERVATORY_TOPIC_ROOT}/{client_id}/status"


@dataclass
class IngestMetrics:
    """Thread-safe counters; `snapshot()` gives totals and rates since the previous snapshot."""

    started_ns: int = field(default_factory=time.time_ns)
    messages_in: int = 0
    observations_in: int = 0
    observations_written: int = 0
    batches_written: int = 0
    messages_acked: int = 0
    duplicates: int = 0
    gaps: int = 0
    gap_seqs: int = 0
    receipts: int = 0
    resend_requests: int = 0
    ledger_news: int = 0
    ledger_news_rejected: int = 0
    rejected: Counter = field(default_factory=Counter)
    store_writes: int = 0
    store_failures: int = 0
    store_latency_sum_s: float = 0.0
    store_latency_max_s: float = 0.0
    lag_s: float | None = None
    lag_max_s: float = 0.0
    pending: int = 0
    oldest_pending_s: float = 0.0
    store_down_since_ns: int | None = None
    connected: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last: dict[str, Any] = field(default_factory=dict, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def store_write(self, latency_s: float, observations: int, batches: int, lag_s: float | None) -> None:
        with self._lock:
            self.store_writes += 1
            self.store_latency_sum_s += latency_s
            self.store_latency_max_s = max(self.store_latency_max_s, latency_s)
            self.observations_written += observations
            self.batches_written += batches
            if lag_s is not None:
                self.lag_s = lag_s
                self.lag_max_s = max(self.lag_max_s, lag_s)

    def snapshot(self, now_ns: int | None = None) -> dict[str, Any]:
        """Totals, per-second rates since the last snapshot, and store latency over it."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        with self._lock:
            totals = {
                "messages_in": self.messages_in,
                "observations_in": self.observations_in,
                "observations_written": self.observations_written,
                "batches_written": self.batches_written,
                "messages_acked": self.messages_acked,
                "rejected": sum(self.rejected.values()),
                "duplicates": self.duplicates,
                "gaps": self.gaps,
                "store_writes": self.store_writes,
            }
            last = self._last or {"t": self.started_ns, **{k: 0 for k in totals}, "lat": 0.0}
            dt = max((now_ns - last["t"]) / 1e9, 1e-9)
            writes = self.store_writes - last["store_writes"]
            doc = {
                "time_ns": now_ns,
                "uptime_s": round((now_ns - self.started_ns) / 1e9, 3),
                "connected": self.connected,
                "store_available": self.store_down_since_ns is None,
                "store_down_s": None if self.store_down_since_ns is None
                else round((now_ns - self.store_down_since_ns) / 1e9, 3),
                "totals": {**totals, "rejected_by_reason": dict(self.rejected), "gap_seqs": self.gap_seqs,
                           "receipts": self.receipts, "resend_requests": self.resend_requests,
                           "ledger_news": self.ledger_news, "ledger_news_rejected": self.ledger_news_rejected,
                           "store_failures": self.store_failures},
                "rates_per_s": {
                    "observations_in": round((self.observations_in - last["observations_in"]) / dt, 1),
                    "observations_written": round((self.observations_written - last["observations_written"]) / dt, 1),
                    "rejected": round((totals["rejected"] - last["rejected"]) / dt, 3),
                    "duplicates": round((self.duplicates - last["duplicates"]) / dt, 3),
                },
                "store_latency_s": {
                    "mean": round((self.store_latency_sum_s - last["lat"]) / writes, 4) if writes else None,
                    "max": round(self.store_latency_max_s, 4),
                },
                "lag_s": None if self.lag_s is None else round(self.lag_s, 3),
                "lag_max_s": round(self.lag_max_s, 3),
                "pending_messages": self.pending,
                "oldest_pending_s": round(self.oldest_pending_s, 3),
            }
            self._last = {"t": now_ns, **totals, "lat": self.store_latency_sum_s}
            self.store_latency_max_s = 0.0
            self.lag_max_s = 0.0
            return doc


def log_line(doc: dict[str, Any]) -> str:
    """One compact line for the periodic log."""
    r, t, lat = doc["rates_per_s"], doc["totals"], doc["store_latency_s"]
    rej = ",".join(f"{k}={v}" for k, v in sorted(t["rejected_by_reason"].items())) or "0"
    mean = "-" if lat["mean"] is None else f"{lat['mean'] * 1000:.1f}ms"
    lag = "-" if doc["lag_s"] is None else f"{doc['lag_s']:.2f}s"
    return (f"in {r['observations_in']:.0f} obs/s, written {r['observations_written']:.0f} obs/s; "
            f"totals written={t['observations_written']} rejected={rej} duplicates={t['duplicates']} "
            f"gaps={t['gaps']}; store latency mean={mean} max={lat['max'] * 1000:.1f}ms; lag={lag}; "
            f"pending={doc['pending_messages']}; store={'up' if doc['store_available'] else 'DOWN'}; "
            f"broker={'connected' if doc['connected'] else 'DISCONNECTED'}")
