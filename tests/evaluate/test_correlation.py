"""Correlations against SciPy (float64) on random data with and without ties, and tiny hand cases."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jscore.evaluate import correlation as C


def _cases(seed, n_cases=40):
    """Random (x, y) pairs: continuous, heavy ties, ties in one side only, sizes 2..12."""
    rng = np.random.default_rng(seed)
    for t in range(n_cases):
        n = int(rng.integers(2, 13))
        kind = t % 4
        if kind == 0:
            x, y = rng.normal(size=n), rng.normal(size=n)
        elif kind == 1:
            x, y = rng.integers(0, 3, n).astype(float), rng.integers(0, 3, n).astype(float)
        elif kind == 2:
            x, y = rng.integers(0, 3, n).astype(float), rng.normal(size=n)
        else:
            x, y = rng.normal(size=n), rng.integers(0, 2, n).astype(float)
        yield x, y


def _scipy_or_zero(value):
    # Our documented rule: a constant side gives 0 where SciPy gives NaN.
    return 0.0 if np.isnan(value) else value


WIDTH = 12


def _batch(cases, interleave_seed=None):
    """Pad cases to [K, WIDTH] with junk and a mask; optionally interleave the padding."""
    rng = np.random.default_rng(interleave_seed or 0)
    k = len(cases)
    X = rng.normal(size=(k, WIDTH)) * 100
    Y = rng.normal(size=(k, WIDTH)) * 100
    M = np.zeros((k, WIDTH), bool)
    for i, (x, y) in enumerate(cases):
        pos = np.arange(len(x))
        if interleave_seed is not None:  # valid entries spread out, relative order kept
            pos = np.sort(rng.choice(WIDTH, size=len(x), replace=False))
        X[i, pos], Y[i, pos], M[i, pos] = x, y, True
    return X, Y, M


def _reference(name, x, y):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = {
            "kendall_tau": lambda: stats.kendalltau(x, y).statistic,
            "weighted_tau": lambda: stats.weightedtau(x, y).statistic,
            "pearson": lambda: stats.pearsonr(x, y).statistic if len(x) > 2 else np.corrcoef(x, y)[0, 1],
            "spearman": lambda: stats.spearmanr(x, y).statistic,
        }[name]()
    return _scipy_or_zero(ref)


NAMES = ["kendall_tau", "weighted_tau", "pearson", "spearman"]


@pytest.mark.parametrize("interleave", [None, 1])
def test_matches_scipy_float64_masked(x64, interleave):
    """One compiled vmap over padded cases; padding (first or interleaved) must be neutral."""
    cases = list(_cases(0))
    X, Y, M = _batch(cases, interleave)
    for name in NAMES:
        got = np.asarray(jax.jit(jax.vmap(getattr(C, name)))(X, Y, M))
        for i, (x, y) in enumerate(cases):
            np.testing.assert_allclose(got[i], _reference(name, x, y), rtol=1e-9, atol=1e-12, err_msg=f"{name} {x} {y}")


def test_float32_close_to_scipy():
    cases = list(_cases(1, 20))
    X, Y, M = _batch(cases)
    got = np.asarray(jax.jit(jax.vmap(C.weighted_tau))(X.astype(np.float32), Y.astype(np.float32), M))
    for i, (x, y) in enumerate(cases):
        np.testing.assert_allclose(got[i], _reference("weighted_tau", x, y), rtol=1e-4, atol=1e-5)


def test_hand_cases():
    # 3 models, one swap among 3 pairs: (C - D) / P = (2 - 1) / 3.
    assert float(C.kendall_tau(jnp.array([1.0, 2, 3]), jnp.array([1.0, 3, 2]))) == pytest.approx(1 / 3)
    assert float(C.kendall_tau(jnp.array([1.0, 2, 3]), jnp.array([3.0, 2, 1]))) == pytest.approx(-1.0)
    # Ties: x = [1,1,2], y = [1,2,3]: pairs (0,1) tied in x; C = 2, D = 0; tau_b = 2/sqrt(2*3).
    assert float(C.kendall_tau(jnp.array([1.0, 1, 2]), jnp.array([1.0, 2, 3]))) == pytest.approx(2 / np.sqrt(6))
    # Weighted, hand-computed: x = [3,2,1] (ranks 0,1,2, weights 1, 1/2, 1/3), y = [2,3,1].
    # Pairs: (0,1) discordant w=1.5; (0,2) concordant w=4/3; (1,2) concordant w=5/6.
    # Ranked by x: (4/3 + 5/6 - 3/2) / (3/2 + 4/3 + 5/6) = (2/3) / (11/3) = 2/11.
    # Ranked by y (ranks 1,0,2): w = (1/2+1)=1.5, (1/2+1/3)=5/6, (1+1/3)=4/3 -> (5/6+4/3-3/2)/(11/3) = 2/11.
    got = float(C.weighted_tau(jnp.array([3.0, 2, 1]), jnp.array([2.0, 3, 1])))
    assert got == pytest.approx(2 / 11, rel=1e-6)


def test_constant_score_gives_zero():
    x = jnp.ones(5)
    y = jnp.arange(5.0)
    for fn in (C.kendall_tau, C.weighted_tau, C.pearson, C.spearman):
        assert float(fn(x, y)) == 0.0


def _np_grouped(x, y, groups, weighted):
    """Independent float64 oracle: loops over pairs inside each group, pooled sums."""

    def sums(a, b):
        n = len(a)
        order = sorted(range(n), key=lambda i: (-a[i], -b[i], -i))
        r = np.empty(n)
        r[order] = np.arange(n)
        w = 1.0 / (r + 1)
        num = dx = dy = 0.0
        for i in range(n):
            for j in range(i + 1, n):
                wij = (w[i] + w[j]) if weighted else 1.0
                sa, sb = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
                num += wij * sa * sb
                dx += wij * (sa != 0)
                dy += wij * (sb != 0)
        return np.array([num, dx, dy])

    def tau(a_all, b_all):
        tot = sum(sums(a_all[groups == g], b_all[groups == g]) for g in np.unique(groups))
        den = np.sqrt(tot[1] * tot[2])
        return tot[0] / den if den > 0 else 0.0

    if not weighted:
        return tau(x, y)
    return 0.5 * (tau(x, y) + tau(y, x))


def test_grouped_against_oracle_and_single(x64):
    rng = np.random.default_rng(5)
    grouped_tau, grouped_wtau = jax.jit(C.grouped_kendall_tau), jax.jit(C.grouped_weighted_tau)
    for trial in range(6):
        counts = rng.integers(2, 9, size=3)
        m = 8
        X = np.zeros((3, m))
        Y = np.zeros((3, m))
        mask = np.arange(m)[None, :] < counts[:, None]
        xs, ys, gs = [], [], []
        for d, c in enumerate(counts):
            x = rng.integers(0, 4, c).astype(float) if trial % 2 else rng.normal(size=c)
            y = rng.normal(size=c) * (d + 1) + 10 * d  # scales differ between datasets
            X[d, :c], Y[d, :c] = x, y
            xs.append(x), ys.append(y), gs.append(np.full(c, d))
        x, y, g = map(np.concatenate, (xs, ys, gs))
        got = float(grouped_tau(X, Y, mask))
        assert got == pytest.approx(_np_grouped(x, y, g, False), rel=1e-9)
        got_w = float(grouped_wtau(X, Y, mask))
        assert got_w == pytest.approx(_np_grouped(x, y, g, True), rel=1e-9)
        # One dataset: grouped equals plain (and SciPy).
        c = counts[0]
        one = mask[:1]
        assert float(C.grouped_kendall_tau(X[:1], Y[:1], one)) == pytest.approx(float(C.kendall_tau(X[0, :c], Y[0, :c])), rel=1e-12)
        assert float(C.grouped_weighted_tau(X[:1], Y[:1], one)) == pytest.approx(
            _scipy_or_zero(stats.weightedtau(X[0, :c], Y[0, :c]).statistic), rel=1e-9
        )


def test_vmap_equals_loop():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=(6, 8)).astype(np.float32)
    batched = jax.vmap(C.weighted_tau)(x, y)
    loop = np.array([float(C.weighted_tau(a, b)) for a, b in zip(x, y)])
    np.testing.assert_allclose(np.asarray(batched), loop, rtol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        C.kendall_tau(jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match="mask"):
        C.kendall_tau(jnp.ones(3), jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match="D, M"):
        C.grouped_kendall_tau(jnp.ones(3), jnp.ones(3))


def test_invariances():
    """tau-b: invariant to a joint permutation and to increasing transforms of either side;
    weighted tau: invariant to increasing transforms (it sees only the order)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=10)
    y = rng.integers(0, 4, 10).astype(np.float32)
    perm = rng.permutation(10)
    tau = float(C.kendall_tau(x, y))
    assert float(C.kendall_tau(x[perm], y[perm])) == pytest.approx(tau, rel=1e-6)
    assert float(C.kendall_tau(np.exp(x), y * 3 + 1)) == pytest.approx(tau, rel=1e-6)
    assert float(C.weighted_tau(np.exp(x), y * 3 + 1)) == pytest.approx(float(C.weighted_tau(x, y)), rel=1e-6)
    assert float(C.kendall_tau(-x, y)) == pytest.approx(-tau, rel=1e-6)
