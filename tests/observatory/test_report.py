"""`humus report`: a synthetic site whose true trend is known, rendered to HTML and opened in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

import synthetic_site as ss
from humus.cli import main
from observatory import lab
from observatory.stores import open_store


def _archive(url: str, tmp_path) -> None:
    s = open_store(url)
    s.write(ss.observations())
    s.write(ss.second_site())
    s.write(lab.observations(lab.read_lab_csv(ss.lab_csv(tmp_path))))
    s.close()


def test_the_report_finds_the_true_trend_and_prints_it(store_url, tmp_path, capsys):
    _archive(store_url, tmp_path)
    sites = ss.write_sites(tmp_path)
    out = tmp_path / "report"
    assert main(["report", "--store", store_url, "--sites", str(sites), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    north = summary["north-field"]["trend"]
    lo, hi = north["rate_ci"]
    assert lo < ss.TRUE_RATE < hi and hi - lo < 0.5           # the CI holds the truth, and says something
    assert north["change_detected"] is True
    assert summary["north-field"]["stock"]["value"] == pytest.approx(ss.TRUE_BASELINE + 3 * ss.TRUE_RATE, abs=3)
    assert f"north-field: {north['per_mille']:+.2f} per mille/yr" in err
    html = (out / "index.html").read_text()
    assert f"{north['rate']:+.2f} t C/ha</b> (95 % confidence: {lo:+.2f} to {hi:+.2f})" in html
    assert "Soil carbon card: North field" in html and "Soil carbon card: South field" in html
    assert html.index("Sites compared") < html.index("Soil carbon card")             # several sites: compared first
    south = summary["south-field"]["trend"]
    assert south["change_detected"] is False and "No change can be told apart from the noise yet" in html
    assert summary["north-field"]["lab"]["n"] == 8 and summary["north-field"]["lab"]["holds"] is True
    assert summary["north-field"]["models"][0]["model_id"] == "soc-pls"
    for name in ("sites", "north-field-card", "north-field-stocks", "north-field-context", "north-field-quality",
                 "north-field-lab"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (deploy/install-test-servers.sh installs it)", pytrace=False)
        pytest.skip("chromium is not installed")
    return exe


def _dom(exe: str, page) -> str:
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
                        page.as_uri()], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-500:]
    return r.stdout


def test_the_report_opens_in_a_browser_and_its_figures_load(sqlite_store_url, tmp_path):
    exe = _chromium()
    _archive(sqlite_store_url, tmp_path)
    sites = ss.write_sites(tmp_path)
    out = tmp_path / "report"
    assert main(["report", "--store", sqlite_store_url, "--sites", str(sites), "--site", "north-field",
                 "--out", str(out)]) == 0
    dom = _dom(exe, out / "index.html")
    images = re.findall(r"<img [^>]*>", dom)
    assert len(images) == 5 and f'data-figures-checked="{len(images)}"' in dom
    for img in images:
        assert 'data-loaded="yes"' in img, img
        assert int(re.search(r'data-width="(\d+)"', img).group(1)) > 300
    # The check is real: a figure gone missing shows as such.
    (out / "figures" / "north-field-quality.png").unlink()
    dom = _dom(exe, out / "index.html")
    assert dom.count('data-loaded="no"') == 1 and "This figure did not load: figures/north-field-quality.png" in dom


def test_report_mistakes_are_one_line(sqlite_store_url, tmp_path, capsys):
    _archive(sqlite_store_url, tmp_path)
    sites = ss.write_sites(tmp_path)
    assert main(["report", "--store", sqlite_store_url, "--sites", str(sites), "--site", "west-field",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sites.west-field: expected a site described in the file" in err
    assert main(["report", "--store", f"sqlite:{tmp_path / 'none.sqlite'}", "--sites", str(sites),
                 "--out", str(tmp_path / "r")]) == 2
    assert "no archive at" in capsys.readouterr().err


def test_progress_is_one_line_rewritten_on_a_terminal_and_silent_elsewhere():
    import io

    from observatory.progress import Progress

    tty = io.StringIO()
    bar = Progress("humus report", stream=tty, enabled=True, every_s=0)
    bar.update(1, "reading north-field")
    bar.update(2, "figure north-field-card")
    bar.finish()
    text = tty.getvalue()
    assert text.count("\r") >= 3 and "\n" not in text and "figure north-field-card" in text
    quiet = io.StringIO()
    Progress("humus report", stream=quiet).update(1, "x")      # a StringIO is no terminal
    assert quiet.getvalue() == ""
