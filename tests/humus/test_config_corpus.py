"""One truth for what is valid: `check-config`, `collect` and `ingest` agree on every broken file.

Each broken configuration below is generated from a valid one. `humus
check-config` and the daemon that reads that kind of file (`collect` for a
gateway, `ingest` for an observatory) must give the same one-line verdict
with exit status 2, and the other daemon status 2 as well; a file
`check-config` calls ok must be one the daemon builds (issue 14).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from corpus_support import fit_small_model, humus, one_line_after_prefix, self_signed

REPO = Path(__file__).resolve().parents[2]

GATEWAY = """\
[gateway]
site = "farm-1"
id = "gw-1"
data_dir = "{d}/data"
clock_check = "epoch"

[mqtt]
host = "127.0.0.1"
port = 1883

[[probes]]
id = "teros-a"
driver = "teros12"
port = "{d}/dev/sdi12"
address = "0"
interval_s = 60
[probes.calibration.vwc]
model = "teros12_vwc"
input = "raw_counts"
[probes.qc.soil_temp]
gross_range = { fail_span = [-40, 60], suspect_span = [-10, 45] }

[[probes]]
id = "nir-a"
driver = "nir-spectrometer"
port = "{d}/dev/nir"
interval_s = 120
[probes.calibration.soc]
model = "spectral"
path = "{d}/model.npz"
kind = "counts"
"""

OBSERVATORY = """\
[ingest]
store = "sqlite:{d}/archive.sqlite"
client_id = "ingest-1"

[mqtt]
host = "127.0.0.1"
port = 1883
"""


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """Files the broken configurations point at: models, PEM files, a password file."""
    d = tmp_path_factory.mktemp("corpus")
    fit_small_model(d / "model.npz")
    fit_small_model(d / "model-1100.npz", 1100.0, 2498.0)
    (d / "garbage.npz").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 40)
    np.savez(d / "pickled.npz", meta=np.array([{"format": "humus-spectral-model"}], dtype=object))
    raw = (d / "model.npz").read_bytes()
    (d / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    crt, key = self_signed(d)
    (d / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    (d / "pw").write_text("s3cret\n")
    os.chmod(d / "pw", 0o600)
    (d / "pw-open").write_text("s3cret\n")
    os.chmod(d / "pw-open", 0o644)
    (d / "pw-empty").write_text("\n")
    os.chmod(d / "pw-empty", 0o600)
    (d / "key-open.pem").write_bytes(key.read_bytes())
    os.chmod(d / "key-open.pem", 0o644)
    (d / "data-file").write_text("not a directory\n")
    (d / "not-a-dir").write_text("")
    os.mkfifo(d / "fifo")
    return d


def _mqtt(extra: str) -> tuple[str, str]:
    return ("[mqtt]\n", "[mqtt]\n" + extra + "\n")


# (id, replacements (old, new) applied to GATEWAY, key or phrase the message must name)
GATEWAY_CASES = [
    ("unknown-driver", [('driver = "teros12"', 'driver = "teros-12"')], "probes[0].driver"),
    ("unknown-option", [('address = "0"\n', 'address = "0"\noptions = { colour = "red" }\n')],
     "probes[0].options.colour"),
    ("option-wrong-type", [('address = "0"\n', 'address = "0"\noptions = { crc = "yes" }\n')], "probes[0].options.crc"),
    ("option-out-of-range", [('address = "0"\n', 'address = "0"\noptions = { attempts = 0 }\n')],
     "probes[0].options.attempts"),
    ("option-bad-command", [('address = "0"\n', 'address = "0"\noptions = { command = "X" }\n')],
     "probes[0].options.command"),
    ("bad-sdi12-address", [('address = "0"', 'address = "!!"')], "probes[0].address"),
    ("address-on-point-to-point", [('interval_s = 120\n', 'interval_s = 120\naddress = "3"\n')],
     "probes[1].address"),
    ("model-missing", [("model.npz", "no-such-model.npz")], "probes[1].calibration.soc.path"),
    ("model-garbage", [("model.npz", "garbage.npz")], "probes[1].calibration.soc.path"),
    ("model-pickled", [("model.npz", "pickled.npz")], "probes[1].calibration.soc.path"),
    ("model-truncated", [("model.npz", "truncated.npz")], "probes[1].calibration.soc.path"),
    ("model-outside-probe-range", [("model.npz", "model-1100.npz")], "1350-2500 nm"),
    ("model-is-a-fifo", [("model.npz", "fifo")], "FIFO"),
    ("spectral-on-a-probe-without-spectra", [('[probes.calibration.vwc]\nmodel = "teros12_vwc"\ninput = "raw_counts"',
                                              '[probes.calibration.soc]\nmodel = "spectral"\npath = "{d}/model.npz"')],
     "probes[0].calibration.soc.model"),
    ("counts-from-a-probe-without-references", [('driver = "nir-spectrometer"', 'driver = "as7265x"')],
     "probes[1].calibration.soc"),
    ("fail-span-reversed", [("fail_span = [-40, 60]", "fail_span = [60, -40]")],
     "probes[0].qc.soil_temp.gross_range.fail_span"),
    ("fail-span-nan", [("fail_span = [-40, 60], suspect_span = [-10, 45]", "fail_span = [nan, nan]")],
     "probes[0].qc.soil_temp.gross_range.fail_span[0]"),
    ("fail-span-inf", [("fail_span = [-40, 60]", "fail_span = [-inf, 60]")], "fail_span[0]"),
    ("suspect-outside-fail", [("suspect_span = [-10, 45]", "suspect_span = [-50, 45]")], "suspect_span"),
    ("spike-without-threshold", [("gross_range = {", "spike = { method = \"average\" }\ngross_range = {")],
     "probes[0].qc.soil_temp.spike"),
    ("flat-line-shorter-than-two-polls", [("gross_range = {", "flat_line = { suspect_threshold_s = 60, "
                                           "fail_threshold_s = 60 }\ngross_range = {")],
     "flat_line.suspect_threshold_s"),
    ("qc-on-a-quantity-never-reported", [("[probes.qc.soil_temp]", "[probes.qc.air_temp]")], "probes[0].qc.air_temp"),
    ("site-with-newline", [('site = "farm-1"', 'site = "farm-1\\n"')], "gateway.site"),
    ("probe-id-with-newline", [('id = "teros-a"', 'id = "teros-a\\n"')], "probes[0].id"),
    ("calibration-input-not-a-quantity", [('input = "raw_counts"', 'input = "raw"')],
     "probes[0].calibration.vwc.input"),
    ("bad-usb-port", [('port = "{d}/dev/nir"', 'port = "usb:zz:01"')], "probes[1].port"),
    ("mixed-line-settings-on-one-port", [('port = "{d}/dev/nir"', 'port = "{d}/dev/sdi12"')], "probes[1].port"),
    ("data-dir-is-a-file", [('data_dir = "{d}/data"', 'data_dir = "{d}/data-file"')], "gateway.data_dir"),
    ("password-file-missing", [_mqtt('username = "gw-1"\npassword_file = "{d}/nope"')], "mqtt.password_file"),
    ("password-file-world-readable", [_mqtt('username = "gw-1"\npassword_file = "{d}/pw-open"')],
     "mqtt.password_file"),
    ("password-file-empty", [_mqtt('username = "gw-1"\npassword_file = "{d}/pw-empty"')], "mqtt.password_file"),
    ("password-file-without-username", [_mqtt('password_file = "{d}/pw"')], "mqtt.username"),
    ("password-file-is-a-fifo", [_mqtt('username = "gw-1"\npassword_file = "{d}/fifo"')], "FIFO"),
    ("ca-file-garbage", [_mqtt('tls = true\nca_file = "{d}/garbage.pem"')], "mqtt.ca_file"),
    ("ca-file-missing", [_mqtt('tls = true\nca_file = "{d}/nope.pem"')], "mqtt.ca_file"),
    ("ca-file-without-tls", [_mqtt('ca_file = "{d}/client.crt"')], "mqtt.tls"),
    ("cert-with-garbage-key", [_mqtt('tls = true\ncert_file = "{d}/client.crt"\nkey_file = "{d}/pw"')],
     "mqtt.cert_file"),
    ("key-file-world-readable", [_mqtt('tls = true\ncert_file = "{d}/client.crt"\nkey_file = "{d}/key-open.pem"')],
     "mqtt.key_file"),
    ("key-without-cert", [_mqtt('tls = true\nkey_file = "{d}/client.key"')], "mqtt.cert_file"),
    ("unknown-key", [('clock_check = "epoch"', 'clock_check = "epoch"\ncolour = "red"')], "gateway.colour"),
    ("duplicate-probe-id", [('id = "nir-a"', 'id = "teros-a"')], "probes[1].id"),
]

OBSERVATORY_CASES = [
    ("unknown-scheme", [('store = "sqlite:{d}/archive.sqlite"', 'store = "mongodb://h/x"')], "ingest.store"),
    ("store-directory-missing", [("{d}/archive.sqlite", "{d}/missing/archive.sqlite")], "ingest.store"),
    ("store-is-a-directory", [("{d}/archive.sqlite", "{d}")], "ingest.store"),
    ("store-is-a-fifo", [("{d}/archive.sqlite", "{d}/fifo")], "FIFO"),
    ("state-directory-missing", [('client_id = "ingest-1"', 'client_id = "ingest-1"\n'
                                                           'state_file = "{d}/missing/state.sqlite"')],
     "ingest.state_file"),
    ("credentials-in-url", [('store = "sqlite:{d}/archive.sqlite"',
                             'store = "influxdb://u:p@127.0.0.1:8086/humus"\nstate_file = "{d}/state.sqlite"')],
     "credentials"),
    ("bad-ipv6-url", [('store = "sqlite:{d}/archive.sqlite"',
                       'store = "influxdb://[::1/humus"\nstate_file = "{d}/state.sqlite"')], "ingest.store"),
    ("negative-timeout", [('store = "sqlite:{d}/archive.sqlite"',
                           'store = "influxdb://127.0.0.1:8086/humus?timeout=-5"\nstate_file = "{d}/state.sqlite"')],
     "timeout"),
    ("credentials-file-world-readable", [('store = "sqlite:{d}/archive.sqlite"',
                                          'store = "influxdb://127.0.0.1:8086/humus?credentials={d}/pw-open"\n'
                                          'state_file = "{d}/state.sqlite"')], "ingest.store"),
    ("password-file-missing", [_mqtt('username = "ingest-1"\npassword_file = "{d}/nope"')], "mqtt.password_file"),
    ("ca-file-garbage", [_mqtt('tls = true\nca_file = "{d}/garbage.pem"')], "mqtt.ca_file"),
    ("client-id-with-newline", [('client_id = "ingest-1"', 'client_id = "ingest-1\\n"')], "ingest.client_id"),
    ("gateway-ref-with-newline", [('client_id = "ingest-1"', 'client_id = "ingest-1"\ngateways = ["farm-1/gw-1\\n"]')],
     "ingest.gateways"),
]


def _write(d: Path, template: str, changes, name: str) -> Path:
    text = template
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    p = d / f"{name}.toml"
    p.write_text(text.replace("{d}", str(d)))
    return p


@pytest.fixture(autouse=True)
def _keep_umask():
    """`humus collect` and `ingest` tighten the process umask; keep it for the other tests."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _verdicts(capsys, path: Path, own: str, other: str) -> str:
    status, out, err = humus(capsys, "check-config", str(path))
    assert status == 2, f"check-config accepted {path.name}: {out}{err}"
    checked = one_line_after_prefix(err, "check-config")
    status, _, err = humus(capsys, own, "--config", str(path))
    assert status == 2, err
    assert one_line_after_prefix(err, own) == checked, "check-config and the daemon disagree"
    status, _, err = humus(capsys, other, "--config", str(path))
    assert status == 2
    one_line_after_prefix(err, other)
    return checked


def test_the_valid_files_are_ok_and_build(corpus_dir, capsys):
    for template, kind in ((GATEWAY, "gateway farm-1/gw-1 with 2 probe(s)"), (OBSERVATORY, "ingest into sqlite")):
        p = _write(corpus_dir, template, [], "good-" + kind.split()[0])
        status, out, err = humus(capsys, "check-config", str(p))
        assert status == 0 and kind in out, err
    from collector.config import load_gateway_config
    from collector.daemon import build_probes, close_probes

    probes = build_probes(load_gateway_config(corpus_dir / "good-gateway.toml"))
    assert sorted(p.settings.id for ps in probes.values() for p in ps) == ["nir-a", "teros-a"]
    close_probes(probes)


@pytest.mark.parametrize("name, changes, expected", GATEWAY_CASES, ids=[c[0] for c in GATEWAY_CASES])
def test_a_broken_gateway_file_gets_the_same_verdict_from_check_config_and_collect(
        corpus_dir, capsys, name, changes, expected):
    message = _verdicts(capsys, _write(corpus_dir, GATEWAY, changes, "gw-" + name), "collect", "ingest")
    assert expected in message, message


@pytest.mark.parametrize("name, changes, expected", OBSERVATORY_CASES, ids=[c[0] for c in OBSERVATORY_CASES])
def test_a_broken_observatory_file_gets_the_same_verdict_from_check_config_and_ingest(
        corpus_dir, capsys, name, changes, expected):
    message = _verdicts(capsys, _write(corpus_dir, OBSERVATORY, changes, "obs-" + name), "ingest", "collect")
    assert expected in message, message


def test_the_unknown_driver_message_reads_well(corpus_dir, capsys):
    p = _write(corpus_dir, GATEWAY, GATEWAY_CASES[0][1], "driver-message")
    message = one_line_after_prefix(humus(capsys, "check-config", str(p))[2], "check-config")
    assert message.endswith("probes[0].driver: expected one of the known drivers (as7265x, ascii-temp, modbus-soil, "
                            "nir-spectrometer, teros12), got 'teros-12'"), message


def _unreadable_files(d: Path) -> list[tuple[str, Path, str]]:
    """(case, path, phrase) for files no configuration reader may hang or crash on."""
    loop_a, loop_b = d / "loop-a.toml", d / "loop-b.toml"
    if not loop_a.is_symlink():
        loop_a.symlink_to(loop_b)
        loop_b.symlink_to(loop_a)
    (d / "deep-arrays.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    (d / "deep-tables.toml").write_text("a = " + "{ b = " * 3000 + "1" + " }" * 3000 + "\n")
    (d / "deep-dotted.toml").write_text("a" + ".b" * 20000 + " = 1\n")
    (d / "latin1.toml").write_bytes(b'[gateway]\nsite = "caf\xe9"\n')
    (d / "nul.toml").write_bytes(b'[gateway]\nsite = "a\x00b"\n')
    (d / "not-toml.toml").write_text("[gateway\nsite = \n")
    (d / "empty.toml").write_text("")
    return [("missing", d / "nope.toml", "not found"), ("directory", d, "directory"),
            ("fifo", d / "fifo", "FIFO"), ("device", Path("/dev/zero"), "character device"),
            ("symlink-loop", loop_a, "symbolic link loop"), ("deep-arrays", d / "deep-arrays.toml", "nested"),
            ("deep-tables", d / "deep-tables.toml", "nested"), ("deep-dotted", d / "deep-dotted.toml", "nested"),
            ("latin1", d / "latin1.toml", "UTF-8"), ("nul", d / "nul.toml", "TOML"),
            ("not-toml", d / "not-toml.toml", "valid TOML"), ("empty", d / "empty.toml", "expected")]


def test_files_no_reader_may_hang_or_crash_on_get_one_line_and_status_2(corpus_dir, capsys):
    for case, path, phrase in _unreadable_files(corpus_dir):
        messages = {}
        for command in ("check-config", "collect", "ingest"):
            argv = [command, str(path)] if command == "check-config" else [command, "--config", str(path)]
            status, _, err = humus(capsys, *argv)
            assert status == 2, (case, command, err)
            messages[command] = one_line_after_prefix(err, command)
            assert phrase in messages[command], (case, command, messages[command])
        if case != "empty":         # an empty file is neither kind: each command says what it needs
            assert len(set(messages.values())) == 1, (case, messages)


def test_a_fifo_config_does_not_hang_the_real_command(corpus_dir):
    """As a subprocess: open() on a FIFO blocks until a writer comes; the reader must never open it."""
    r = subprocess.run([sys.executable, "-m", "humus.cli", "check-config", str(corpus_dir / "fifo")],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 2 and "FIFO" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_10_mb_file_with_130001_probes_is_refused_at_once(tmp_path, capsys):
    probe = '[[probes]]\nid = "p{}"\ndriver = "teros12"\nport = "/dev/null"\n'
    big = tmp_path / "big.toml"
    with big.open("w") as f:
        f.write('[gateway]\nsite = "s"\nid = "g"\n')
        for i in range(130_001):
            f.write(probe.format(i))
        f.write("#" * max(0, 10_000_000 - f.tell()) + "\n")
    started = time.monotonic()
    status, _, err = humus(capsys, "check-config", str(big))
    assert status == 2 and "at most 1048576 bytes" in one_line_after_prefix(err, "check-config")
    assert time.monotonic() - started < 10      # was 95 s before the size bound; now a stat()


def test_more_probes_than_the_documented_bound_are_refused(tmp_path, capsys):
    from collector.config import MAX_PROBES

    text = '[gateway]\nsite = "s"\nid = "g"\n' + "".join(
        f'[[probes]]\nid = "p{i}"\ndriver = "teros12"\nport = "/dev/null"\n' for i in range(MAX_PROBES + 1))
    p = tmp_path / "many.toml"
    p.write_text(text)
    status, _, err = humus(capsys, "check-config", str(p))
    assert status == 2 and f"at most {MAX_PROBES} [[probes]]" in one_line_after_prefix(err, "check-config")


def test_texts_that_make_a_naive_scanner_quadratic_are_read_in_one_pass(tmp_path):
    """1 MiB of one word, of unterminated escapes, of quotes: a backtracking scan took 287 s on 128 KB."""
    texts = {"word": "a" * 1_000_000, "escapes": 'x = "' + '\\"' * 400_000, "quotes": '"' * 1_000_000,
             "dots": "a." * 500_000, "brackets": "x = " + "[" * 1_000_000}
    paths = []
    for name, text in texts.items():
        paths.append(tmp_path / f"{name}.toml")
        paths[-1].write_text(text)
    code = ("import sys\nfrom humus.config import ConfigError, read_toml\n"
            "for p in sys.argv[1:]:\n    try:\n        read_toml(p)\n    except ConfigError as e:\n        print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True,
                       timeout=120, cwd=REPO)      # quadratic would take hours
    assert r.returncode == 0 and len(r.stdout.splitlines()) == len(texts), r.stderr[-2000:]
