"""Lab cores: imported beside the sensor series, paired with them, judged against the stated uncertainties."""

from __future__ import annotations

import json

import pytest

import synthetic_site as ss
from humus.cli import main
from observatory import lab, query
from observatory.sites import load_sites
from observatory.stores import open_store


def test_cores_are_stored_beside_the_sensors_and_compared(store_url, tmp_path, capsys):
    s = open_store(store_url)
    s.write(ss.observations())
    s.close()
    sites = ss.write_sites(tmp_path)
    cores = ss.lab_csv(tmp_path)
    assert main(["lab", "import", "--store", store_url, "--data", str(cores), "--sites", str(sites)]) == 0
    assert "8 cores of 1 site(s) stored" in capsys.readouterr().err
    stored = query.series(store_url, gateway="lab", quantity="lab_soc")
    assert sorted(x.probe for x in stored) == ["core-0-15-a", "core-0-15-b", "core-15-30-a", "core-15-30-b"]
    assert all(len(x) == 2 for x in stored)
    assert main(["lab", "import", "--store", store_url, "--data", str(cores)]) == 0     # again: stored once
    assert all(len(x) == 2 for x in query.series(store_url, gateway="lab", quantity="lab_soc"))
    capsys.readouterr()
    assert main(["lab", "compare", "--store", store_url, "--sites", str(sites), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n"] == 8 and doc["unmatched"] == 0 and doc["holds"] is True
    # By hand: each pair is sensor (daily readings within a day of the date) minus lab (truth ± 0.05/0.04).
    diffs = [p["sensor"] - p["lab"] for p in doc["pairs"]]
    assert doc["bias"] == pytest.approx(sum(diffs) / 8)
    assert doc["rmse"] == pytest.approx((sum(d * d for d in diffs) / 8) ** 0.5)
    assert abs(doc["bias"]) < 0.05 and {p["model"] for p in doc["pairs"]} == {"soc-pls@1"}


def test_a_biased_calibration_is_called_out(sqlite_store_url, tmp_path):
    s = open_store(sqlite_store_url)
    s.write(ss.observations())
    s.close()
    rows = ["site,top_cm,bottom_cm,date,soc_percent,soc_uncertainty"]
    rows += [f"north-field,0,15,2024-0{m}-01,{2.6 + m / 1000},0.05" for m in range(1, 7)]
    (tmp_path / "cores.csv").write_text("\n".join(rows) + "\n")
    s = open_store(sqlite_store_url)
    s.write(lab.observations(lab.read_lab_csv(tmp_path / "cores.csv")))
    s.close()
    sites = load_sites(ss.write_sites(tmp_path))
    result = lab.compare(sqlite_store_url, [sites["north-field"]])
    assert result.n == 6 and result.holds is False and result.bias == pytest.approx(-0.59, abs=0.05)
    assert "does not hold" in result.verdict


@pytest.mark.parametrize("text, message", [
    ("site,date,soc_percent\nnorth-field,2024-01-01,2\n", "no column 'layer'"),
    ("site,layer,date,soc_percent\nnorth-field,0-15,2024-01-01,lots\n", "line 2, column 'soc_percent': expected a number"),
    ("site,layer,date,soc_percent\nnorth-field,15-0,2024-01-01,2\n", "line 2: layer 15-0 cm: expected top < bottom"),
    ("site,layer,date,soc_percent\nNorth Field,0-15,2024-01-01,2\n", "column 'site': expected a site id"),
    ("site,layer,date,soc_percent\nnorth-field,0-15,01/02/2024,2\n", "column 'date': expected a date"),
    ("site,layer,date,soc_percent\nnorth-field,0-15,2024-01-01,2\nnorth-field,0-15,2024-01-01,3\n",
     "line 3: the same site, layer, date and core as line 2"),
])
def test_a_bad_lab_file_is_one_line_naming_line_and_column(tmp_path, capsys, text, message):
    path = tmp_path / "cores.csv"
    path.write_text(text)
    assert main(["lab", "import", "--store", f"sqlite:{tmp_path / 'a.sqlite'}", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_a_core_outside_the_configured_layers_is_refused(tmp_path, capsys):
    sites = ss.write_sites(tmp_path)
    path = tmp_path / "cores.csv"
    path.write_text("site,layer,date,soc_percent\nnorth-field,30-60,2024-01-01,1.1\n")
    assert main(["lab", "import", "--store", f"sqlite:{tmp_path / 'a.sqlite'}", "--data", str(path), "--sites",
                 str(sites)]) == 2
    assert "layer 30-60 cm of site north-field matches no layer" in capsys.readouterr().err
