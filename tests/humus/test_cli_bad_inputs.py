"""Every subcommand over bad arguments and bad input files: one line, no traceback, the documented status.

Status 2 for anything the user gave (arguments, configuration, input
files), 1 for the environment (a server down, a port that is not there).
Most cases run in process through `humus.cli.main`; a few run the real
entry point as a subprocess (non-UTF-8 arguments, files that would hang).
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from corpus_support import fit_small_model, humus, one_line_after_prefix

REPO = Path(__file__).resolve().parents[2]
NIRSOIL = REPO / "tests" / "calibration" / "data" / "nirsoil_subset.csv"


def _npy(array_header: dict, data: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, array_header)
    return buf.getvalue() + data


def _adversarial_models(d: Path, good: Path) -> dict[str, Path]:
    """Model files a gateway or `humus calibrate` must refuse before reading their arrays."""
    from calibration.model import content_hash

    files: dict[str, Path] = {}
    # An array declaring 3 GiB whose member holds a few bytes (the zip directory says so).
    files["declares-3-gib"] = d / "declares-3-gib.npz"
    with zipfile.ZipFile(files["declares-3-gib"], "w") as z:
        z.writestr("meta.npy", _npy({"descr": "<U2", "fortran_order": False, "shape": ()}, "{}".encode("utf-32-le")))
        z.writestr("weights.npy", _npy({"descr": "<f8", "fortran_order": False, "shape": (402_653_184,)}, b"\0" * 64))
    # A zip bomb: 64 MiB of zeros that compress to about 64 KB, honestly declared.
    files["zip-bomb"] = d / "zip-bomb.npz"
    with zipfile.ZipFile(files["zip-bomb"], "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("meta.npy", _npy({"descr": "<U2", "fortran_order": False, "shape": ()}, "{}".encode("utf-32-le")))
        z.writestr("library_x.npy", _npy({"descr": "<f8", "fortran_order": False, "shape": (8 << 20,)},
                                         bytes(64 << 20)))
    files["deep-description"] = d / "deep-description.npz"
    np.savez(files["deep-description"], meta=np.array("[" * 100_000 + "]" * 100_000))
    files["pickled"] = d / "pickled.npz"
    np.savez(files["pickled"], meta=np.array([{"format": "humus-spectral-model"}], dtype=object))
    # Re-hashed after cutting a band off the PLS weights: the hash is right, the shapes are not.
    with np.load(good) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    arrays["weights"] = arrays["weights"][:-1]
    meta["content_hash"] = content_hash(meta, arrays)
    files["rehashed-wrong-shapes"] = d / "rehashed.npz"
    np.savez_compressed(files["rehashed-wrong-shapes"], meta=np.array(json.dumps(meta)), **arrays)
    files["garbage"] = d / "garbage.npz"
    files["garbage"].write_bytes(os.urandom(4096))
    files["truncated"] = d / "truncated.npz"
    files["truncated"].write_bytes(good.read_bytes()[:2000])
    return files


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad-inputs")
    good = fit_small_model(d / "good.npz", 1100.0, 2498.0, bands=175)
    files = {"dir": d, "good-model": good, "fifo": d / "fifo", **_adversarial_models(d, good)}
    os.mkfifo(files["fifo"])
    # Archives: a good one, one with a dropped table, one with text in the value column.
    from humus.records import Observation, QualityFlag
    from observatory.stores.sqlite import SqliteStore

    files["archive"] = d / "archive.sqlite"
    store = SqliteStore(files["archive"])
    now = time.time_ns()
    store.write([Observation(site="s", gateway="g", probe="p", time_ns=now - i * 10**9, quantity="vwc", value=0.1,
                             unit="m3/m3", flag=QualityFlag.PASS) for i in range(3)])
    store.close()
    for name, sql in (("archive-dropped", "DROP TABLE label"), ("archive-text", "UPDATE observation SET value='abc'")):
        files[name] = d / f"{name}.sqlite"
        files[name].write_bytes(files["archive"].read_bytes())
        con = sqlite3.connect(files[name])
        con.execute(sql)
        con.commit()
        con.close()
    files["not-sqlite"] = d / "not-sqlite.sqlite"
    files["not-sqlite"].write_bytes(b"SQLite format 3\0" + os.urandom(2000))
    # Spectral CSVs: NUL bytes, a text cell, latin-1.
    text = NIRSOIL.read_bytes()
    files["csv-nul"] = d / "nul.csv"
    files["csv-nul"].write_bytes(text[:5000] + b"\0\0" + text[5000:])
    files["csv-text"] = d / "text.csv"
    lines = text.decode().splitlines()
    cells = lines[3].split(",")
    cells[10] = "n/a"
    lines[3] = ",".join(cells)
    files["csv-text"].write_text("\n".join(lines) + "\n")
    files["csv-latin1"] = d / "latin1.csv"
    files["csv-latin1"].write_bytes(b"sample,1100\ncaf\xe9,0.5\n")
    return files


def _cases(f: dict[str, Path]) -> list[tuple[list[str], int, str]]:
    d = f["dir"]
    store = f"sqlite:{f['archive']}"
    fit = ["calibrate", "fit", "--data", str(NIRSOIL), "--target", "Ciso", "--out", str(d / "out.npz")]
    return [
        # query: store URLs, times, limits, damaged archives
        (["query", "--store", "influxdb://[::1/humus"], 2, "malformed"),
        (["query", "--store", "influxdb://127.0.0.1:8086/humus?timeout=-5"], 2, "timeout"),
        (["query", "--store", "influxdb://127.0.0.1:8086/humus?retries=1e9"], 2, "retries"),
        (["query", "--store", "influxdb://u:p@127.0.0.1:8086/humus"], 2, "credentials"),
        (["query", "--store", "mongodb://h/x"], 2, "unknown"),
        (["query", "--store", store, "--since", "-999999999999d"], 2, "reaches before"),
        (["query", "--store", store, "--since", "-" + "9" * 400 + "d"], 2, "reaches before"),
        (["query", "--store", store, "--until", "9999-12-31"], 2, "expected a time from"),
        (["query", "--store", store, "--since", "last tuesday"], 2, "ISO 8601"),
        (["query", "--store", store, "--limit", "1e29"], 2, "--limit"),
        (["query", "--store", store, "--limit", "99999999999"], 2, "--limit"),
        (["query", "--store", store, "--limit", "-3"], 2, "--limit"),
        (["query", "--store", store, "--format", "xml"], 2, "--format"),
        (["query", "--store", store, "--probe", "p\udcff"], 2, "UTF-8"),
        (["query", "--store", f"sqlite:{d / 'none.sqlite'}"], 2, "no archive"),
        (["query", "--store", f"sqlite:{f['fifo']}"], 2, "no archive"),
        (["query", "--store", "sqlite:/dev/zero"], 2, "no archive"),
        (["query", "--store", f"sqlite:{f['archive-dropped']}"], 2, "cannot read"),
        (["query", "--store", f"sqlite:{f['archive-text']}"], 2, "cannot read"),
        (["query", "--store", f"sqlite:{f['not-sqlite']}"], 2, "SQLite"),
        # calibrate: data files, numbers, model files
        (["calibrate"], 2, ""),
        ([*fit[:3], str(d / "none.csv"), *fit[4:]], 2, "not found"),
        ([*fit[:3], str(f["fifo"]), *fit[4:]], 2, "FIFO"),
        ([*fit[:3], "/dev/zero", *fit[4:]], 2, "character device"),
        ([*fit[:3], str(f["csv-nul"]), *fit[4:]], 2, "NUL byte"),
        ([*fit[:3], str(f["csv-text"]), *fit[4:]], 2, "line 4, column"),
        ([*fit[:3], str(f["csv-latin1"]), *fit[4:]], 2, "UTF-8"),
        ([*fit, "--folds", "1"], 2, "expected 2 to 120 folds for 120 samples"),
        ([*fit, "--folds", "0"], 2, "folds"),
        ([*fit, "--components", "0"], 2, "--components"),
        ([*fit, "--max-components", "-1"], 2, "--max-components"),
        ([*fit, "--sg", "a,b"], 2, "--sg"),
        ([*fit, "--grid", "9:1:1"], 2, "--grid"),
        ([*fit, "--local", "x"], 2, "--local"),
        ([*fit, "--holdout", "2"], 2, "--holdout"),
        ([*fit, "--select", "nosep"], 2, "--select"),
        ([*fit[:5], "NoSuchColumn", *fit[6:]], 2, "NoSuchColumn"),
        ([*fit[:7], str(d / "missing-dir" / "m.npz")], 2, "cannot write"),
        *[(["calibrate", "show", str(f[name])], 2, phrase) for name, phrase in (
            ("declares-3-gib", "declares"), ("zip-bomb", "more than"), ("deep-description", "nested"),
            ("pickled", "pickle"), ("rehashed-wrong-shapes", "shape"), ("garbage", "not a Humus model"),
            ("truncated", "not a readable"), ("fifo", "FIFO"), ("dir", "directory"))],
        (["calibrate", "show", "/dev/zero"], 2, "character device"),
        (["calibrate", "evaluate", "--model", str(f["rehashed-wrong-shapes"]), "--data", str(NIRSOIL)], 2, "shape"),
        (["calibrate", "evaluate", "--model", str(f["good-model"]), "--data", str(f["csv-nul"])], 2, "NUL"),
        # probe: names, addresses, options (a port that is not there is the environment: 1)
        (["probe", "read", "--port", str(d / "tty"), "--driver", "teros-12"], 2, "unknown driver"),
        (["probe", "read", "--port", str(d / "tty"), "--driver", "teros12", "--address", "!!"], 2, "address"),
        (["probe", "read", "--port", str(d / "tty"), "--driver", "teros12", "--option", "attempts=0"], 2, "attempts"),
        (["probe", "read", "--port", str(d / "tty"), "--driver", "ascii-temp", "--option", "timeout_s=abc"], 2,
         "timeout_s"),
        (["probe", "read", "--port", str(d / "tty"), "--driver", "modbus-soil", "--address", "300"], 2, "1-247"),
        (["probe", "read", "--port", "usb:zz", "--driver", "teros12"], 2, "usb"),
        (["probe", "read", "--port", str(d / "tty"), "--driver", "teros12"], 1, "ABSENT"),
        (["probe", "scan", str(d / "tty"), "--addresses", "z-a"], 2, "addresses"),
        (["probe", "scan", str(d / "tty"), "--timeout", "99"], 2, "--timeout"),
        (["probe", "scan", str(d / "tty"), "--addresses", "0"], 1, "cannot open"),
        (["probe", "address", str(d / "tty"), "!!", "3"], 2, "address"),
        # sim, demo, daemons, check-config
        (["sim", "--probe", "nope", "--link", str(d / "x")], 2, "nope"),
        (["sim", "--probe", "teros12"], 2, "--link"),
        (["sim", "--probe", "teros12", "--link", str(d / "x"), "--fault", "bogus"], 2, "bogus"),
        (["demo", "--duration", "-1"], 2, "--duration"),
        (["demo", "--interval", "0"], 2, "--interval"),
        (["demo", "--broker", "nohost"], 2, "--broker"),
        (["collect"], 2, "--config"),
        (["ingest"], 2, "--config"),
        (["check-config"], 2, "file"),
        (["no-such-command"], 2, "invalid choice"),
    ]


def test_every_subcommand_answers_bad_input_with_one_line_and_its_status(inputs, capsys):
    for argv, status, phrase in _cases(inputs):
        got, out, err = humus(capsys, *argv)
        assert got == status, (argv, got, err[-500:])
        assert "Traceback" not in err
        if argv == ["calibrate"]:        # the bare group prints its help, as documented
            continue
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("scanning ")]
        # `probe read` prints the reading, ABSENT included, on stdout: a failed poll is a result
        assert len(lines) == (0 if argv[:2] == ["probe", "read"] and got == 1 else 1), (argv, err[-800:])
        assert phrase in "".join(lines) + out, (argv, lines, out[-300:])


def test_a_server_that_is_down_is_the_environment_exit_1(capsys):
    import socket

    with socket.socket() as s:       # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, _, err = humus(capsys, "query", "--store", f"influxdb://127.0.0.1:{port}/humus?retries=0&timeout=2")
    assert status == 1 and "unreachable" in one_line_after_prefix(err, "query")


def test_the_real_entry_point_refuses_non_utf8_arguments_and_hanging_files(inputs):
    """As subprocesses: bytes that are not UTF-8 in argv, and a FIFO as a model, a CSV and an archive."""
    fifo = os.fsencode(inputs["fifo"])
    for argv in ([b"query", b"--store", b"sqlite:" + os.fsencode(inputs["archive"]), b"--probe", b"caf\xe9"],
                 [b"calibrate", b"show", fifo],
                 [b"calibrate", b"fit", b"--data", fifo, b"--target", b"Ciso", b"--out", b"/dev/null"],
                 [b"check-config", b"\xff\xfe.toml"]):
        r = subprocess.run([sys.executable.encode(), b"-m", b"humus.cli", *argv], capture_output=True, timeout=60,
                           cwd=REPO)
        err = r.stderr.decode("utf-8", "replace")
        assert r.returncode == 2, (argv, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_model_declaring_3_gib_is_refused_before_any_array_is_read(inputs):
    import tracemalloc

    from calibration.model import ModelFileError, SpectralModel

    for name in ("declares-3-gib", "zip-bomb"):
        tracemalloc.start()      # numpy reports its array buffers to tracemalloc
        try:
            with pytest.raises(ModelFileError):
                SpectralModel.load(inputs[name])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, f"{name}: {peak} bytes allocated while refusing it"
