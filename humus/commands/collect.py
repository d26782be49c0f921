"""`humus collect --config gateway.toml`: the gateway daemon (systemd Type=notify service).

Signals: SIGTERM/SIGINT stop cleanly (a poll in progress finishes and is
spooled; the spool is durable at every instant anyway); SIGHUP re-reads the
configuration file and swaps it in only if it is valid, otherwise logs one
line and keeps running the old one. systemd: READY=1 once the spool is open
and the pollers run, WATCHDOG=1 every WATCHDOG_USEC/2 while every thread is
turning, RELOADING=1/READY=1 around a reload, STOPPING=1 on the way out.
A bad configuration at start: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="run the gateway daemon: poll probes, spool, publish over MQTT",
                       description="Poll the probes of a gateway configuration, flag and calibrate their readings, "
                                   "keep them in a durable spool and publish them over MQTT (see docs/collector.md).")
    p.add_argument("--config", "-c", required=True, help="gateway configuration (TOML)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    import signal
    import threading
    import time

    from collector.config import load_gateway_config
    from collector.daemon import Collector
    from collector.spool import SpoolError
    from humus.systemd import Notifier
    from humus.cli import CommandError
    from humus.config import ConfigError

    log = logging.getLogger("collector")
    os.umask(os.umask(0o027) | 0o027)              # spool and state files 0640 at most, whatever started us
    cfg = load_gateway_config(args.config)          # ConfigError -> exit 2 with one line (humus.cli)
    collector = Collector(cfg)
    try:
        collector.open()
    except SpoolError as e:
        raise CommandError(str(e)) from None

    stop = threading.Event()
    reload_requested = threading.Event()
    main_wake = threading.Event()

    def on_stop(signum: int, frame: object) -> None:
        stop.set()
        main_wake.set()

    def on_hup(signum: int, frame: object) -> None:
        reload_requested.set()
        main_wake.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    errors: list[BaseException] = []

    def body() -> None:
        try:
            collector.run(stop)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            stop.set()
            main_wake.set()

    notifier = Notifier()
    worker = threading.Thread(target=body, name="collector", daemon=True)
    worker.start()
    while not collector.ready.wait(0.1):
        if not worker.is_alive():
            break
    if collector.ready.is_set():
        notifier.ready(f"collecting {len(cfg.probes)} probe(s) for {cfg.gateway.site}/{cfg.gateway.id}")
    wd = notifier.watchdog_interval_s
    next_wd = time.monotonic()
    while not stop.is_set():
        if wd is not None and time.monotonic() >= next_wd:
            if collector.healthy():
                notifier.watchdog()
            else:
                log.error("a collector thread is stuck or dead; withholding the watchdog so systemd restarts us")
            next_wd = time.monotonic() + wd
        if reload_requested.is_set():
            reload_requested.clear()
            notifier.reloading()
            try:
                new = load_gateway_config(args.config)
                collector.reload(new)
                notifier.status("configuration reloaded")
            except ConfigError as e:
                with collector.state.lock:
                    collector.state.config_errors += 1
                log.error("configuration reload refused, keeping the running configuration: %s", e)
                notifier.status(f"reload refused: {e}")
            notifier.ready()
        timeout = 1.0 if wd is None else max(0.01, min(1.0, next_wd - time.monotonic()))
        main_wake.wait(timeout)
        main_wake.clear()
    notifier.stopping()
    worker.join(60)
    notifier.close()
    if errors:
        e = errors[0]
        if isinstance(e, ConfigError):
            raise e
        if isinstance(e, SpoolError):
            raise CommandError(str(e)) from None
        raise CommandError(f"collector failed: {type(e).__name__}: {e}") from None
    return 0
