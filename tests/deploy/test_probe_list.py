"""`humus probe list` and the udev rules template: stable names for USB serial adapters."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from serial.tools.list_ports_common import ListPortInfo

from deploy_support import REPO
from firmware_bridge.adapters import Adapter, ambiguous, attached, udev_rule
from firmware_bridge.ports import UsbMatch, parse_port

TEMPLATE = REPO / "deploy" / "udev" / "99-humus-probes.rules"
# udev(7): KEY, KEY{ATTR}, operator, double-quoted value; the keys a rule for a serial adapter uses.
RULE_ITEM = re.compile(r'^(SUBSYSTEM|ATTRS\{(idVendor|idProduct|serial)\}|SYMLINK|GROUP|MODE)(==|\+=|=)"((?:[^"\\]|\\.)*)"$')


def _port(device: str, vid: int | None = None, pid: int | None = None, serial: str | None = None,
          description: str = "n/a") -> ListPortInfo:
    """What pyserial's list_ports reports for one port (its own record type, filled as sysfs would)."""
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number, info.description = vid, pid, serial, description
    return info


def _parse_rule(line: str) -> dict[str, tuple[str, str]]:
    items = {}
    for item in (i.strip() for i in line.split(",")):
        m = RULE_ITEM.match(item)
        assert m, f"not a udev match or assignment: {item!r}"
        items[m.group(1)] = (m.group(3), m.group(4))
    return items


def test_listed_names_are_the_port_names_the_configuration_accepts():
    adapters = attached([_port("/dev/ttyUSB1", 0x0403, 0x6001, "A1", "FT232R USB UART"),
                         _port("/dev/ttyUSB0", 0x067B, 0x2303, None), _port("/dev/ttyAMA0")])
    assert [a.device for a in adapters] == ["/dev/ttyAMA0", "/dev/ttyUSB0", "/dev/ttyUSB1"]
    assert [a.name for a in adapters] == ["/dev/ttyAMA0", "usb:067b:2303", "usb:0403:6001:A1"]
    assert parse_port(adapters[2].name) == UsbMatch(0x0403, 0x6001, "A1")
    assert parse_port(adapters[1].name) == UsbMatch(0x067B, 0x2303, None)


def test_two_adapters_without_serial_numbers_are_reported_ambiguous():
    adapters = attached([_port("/dev/ttyUSB0", 0x1A86, 0x7523), _port("/dev/ttyUSB1", 0x1A86, 0x7523),
                         _port("/dev/ttyUSB2", 0x0403, 0x6001, "A1")])
    assert ambiguous(adapters) == {"usb:1a86:7523"}


def test_generated_rule_is_well_formed_and_matches_vendor_product_and_serial():
    rule = _parse_rule(udev_rule(Adapter("/dev/ttyUSB0", 0x0403, 0x6001, 'odd "serial"')))
    assert rule["SUBSYSTEM"] == ("==", "tty")
    assert rule["ATTRS{idVendor}"] == ("==", "0403") and rule["ATTRS{idProduct}"] == ("==", "6001")
    assert rule["ATTRS{serial}"] == ("==", 'odd \\"serial\\"')
    assert rule["SYMLINK"] == ("+=", "humus/0403-6001-odd__serial_")
    assert rule["GROUP"] == ("=", "dialout") and rule["MODE"] == ("=", "0660")


def test_shipped_template_rules_are_the_form_the_command_prints():
    rules = [line for line in TEMPLATE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert rules
    for line in rules:
        rule = _parse_rule(line)
        a = Adapter("/dev/x", int(rule["ATTRS{idVendor}"][1], 16), int(rule["ATTRS{idProduct}"][1], 16),
                    rule["ATTRS{serial}"][1])
        assert udev_rule(a) == line


def test_probe_list_command_runs_on_this_machine():
    r = subprocess.run([sys.executable, "-m", "humus.cli", "probe", "list"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    n = len(attached())
    assert r.stdout.strip().splitlines()[-1].startswith(f"{n} serial adapter(s) attached")
    u = subprocess.run([sys.executable, "-m", "humus.cli", "probe", "list", "--udev"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert u.returncode == 0 and u.stdout.startswith("# udev rules")
    for line in u.stdout.splitlines():
        if line and not line.startswith("#"):
            _parse_rule(line)
    assert Path(TEMPLATE).name in u.stdout
