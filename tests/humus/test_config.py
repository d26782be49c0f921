"""Configuration errors are one clear line naming the file, the key and the expectation; exit 2."""

import subprocess
import sys
import textwrap

import pytest

from collector.config import load_gateway_config
from humus.config import ConfigError

GOOD = """
[gateway]
site = "farm-1"
id = "gw-1"
data_dir = "/tmp/humus"

[mqtt]
host = "broker.example.org"
port = 8883
tls = true

[[probes]]
id = "teros-a"
driver = "teros12"
port = "/dev/serial/by-id/usb-sdi12"
address = "0"
interval_s = 900
depth_cm = 10
"""


def write(tmp_path, text, name="gateway.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_good_gateway_config_loads_into_typed_values(tmp_path):
    cfg = load_gateway_config(write(tmp_path, GOOD))
    assert cfg.gateway.site == "farm-1"
    assert cfg.mqtt.port == 8883 and cfg.mqtt.tls is True
    assert cfg.probes[0].interval_s == 900.0 and isinstance(cfg.probes[0].interval_s, float)
    assert cfg.probes[0].depth_cm == 10.0


@pytest.mark.parametrize("old, new, key, phrase", [
    ('port = 8883', 'port = "8883"', "mqtt.port", "a whole number"),
    ('port = 8883', 'port = 70000', "mqtt.port", "a TCP port"),
    ('tls = true', 'tls = "yes"', "mqtt.tls", "true or false"),
    ('interval_s = 900', 'interval_s = -5', "probes[0].interval_s", "1 to 86400 seconds"),
    ('site = "farm-1"', 'site = "Farm One"', "gateway.site", "an id"),
    ('id = "gw-1"', 'id = "gw-1"\ncolour = "red"', "gateway.colour", "unknown key"),
    ('site = "farm-1"\n', '', "gateway.site", "required"),
    ('driver = "teros12"\n', '', "probes[0].driver", "required"),
])
def test_bad_value_names_file_key_and_expectation(tmp_path, old, new, key, phrase):
    p = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_gateway_config(p)
    msg = str(e.value)
    assert msg.startswith(str(p)) and key in msg and phrase in msg and "\n" not in msg


def test_duplicate_probe_ids_are_refused(tmp_path):
    p = write(tmp_path, GOOD + GOOD[GOOD.index("[[probes]]"):])
    with pytest.raises(ConfigError, match=r"probes\[1\]\.id.*not used by another probe"):
        load_gateway_config(p)


def humus(*args):
    return subprocess.run([sys.executable, "-m", "humus.cli", *args], capture_output=True, text=True, timeout=60)


def test_check_config_accepts_a_good_file(tmp_path):
    r = humus("check-config", str(write(tmp_path, GOOD)))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout and "farm-1/gw-1" in r.stdout


@pytest.mark.parametrize("text, phrase", [
    (GOOD.replace("port = 8883", 'port = "x"'), "mqtt.port: expected a whole number, got 'x'"),
    ("[gateway\nsite=1", "valid TOML"),
    ("[something]\n", "a [gateway] table"),
])
def test_check_config_on_a_broken_file_prints_one_line_and_exits_2(tmp_path, text, phrase):
    r = humus("check-config", str(write(tmp_path, text)))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and phrase in lines[0] and "Traceback" not in r.stderr


def test_check_config_on_a_missing_file_exits_2(tmp_path):
    r = humus("check-config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "not found" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_every_subcommand_has_help():
    from humus.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:
        r = humus(name, "--help")
        assert r.returncode == 0 and "usage: humus" in r.stdout, name


def test_version_is_printed():
    from humus import __version__

    r = humus("--version")
    assert r.returncode == 0 and __version__ in r.stdout
