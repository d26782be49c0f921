"""`humus probe`: talk to one probe or one bus from the command line (field technicians).

    humus probe read --port /dev/serial/by-id/... --driver teros12 --address 0
    humus probe scan /dev/ttyUSB0

    humus probe address /dev/ttyUSB0 0 3
    humus probe list [--udev]

`read` prints one reading with its status and exits 0 only if the status is
ok; `scan` lists each SDI-12 address that answers, with its identification;
`address` gives an SDI-12 sensor a new address (aAb!, SDI-12 4.4.4) before
it joins a bus with others.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="read one probe or scan an SDI-12 bus (field checks)",
                       description="Read one probe once, or list the sensors on an SDI-12 bus.")
    psub = p.add_subparsers(dest="probe_command", metavar="ACTION")
    r = psub.add_parser("read", help="print one reading of one probe")
    r.add_argument("--port", required=True,
                   help="device path, /dev/serial/by-id/... link, or usb:VID:PID[:SERIAL]")
    r.add_argument("--driver", required=True, help="driver name (see 'humus sim --list' or the docs)")
    r.add_argument("--address", default="", help="bus address (SDI-12 0-9/a-z/A-Z, Modbus 1-247)")
    r.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="driver option, e.g. --option crc=false (repeatable)")
    r.add_argument("--probe-id", default="probe", help="probe id shown in the reading (default 'probe')")
    r.add_argument("--json", action="store_true", help="print the reading as JSON")
    r.set_defaults(func=run_read)
    s = psub.add_parser("scan", help="list the sensors on an SDI-12 bus")
    s.add_argument("port", help="device path, /dev/serial/by-id/... link, or usb:VID:PID[:SERIAL]")
    s.add_argument("--addresses", default="all", help="addresses to try, e.g. 0-9 or 0-3,a (default all 62)")
    s.add_argument("--timeout", type=float, default=0.2, help="seconds to wait for each answer (default 0.2)")
    s.set_defaults(func=run_scan)
    a = psub.add_parser("address", help="change the address of one SDI-12 sensor (alone on the bus)")
    a.add_argument("port", help="device path, /dev/serial/by-id/... link, or usb:VID:PID[:SERIAL]")
    a.add_argument("old", help="the sensor's address now ('?' to ask the only sensor on the bus)")
    a.add_argument("new", help="the address to give it (0-9, a-z, A-Z)")
    a.set_defaults(func=run_address)
    ls = psub.add_parser("list", help="list attached serial adapters with the usb:VID:PID:SERIAL names to configure")
    ls.add_argument("--udev", action="store_true",
                    help="print udev rules giving each USB adapter a stable /dev/humus/... link instead")
    ls.set_defaults(func=run_list)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def parse_option(text: str) -> tuple[str, Any]:
    """"crc=false" -> ("crc", False); numbers become numbers, the rest stays text."""
    from humus.cli import CommandError

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise CommandError(f"--option {text!r}: expected KEY=VALUE, e.g. --option crc=false", 2)
    value: Any = raw.strip()
    low = value.lower()
    if low in ("true", "yes", "on"):
        value = True
    elif low in ("false", "no", "off"):
        value = False
    else:
        for conv in (int, float):
            try:
                value = conv(value)
                break
            except ValueError:
                pass
    return key.strip(), value


def run_read(args: argparse.Namespace) -> int:
    from firmware_bridge import DriverConfigError, SerialTransport, UnknownDriver, get_driver
    from firmware_bridge.ports import PortSpecError, parse_port
    from humus.cli import CommandError

    try:
        parse_port(args.port)
        cls = get_driver(args.driver)
    except (PortSpecError, UnknownDriver) as e:
        raise CommandError(str(e), 2) from None
    except ImportError as e:
        raise CommandError(f"driver {args.driver!r} is not available in this installation ({e})") from None
    options = dict(parse_option(o) for o in args.option)
    transport = SerialTransport(args.port, cls.serial_settings)
    try:
        driver = cls(transport, args.probe_id, args.address, options)
    except (DriverConfigError, ValueError, TypeError) as e:
        raise CommandError(str(e), 2) from None
    try:
        reading = driver.read()
    finally:
        transport.close()
    if args.json:
        print(json.dumps(_as_json(reading, args, cls.serial_settings), indent=2))
    else:
        where = f"{args.port}" + (f" address {args.address}" if args.address else "")
        print(f"{args.driver} on {where} ({cls.serial_settings}): {reading.status.value.upper()}")
        if reading.message:
            print(f"  {reading.message}")
        width = max((len(k) for k in reading.values), default=0)
        for name, raw in reading.values.items():
            print(f"  {name:<{width}}  {raw.value:>12g} {raw.unit}")
        if reading.spectrum is not None:
            sp = reading.spectrum
            wl = sp.wavelengths_nm
            print(f"  spectrum: {len(wl)} bands {min(wl):g}-{max(wl):g} nm, integration {sp.integration_ms:g} ms, "
                  f"gain {sp.gain:g}, {sp.unit}, {'SATURATED' if sp.saturated else 'not saturated'}")
            if sp.values:
                print(f"  values: min {min(sp.values):g}, max {max(sp.values):g}")
    return 0 if reading.ok else 1


def _as_json(reading: Any, args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "probe": reading.probe, "driver": args.driver, "port": args.port, "address": args.address,
        "serial": str(settings), "status": reading.status.value, "message": reading.message,
        "time_ns": reading.time_ns,
        "values": {k: {"value": v.value, "unit": v.unit} for k, v in reading.values.items()},
    }
    if reading.spectrum is not None:
        sp = reading.spectrum
        out["spectrum"] = {"wavelengths_nm": list(sp.wavelengths_nm), "values": list(sp.values), "unit": sp.unit,
                           "integration_ms": sp.integration_ms, "gain": sp.gain, "saturated": sp.saturated}
    return out


def run_scan(args: argparse.Namespace) -> int:
    from firmware_bridge.ports import PortSpecError, parse_port
    from firmware_bridge.protocols.sdi12 import SETTINGS
    from firmware_bridge.scan import parse_addresses, scan_bus
    from firmware_bridge.transport import SerialTransport, TransportError
    from humus.cli import CommandError

    try:
        parse_port(args.port)
        addresses = parse_addresses(args.addresses)
    except (PortSpecError, ValueError) as e:
        raise CommandError(str(e), 2) from None
    if not 0 < args.timeout <= 10:
        raise CommandError(f"--timeout {args.timeout}: expected 0 to 10 seconds", 2)
    transport = SerialTransport(args.port, SETTINGS)
    started = time.monotonic()
    tty = sys.stderr.isatty()

    def progress(address: str) -> None:
        if tty:
            print(f"\r  address {address} ({addresses.index(address) + 1}/{len(addresses)}, "
                  f"{time.monotonic() - started:.0f} s)  ", end="", file=sys.stderr, flush=True)

    try:
        transport.ensure_open()
        # A full scan takes half a minute: say so, and on a terminal show where it is.
        print(f"scanning {len(addresses)} address(es) on {args.port}, up to {2 * args.timeout:g} s each "
              f"(about {len(addresses) * 2 * args.timeout:.0f} s at most)...", file=sys.stderr, flush=True)
        found = scan_bus(transport, addresses, timeout_s=args.timeout, progress=progress)
    except TransportError as e:
        raise CommandError(str(e)) from None
    finally:
        transport.close()
        if tty:
            print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    for sensor in found:
        print(sensor)
    elapsed = time.monotonic() - started
    print(f"{len(found)} sensor(s) on {args.port} ({len(addresses)} addresses tried in {elapsed:.1f} s)")
    if not found:
        raise CommandError(f"no SDI-12 sensor answered on {args.port}: check power, wiring and the adapter")
    return 0


def run_address(args: argparse.Namespace) -> int:
    from firmware_bridge.ports import PortSpecError, parse_port
    from firmware_bridge.protocols import ProtocolError
    from firmware_bridge.protocols.sdi12 import ADDRESSES, SETTINGS, Sdi12Bus
    from firmware_bridge.transport import SerialTransport, TransportError
    from humus.cli import CommandError

    try:
        parse_port(args.port)
    except PortSpecError as e:
        raise CommandError(str(e), 2) from None
    for what, value in (("old", args.old), ("new", args.new)):
        if value not in ADDRESSES and not (what == "old" and value == "?"):
            raise CommandError(f"{what} address {value!r}: expected one of 0-9, a-z, A-Z", 2)
    transport = SerialTransport(args.port, SETTINGS)
    try:
        transport.ensure_open()
        bus = Sdi12Bus(transport)
        old = bus.query_address() if args.old == "?" else args.old
        if old != args.new and bus.acknowledge(args.new):
            raise CommandError(f"address {args.new!r} is already taken on {args.port}; choose another")
        if not bus.acknowledge(old):
            raise CommandError(f"no sensor answers at address {old!r} on {args.port}")
        bus.change_address(old, args.new)
        ident = bus.identify(args.new)
    except ProtocolError as e:
        raise CommandError(f"{args.port}: {e}") from None
    except TransportError as e:
        raise CommandError(str(e)) from None
    finally:
        transport.close()
    print(f"{old} -> {args.new}  {ident}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Attached adapters and the names that find them again after a replug (firmware_bridge.adapters)."""
    from firmware_bridge.adapters import ambiguous, attached, udev_rule

    adapters = attached()
    shared = ambiguous(adapters)
    if args.udev:
        print("# udev rules for the adapters attached now: /etc/udev/rules.d/99-humus-probes.rules")
        for a in adapters:
            if a.vid is not None:
                note = "  # AMBIGUOUS: another adapter has the same ids" if a.name in shared else ""
                print(f"# {a.device} {a.description}{note}\n{udev_rule(a)}")
        return 0
    for a in adapters:
        print(f"{a.name:<32} {a.device:<14} {a.description}")
        if a.by_id:
            print(f"{'':<32} {a.by_id}")
        if a.name in shared:
            print(f"{'':<32} several adapters answer to {a.name}: name this one by its /dev/serial/by-path/ link")
    print(f"{len(adapters)} serial adapter(s) attached; put the first column in a probe's port = \"...\"")
    return 0
