"""Bootstrap: reproducible with a seed, each replicate equals SciPy on the resampled models."""

import warnings

import jax
import numpy as np
import pytest
from scipy import stats

from jscore.evaluate.resampling import bootstrap, bootstrap_indices, interval


def _zero_nan(v):
    return 0.0 if np.isnan(v) else v


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    S, D, M = 2, 3, 7
    counts = np.array([7, 5, 3])
    valid = np.arange(M)[None, :] < counts[:, None]
    scores = rng.normal(size=(S, D, M))
    scores[1, 0, :4] = 1.0  # heavy ties in one (score, dataset)
    truth = rng.uniform(0.5, 0.9, size=(D, M))
    mask = np.broadcast_to(valid, (S, D, M)).copy()
    mask[0, 0, 2] = False  # one missing score value
    return scores, truth, mask, counts


def test_reproducible_and_seed_dependent(problem):
    scores, truth, mask, counts = problem
    a = bootstrap(scores, truth, mask, counts, seed=3, num_resamples=64)
    b = bootstrap(scores, truth, mask, counts, seed=3, num_resamples=64)
    c = bootstrap(scores, truth, mask, counts, seed=4, num_resamples=64)
    np.testing.assert_array_equal(np.asarray(a.per_samples["wtau"]), np.asarray(b.per_samples["wtau"]))
    assert not np.array_equal(np.asarray(a.per_samples["wtau"]), np.asarray(c.per_samples["wtau"]))
    # batch size changes nothing
    d = bootstrap(scores, truth, mask, counts, seed=3, num_resamples=64, batch_size=7)
    np.testing.assert_allclose(np.asarray(a.summary_samples["grouped_tau"]), np.asarray(d.summary_samples["grouped_tau"]), rtol=1e-6)


def test_indices_stay_in_each_dataset():
    counts = np.array([4, 2, 6])
    idx = np.asarray(bootstrap_indices(0, counts, 500, 6))
    for d, c in enumerate(counts):
        assert idx[:, d, :c].max() < c and idx[:, d, :c].min() >= 0
        assert set(np.unique(idx[:, d, :c])) == set(range(c))  # every model gets drawn
        np.testing.assert_array_equal(idx[:, d, c:], np.broadcast_to(np.arange(c, 6), idx[:, d, c:].shape))


def test_replicates_match_scipy_on_resampled_models(x64, problem):
    scores, truth, mask, counts = problem
    B = 40
    out = bootstrap(scores, truth, mask, counts, seed=11, num_resamples=B)
    idx = np.asarray(bootstrap_indices(11, counts, B, scores.shape[-1]))
    tau = np.asarray(out.per_samples["tau"])
    wtau = np.asarray(out.per_samples["wtau"])
    gtau = np.asarray(out.summary_samples["grouped_tau"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(B):
            for s in range(scores.shape[0]):
                pooled = np.zeros(3)
                for d, c in enumerate(counts):
                    ix = idx[b, d, :c]
                    keep = mask[s, d, ix]
                    x, y = scores[s, d, ix][keep], truth[d, ix][keep]
                    want_tau = _zero_nan(stats.kendalltau(x, y).statistic) if len(x) > 1 else 0.0
                    want_wtau = _zero_nan(stats.weightedtau(x, y).statistic) if len(x) > 1 else 0.0
                    assert tau[b, s, d] == pytest.approx(want_tau, abs=1e-9)
                    assert wtau[b, s, d] == pytest.approx(want_wtau, abs=1e-9)
                    sx = np.sign(x[:, None] - x[None, :])[np.triu_indices(len(x), 1)]
                    sy = np.sign(y[:, None] - y[None, :])[np.triu_indices(len(x), 1)]
                    pooled += [np.sum(sx * sy), np.sum(sx != 0), np.sum(sy != 0)]
                den = np.sqrt(pooled[1] * pooled[2])
                assert gtau[b, s] == pytest.approx(pooled[0] / den if den > 0 else 0.0, abs=1e-9)
    # Point estimates (resample 0 of the same program, identity indices) equal SciPy too.
    for s in range(scores.shape[0]):
        for d, c in enumerate(counts):
            keep = mask[s, d, :c]
            x, y = scores[s, d, :c][keep], truth[d, :c][keep]
            assert float(out.per["wtau"][s, d]) == pytest.approx(stats.weightedtau(x, y).statistic, abs=1e-9)
            assert float(out.per["spearman"][s, d]) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-9)
            assert float(out.per["pearson"][s, d]) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-9)


def test_interval_is_percentile():
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(1000, 3))
    mean, lo, hi = interval(samples, level=0.9)
    np.testing.assert_allclose(np.asarray(mean), samples.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(lo), np.percentile(samples, 5, axis=0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(hi), np.percentile(samples, 95, axis=0), rtol=1e-5)


def test_dataset_with_one_model_is_left_out_of_means():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(1, 3, 4))
    truth = rng.uniform(0.5, 0.9, size=(3, 4))
    counts = np.array([4, 4, 4])
    mask = np.ones((1, 3, 4), bool)
    mask[0, 1, 1:] = False  # one model only on dataset 1
    out = bootstrap(scores, truth, mask, counts, seed=0, num_resamples=8)
    for name in ("regret", "tau", "rel_at_k"):
        v = np.asarray(out.per[name])[0]
        want = (v[0] + v[2]) / 2
        got = float(out.summary[f"mean_{name}"][0])
        assert got == pytest.approx(want, rel=1e-6)
        assert np.isfinite(np.asarray(out.summary_samples[f"mean_{name}"])).all()
    # Grouped tau pools only datasets 0 and 2 (dataset 1 has no pair).
    from jscore.evaluate.correlation import grouped_kendall_tau

    assert float(out.summary["grouped_tau"][0]) == pytest.approx(float(grouped_kendall_tau(scores[0, ::2], truth[::2])), rel=1e-6)


def test_fused_per_dataset_equals_the_public_functions():
    """The bootstrap's fused path (shared signs, row sums) against correlation/selection functions."""
    from jscore.evaluate import correlation as C
    from jscore.evaluate import selection as Se
    from jscore.evaluate.resampling import per_dataset

    rng = np.random.default_rng(9)
    K, W = 24, 9
    X = rng.integers(0, 3, (K, W)).astype(float)
    X[::2] = rng.normal(size=(K // 2, W))
    Y = rng.integers(0, 4, (K, W)) / 4.0 + 0.25
    M = rng.random((K, W)) < 0.8
    M[:, :2] = True
    fused = jax.jit(jax.vmap(lambda x, y, m: per_dataset(x, y, m, k=2)))(X, Y, M)
    want = {
        "tau": jax.vmap(C.kendall_tau)(X, Y, M),
        "wtau": jax.vmap(C.weighted_tau)(X, Y, M),
        "pearson": jax.vmap(C.pearson)(X, Y, M),
        "spearman": jax.vmap(C.spearman)(X, Y, M),
        "regret": jax.vmap(Se.top1_regret)(X, Y, M),
        "rel_at_k": jax.vmap(lambda x, y, m: Se.rel_at_k(x, y, m, k=2))(X, Y, M),
        "recall_at_k": jax.vmap(lambda x, y, m: Se.recall_at_k(x, y, m, k=2))(X, Y, M),
    }
    for name, v in want.items():
        np.testing.assert_allclose(np.asarray(fused[name]), np.asarray(v), rtol=1e-5, atol=1e-6, err_msg=name)
