"""SOC stocks: arithmetic by hand, cumulative depth, equivalent soil mass."""

import math

import pytest

from calibration.stock import Layer, cumulative_stock, equivalent_mass_stock, layer_stock, soil_mass_to_depth
from humus.records import QualityFlag


def test_layer_stock_by_hand():
    # 2 % C × 1.3 g/cm³ × 30 cm × (1 - 0.1) = 70.2 Mg C/ha
    s = layer_stock(Layer(0, 30, 2.0, 1.3, coarse_fraction=0.1))
    assert s.value == pytest.approx(70.2)
    assert s.flag is QualityFlag.PASS


def test_layer_stock_uncertainty_propagates_relative_errors():
    # relative errors 0.1/2 = 5 % and 0.065/1.3 = 5 % -> sqrt(2) × 5 % of 78 Mg C/ha
    s = layer_stock(Layer(0, 30, 2.0, 1.3, soc_uncertainty=0.1, bd_uncertainty=0.065))
    assert s.value == pytest.approx(78.0)
    assert s.uncertainty == pytest.approx(78.0 * math.sqrt(2) * 0.05)


def test_cumulative_stock_to_30_cm_prorates_the_crossing_layer():
    layers = [Layer(0, 10, 3.0, 1.1, soc_uncertainty=0.3), Layer(10, 20, 2.0, 1.3),
              Layer(20, 40, 1.0, 1.5)]
    s = cumulative_stock(layers, 30)
    # 3×1.1×10 + 2×1.3×10 + 1×1.5×10 = 33 + 26 + 15 = 74
    assert s.value == pytest.approx(74.0)
    assert s.uncertainty == pytest.approx(3.3)             # only the first layer is uncertain: 10 % of 33
    assert s.flag is QualityFlag.PASS


def test_shallow_or_gappy_profile_fails_rather_than_extrapolating():
    assert cumulative_stock([Layer(0, 20, 2.0, 1.3)], 30).flag is QualityFlag.FAIL
    gap = cumulative_stock([Layer(0, 10, 2.0, 1.3), Layer(15, 30, 2.0, 1.3)], 30)
    assert gap.flag is QualityFlag.FAIL and gap.flag_test == "layers_not_contiguous"


def test_impossible_inputs_fail_and_odd_density_is_suspect():
    assert layer_stock(Layer(0, 30, 2.0, 1.3, coarse_fraction=1.2)).flag is QualityFlag.FAIL
    assert layer_stock(Layer(0, 30, 2.0, 3.1)).flag is QualityFlag.SUSPECT


def test_equivalent_soil_mass_removes_a_compaction_artefact():
    # Baseline: 0-30 cm at BD 1.2, 2 % C -> 3600 Mg soil/ha, 72 Mg C/ha.
    baseline = [Layer(0, 30, 2.0, 1.2)]
    ref_mass = soil_mass_to_depth(baseline, 30)
    assert ref_mass == pytest.approx(3600.0)
    # Later the soil was compacted to BD 1.44 with the same carbon per mass of soil:
    # the fixed-depth stock rises 20 % (86.4), which is not a carbon gain.
    later = [Layer(0, 30, 2.0, 1.44), Layer(30, 50, 2.0, 1.44)]
    assert cumulative_stock(later, 30).value == pytest.approx(86.4)
    esm = equivalent_mass_stock(later, ref_mass)
    assert esm.value == pytest.approx(72.0)                 # same mass of soil, same carbon
    assert esm.flag is QualityFlag.PASS


def test_equivalent_soil_mass_across_layers_by_hand():
    # Layers: 0-10 cm 1.0 g/cm³ 3 % (1000 Mg soil, 30 Mg C), 10-30 cm 1.5 g/cm³ 1 % (3000 Mg soil, 30 Mg C).
    layers = [Layer(0, 10, 3.0, 1.0), Layer(10, 30, 1.0, 1.5)]
    # Reference 2500 Mg: all of layer 1 + 1500 Mg of layer 2 at 1 % = 30 + 15 = 45 Mg C/ha.
    assert equivalent_mass_stock(layers, 2500.0).value == pytest.approx(45.0)
    # Beyond the sampled 4000 Mg the deepest concentration is extended, and flagged.
    deep = equivalent_mass_stock(layers, 4500.0)
    assert deep.value == pytest.approx(60.0 + 5.0)
    assert deep.flag is QualityFlag.SUSPECT and deep.flag_test == "esm_extrapolated"


def test_equivalent_soil_mass_fails_on_gaps_and_overlaps_like_cumulative_stock():
    gap = [Layer(0, 10, 2.0, 1.3), Layer(15, 30, 2.0, 1.3)]
    overlap = [Layer(0, 20, 2.0, 1.3), Layer(15, 30, 2.0, 1.3)]
    not_from_surface = [Layer(5, 30, 2.0, 1.3)]
    for layers in (gap, overlap, not_from_surface):
        esm = equivalent_mass_stock(layers, 1000.0)
        assert esm.flag is QualityFlag.FAIL and esm.flag_test == "layers_not_contiguous" and math.isnan(esm.value)


def test_equivalent_soil_mass_carries_the_layer_flags():
    esm = equivalent_mass_stock([Layer(0, 10, 2.0, 3.0), Layer(10, 30, 1.0, 1.4)], 3500.0)   # BD 3.0 g/cm³
    assert esm.flag is QualityFlag.SUSPECT and esm.flag_test == "bulk_density_range"
    # A flagged layer below the reference mass does not taint it.
    deep_odd = equivalent_mass_stock([Layer(0, 10, 2.0, 1.0), Layer(10, 30, 1.0, 3.0)], 900.0)
    assert deep_odd.flag is QualityFlag.PASS


def test_mineral_mass_basis_by_hand_and_recorded():
    # 0-10 cm: 1000 Mg fine soil, 3 % C, SOM 6 % measured -> 940 Mg mineral; 10-30 cm: 3000 Mg, 1 % C, SOM = 2 %.
    layers = [Layer(0, 10, 3.0, 1.0, som_percent=6.0), Layer(10, 30, 1.0, 1.5)]
    assert soil_mass_to_depth(layers, 30, basis="mineral") == pytest.approx(940 + 2940)
    esm = equivalent_mass_stock(layers, 2410.0, basis="mineral")
    # all of layer 1 (30 Mg C) + 1470 of 2940 Mg mineral of layer 2 (half of its 30 Mg C)
    assert esm.value == pytest.approx(45.0)
    assert (esm.basis, esm.interpolation, esm.reference_mass) == ("mineral", "linear", 2410.0)
    assert esm.som_source == "estimated (SOM = 2 SOC) and measured"
    assert equivalent_mass_stock(layers, 2500.0).basis == "fine_soil"


def test_monotone_spline_matches_scipy_pchip_and_differs_from_linear_between_boundaries():
    from scipy.interpolate import PchipInterpolator

    from calibration.stock import pchip
    mass, carbon = [0, 1000, 2300, 3600, 5000], [0, 31, 52, 63, 70]
    for m in (150, 999, 1700, 3000, 4999):
        assert pchip(mass, carbon, m) == pytest.approx(float(PchipInterpolator(mass, carbon)(m)), rel=1e-12)
    layers = [Layer(0, 10, 3.1, 1.0), Layer(10, 20, 1.6, 1.3), Layer(20, 30, 0.85, 1.3), Layer(30, 40, 0.5, 1.4)]
    lin = equivalent_mass_stock(layers, 3000.0)
    mono = equivalent_mass_stock(layers, 3000.0, interpolation="pchip")
    assert mono.interpolation == "pchip" and mono.flag is QualityFlag.PASS
    assert mono.value != pytest.approx(lin.value, abs=0.05)
    assert equivalent_mass_stock(layers, 2300.0, interpolation="pchip").value == pytest.approx(31 + 20.8)  # a knot


@pytest.mark.parametrize("interpolation,basis", [("linear", "fine_soil"), ("pchip", "fine_soil"),
                                                 ("linear", "mineral")])
def test_esm_uncertainty_matches_monte_carlo_within_10_percent(interpolation, basis):
    import numpy as np

    layers = [Layer(0, 10, 2.5, 1.2, soc_uncertainty=0.15, bd_uncertainty=0.08),
              Layer(10, 20, 2.0, 1.35, soc_uncertainty=0.12, bd_uncertainty=0.08),
              Layer(20, 30, 1.6, 1.45, soc_uncertainty=0.10, bd_uncertainty=0.09),
              Layer(30, 50, 1.0, 1.5, soc_uncertainty=0.08, bd_uncertainty=0.09)]
    ref = 3900.0
    esm = equivalent_mass_stock(layers, ref, interpolation=interpolation, basis=basis)
    rng = np.random.default_rng(7)
    draws = []
    for _ in range(4000):
        sim = [Layer(l.top_cm, l.bottom_cm, l.soc_percent + rng.normal() * l.soc_uncertainty,
                     l.bulk_density + rng.normal() * l.bd_uncertainty) for l in layers]
        draws.append(equivalent_mass_stock(sim, ref, interpolation=interpolation, basis=basis).value)
    mc = float(np.std(draws, ddof=1))
    assert esm.uncertainty == pytest.approx(mc, rel=0.10)
    # Independent per-layer errors summed in quadrature (the old way) overstate it: BD errors partly cancel.
    naive = math.sqrt(sum(layer_stock(l).uncertainty ** 2 for l in layers[:3]))
    assert naive > 1.15 * mc
