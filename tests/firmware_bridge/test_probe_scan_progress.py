"""`humus probe scan` says what it is doing: a full scan of 62 addresses takes half a minute."""

from __future__ import annotations

from humus.cli import main


def test_scan_announces_how_many_addresses_and_how_long_before_it_starts(sdi_bus, capsys):
    sim = sdi_bus("2")
    assert main(["probe", "scan", sim.link, "--addresses", "0-3", "--timeout", "0.1"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"scanning 4 address(es) on {sim.link}, up to 0.2 s each "
                                         "(about 1 s at most)..."]
    assert captured.out.splitlines()[0].startswith("2  METER TER12")


def test_on_a_terminal_the_scan_shows_each_address_as_it_goes(sdi_bus, capsys, monkeypatch):
    import sys

    sim = sdi_bus("1")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["probe", "scan", sim.link, "--addresses", "0-2", "--timeout", "0.1"]) == 0
    err = capsys.readouterr().err
    assert all(f"\r  address {a} ({i}/3" in err for i, a in enumerate("012", start=1)), repr(err)
