"""`humus demo --pull`: a probe pulled gives one notification naming what to check, one "resolved" when it is
plugged back, and a replay over the demo's archive lists the same episode."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(180)


def test_a_probe_pulled_in_the_demo_notifies_once_resolves_once_and_replays(tmp_path):
    d = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "humus.cli", "demo", "--duration", "26", "--interval", "1",
                        "--dir", str(d), "--pull", "teros-a:5:12"], capture_output=True, text=True, timeout=170)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    alerts = [ln for ln in r.stdout.splitlines() if ln.startswith("alert: ")]
    assert alerts == ["alert: [FIRING:1] demo-farm: no_data on demo-farm/gw-demo/teros-a",
                      "alert: [RESOLVED] demo-farm: no_data on demo-farm/gw-demo/teros-a"], r.stdout
    firing = r.stdout.split(alerts[0])[1].split("demo: plugging")[0]
    assert "FIRING no_data [warning] demo-farm/gw-demo/teros-a since 20" in firing      # site, gateway, probe, since
    assert "check: the probe's cable" in firing and "'absent'" in firing               # what to check, and why

    q = subprocess.run([sys.executable, "-m", "humus.cli", "alerts", "replay", "--store",
                        f"sqlite:{d / 'archive.sqlite'}", "--since", "-10m", "--until", "now", "--step", "1s",
                        "--config", str(d / "observatory.toml"), "--format", "json"],
                       capture_output=True, text=True, timeout=120)
    assert q.returncode == 0, q.stderr
    import json
    episodes = json.loads(q.stdout)
    assert [(e["rule"], e["subject"]) for e in episodes] == [("no_data", "demo-farm/gw-demo/teros-a")]
    assert episodes[0]["end"] is not None
    assert episodes[0]["start"] in firing
