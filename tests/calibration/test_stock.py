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
