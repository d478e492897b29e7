"""Known values and bounds: LEEP/NCE at perfect and uninformative source predictions, the
H-scores' range [0, C - 1] on ill-conditioned (ViT-like) features, each registry range."""

import jax.numpy as jnp
import numpy as np
import pytest

import jscore
from tests.oracles.data import class_labels
from tests.scorers._engine import PROPERTY_HP, call, property_inputs


@pytest.mark.parametrize("c", [2, 5, 20])
@pytest.mark.parametrize("name", ["leep", "nce"])
def test_perfect_source_predictions_score_zero(name, c):
    # theta one-hot on a source class unique to each target class (source classes shuffled).
    rng = np.random.default_rng(c)
    y = class_labels(rng, 10 * c, c).astype(np.int32)
    cs = c + 3
    target_to_source = rng.permutation(cs)[:c]
    p = np.eye(cs, dtype=np.float32)[target_to_source[y]]
    np.testing.assert_allclose(float(call(name, p, y, c)), 0.0, atol=1e-6)


@pytest.mark.parametrize("imbalance", [1.0, 9.0])
@pytest.mark.parametrize("c", [2, 5, 20])
@pytest.mark.parametrize("name", ["leep", "nce"])
def test_uniform_source_predictions_score_minus_label_entropy(name, c, imbalance):
    # Uniform theta: P(y | z) = P(y) for every z, so LEEP = sum_y P(y) log P(y) (= log(1/C) when
    # balanced). For NCE every argmax is source class 0 (first index on ties): -H(Y), the same.
    rng = np.random.default_rng(c)
    y = class_labels(rng, 10 * c, c, imbalance).astype(np.int32)
    p = np.full((len(y), 7), 1 / 7, np.float32)
    py = np.bincount(y, minlength=c) / len(y)
    want = float(np.sum(py * np.log(py)))
    if imbalance == 1.0:
        np.testing.assert_allclose(want, np.log(1 / c), rtol=1e-12)
    np.testing.assert_allclose(float(call(name, p, y, c)), want, rtol=1e-5)


def _vit_like(seed, n=200, d=64, c=4):
    """Features with a variance spectrum over 12 decades and two huge outlier dimensions (like a
    ViT's massive activations): condition number ~1e16. np.linalg.pinv(rcond=1e-15) on the float32
    covariance gives H-scores far outside [0, C - 1] here (e.g. 13.7 and -54.9 for C = 4)."""
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c)
    z = rng.normal(size=(c, d))[y] + rng.normal(size=(n, d))
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    f = (z * np.logspace(0, -6, d)) @ q
    f[:, :2] *= 300.0
    return f, y.astype(np.int32), c


def _naive_float32_hscore(f, y, c):
    f = f.astype(np.float32)
    g = np.zeros_like(f)
    for k in range(c):
        g[y == k] = f[y == k].mean(axis=0)
    return np.trace(np.linalg.pinv(np.cov(f, rowvar=False).astype(np.float32), rcond=1e-15)
                    @ np.cov(g, rowvar=False).astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["hscore", "reg_hscore"])
def test_hscores_stay_in_range_on_ill_conditioned_features(name, seed):
    f, y, c = _vit_like(seed)
    naive = _naive_float32_hscore(f, y, c)
    assert not 0 <= naive <= c - 1  # the case is hard: the textbook formula breaks here
    for x in (jnp.asarray(f, jnp.float32), jnp.asarray(f, jnp.bfloat16)):
        h = float(call(name, x, y, c))
        assert -1e-5 <= h <= c - 1 + 1e-4, (name, x.dtype, h)


@pytest.mark.parametrize("seed", [0, 1])
def test_hscores_stay_in_range_on_ill_conditioned_features_float64(seed, x64):
    f, y, c = _vit_like(seed)
    for name in ("hscore", "reg_hscore"):
        h = float(call(name, jnp.asarray(f, jnp.float64), y, c))
        assert 0 <= h <= c - 1 + 1e-9, (name, h)


@pytest.mark.parametrize("name", [n for n, s in jscore.REGISTRY.items() if not s.relative])
def test_values_lie_in_the_registry_range(name):
    lo, hi = jscore.REGISTRY[name].range
    for seed, sep, purity in [(0, 3.0, 0.9), (1, 0.3, 0.4)]:
        x, y = property_inputs(name, seed, separation=sep, purity=purity)
        v = float(call(name, x, y, 3, **PROPERTY_HP.get(name, {})))
        hi_v = 3 - 1 if hi == "C-1" else hi
        if lo is not None:
            assert v >= lo - 1e-5, (name, v)
        if hi_v is not None:
            assert v <= hi_v + 1e-5, (name, v)
