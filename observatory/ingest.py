"""`humus ingest`: the daemon around `observatory.worker.IngestWorker`.

Loads the configuration (a bad one is a `ConfigError`: one line, exit 2),
opens the store, runs one worker until SIGTERM or SIGINT, then finishes the
write in hand, acknowledges it and disconnects. A supervisor (systemd)
restarts it with the same client id, so its persistent session and the
messages the broker kept for it are picked up again (DESIGN.md).

In-process use (``humus demo``)::

    worker = IngestWorker(config, store)
    threading.Thread(target=worker.run, args=(stop_event,)).start()
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from pathlib import Path

from humus.systemd import feed_watchdog
from observatory.config import ObservatoryConfig, load_observatory_config, state_path
from observatory.store import Store, StoreError
from observatory.worker import IngestWorker

__all__ = ["IngestWorker", "open_store", "run_daemon"]

log = logging.getLogger("humus.ingest")

GC_YOUNG_OBJECTS = 20_000
"""Python's gen-0 collection threshold in the daemon (700 by default); a few MB at most."""


def open_store(url: str) -> Store:
    """The store named by `url` (observatory.stores.open_store; docs/stores.md)."""
    from observatory.stores import open_store as _open

    return _open(url)


def run_daemon(config: ObservatoryConfig | str | Path, stop: threading.Event | None = None) -> int:
    """Run one worker until SIGTERM/SIGINT (or `stop`); return the exit status."""
    cfg = config if isinstance(config, ObservatoryConfig) else load_observatory_config(config)
    stop = stop or threading.Event()
    store = open_store(cfg.ingest.store)
    try:
        worker = IngestWorker(cfg, store)
    except StoreError:
        store.close()
        raise
    previous = {}

    def _stop(signum, frame) -> None:
        log.info("%s: finishing the write in hand, then disconnecting", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _stop)
    log.info("ingest %s: store %s, state %s, %s subscription, MQTT %s", cfg.client_id,
             cfg.ingest.store.split(":", 1)[0], state_path(cfg), cfg.ingest.subscription, cfg.mqtt.protocol)
    feeding = threading.Thread(target=feed_watchdog, name="sd-notify", daemon=True,
                               args=(f"ingest {worker.client_id}", lambda: worker.alive_mono, stop,
                                     lambda: _status_line(worker)))
    feeding.start()
    # Fewer, cheaper collections: the start-up objects (modules, classes) are frozen out of the
    # collector's scans, and a collection waits for GC_YOUNG_OBJECTS new containers instead of 700.
    # A worker creates some hundred tuples per message (one per observation), which the default
    # threshold collected every few messages: 0.06-0.08 CPU s per 100k observations (bench/ingest.py).
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_OBJECTS, *threshold[1:])
    try:
        worker.run(stop)
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
        stop.set()
        store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _status_line(worker: IngestWorker) -> str:
    m = worker.metrics
    return (f"{m.observations_written} observations written, {sum(m.rejected.values())} rejected, "
            f"broker {'connected' if m.connected else 'DISCONNECTED'}, "
            f"store {'up' if m.store_down_since_ns is None else 'DOWN'}")


def main(argv: list[str] | None = None) -> int:
    """``python -m observatory.ingest --config FILE``: the same as ``humus ingest``."""
    from humus.cli import main as humus_main

    import sys

    return humus_main(["ingest", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
