"""The observatory configuration: typed values, one clear line per mistake, exit 2 from `humus ingest`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from humus.config import ConfigError
from observatory.config import load_observatory_config, state_path

REPO = Path(__file__).resolve().parents[2]

GOOD = """
[ingest]
store = "sqlite:/var/lib/humus/archive.sqlite"
group = "humus-ingest"
client_id = "ingest-a"
gateways = ["farm-1/gw-1", "farm-1/gw-2"]
batch_messages = 500
batch_latency_s = 0.5

[mqtt]
host = "broker.example.org"
port = 8883
tls = true
"""


def write(tmp_path: Path, text: str) -> Path:
    """The file, with /var/lib/humus moved to tmp_path: store directories must exist to be valid."""
    p = tmp_path / "observatory.toml"
    p.write_text(textwrap.dedent(text).replace("/var/lib/humus", str(tmp_path)))
    return p


def test_good_config_loads_into_typed_values_with_defaults(tmp_path):
    cfg = load_observatory_config(write(tmp_path, GOOD))
    assert cfg.ingest.gateways == ("farm-1/gw-1", "farm-1/gw-2")
    assert cfg.ingest.batch_messages == 500 and cfg.ingest.subscription == "shared"
    assert cfg.client_id == "ingest-a" and cfg.mqtt.protocol == "5"
    assert state_path(cfg) == tmp_path / "archive.sqlite.ingest.sqlite"


BASE = """
[ingest]
store = "sqlite:/var/lib/humus/archive.sqlite"
{change}
"""


@pytest.mark.parametrize("change, key", [
    ('group = "a/b"', "ingest.group"),
    ('gateways = ["farm-1"]', "ingest.gateways"),
    ('subscription = "exclusive"', "ingest.subscription"),
    ("batch_messages = 0", "ingest.batch_messages"),
    ("retry_min_s = 5.0\nretry_max_s = 1.0", "ingest.retry_max_s"),
    ("colour = 3", "ingest.colour"),
    ('[mqtt]\nprotocol = "4"', "mqtt.protocol"),
    ('[mqtt]\nclient_id = "a/b"', "mqtt.client_id"),
])
def test_each_bad_value_is_one_error_naming_its_key(tmp_path, change, key):
    with pytest.raises(ConfigError) as e:
        load_observatory_config(write(tmp_path, BASE.format(change=change)))
    assert e.value.key == key, str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("store, key", [("mongodb://x", "ingest.store"),
                                        ("influxdb://127.0.0.1:8086/humus", "ingest.state_file")])
def test_a_store_must_be_known_and_influx_needs_a_state_file(tmp_path, store, key):
    with pytest.raises(ConfigError) as e:
        load_observatory_config(write(tmp_path, f'[ingest]\nstore = "{store}"\n'))
    assert e.value.key == key, str(e.value)


def test_influx_store_with_a_state_file_is_accepted(tmp_path):
    text = GOOD.replace('store = "sqlite:/var/lib/humus/archive.sqlite"',
                        'store = "influxdb://127.0.0.1:8086/humus"\nstate_file = "/var/lib/humus/ingest.sqlite"')
    cfg = load_observatory_config(write(tmp_path, text))
    assert state_path(cfg) == tmp_path / "ingest.sqlite"


def _humus(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # `python -m observatory.ingest` is `humus ingest` (python -m humus.cli would load humus.cli twice).
    assert args[0] == "ingest"
    return subprocess.run([sys.executable, "-m", "observatory.ingest", *args[1:]], capture_output=True, text=True,
                          timeout=60, env=env, cwd=REPO)


def test_humus_ingest_with_a_bad_config_prints_one_line_and_exits_2(tmp_path):
    bad = write(tmp_path, GOOD.replace("batch_messages = 500", "batch_messages = -1"))
    r = _humus("ingest", "--config", str(bad))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "ingest.batch_messages" in lines[0] and "Traceback" not in r.stderr
    missing = _humus("ingest", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_humus_ingest_with_an_unusable_state_directory_says_so_in_one_line(tmp_path):
    cfg = write(tmp_path, f'''
        [ingest]
        store = "sqlite:{tmp_path}/archive.sqlite"
        state_file = "{tmp_path}/missing/dir/state.sqlite"
        ''')
    r = _humus("ingest", "--config", str(cfg))
    assert r.returncode == 2     # the configuration names it: the user's to fix (issue 14)
    assert len(r.stderr.strip().splitlines()) == 1 and "missing/dir" in r.stderr and "Traceback" not in r.stderr
