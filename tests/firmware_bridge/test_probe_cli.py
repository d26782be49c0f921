"""`humus probe read` and `humus probe scan` against simulated SDI-12 buses (in process)."""

from __future__ import annotations

import json

import pytest

from humus.cli import main


def test_scan_lists_each_address_with_its_identification(sdi_bus, capsys):
    sim = sdi_bus("0,3,b")
    assert main(["probe", "scan", sim.link, "--addresses", "0-5,a-c", "--timeout", "0.1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["0  METER TER12 v112 SIM0 (SDI-12 1.4)", "3  METER TER12 v112 SIM3 (SDI-12 1.4)",
                       "b  METER TER12 v112 SIMb (SDI-12 1.4)"]
    assert out[3].startswith(f"3 sensor(s) on {sim.link} (9 addresses tried")


def test_scan_of_a_silent_bus_fails_with_what_to_check(sdi_bus, capsys):
    sim = sdi_bus("9")
    assert main(["probe", "scan", sim.link, "--addresses", "0-2", "--timeout", "0.05"]) == 1
    assert "no SDI-12 sensor answered" in capsys.readouterr().err


def test_scan_of_a_missing_port_is_one_line(tmp_path, capsys):
    assert main(["probe", "scan", str(tmp_path / "none"), "--addresses", "0"]) == 1
    err = capsys.readouterr().err
    assert "cannot open" in err and len(err.strip().splitlines()) == 1


def test_read_prints_status_values_and_units(sdi_bus, capsys):
    sim = sdi_bus("4")
    assert main(["probe", "read", "--port", sim.link, "--driver", "teros12", "--address", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"teros12 on {sim.link} address 4 (1200 7E1): OK")
    assert "soil_temp" in out and "degC" in out and "counts" in out


def test_read_as_json(sdi_bus, capsys):
    sim = sdi_bus("0")
    assert main(["probe", "read", "--port", sim.link, "--driver", "teros12", "--json", "--option", "crc=no"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "ok" and doc["serial"] == "1200 7E1" and doc["values"]["ec_bulk"]["unit"] == "uS/cm"
    assert sim.sensor("0").commands[0] == "0M!"


def test_read_of_a_failing_probe_shows_the_status_and_exits_1(sdi_bus, capsys):
    sim = sdi_bus("0")
    sim.faults.no_answer = True
    assert main(["probe", "read", "--port", sim.link, "--driver", "teros12",
                 "--option", "response_timeout_s=0.1", "--option", "attempts=1"]) == 1
    out = capsys.readouterr().out
    assert "TIMEOUT" in out and "no answer" in out


@pytest.mark.parametrize("args,expected", [
    (["--driver", "nope"], "unknown driver 'nope'; known drivers: "),
    (["--driver", "teros12", "--address", "!!"], "SDI-12 address '!!'"),
    (["--driver", "teros12", "--option", "crc"], "expected KEY=VALUE"),
    (["--driver", "teros12", "--option", "speed=3"], "unknown option(s) speed"),
])
def test_bad_read_arguments_are_one_line_with_exit_status_2(tmp_path, capsys, args, expected):
    assert main(["probe", "read", "--port", str(tmp_path / "p"), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_address_gives_a_sensor_a_new_address(sdi_bus, capsys):
    sim = sdi_bus("0")
    assert main(["probe", "address", sim.link, "0", "4"]) == 0
    assert capsys.readouterr().out.startswith("0 -> 4  METER TER12")
    assert sim.firmware.sensors[0].address == "4"
    assert main(["probe", "address", sim.link, "?", "5"]) == 0
    assert sim.firmware.sensors[0].address == "5"


def test_address_refuses_one_already_taken(sdi_bus, capsys):
    sim = sdi_bus("0,1")
    assert main(["probe", "address", sim.link, "0", "1"]) == 1
    assert "already taken" in capsys.readouterr().err
    assert [s.address for s in sim.firmware.sensors] == ["0", "1"]
