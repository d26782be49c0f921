"""`humus calibrate fit|evaluate|show` end to end on a real CSV, and one clear line for bad input."""

import csv
import json

import numpy as np
import pytest

from humus.cli import main


def run(argv, capsys):
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_fit_evaluate_show(nirsoil_csv, tmp_path, capsys):
    model = tmp_path / "ciso.npz"
    status, out, err = run(["calibrate", "fit", "--data", str(nirsoil_csv), "--target", "Ciso", "--out", str(model),
                            "--max-components", "10", "--folds", "5", "--holdout", "0.25", "--id", "ciso-t"], capsys)
    assert status == 0, err
    assert "ciso-t v1" in out and "RMSECV=" in out
    status, out, err = run(["calibrate", "evaluate", "--model", str(model), "--data", str(nirsoil_csv),
                            "--holdout", "0.25", "--format", "json"], capsys)
    assert status == 0, err
    result = json.loads(out)
    assert result["n"] == 30                                   # the held-out quarter of 120 rows
    for key in ("rmse", "r2", "bias", "rpd", "rpiq", "out_of_domain_fraction"):
        assert np.isfinite(result[key])
    assert 0 < result["rmse"] < 2.0 and result["r2"] > 0.3
    assert 0 <= result["out_of_domain_fraction"] <= 1
    status, out, err = run(["calibrate", "show", str(model)], capsys)
    assert status == 0 and "ciso-t" in out and "sha256:" in out and "savgol" in out and "RPIQ" in out
    status, out, _ = run(["calibrate", "show", str(model), "--format", "json"], capsys)
    assert json.loads(out)["training"]["n"] == 90


def test_fit_with_epo_from_paired_csv(tmp_path, capsys, synthetic):
    wl, dry, c = synthetic(60, seed=7)
    wet = dry + np.linspace(0.05, 0.3, 60)[:, None] * np.exp(-0.5 * ((wl - 1940) / 50.0) ** 2)
    lib, pairs = tmp_path / "lib.csv", tmp_path / "pairs.csv"
    with lib.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", "soc"] + [f"{v:.3f}" for v in wl])
        for i in range(60):
            w.writerow([i, c[i]] + list(dry[i]))
    with pairs.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", "state"] + [f"{v:.3f}" for v in wl])
        for i in range(30):
            w.writerow([i, "dry"] + list(dry[i]))
            w.writerow([i, "wet"] + list(wet[i]))
    model = tmp_path / "epo.npz"
    status, out, err = run(["calibrate", "fit", "--data", str(lib), "--target", "soc", "--out", str(model),
                            "--epo", str(pairs), "--epo-components", "1", "--sg", "11,2,1", "--no-snv",
                            "--folds", "5", "--max-components", "6"], capsys)
    assert status == 0, err
    status, out, _ = run(["calibrate", "show", str(model)], capsys)
    assert "EPO (1 components, 30 pairs)" in out


@pytest.mark.parametrize("content,expected", [
    ("", "empty file"),
    ("sample,Ciso\n1,2\n", "no wavelength columns"),
    ("sample,Ciso,1100,1102\n1,2,0.5\n", "line 2: 3 cells, expected 4"),
    ("sample,Ciso,1100,1102\n1,2,0.5,abc\n", "line 2, column '1102': expected a number"),
])
def test_bad_csv_gives_one_line_and_status_2(tmp_path, capsys, content, expected):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    status, _, err = run(["calibrate", "fit", "--data", str(bad), "--target", "Ciso", "--out",
                          str(tmp_path / "m.npz")], capsys)
    assert status == 2
    assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_target_column_and_bad_model_give_status_2(nirsoil_csv, tmp_path, capsys):
    status, _, err = run(["calibrate", "fit", "--data", str(nirsoil_csv), "--target", "SOC", "--out",
                          str(tmp_path / "m.npz")], capsys)
    assert status == 2 and "no column 'SOC'" in err
    status, _, err = run(["calibrate", "evaluate", "--model", str(nirsoil_csv), "--data", str(nirsoil_csv)], capsys)
    assert status == 2 and "not a Humus model file" in err and len(err.strip().splitlines()) == 1
    status, _, err = run(["calibrate", "show", str(tmp_path / "absent.npz")], capsys)
    assert status == 2 and "not found" in err


def test_holdout_by_sample_keeps_held_out_soils_out_of_the_epo_fit(tmp_path, capsys, synthetic):
    wl, dry, c = synthetic(30, seed=8)
    wet = dry + np.linspace(0.05, 0.3, 30)[:, None] * np.exp(-0.5 * ((wl - 1940) / 50.0) ** 2)
    data = tmp_path / "paired.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", "state", "soc"] + [f"{v:.3f}" for v in wl])
        for i in range(30):
            w.writerow([f"s{i}", "dry", c[i]] + list(dry[i]))
            w.writerow([f"s{i}", "wet", c[i]] + list(wet[i]))
    model = tmp_path / "m.npz"
    split = ["--holdout", "0.2", "--holdout-by", "sample"]
    status, _, err = run(["calibrate", "fit", "--data", str(data), "--target", "soc", "--select", "state=dry",
                          "--epo", str(data), "--epo-components", "1", "--no-snv", "--folds", "4",
                          "--max-components", "5", "--out", str(model), *split], capsys)
    assert status == 0, err
    status, out, _ = run(["calibrate", "show", str(model), "--format", "json"], capsys)
    meta = json.loads(out)
    assert meta["training"]["n"] == 24 and meta["epo"]["pairs"] == 24      # 6 soils held out of both
    status, out, err = run(["calibrate", "evaluate", "--model", str(model), "--data", str(data),
                            "--select", "state=wet", "--format", "json", *split], capsys)
    assert status == 0, err
    assert json.loads(out)["n"] == 6


def test_default_fit_chooses_the_target_scale_by_cv_and_show_says_which(nirsoil_csv, tmp_path, capsys):
    model = tmp_path / "c.npz"
    status, out, err = run(["calibrate", "fit", "--data", str(nirsoil_csv), "--target", "Ciso", "--out", str(model),
                            "--max-components", "8", "--folds", "5"], capsys)
    assert status == 0, err
    status, out, _ = run(["calibrate", "show", str(model), "--format", "json"], capsys)
    tt = json.loads(out)["target_transform"]
    assert tt["requested"] == "auto"
    assert tt["name"] == min(tt["rmsecv_by_transform"], key=tt["rmsecv_by_transform"].get)
    status, out, _ = run(["calibrate", "show", str(model)], capsys)
    assert status == 0 and "target modelled as" in out


def test_blend_contradicting_method_is_refused_in_one_line(nirsoil_csv, tmp_path, capsys):
    status, out, err = run(["calibrate", "fit", "--data", str(nirsoil_csv), "--target", "Ciso", "--out",
                            str(tmp_path / "x.npz"), "--blend", "--method", "global"], capsys)
    assert status == 2 and "--blend contradicts --method global" in err and len(err.strip().splitlines()) == 1


def test_evaluate_reports_coverage_domain_and_rmse_inside_and_outside(nirsoil_csv, tmp_path, capsys):
    model = tmp_path / "c.npz"
    status, out, err = run(["calibrate", "fit", "--data", str(nirsoil_csv), "--target", "Ciso", "--out", str(model),
                            "--max-components", "10", "--folds", "5", "--holdout", "0.25"], capsys)
    assert status == 0, err
    assert "components" in out and "method     global" in out and "coverage   CV +-1u" in out
    status, out, err = run(["calibrate", "evaluate", "--model", str(model), "--data", str(nirsoil_csv),
                            "--holdout", "0.25"], capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and "RMSE=" in lines[0]
    assert "+-1u" in lines[1] and "+-2u" in lines[1] and lines[1].count("%/") == 3          # three terciles
    assert "flagged" in lines[2] and "moisture" in lines[2] and "RMSE in domain" in lines[2]
    status, out, _ = run(["calibrate", "evaluate", "--model", str(model), "--data", str(nirsoil_csv),
                          "--holdout", "0.25", "--format", "json"], capsys)
    r = json.loads(out)
    assert r["n_in_domain"] + r["n_flagged"] == r["n"] == 30
    assert 0 <= r["coverage"]["one_sigma"] <= r["coverage"]["two_sigma"] <= 1
    assert set(r["flagged"]) == {"applicability_domain", "moisture", "prediction_negative", "calibration_range"}
    assert r["coverage_cv"]["n"] == 90


def test_a_cv_minimum_at_the_ceiling_is_said_on_stderr(nirsoil_csv, tmp_path, capsys):
    status, out, err = run(["calibrate", "fit", "--data", str(nirsoil_csv), "--target", "Ciso", "--out",
                            str(tmp_path / "c.npz"), "--max-components", "2", "--folds", "5"], capsys)
    assert status == 0 and "warning:" in err and "ceiling of 2 components" in err
