"""`humus query` as a person runs it: aligned table, CSV, JSON, and one line for every mistake."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from humus.cli import main
from humus.records import Observation, QualityFlag, Source
from observatory.stores import open_store

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
Q = 15 * 60 * 10**9
WL = tuple(np.linspace(1350.0, 2550.0, 256).tolist())
SPECTRUM = tuple((np.linspace(0.1, 0.5, 256) + 1e-12).tolist())


@pytest.fixture
def archive(store_url) -> str:
    obs = []
    for i in range(4):
        t = T0 + i * Q
        obs += [
            Observation("north-field", "gw-1", "teros-1", "vwc", t, 0.25 + i / 100, "m3/m3", depth_cm=10.0,
                        uncertainty=0.02, flag=QualityFlag.PASS, flag_test="gross_range"),
            Observation("north-field", "gw-1", "nir-1", "reflectance", t, SPECTRUM, "1", wavelengths_nm=WL),
            Observation("north-field", "gw-1", "nir-1", "soc", t, 2.31, "%", uncertainty=0.41,
                        flag=QualityFlag.SUSPECT, flag_test="hotelling_t2", source=Source.CALIBRATED,
                        model_id="pls-nirsoil", model_version="2026.1"),
        ]
    obs.append(Observation("north-field", "gw-1", "teros-1", "vwc", T0 + 10 * Q, float("nan"), "m3/m3",
                           depth_cm=10.0, flag=QualityFlag.MISSING, flag_test="timeout"))
    store = open_store(store_url)
    store.write(obs)
    store.close()
    return store_url


def humus(capsys, *args) -> tuple[int, str, str]:
    status = main(["query", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_table_is_aligned_and_summarises_spectra(archive, capsys):
    status, out, err = humus(capsys, "--store", archive)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["time", "(UTC)", "site", "probe", "depth_cm", "quantity", "value", "unit", "uncertainty",
                                "flag", "source/model"]
    assert len(lines) == 1 + 13
    # Aligned: every column starts at the same offset on every line.
    col = lines[0].index("quantity")
    assert all(line[col - 2:col] == "  " for line in lines)
    spectral = [line for line in lines if "reflectance" in line]
    assert len(spectral) == 4 and "spectrum 256 bands 1350-2550 nm" in spectral[0]
    soc = next(line for line in lines if " soc " in line)
    assert "2026-01-01T00:00:00Z" in soc and "±0.41" in soc and "suspect (hotelling_t2)" in soc
    assert "calibrated pls-nirsoil@2026.1" in soc
    missing = lines[-1]
    assert "NaN" in missing and "missing (timeout)" in missing and "2026-01-01T02:30:00Z" in missing


def test_csv_holds_spectra_in_full_and_filters_apply(archive, capsys):
    status, out, _ = humus(capsys, "--store", archive, "--format", "csv", "--probe", "nir-1",
                           "--since", "2026-01-01T00:15", "--until", "2026-01-01T00:45:00Z")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["quantity"], r["time"]) for r in rows] == [
        ("reflectance", "2026-01-01T00:15:00Z"), ("reflectance", "2026-01-01T00:30:00Z"),
        ("soc", "2026-01-01T00:15:00Z"), ("soc", "2026-01-01T00:30:00Z")]
    spec = rows[0]
    assert tuple(float(x) for x in spec["value"].split()) == SPECTRUM
    assert tuple(float(x) for x in spec["wavelengths_nm"].split()) == WL
    assert rows[2]["model_version"] == "2026.1" and rows[2]["flag_name"] == "suspect"


def test_json_is_one_valid_document_with_null_for_missing(archive, capsys):
    status, out, _ = humus(capsys, "--store", archive, "--format", "json", "--probe", "teros-1",
                           "--source", "raw")
    docs = json.loads(out)
    assert status == 0 and len(docs) == 5
    assert docs[0]["value"] == 0.25 and docs[0]["time_ns"] == T0 and docs[0]["depth_cm"] == 10.0
    assert docs[-1]["value"] is None and docs[-1]["flag"] == 9 and docs[-1]["flag_name"] == "missing"
    _, out, _ = humus(capsys, "--store", archive, "--format", "json", "--quantity", "reflectance", "--limit", "1")
    (spec,) = json.loads(out)
    assert tuple(spec["value"]) == SPECTRUM and tuple(spec["wavelengths_nm"]) == WL


def test_limit_caps_the_rows_and_says_so(archive, capsys):
    status, out, err = humus(capsys, "--store", archive, "--limit", "5")
    assert status == 0 and len(out.splitlines()) == 6
    assert "showing the first 5" in err


def test_no_match_is_a_clear_line_on_stderr_and_success(archive, capsys):
    status, out, err = humus(capsys, "--store", archive, "--site", "elsewhere", "--since", "-1h")
    assert (status, out) == (0, "")
    assert err.startswith("humus query: no observations match site=elsewhere since=-1h")


def test_a_missing_archive_is_one_line_and_exit_2(tmp_path, capsys):
    status, out, err = humus(capsys, "--store", f"sqlite:{tmp_path}/none.sqlite")
    assert status == 2 and out == "" and len(err.splitlines()) == 1 and "no archive at" in err
    assert not (tmp_path / "none.sqlite").exists()


@pytest.mark.parametrize("args, message", [
    (["--store", "mysql://h/db"], "scheme 'mysql' is unknown"),
    (["--store", "sqlite:x.sqlite", "--since", "last tuesday"], "is not ISO 8601"),
    (["--store", "sqlite:x.sqlite", "--limit", "0"], "expected a positive number"),
])
def test_user_mistakes_are_one_line_and_exit_2(args, message, capsys):
    status, _, err = humus(capsys, *args)
    assert status == 2 and message in err and len(err.splitlines()) == 1


def test_an_unreachable_influxdb_is_one_line_and_exit_1(capsys):
    import servers
    status, _, err = humus(capsys, "--store", f"influxdb://127.0.0.1:{servers.free_port()}/db?retries=1")
    assert status == 1 and "unreachable" in err and len(err.splitlines()) == 1


def test_the_installed_command_runs_without_traceback(archive):
    r = subprocess.run([sys.executable, "-m", "humus.cli", "query", "--store", archive, "--quantity", "soc",
                        "--since", "-100000d"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.count("soc") == 4 and "Traceback" not in r.stderr
