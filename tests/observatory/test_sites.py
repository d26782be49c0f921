"""Site descriptions in TOML: validated like every configuration, one line naming file, key and expectation."""

from __future__ import annotations

import pytest

import synthetic_site as ss
from humus.config import ConfigError
from observatory.sites import load_sites


def test_a_site_file_gives_layers_bulk_density_by_date_and_probes(tmp_path):
    path = tmp_path / "sites.toml"
    path.write_text(ss.SITES_TOML.replace(
        "bulk_density = [ { date = 2023-03-01, value = 1.30, uncertainty = 0.05 } ]",
        "bulk_density = [ { date = 2023-03-01, value = 1.30, uncertainty = 0.05 },\n"
        "                 { date = \"2025-03-01\", value = 1.22, uncertainty = 0.04 } ]"))
    site = load_sites(path)["north-field"]
    top = site.ordered_layers[0]
    assert site.probes == ["nir-1", "nir-2", "teros-1"] and site.reference_depth_cm == 30
    assert top.bulk_density_at(site.baseline_ns).value == 1.30
    assert top.bulk_density_at(site.baseline_ns + 3 * 365 * 86400 * 10**9).value == 1.22
    assert top.bulk_density_at(0).value == 1.30          # before the first measurement: the earliest
    assert site.layer_of(0, 15) is top and site.layer_of(20, 25).label == "15-30 cm"


@pytest.mark.parametrize("change, message", [
    (("value = 1.45", "value = 3.2"), "layers[1].bulk_density[0].value: expected a fine-earth bulk density"),
    (("bottom_cm = 30", "bottom_cm = 10"), "layers[1]: expected top_cm < bottom_cm, got 15 and 10"),
    (("bottom_cm = 15", "bottom_cm = 20"), "expected layers that do not overlap, got 0-20 cm and 15-30 cm"),
    (("baseline = 2023-03-01\nlatitude", "baseline = \"soon\"\nlatitude"), "north-field.baseline: expected a date"),
    (('probes = ["nir-2"]', 'probes = ["NIR 2"]'), "layers[1].probes: expected a list of probe ids"),
    (("coarse_fraction = 0.05", "coarse = 0.05"), "layers[0].coarse: expected one of the known keys"),
    (("south-field", "South_Field"), "sites.South_Field: expected a site id"),
])
def test_a_bad_site_file_is_one_line(tmp_path, change, message):
    path = tmp_path / "sites.toml"
    text = ss.SITES_TOML.replace(*change)
    assert text != ss.SITES_TOML
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_sites(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_check_config_validates_a_sites_file(tmp_path, capsys):
    from humus.cli import main

    path = ss.write_sites(tmp_path)
    assert main(["check-config", str(path)]) == 0
    assert "ok, 2 site(s): north-field (2 layers), south-field (1 layers)" in capsys.readouterr().out
    path.write_text(ss.SITES_TOML.replace("value = 1.45", "value = -1"))
    assert main(["check-config", str(path)]) == 2
    assert "bulk_density[0].value: expected a fine-earth bulk density" in capsys.readouterr().err
