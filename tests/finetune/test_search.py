import math

import numpy as np
import pytest
from scipy.stats import qmc

from jscore.finetune.search import HParams, halton, parse_search, radical_inverse


def test_halton_equals_scipy_unscrambled_bitwise():
    ours = halton(300, 2)
    ref = qmc.Halton(d=2, scramble=False).random(300)
    assert np.array_equal(ours, ref)  # bitwise, not approximately
    assert np.array_equal(ours[0], [0.0, 0.0])  # scipy's unscrambled sequence starts at the origin


def test_halton_higher_dimensions_and_offset():
    ref = qmc.Halton(d=4, scramble=False).random(40)
    np.testing.assert_array_equal(halton(30, 4, start=10), ref[10:])


def test_radical_inverse_hand_values():
    np.testing.assert_array_equal(radical_inverse(np.arange(8), 2), [0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875])
    np.testing.assert_allclose(radical_inverse(np.array([1, 2, 3, 4]), 3), [1 / 3, 2 / 3, 1 / 9, 4 / 9], rtol=1e-15)


def test_halton_search_maps_to_log_ranges():
    points = parse_search("halton:75")
    assert len(points) == 75
    unit = qmc.Halton(d=2, scramble=False).random(75)
    lr = np.array([p.learning_rate for p in points])
    wd = np.array([p.weight_decay for p in points])
    np.testing.assert_allclose(np.log10(lr), -4 + 3 * unit[:, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.log10(wd), -6 + 2 * unit[:, 1], rtol=1e-12, atol=1e-12)
    assert points[0] == HParams(1e-4, 1e-6)
    assert lr.min() >= 1e-4 and lr.max() < 1e-1 and wd.min() >= 1e-6 and wd.max() < 1e-4


def test_grid_random_point_specs():
    grid = parse_search("grid:3x2")
    assert len(grid) == 6
    assert {round(math.log10(p.learning_rate), 9) for p in grid} == {-4.0, -2.5, -1.0}
    assert {round(math.log10(p.weight_decay), 9) for p in grid} == {-6.0, -4.0}
    r1, r2 = parse_search("random:5", seed=3), parse_search("random:5", seed=3)
    assert r1 == r2 and len(set(r1)) == 5
    assert parse_search("point:0.01,1e-5") == [HParams(0.01, 1e-5)]


@pytest.mark.parametrize("spec", ["halton", "halton:0", "grid:3y", "sobol:8", "point:-1,0", "random:x"])
def test_bad_search_specs(spec):
    with pytest.raises(ValueError, match="bad search spec"):
        parse_search(spec)
