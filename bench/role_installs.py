"""Size and install time of each role's virtual environment (gateway, centre, demo, test).

Creates a fresh venv per role in a temporary directory, installs `.[ROLE]`
from this checkout with pip (its wheel cache warm or not, as this machine
has it: say which when quoting the figures), then measures the venv's size
on disk, lists the heavy packages it holds, and runs a smoke command with
the role's console script. Figures for the README's deployment section.

    .venv/bin/python bench/role_installs.py [--roles gateway,centre,demo]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("scipy", "scikit_learn", "sklearn", "pandas", "xarray", "shapely", "amqtt", "influxdb_client", "cryptography")
SMOKE = {
    "gateway": [["check-config", str(REPO / "deploy" / "gateway.example.toml")], ["probe", "list"]],
    "centre": [["archive", "--help"], ["gateway", "--help"]],
    "demo": [["demo", "--duration", "8"]],
    "test": [["--help"]],
}


def du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--roles", default="gateway,centre,demo")
    args = ap.parse_args()
    results = {}
    base = Path(tempfile.mkdtemp(prefix="humus-roles-"))
    try:
        for role in args.roles.split(","):
            venv = base / role
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            py = venv / "bin" / "python"
            subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True,
                           capture_output=True)
            t0 = time.monotonic()
            r = subprocess.run([str(py), "-m", "pip", "install", "-q", f"{REPO}[{role}]"], capture_output=True,
                               text=True)
            seconds = time.monotonic() - t0
            if r.returncode != 0:
                print(f"{role}: pip install failed: {r.stderr[-2000:]}")
                return 1
            size_mb = du(venv) / 1e6
            site = next((venv / "lib").glob("python3*/site-packages"))
            heavy = sorted({h for h in HEAVY if (site / h).exists()})
            ok = True
            workdir = base / f"{role}-run"
            workdir.mkdir()
            for argv in SMOKE[role]:
                s = subprocess.run([str(venv / "bin" / "humus"), *argv], capture_output=True, text=True, cwd=workdir,
                                   timeout=120)
                ok &= s.returncode == 0
                if s.returncode != 0:
                    print(f"{role}: humus {' '.join(argv)} exited {s.returncode}: {s.stderr[-500:]}")
            print(f"{role:8} {size_mb:7.1f} MB  {seconds:6.1f} s  smoke {'ok' if ok else 'FAILED'}  "
                  f"heavy: {', '.join(heavy) or 'none'}", flush=True)
            results[role] = (size_mb, seconds, ok)
            shutil.rmtree(venv)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    fields = " ".join(f"{r}_mb={v[0]:.0f} {r}_install_s={v[1]:.0f}" for r, v in results.items())
    print(f"RESULT role_installs {fields} smoke_ok={int(all(v[2] for v in results.values()))}")
    return 0 if all(v[2] for v in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
