"""`humus sim`: play a probe's firmware on a pseudo-terminal until stopped.

    humus sim --list
    humus sim --probe teros12 --address 0,1 --link /tmp/sdi12 --seed 3 [--fault corrupt-crc]

The simulated device is linked at --link, so `humus probe read --port LINK`
or a collector reads it like a USB adapter. SIGUSR1 pulls the cable (the
link vanishes) and, sent again, plugs it back in under a new /dev/pts name.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="simulate a probe on a pseudo-terminal (tests, demo)",
                       description="Play a probe's firmware byte for byte on a pseudo-terminal linked at --link.")
    p.add_argument("--list", action="store_true", help="list the models, the driver that reads each, its serial settings")
    p.add_argument("--probe", metavar="MODEL", help="model to simulate (see --list)")
    p.add_argument("--link", metavar="PATH", help="where to link the simulated device, e.g. /tmp/teros12")
    p.add_argument("--address", default=None, help="bus address; SDI-12 models accept several, e.g. 0,1,2")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated values (default 0)")
    p.add_argument("--fault", action="append", default=[], metavar="NAME",
                   help="fault to inject (repeatable): no-answer, slow-answer=SECONDS, corrupt-crc, "
                        "partial-frame, garbage, stuck-value, saturation")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="model parameter, e.g. --param measure_s=0.5 (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from humus.cli import CommandError

    if args.list:
        return list_models()
    if not args.probe or not args.link:
        raise CommandError("expected --list, or --probe MODEL and --link PATH", 2)
    from firmware_bridge.sim.faults import parse_faults
    from firmware_bridge.sim.pty import PtyProbe
    from firmware_bridge.sim.registry import UnknownModel, get_model
    from humus.commands.probe import parse_option

    try:
        model = get_model(args.probe)
        faults = parse_faults(args.fault)
    except (UnknownModel, ValueError) as e:
        raise CommandError(str(e), 2) from None
    link = Path(args.link)
    if not link.parent.is_dir():
        raise CommandError(f"--link {link}: the directory {link.parent} does not exist", 2)
    if link.exists() and not link.is_symlink():
        raise CommandError(f"--link {link}: a file is already there; choose another path", 2)
    params: dict[str, Any] = dict(parse_option(p) for p in args.param)
    address = model.default_address if args.address is None else args.address
    try:
        firmware = model.load()(address, args.seed, faults, **params)
    except ImportError as e:
        raise CommandError(f"model {model.name!r} is not available in this installation ({e})") from None
    except (ValueError, TypeError) as e:
        raise CommandError(f"model {model.name}: {e}", 2) from None

    stop = threading.Event()
    toggles: list[int] = []
    handlers = {signal.SIGINT: lambda *_: stop.set(), signal.SIGTERM: lambda *_: stop.set(),
                signal.SIGUSR1: lambda *_: toggles.append(1)}
    previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
    probe = PtyProbe(firmware, link)
    try:
        probe.start()
        try:
            settings = str(model.settings)
        except (ImportError, AttributeError):
            settings = "settings of an unavailable driver"
        extra = f" faults {', '.join(faults.active)}" if faults.active else ""
        print(f"simulating {model.name} (address {address or '-'}, seed {args.seed}{extra}) at {link} -> "
              f"{probe.device}; read it with: humus probe read --port {link} --driver {model.driver}"
              f"{' --address ' + address.split(',')[0] if address else ''} ({settings}); "
              f"SIGUSR1 unplugs/replugs (pid {os.getpid()}), Ctrl-C stops", flush=True)
        while not stop.wait(0.2):
            while toggles:
                toggles.pop()
                if probe.plugged:
                    probe.unplug()
                    print(f"unplugged: {link} is gone", flush=True)
                else:
                    print(f"replugged: {link} -> {probe.replug()}", flush=True)
    finally:
        probe.stop()
        for sig, h in previous.items():
            signal.signal(sig, h)
    print(f"stopped; {link} removed", flush=True)
    return 0


def list_models() -> int:
    from firmware_bridge.sim.registry import MODELS

    rows = [("MODEL", "DRIVER", "SERIAL", "ADDRESS", "DESCRIPTION")]
    for m in MODELS.values():
        try:
            settings = str(m.settings)
        except (ImportError, AttributeError):
            settings = "(unavailable)"
        rows.append((m.name, m.driver, settings, m.default_address or "-", m.description))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    return 0
