"""`humus sim`: a simulated probe in its own process, read with `humus probe read`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Not `python -m humus.cli`: that runs cli.py as __main__, a second copy of its CommandError class.
HUMUS = [sys.executable, "-c", "import sys; from humus.cli import main; sys.exit(main())"]


def humus(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*HUMUS, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def wait_for(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def sim_process(tmp_path):
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> tuple[subprocess.Popen, Path]:
        link = tmp_path / "sim-link"
        p = subprocess.Popen([*HUMUS, "sim", "--link", str(link), *args], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        assert wait_for(lambda: link.is_symlink() or p.poll() is not None), "simulator did not start"
        assert p.poll() is None, p.stderr.read()
        return p, link

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def test_list_names_each_model_with_its_driver_and_serial_settings():
    out = humus("sim", "--list")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
    assert lines["teros12"][:4] == ["teros12", "teros12", "1200", "7E1"]
    for model in ("modbus-soil", "as7265x", "nir-spectrometer", "ascii-temp"):
        assert model in lines


def test_a_simulated_bus_is_read_by_probe_read_then_stops_on_sigterm(sim_process):
    proc, link = sim_process("--probe", "teros12", "--address", "0,1", "--seed", "3", "--param", "measure_s=0")
    first = humus("probe", "read", "--port", str(link), "--driver", "teros12", "--address", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "OK" in first.stdout and "raw_counts" in first.stdout and "uS/cm" in first.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not link.exists() and not link.is_symlink()
    assert "stopped" in proc.stdout.read()


def test_sigusr1_unplugs_and_replugs_the_simulated_probe(sim_process):
    proc, link = sim_process("--probe", "teros12", "--param", "measure_s=0")
    os.kill(proc.pid, signal.SIGUSR1)
    assert wait_for(lambda: not link.is_symlink())
    gone = humus("probe", "read", "--port", str(link), "--driver", "teros12")
    assert gone.returncode == 1 and "ABSENT" in gone.stdout
    os.kill(proc.pid, signal.SIGUSR1)
    assert wait_for(link.is_symlink)
    back = humus("probe", "read", "--port", str(link), "--driver", "teros12", "--json")
    assert back.returncode == 0 and '"status": "ok"' in back.stdout


def test_a_fault_switch_on_the_command_line_gives_its_status(sim_process):
    proc, link = sim_process("--probe", "teros12", "--fault", "corrupt-crc", "--param", "measure_s=0")
    out = humus("probe", "read", "--port", str(link), "--driver", "teros12", "--option", "response_timeout_s=0.3")
    assert out.returncode == 1 and "CRC_ERROR" in out.stdout


# A link path in a directory that exists, under a name nothing else uses (a stray /tmp/x broke this once).
FREE_LINK = f"/tmp/humus-test-sim-link-{os.getpid()}"


@pytest.mark.parametrize("args,expected", [
    (["--probe", "teros99", "--link", FREE_LINK], "unknown simulator model 'teros99'; known models:"),
    (["--probe", "teros12", "--link", FREE_LINK, "--fault", "fire"], "fault 'fire': expected one of"),
    (["--probe", "teros12", "--link", "/nonexistent-dir/x"], "does not exist"),
    (["--probe", "teros12", "--link", FREE_LINK, "--param", "colour=1"], "unknown teros12 parameter"),
    (["--probe", "teros12"], "expected --list, or --probe MODEL and --link PATH"),
])
def test_bad_arguments_give_one_line_and_exit_status_2(args, expected):
    out = humus("sim", *args)
    assert out.returncode == 2
    assert expected in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("model", ["teros12", "modbus-soil", "as7265x", "nir-spectrometer", "ascii-temp"])
def test_every_model_is_read_by_the_driver_that_sim_list_names(sim_process, model):
    from firmware_bridge.sim.registry import get_model
    entry = get_model(model)
    proc, link = sim_process("--probe", model, "--seed", "2")
    address = ["--address", entry.default_address] if entry.default_address else []
    out = humus("probe", "read", "--port", str(link), "--driver", entry.driver, *address)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ": OK" in out.stdout.splitlines()[0]
